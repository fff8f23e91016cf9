package daemon

import (
	"context"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/juicedata/juicefs/pkg/meta"
	"golang.org/x/sync/singleflight"
)

// pathCacheTTL bounds how long a path learnt for an inode is trusted when
// another node renames or deletes it (this node's own renames and removals
// drop the cache at once through the namespace generation).
const pathCacheTTL = 5 * time.Second

// maxDirDepth bounds the walk up a directory's parents (a loop in a damaged
// volume must not hang a query).
const maxDirDepth = 256

// maxListedDirs bounds how many subdirectories of one listing are remembered.
const maxListedDirs = 10_000

// pathResolver turns inodes into paths for query answers (find, related).
// Resolving one costs metadata queries, so answers are remembered for a few
// seconds.
type pathResolver struct {
	m     meta.Meta
	gen   func() uint64 // the mount's namespace generation; nil before it serves
	cache *expirable.LRU[meta.Ino, cachedPath]
	lists singleflight.Group // directory listings in progress, by inode
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
		if p, ok := r.cached(ino, gen); ok {
			paths[i] = p
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if p := r.lookup(mctx, f, gen); p != "" {
				paths[i] = p
				r.cache.Add(ino, cachedPath{path: p, gen: gen})
			}
		}()
	}
	wg.Wait()
	return paths
}

func (r *pathResolver) cached(ino meta.Ino, gen uint64) (string, bool) {
	c, ok := r.cache.Get(ino)
	if !ok || c.gen != gen {
		return "", false
	}
	return c.path, true
}

// lookup finds one path of a file. JuiceFS's GetPaths reads the whole parent
// directory to find a file's name, which costs milliseconds in a directory
// of thousands; the index knows the name and usually the directory, so one
// lookup checks them. Without a directory, or when the file has moved, its
// attributes give the directory; GetPaths is the last resort (a stale name,
// several links).
func (r *pathResolver) lookup(ctx meta.Context, f graph.File, gen uint64) string {
	ino := meta.Ino(f.ID)
	if f.Name == "" {
		return r.anyPath(ctx, ino)
	}
	if f.Parent != 0 {
		if p := r.inDir(ctx, ino, meta.Ino(f.Parent), f.Name, gen); p != "" {
			return p
		}
	}
	// A file another node removed may sit in JuiceFS's trash: it is gone.
	var attr meta.Attr
	if r.m.GetAttr(ctx, ino, &attr) != 0 || attr.Parent.IsTrash() {
		return ""
	}
	if attr.Parent != 0 && attr.Parent != meta.Ino(f.Parent) {
		if p := r.inDir(ctx, ino, attr.Parent, f.Name, gen); p != "" {
			return p
		}
	}
	return r.anyPath(ctx, ino)
}

// inDir returns the path of ino if dir holds it under name.
func (r *pathResolver) inDir(ctx meta.Context, ino, dir meta.Ino, name string, gen uint64) string {
	var found meta.Ino
	var attr meta.Attr // JuiceFS's Lookup refuses a nil attribute (EINVAL)
	if r.m.Lookup(ctx, dir, name, &found, &attr, false) != 0 || found != ino {
		return ""
	}
	if d := r.dir(ctx, dir, gen); d != "" {
		return path.Join(d, name)
	}
	return ""
}

// anyPath asks JuiceFS for a path of ino outside the trash.
func (r *pathResolver) anyPath(ctx meta.Context, ino meta.Ino) string {
	for _, p := range r.m.GetPaths(ctx, ino) {
		if strings.HasPrefix(p, "/") && p != trashPath && !strings.HasPrefix(p, trashPath+"/") {
			return p
		}
	}
	return ""
}

var trashPath = "/" + meta.TrashName

// dir returns a directory's path, remembered like file paths, "" when it is
// gone.
func (r *pathResolver) dir(ctx meta.Context, ino meta.Ino, gen uint64) string {
	if p := r.dirFromParent(ctx, ino, gen, 0); p != "" {
		return p
	}
	// Moved while we looked: ask JuiceFS.
	p := r.anyPath(ctx, ino)
	if p != "" {
		r.cache.Add(ino, cachedPath{path: p, gen: gen})
	}
	return p
}

// dirFromParent finds a directory's name in its parent's listing, and
// remembers the path of every subdirectory that listing names: the
// directories of a query's answers are mostly siblings, and JuiceFS's
// GetPaths would read the same listing again for each of them.
func (r *pathResolver) dirFromParent(ctx meta.Context, ino meta.Ino, gen uint64, depth int) string {
	if ino == meta.RootInode {
		return "/"
	}
	if p, ok := r.cached(ino, gen); ok {
		return p
	}
	var attr meta.Attr
	if depth >= maxDirDepth || r.m.GetAttr(ctx, ino, &attr) != 0 || attr.Typ != meta.TypeDirectory || attr.Parent == 0 || attr.Parent.IsTrash() {
		return ""
	}
	parent := r.dirFromParent(ctx, attr.Parent, gen, depth+1)
	if parent == "" {
		return ""
	}
	// One listing at a time per directory: the resolver's goroutines often
	// want the same one.
	_, _, _ = r.lists.Do(strconv.FormatUint(uint64(attr.Parent), 10), func() (any, error) {
		if _, ok := r.cached(ino, gen); ok {
			return nil, nil // another caller has just listed it
		}
		var entries []*meta.Entry
		if r.m.Readdir(ctx, attr.Parent, 0, &entries) != 0 {
			return nil, nil
		}
		n := 0
		for _, e := range entries {
			name := string(e.Name)
			if e.Attr == nil || e.Attr.Typ != meta.TypeDirectory || name == "." || name == ".." {
				continue
			}
			if n < maxListedDirs || e.Inode == ino {
				r.cache.Add(e.Inode, cachedPath{path: path.Join(parent, name), gen: gen})
				n++
			}
		}
		return nil, nil
	})
	p, _ := r.cached(ino, gen)
	return p
}
