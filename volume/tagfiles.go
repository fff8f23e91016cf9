package volume

import (
	"context"
	"errors"
	"fmt"
	"path"
	"syscall"

	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/names"
	"github.com/disgrafs/disgrafs/tagging"
)

// TagFiles gives the tagging service access to the volume's files, as root:
// callers are checked before (by the kernel or by the tags layer). idx (may
// be nil) is the mount's name index: it names files with one lookup to check
// instead of JuiceFS's GetPaths, which reads the whole parent directory (in a
// directory of 1,000 files every setxattr of a tag cost a thousand rows).
func (v *Volume) TagFiles(idx *names.Index) TagFiles { return volumeFiles{v.VFS, idx} }

// TagFiles is what the tagging service and the auto-tagger read of files.
type TagFiles interface {
	tagging.Files
	tagging.Content
	tagging.Walker
	tagging.Parents
}

type volumeFiles struct {
	v   *vfs.VFS
	idx *names.Index
}

func (f volumeFiles) GetXattr(ctx context.Context, ino uint64, name string) ([]byte, error) {
	v, err := f.v.GetXattr(RootContext(ctx), meta.Ino(ino), name, graph.MaxTagListBytes)
	if err == syscall.ENODATA {
		return nil, nil
	}
	if err != 0 {
		return nil, err
	}
	return v, nil
}

func (f volumeFiles) SetXattr(ctx context.Context, ino uint64, name string, value []byte) error {
	if err := f.v.SetXattr(RootContext(ctx), meta.Ino(ino), name, value, 0); err != 0 {
		return err
	}
	return nil
}

func (f volumeFiles) RemoveXattr(ctx context.Context, ino uint64, name string) error {
	if err := f.v.RemoveXattr(RootContext(ctx), meta.Ino(ino), name); err != 0 && err != syscall.ENODATA {
		return err
	}
	return nil
}

func (f volumeFiles) Name(ctx context.Context, ino uint64) (string, error) {
	if d, ok := f.idx.Name(ino); ok {
		var found meta.Ino
		var attr meta.Attr // JuiceFS's Lookup refuses a nil attribute
		if f.v.Meta.Lookup(RootContext(ctx), meta.Ino(d.Parent), d.Name, &found, &attr, false) == 0 && uint64(found) == ino {
			return d.Name, nil
		}
		f.idx.Forget(d, ino)
	}
	paths := f.v.Meta.GetPaths(RootContext(ctx), meta.Ino(ino))
	if len(paths) == 0 {
		return "", errors.New("no path")
	}
	return path.Base(paths[0]), nil
}

func (f volumeFiles) Head(ctx context.Context, ino uint64, n int) ([]byte, error) {
	lctx := RootContext(ctx)
	_, fh, err := f.v.Open(lctx, meta.Ino(ino), syscall.O_RDONLY)
	if err != 0 {
		return nil, err
	}
	defer f.v.Release(lctx, meta.Ino(ino), fh)
	buf := make([]byte, n)
	got := 0
	for got < n {
		m, err := f.v.Read(lctx, meta.Ino(ino), buf[got:], uint64(got), fh)
		if err != 0 {
			return nil, err
		}
		if m == 0 {
			break
		}
		got += m
	}
	return buf[:got], nil
}

func (f volumeFiles) Path(ctx context.Context, ino uint64) (string, error) {
	paths := f.v.Meta.GetPaths(RootContext(ctx), meta.Ino(ino))
	if len(paths) == 0 {
		return "", errors.New("no path")
	}
	return paths[0], nil
}

// Walk visits every regular file of the volume with its tags xattr, breadth
// first, as root.
func (f volumeFiles) Walk(ctx context.Context, fn func(ino uint64, name string, tags []byte) error) error {
	lctx := RootContext(ctx)
	queue := []meta.Ino{1}
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		dir := queue[0]
		queue = queue[1:]
		var entries []*meta.Entry
		if err := f.v.Meta.Readdir(lctx, dir, 1, &entries); err != 0 {
			if err == syscall.ENOENT {
				continue // removed while we walked
			}
			return fmt.Errorf("list directory inode %d: %w", dir, err)
		}
		for _, e := range entries {
			name := string(e.Name)
			if name == "." || name == ".." {
				continue
			}
			switch e.Attr.Typ {
			case meta.TypeDirectory:
				if dir == 1 && (name == ".trash" || name == ".jfs.trash") {
					continue
				}
				queue = append(queue, e.Inode)
			case meta.TypeFile:
				v, err := f.GetXattr(ctx, uint64(e.Inode), tagging.XattrName)
				if err != nil && !errors.Is(err, syscall.ENOENT) {
					return fmt.Errorf("read tags of %s: %w", name, err)
				}
				if err := fn(uint64(e.Inode), name, v); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Parent tells the tag index the directory holding ino (tagging.Parents), 0
// when it is unknown or the file is in the trash.
func (f volumeFiles) Parent(ctx context.Context, ino uint64) uint64 {
	var attr meta.Attr
	if f.v.Meta.GetAttr(RootContext(ctx), meta.Ino(ino), &attr) != 0 || attr.Parent.IsTrash() {
		return 0
	}
	return uint64(attr.Parent)
}
