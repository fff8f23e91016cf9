package fusefs

import (
	"context"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/juicedata/juicefs/pkg/meta"
)

// NameHints remembers the name each inode was last seen under through this
// mount (lookup, create, link, rename), so that the tag index can name a file
// without JuiceFS's GetPaths, which reads the whole parent directory: in a
// directory of 1,000 files that made every setxattr of a tag cost a thousand
// rows, and tagging 100,000 files took hours.
type NameHints struct{ c *lru.Cache[uint64, dentry] }

// NewNameHints keeps the names of the last n inodes seen.
func NewNameHints(n int) *NameHints {
	c, err := lru.New[uint64, dentry](n)
	if err != nil {
		panic(err) // only for n <= 0
	}
	return &NameHints{c: c}
}

func (h *NameHints) note(ino, parent uint64, name string) {
	if h != nil && ino != 0 {
		h.c.Add(ino, dentry{parent, name})
	}
}

// name returns the hinted name of ino if it still names ino (one lookup).
func (h *NameHints) name(ctx context.Context, m meta.Meta, ino uint64) (string, bool) {
	if h == nil {
		return "", false
	}
	d, ok := h.c.Get(ino)
	if !ok {
		return "", false
	}
	var found meta.Ino
	var attr meta.Attr
	if m.Lookup(rootContext(ctx), meta.Ino(d.parent), d.name, &found, &attr, false) != 0 || uint64(found) != ino {
		h.c.Remove(ino)
		return "", false
	}
	return d.name, true
}
