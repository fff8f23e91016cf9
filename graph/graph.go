// Package graph is the tag index of a volume: which files carry which tags,
// boolean queries over them, related files, and learned co-access edges. The
// truth lives in each file's user.xdg.tags xattr; a Store is an index that can
// always be rebuilt from the xattrs (disgrafs reindex).
//
// Backends: boltstore (embedded bbolt, the default) and neo4jstore (a shared
// Neo4j graph for several nodes). Both pass the suite in graphtest.
package graph

import (
	"context"
	"errors"
	"time"
)

// FileID identifies a file of the volume: its JuiceFS inode number.
type FileID uint64

// File is a file as the index knows it.
type File struct {
	ID FileID
	// Name is the file's base name, used to list it in tag directories. A file
	// with several hard links is listed under the name it was last indexed with.
	Name string
	// Parent is the directory (inode) the file was last indexed in, 0 when
	// unknown: a hint that turns an answer into a path with one lookup, which
	// must be checked (the file may have moved since). Related and CoAccessed
	// return it; Files and Query leave it 0.
	Parent FileID
}

// Change updates one file's entry. Tags in Remove are removed, then tags in Add
// are added; with Replace the file's tags become exactly Add. A non-empty
// File.Name updates the indexed name, a non-zero File.Parent the indexed
// parent. A file left with no tags is dropped from the index.
type Change struct {
	File    File
	Add     []string
	Remove  []string
	Replace bool
}

// TagCount is a tag and how many files carry it.
type TagCount struct {
	Tag   string
	Files int
}

// Scored is a file with a relevance score (higher is more related).
type Scored struct {
	File  File
	Score float64
}

// CoAccess is an observation that two files were opened close together by one
// process; Weight adds to the edge between them.
type CoAccess struct {
	A, B   FileID
	Weight float64
	At     time.Time
}

// Errors a Store returns (wrapped).
var (
	ErrNotEmpty    = errors.New("tag is not empty")
	ErrNoTag       = errors.New("no such tag")
	ErrUnavailable = errors.New("graph store unavailable")
	// ErrBadTag is wrapped by ValidTag and ParseTagList for names that break
	// the tag rules, and by Parse for malformed expressions.
	ErrBadTag = errors.New("invalid tag")
)

// Store is the tag index. Every method may block on I/O and honours ctx.
// Implementations are safe for concurrent use.
type Store interface {
	// Update applies changes to many files in one transaction.
	Update(ctx context.Context, changes []Change) error
	// Forget removes files (deleted from the volume) and their co-access edges.
	Forget(ctx context.Context, ids []FileID) error
	// CreateTag makes a tag exist with no files (mkdir in .tags).
	CreateTag(ctx context.Context, tag string) error
	// DeleteTag removes a tag that no file carries; ErrNotEmpty otherwise,
	// ErrNoTag if it does not exist.
	DeleteTag(ctx context.Context, tag string) error
	// Tags lists every tag (also empty ones) with its file count, by name.
	Tags(ctx context.Context) ([]TagCount, error)
	// TagsOf lists a file's tags, sorted.
	TagsOf(ctx context.Context, id FileID) ([]string, error)
	// Files lists the files carrying every one of tags (at least one tag),
	// sorted by name then ID. ErrNoTag if a tag does not exist.
	Files(ctx context.Context, tags []string) ([]File, error)
	// CoTags lists the tags that narrow the set Files(tags): tags T not in tags
	// such that some but not all of those files carry T. Sorted.
	CoTags(ctx context.Context, tags []string) ([]string, error)
	// Query lists the files matching a boolean expression (see Parse), sorted
	// by name then ID. "not x" is relative to all tagged files.
	Query(ctx context.Context, e Expr) ([]File, error)
	// Related ranks other files by the tags they share with id, rarer tags
	// weighing more (sum of log(1+N/df) over shared tags), best first.
	Related(ctx context.Context, id FileID, limit int) ([]Scored, error)
	// AddCoAccess adds weight to co-access edges (both directions).
	AddCoAccess(ctx context.Context, edges []CoAccess) error
	// CoAccessed ranks the files most often opened together with id, each
	// edge's weight decayed by half every halfLife since it was last updated.
	CoAccessed(ctx context.Context, id FileID, limit int, halfLife time.Duration, now time.Time) ([]Scored, error)
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}
