// Package names is the one index of file names a mount keeps: parent
// directory and name <-> inode, for the names the kernel asked about or this
// mount changed (lookups, directory listings with attributes, creates, links,
// renames, removals).
//
// Entries are hints, not truth: another node may rename or remove a name at
// any time, and the index is bounded (the least recently added names go
// first). A reader that acts on an entry checks it against the metadata
// engine (one lookup), and a miss falls back to the engine; see the callers.
// The namespace generation (Gen) changes with every removal and rename made
// through this mount, so that caches derived from names (paths of query
// answers) know when to drop what they hold.
package names

import (
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Dentry is one name of an inode.
type Dentry struct {
	Parent uint64
	Name   string
}

// maxLinks bounds the names remembered per inode (hard links); past it the
// oldest is dropped.
const maxLinks = 8

// Index maps names to inodes and back. The zero value is not usable; a nil
// *Index remembers nothing and answers every question with a miss.
type Index struct {
	mu     sync.Mutex
	byName *simplelru.LRU[Dentry, uint64] // evictions drop byIno's side
	byIno  map[uint64][]Dentry            // newest name last
	gen    atomic.Uint64
}

// New keeps at most n names.
func New(n int) *Index {
	x := &Index{byIno: map[uint64][]Dentry{}}
	l, err := simplelru.NewLRU[Dentry, uint64](n, x.evicted)
	if err != nil {
		panic(err) // only for n <= 0
	}
	x.byName = l
	return x
}

// evicted runs under x.mu (simplelru calls it from Add and Remove).
func (x *Index) evicted(d Dentry, ino uint64) { x.dropLocked(ino, d) }

func (x *Index) dropLocked(ino uint64, d Dentry) {
	ds := x.byIno[ino]
	for i, e := range ds {
		if e == d {
			ds = append(ds[:i:i], ds[i+1:]...)
			break
		}
	}
	if len(ds) == 0 {
		delete(x.byIno, ino)
	} else {
		x.byIno[ino] = ds
	}
}

// Add records that parent holds ino under name.
func (x *Index) Add(parent uint64, name string, ino uint64) {
	if x == nil || ino == 0 {
		return
	}
	d := Dentry{parent, name}
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.byName.Peek(d); ok {
		if old == ino {
			x.byName.Get(d) // refresh its recency
			return
		}
		x.byName.Remove(d) // the name now means another inode
	}
	x.byName.Add(d, ino)
	ds := x.byIno[ino]
	if len(ds) >= maxLinks {
		x.byName.Remove(ds[0]) // drops it from byIno too
		ds = x.byIno[ino]
	}
	x.byIno[ino] = append(ds, d)
}

// Remove forgets a name that was removed.
func (x *Index) Remove(parent uint64, name string) {
	if x == nil {
		return
	}
	x.gen.Add(1)
	x.mu.Lock()
	x.byName.Remove(Dentry{parent, name})
	x.mu.Unlock()
}

// Renamed moves a name; with exchange (RENAME_EXCHANGE) the two names swap
// inodes.
func (x *Index) Renamed(parent uint64, name string, newParent uint64, newName string, exchange bool) {
	if x == nil {
		return
	}
	x.gen.Add(1)
	from, to := Dentry{parent, name}, Dentry{newParent, newName}
	x.mu.Lock()
	src, srcOK := x.byName.Peek(from)
	dst, dstOK := x.byName.Peek(to)
	x.byName.Remove(from)
	x.byName.Remove(to)
	x.mu.Unlock()
	if srcOK {
		x.Add(newParent, newName, src)
	}
	if exchange && dstOK {
		x.Add(parent, name, dst)
	}
}

// Ino returns the inode a name was last seen to mean.
func (x *Index) Ino(parent uint64, name string) (uint64, bool) {
	if x == nil {
		return 0, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.byName.Peek(Dentry{parent, name})
}

// Name returns the name ino was last seen under.
func (x *Index) Name(ino uint64) (Dentry, bool) {
	if x == nil {
		return Dentry{}, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	ds := x.byIno[ino]
	if len(ds) == 0 {
		return Dentry{}, false
	}
	return ds[len(ds)-1], true
}

// Names returns every name ino is remembered under, newest last.
func (x *Index) Names(ino uint64) []Dentry {
	if x == nil {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]Dentry(nil), x.byIno[ino]...)
}

// Forget drops a name whose check against the metadata engine failed.
func (x *Index) Forget(d Dentry, ino uint64) {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if cur, ok := x.byName.Peek(d); ok && cur == ino {
		x.byName.Remove(d)
	}
}

// Len is the number of names held.
func (x *Index) Len() int {
	if x == nil {
		return 0
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.byName.Len()
}

// Gen is the namespace generation: it changes whenever a name is removed or
// renamed through this mount.
func (x *Index) Gen() uint64 {
	if x == nil {
		return 0
	}
	return x.gen.Load()
}
