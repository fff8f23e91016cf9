package daemon

import (
	"context"
	"path"
	"sync"
	"time"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/juicedata/juicefs/pkg/meta"
)

// pathCacheTTL bounds how long a path learnt for an inode is trusted when
// another node renames or deletes it (this node's own renames and removals
// drop the cache at once through the namespace generation).
const pathCacheTTL = 5 * time.Second

// pathResolver turns inodes into paths for query answers (find, related).
// Resolving one costs a metadata query per directory level, so answers are
// remembered for a few seconds.
type pathResolver struct {
	m     meta.Meta
	gen   func() uint64 // the mount's namespace generation; nil before it serves
	cache *expirable.LRU[meta.Ino, cachedPath]
}

type cachedPath struct {
	path string
	gen  uint64
}

func newPathResolver(m meta.Meta, gen func() uint64) *pathResolver {
	return &pathResolver{m: m, gen: gen, cache: expirable.NewLRU[meta.Ino, cachedPath](100_000, nil, pathCacheTTL)}
}

// resolve returns one path (relative to the volume root, "" when the file
// is gone) for each file, querying the metadata engine for those it does not
// know, several at once (SQLite in WAL mode and Redis serve parallel readers).
func (r *pathResolver) resolve(ctx context.Context, files []graph.File) []string {
	var gen uint64
	if r.gen != nil {
		gen = r.gen()
	}
	paths := make([]string, len(files))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	mctx := meta.WrapWithoutCancel(ctx, 0, 0, []uint32{0})
	for i, f := range files {
		ino := meta.Ino(f.ID)
		if c, ok := r.cache.Get(ino); ok && c.gen == gen {
			paths[i] = c.path
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if p := r.lookup(mctx, ino, f.Name, gen); p != "" {
				paths[i] = p
				r.cache.Add(ino, cachedPath{path: p, gen: gen})
			}
		}()
	}
	wg.Wait()
	return paths
}

// lookup finds one path of ino. JuiceFS's GetPaths reads the whole parent
// directory to find a file's name, which costs milliseconds in a directory of
// thousands; the index knows the name, so check it with one lookup and only
// fall back to GetPaths when the name is stale or the file has several links.
func (r *pathResolver) lookup(ctx meta.Context, ino meta.Ino, name string, gen uint64) string {
	var attr, fattr meta.Attr
	if name != "" && r.m.GetAttr(ctx, ino, &attr) == 0 && attr.Parent != 0 {
		var found meta.Ino
		// JuiceFS's Lookup refuses a nil attribute (EINVAL).
		if r.m.Lookup(ctx, attr.Parent, name, &found, &fattr, false) == 0 && found == ino {
			if dir := r.dir(ctx, attr.Parent, gen); dir != "" {
				return path.Join(dir, name)
			}
		}
	}
	if ps := r.m.GetPaths(ctx, ino); len(ps) > 0 {
		return ps[0]
	}
	return ""
}

// dir returns a directory's path, remembered like file paths.
func (r *pathResolver) dir(ctx meta.Context, ino meta.Ino, gen uint64) string {
	if ino == meta.RootInode {
		return "/"
	}
	if c, ok := r.cache.Get(ino); ok && c.gen == gen {
		return c.path
	}
	ps := r.m.GetPaths(ctx, ino)
	if len(ps) == 0 {
		return ""
	}
	r.cache.Add(ino, cachedPath{path: ps[0], gen: gen})
	return ps[0]
}
