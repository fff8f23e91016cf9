package cache

import (
	"cmp"
	"context"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/disgrafs/disgrafs/graph"
)

// Graph is what the neighbour ranking reads from the tag index;
// graph.Store has it.
type Graph interface {
	// Tags lists every tag with its file count.
	Tags(ctx context.Context) ([]graph.TagCount, error)
	// TagsOf lists a file's tags.
	TagsOf(ctx context.Context, id graph.FileID) ([]string, error)
	// Files lists the files carrying every one of tags.
	Files(ctx context.Context, tags []string) ([]graph.File, error)
	// Related ranks files by the tags they share with id, best first.
	Related(ctx context.Context, id graph.FileID, limit int) ([]graph.Scored, error)
	// CoAccessed ranks the files opened together with id, best first.
	CoAccessed(ctx context.Context, id graph.FileID, limit int, halfLife time.Duration, now time.Time) ([]graph.Scored, error)
}

// Dirs is what the neighbour ranking reads from the volume's namespace.
type Dirs interface {
	// Parent returns the directory holding ino; 0 when it has none.
	Parent(ctx context.Context, ino uint64) (uint64, error)
	// Files lists the regular files of dir (ID and name, in any order).
	Files(ctx context.Context, dir uint64) ([]graph.File, error)
}

// Ranking proposes files to prefetch after one was opened: files sharing its
// tags (rarer tags first), files opened together with it before, then the
// next files of its tags and of its directory in name order. It implements
// Neighbours; it is safe for concurrent use.
type Ranking struct {
	graph     Graph       // nil: tags are off, only the directory counts
	available func() bool // whether the graph may be asked now
	dirs      Dirs

	// mu guards the remembered listings and tag counts; it is never held
	// while the graph or the volume is asked.
	mu       sync.Mutex
	lists    map[string]*nameList // "tag:T" or "dir:INO"
	counts   map[string]int       // files per tag
	countsAt time.Time
}

// NewRanking returns the ranking over g (nil when tags are off; available
// nil means always available) and the volume's directories.
func NewRanking(g Graph, available func() bool, dirs Dirs) *Ranking {
	return &Ranking{graph: g, available: available, dirs: dirs}
}

type nameList struct {
	at    time.Time
	files []graph.File   // sorted by name, then ID
	pos   map[uint64]int // inode -> first index in files
}

// listTTL is how long a listing of a tag or a directory, and the tags' file
// counts, are reused.
const listTTL = 10 * time.Second

// maxLists bounds the remembered listings; past it they are all forgotten.
const maxLists = 1024

// relatedPostings bounds the work of ranking an opened file's relatives by
// shared tags: the sum of its tags' file counts. Ranking scans every file of
// every tag, and when a tag spans a whole data set (every file of the epoch
// tagged train) nearly every file ties with every other: the ranking then
// costs milliseconds of CPU per open and says no more than the next files of
// the tag in name order, which come next anyway.
const relatedPostings = 8192

// coAccessHalfLife is the decay of co-access edges the ranking reads.
const coAccessHalfLife = time.Hour

// Neighbours returns up to limit files related to ino, best first, leaving
// out ino itself and the files skip says to.
func (r *Ranking) Neighbours(ctx context.Context, ino uint64, limit int, skip func(uint64) bool) ([]uint64, error) {
	var out []uint64
	seen := map[uint64]bool{ino: true}
	add := func(id uint64) bool {
		if !seen[id] {
			seen[id] = true
			if skip == nil || !skip(id) {
				out = append(out, id)
			}
		}
		return len(out) >= limit
	}
	if r.graph != nil && (r.available == nil || r.available()) {
		tags, tagsErr := r.graph.TagsOf(ctx, graph.FileID(ino))
		// With one tag every file of it shares exactly that tag with this
		// one: all tie, and the tag's name order below says as much.
		if tagsErr == nil && len(tags) >= 2 && r.postings(ctx, tags) <= relatedPostings {
			if rel, err := r.graph.Related(ctx, graph.FileID(ino), 4*limit); err == nil {
				for _, s := range rel {
					if add(uint64(s.File.ID)) {
						return out, nil
					}
				}
			}
		}
		if co, err := r.graph.CoAccessed(ctx, graph.FileID(ino), 4*limit, coAccessHalfLife, time.Now()); err == nil {
			for _, s := range co {
				if add(uint64(s.File.ID)) {
					return out, nil
				}
			}
		}
		if tagsErr == nil {
			for _, t := range tags {
				l, err := r.list(tagKey(t), func() ([]graph.File, error) { return r.graph.Files(ctx, []string{t}) })
				if err != nil {
					continue
				}
				for _, id := range following(l, ino, 8*limit) {
					if add(id) {
						return out, nil
					}
				}
			}
		}
	}
	if r.dirs == nil {
		return out, nil
	}
	parent, err := r.dirs.Parent(ctx, ino)
	if err != nil || parent == 0 {
		return out, nil
	}
	l, err := r.list(dirKey(parent), func() ([]graph.File, error) { return r.dirs.Files(ctx, parent) })
	if err != nil {
		return out, nil
	}
	for _, id := range following(l, ino, 8*limit) {
		if add(id) {
			break
		}
	}
	return out, nil
}

func tagKey(tag string) string { return "tag:" + tag }

func dirKey(dir uint64) string { return "dir:" + strconv.FormatUint(dir, 10) }

// postings returns the sum of the tags' file counts, from a count of every
// tag remembered for listTTL (unknown tags count as huge).
func (r *Ranking) postings(ctx context.Context, tags []string) int {
	r.mu.Lock()
	counts, at := r.counts, r.countsAt
	r.mu.Unlock()
	if counts == nil || time.Since(at) >= listTTL {
		all, err := r.graph.Tags(ctx)
		if err != nil {
			return math.MaxInt
		}
		counts = make(map[string]int, len(all))
		for _, t := range all {
			counts[t.Tag] = t.Files
		}
		r.mu.Lock()
		r.counts, r.countsAt = counts, time.Now()
		r.mu.Unlock()
	}
	sum := 0
	for _, t := range tags {
		c, ok := counts[t]
		if !ok {
			return math.MaxInt
		}
		sum += c
	}
	return sum
}

// list returns a name-sorted listing, remembered for listTTL.
func (r *Ranking) list(key string, load func() ([]graph.File, error)) (*nameList, error) {
	r.mu.Lock()
	l := r.lists[key]
	r.mu.Unlock()
	if l != nil && time.Since(l.at) < listTTL {
		return l, nil
	}
	files, err := load()
	if err != nil {
		return nil, err
	}
	l = newNameList(files)
	r.mu.Lock()
	if r.lists == nil || len(r.lists) > maxLists {
		r.lists = map[string]*nameList{}
	}
	r.lists[key] = l
	r.mu.Unlock()
	return l, nil
}

// newNameList sorts files by name, then ID (files is reordered).
func newNameList(files []graph.File) *nameList {
	slices.SortFunc(files, func(a, b graph.File) int {
		if c := cmp.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	l := &nameList{at: time.Now(), files: files, pos: make(map[uint64]int, len(files))}
	for i, f := range files {
		if _, dup := l.pos[uint64(f.ID)]; !dup {
			l.pos[uint64(f.ID)] = i
		}
	}
	return l
}

// following returns up to limit files after ino in l's name order.
func following(l *nameList, ino uint64, limit int) []uint64 {
	i, ok := l.pos[ino]
	if !ok {
		return nil
	}
	var out []uint64
	for _, f := range l.files[i+1:] {
		if len(out) >= limit {
			break
		}
		out = append(out, uint64(f.ID))
	}
	return out
}
