// Package boltstore is the embedded graph.Store: one bbolt file per volume.
//
// Layout (all integers big-endian):
//
//	meta      "schema" -> schemaID; "nexttag", "nextord" -> uint32;
//	          "nfiles" -> uint64 (tagged files)
//	tags      tag name -> tag id uint32 | file count uint64
//	files     file id uint64 -> ordinal uint32 | 0x00 | parent uint64 | file name
//	          (schema 1 wrote ordinal uint32 | file name: still read, parent 0)
//	ords      ordinal uint32 -> file id uint64
//	filetags  file id uint64 | tag name -> tag id uint32
//	postings  tag id uint32 | file name | 0x00 | file id uint64 -> ordinal uint32
//	plists    tag id uint32 | first ordinal uint32 -> sorted ordinals (uint32 each)
//	coaccess  file id A uint64 | file id B uint64 -> weight float64 bits | last update unix ns int64
//
// A tag's postings are contiguous and already in listing order (name, then
// ID: names hold no NUL, so the 0x00 separator sorts a name before its
// extensions), so listing a tag is one sequential scan with no sort.
// filetags makes TagsOf a prefix scan and "does file f carry tag t" one
// lookup. Every indexed file also has a small dense ordinal, and each tag a
// posting list of ordinals in chunks of up to 2,048: Related adds up weights
// in an array indexed by ordinal, reading each shared tag's members at a few
// bytes apiece; CoTags and multi-tag Files intersect bitmaps built from
// them. Tag counts and the number of tagged files are maintained on
// every write, never recomputed.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/disgrafs/disgrafs/graph"
)

// schemaID names the layout. Schema 1 kept no parent in file records; its
// records are read as they are (a name holds no NUL, so the 0x00 after the
// ordinal tells the two apart) and the file is marked schema 2 when opened, so
// that an older binary refuses it instead of misreading new records.
const (
	schemaID  = "disgrafs-graph/2"
	schemaID1 = "disgrafs-graph/1"
)

var (
	bMeta     = []byte("meta")
	bTags     = []byte("tags")
	bFiles    = []byte("files")
	bOrds     = []byte("ords")
	bFileTags = []byte("filetags")
	bPostings = []byte("postings")
	bPlists   = []byte("plists")
	bCoAccess = []byte("coaccess")

	kSchema  = []byte("schema")
	kNextTag = []byte("nexttag")
	kNextOrd = []byte("nextord")
	kNFiles  = []byte("nfiles")
)

var allBuckets = [][]byte{bMeta, bTags, bFiles, bOrds, bFileTags, bPostings, bPlists, bCoAccess}

// ErrCorrupt is wrapped by errors caused by a damaged index file; the index
// can be rebuilt from the files' xattrs.
var ErrCorrupt = errors.New("graph index is corrupt")

// Options tune a Store. The zero value is a safe default.
type Options struct {
	// LockTimeout bounds the wait for the file lock another process holds
	// (default 1s); Open then fails with an error saying the file is in use.
	LockTimeout time.Duration
	// NoSync skips fsync after each transaction: faster writes, and a crash
	// may lose recent updates (the index can be rebuilt from the xattrs).
	NoSync bool
	// BatchDelay, when positive, lets concurrent small Updates (up to 64
	// changes each) share one transaction, each waiting at most this long for
	// others (bbolt's DB.Batch). Zero runs every Update in its own transaction.
	BatchDelay time.Duration
}

// Store is a graph.Store on a bbolt file. It is safe for concurrent use: reads
// run in parallel, writes one at a time.
type Store struct {
	db   *bolt.DB
	opts Options
	// scratch holds score arrays for Related, indexed by ordinal.
	scratch sync.Pool
}

var _ graph.Store = (*Store)(nil)

// Open opens or creates the index at path (mode 0600).
func Open(path string, opts Options) (s *Store, err error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	// bbolt validates the meta pages of an existing file but trusts the
	// rest: turn a panic or a fault on a damaged file into an error.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("boltstore: open %s: %w (%v)", path, ErrCorrupt, r)
		}
	}()
	// The freelist is synced: without it bbolt rebuilds the freelist at
	// Open by walking every page in a goroutine of its own, where damage to
	// the file is an unrecoverable panic that kills the process.
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		NoSync:       opts.NoSync,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("boltstore: open %s: the file is locked by another process (waited %v): %w", path, opts.LockTimeout, graph.ErrUnavailable)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
			return nil, fmt.Errorf("boltstore: open %s: not a valid bbolt database (%v): %w", path, err, ErrCorrupt)
		}
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	if opts.BatchDelay > 0 {
		db.MaxBatchDelay = opts.BatchDelay
	}
	if err := initSchema(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	return &Store{db: db, opts: opts}, nil
}

// initSchema creates the buckets of a new file, or checks an existing one is
// ours.
func initSchema(db *bolt.DB) error {
	return db.Update(guard(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if meta == nil {
			empty := true
			if err := tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil }); err != nil {
				return err
			}
			if !empty {
				return errors.New("the file is a bbolt database but not a disgrafs graph index")
			}
			for _, b := range allBuckets {
				if _, err := tx.CreateBucket(b); err != nil {
					return err
				}
			}
			return tx.Bucket(bMeta).Put(kSchema, []byte(schemaID))
		}
		v := meta.Get(kSchema)
		if string(v) != schemaID && string(v) != schemaID1 {
			return fmt.Errorf("unknown index schema %q (want %q)", v, schemaID)
		}
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("bucket %s is missing: %w", b, ErrCorrupt)
			}
		}
		if string(v) == schemaID1 {
			if err := meta.Put(kSchema, []byte(schemaID)); err != nil {
				return err
			}
		}
		// Touch every bucket's root page: damage there shows now.
		for _, b := range allBuckets {
			tx.Bucket(b).Cursor().First()
		}
		return nil
	}))
}

// guard turns a panic or memory fault inside a transaction function (bbolt
// reading a damaged page) into an error wrapping ErrCorrupt. bbolt rolls the
// transaction back.
func guard(fn func(*bolt.Tx) error) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) (err error) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: %v", ErrCorrupt, r)
			}
		}()
		return fn(tx)
	}
}

// Close releases the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltstore: close: %w", err)
	}
	return nil
}

// Path is the database file.
func (s *Store) Path() string { return s.db.Path() }

// Ping checks that the file is open.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, "ping", func(*bolt.Tx) error { return nil })
}

func (s *Store) view(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: %s: %w", op, err)
	}
	return wrap(op, protect(func() error { return s.db.View(guard(fn)) }))
}

func (s *Store) update(ctx context.Context, op string, small bool, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: %s: %w", op, err)
	}
	if small && s.opts.BatchDelay > 0 {
		// The batch commits on a goroutine of bbolt's: damage met while
		// committing is not caught there.
		return wrap(op, s.db.Batch(guard(fn)))
	}
	return wrap(op, protect(func() error { return s.db.Update(guard(fn)) }))
}

// protect turns a panic or fault outside the transaction function (bbolt
// committing over a damaged page) into an error wrapping ErrCorrupt.
func protect(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return f()
}

func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("boltstore: %s: store is closed: %w", op, graph.ErrUnavailable)
	}
	return fmt.Errorf("boltstore: %s: %w", op, err)
}

// ticker checks ctx every so many steps of a long loop.
type ticker struct {
	ctx context.Context
	n   int
}

func (t *ticker) tick() error {
	t.n++
	if t.n&4095 == 0 {
		return t.ctx.Err()
	}
	return nil
}

// Keys and records.

func u32(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return b[:]
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func getU32(b *bolt.Bucket, k []byte) uint32 {
	if v := b.Get(k); len(v) == 4 {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func fileKey(id graph.FileID) []byte { return u64(uint64(id)) }

func fileTagKey(id graph.FileID, tag string) []byte {
	k := make([]byte, 8+len(tag))
	binary.BigEndian.PutUint64(k, uint64(id))
	copy(k[8:], tag)
	return k
}

func postingKey(tid uint32, name string, id graph.FileID) []byte {
	k := make([]byte, 4+len(name)+1+8)
	binary.BigEndian.PutUint32(k, tid)
	copy(k[4:], name)
	k[4+len(name)] = 0
	binary.BigEndian.PutUint64(k[5+len(name):], uint64(id))
	return k
}

// postingFile decodes a postings key.
func postingFile(k []byte) graph.File {
	return graph.File{ID: postingID(k), Name: string(k[4 : len(k)-9])}
}

func postingID(k []byte) graph.FileID { return graph.FileID(binary.BigEndian.Uint64(k[len(k)-8:])) }

func coKey(a, b graph.FileID) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, uint64(a))
	binary.BigEndian.PutUint64(k[8:], uint64(b))
	return k
}

// fileRec is a files record.
type fileRec struct {
	ord    uint32
	parent graph.FileID
	name   string
}

// fileRecHead is the length of a record before the name.
const fileRecHead = 4 + 1 + 8

func decodeFile(id graph.FileID, v []byte) (fileRec, error) {
	switch {
	case len(v) < 4:
		return fileRec{}, fmt.Errorf("file %d: short record: %w", id, ErrCorrupt)
	case len(v) == 4 || v[4] != 0: // schema 1
		return fileRec{ord: binary.BigEndian.Uint32(v), name: string(v[4:])}, nil
	case len(v) < fileRecHead:
		return fileRec{}, fmt.Errorf("file %d: short record: %w", id, ErrCorrupt)
	}
	return fileRec{ord: binary.BigEndian.Uint32(v), parent: graph.FileID(binary.BigEndian.Uint64(v[5:])), name: string(v[fileRecHead:])}, nil
}

func (r fileRec) encode() []byte {
	v := make([]byte, fileRecHead+len(r.name))
	binary.BigEndian.PutUint32(v, r.ord)
	binary.BigEndian.PutUint64(v[5:], uint64(r.parent))
	copy(v[fileRecHead:], r.name)
	return v
}

// getFile reads a file's record; ok is false when it is not indexed.
func getFile(tx *bolt.Tx, id graph.FileID) (fileRec, bool, error) {
	v := tx.Bucket(bFiles).Get(fileKey(id))
	if v == nil {
		return fileRec{}, false, nil
	}
	r, err := decodeFile(id, v)
	return r, err == nil, err
}

// indexedFile is a file's ID, name and parent as indexed, with only the ID
// when it is not in the index (or its record is damaged).
func indexedFile(files *bolt.Bucket, id graph.FileID) graph.File {
	if v := files.Get(fileKey(id)); v != nil {
		if r, err := decodeFile(id, v); err == nil {
			return graph.File{ID: id, Name: r.name, Parent: r.parent}
		}
	}
	return graph.File{ID: id}
}

type tagRec struct {
	id    uint32
	count uint64
}

func decodeTag(v []byte) (tagRec, error) {
	if len(v) != 12 {
		return tagRec{}, fmt.Errorf("tag record of %d bytes: %w", len(v), ErrCorrupt)
	}
	return tagRec{id: binary.BigEndian.Uint32(v), count: binary.BigEndian.Uint64(v[4:])}, nil
}

func (r tagRec) encode() []byte {
	v := make([]byte, 12)
	binary.BigEndian.PutUint32(v, r.id)
	binary.BigEndian.PutUint64(v[4:], r.count)
	return v
}

func getTag(tx *bolt.Tx, name string) (tagRec, bool, error) {
	v := tx.Bucket(bTags).Get([]byte(name))
	if v == nil {
		return tagRec{}, false, nil
	}
	r, err := decodeTag(v)
	if err != nil {
		return tagRec{}, false, fmt.Errorf("tag %q: %w", name, err)
	}
	return r, true, nil
}

// fileTag is one of a file's tags.
type fileTag struct {
	name string
	id   uint32
}

// tagsOf lists a file's tags from filetags, sorted by name.
func tagsOf(tx *bolt.Tx, id graph.FileID) ([]fileTag, error) {
	prefix := fileKey(id)
	var out []fileTag
	c := tx.Bucket(bFileTags).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(v) != 4 {
			return nil, fmt.Errorf("filetags entry of file %d: %w", id, ErrCorrupt)
		}
		out = append(out, fileTag{name: string(k[8:]), id: binary.BigEndian.Uint32(v)})
	}
	return out, nil
}
