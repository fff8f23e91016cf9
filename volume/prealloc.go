package volume

import (
	"context"
	"syscall"

	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"

	"github.com/disgrafs/disgrafs/prealloc"
)

// PreallocVolume is the pre-allocation manager's view of the volume: JuiceFS's
// VFS, acting as root.
func (v *Volume) PreallocVolume() prealloc.Volume { return preallocVolume{v.VFS} }

type preallocVolume struct{ V *vfs.VFS }

// Lookup implements prealloc.Volume.
func (w preallocVolume) Lookup(ctx context.Context, parent uint64, name string) (uint64, *meta.Attr, syscall.Errno) {
	e, st := w.V.Lookup(RootContext(ctx), meta.Ino(parent), name)
	if st != 0 {
		return 0, nil, st
	}
	return uint64(e.Inode), e.Attr, 0
}

// GetAttr implements prealloc.Volume.
func (w preallocVolume) GetAttr(ctx context.Context, ino uint64) (*meta.Attr, syscall.Errno) {
	e, st := w.V.GetAttr(RootContext(ctx), meta.Ino(ino), 0)
	if st != 0 {
		return nil, st
	}
	return e.Attr, 0
}

// Mkdir implements prealloc.Volume.
func (w preallocVolume) Mkdir(ctx context.Context, parent uint64, name string, mode uint32) (uint64, syscall.Errno) {
	e, st := w.V.Mkdir(RootContext(ctx), meta.Ino(parent), name, uint16(mode), 0)
	if st != 0 {
		return 0, st
	}
	return uint64(e.Inode), 0
}

// CreateOpen implements prealloc.Volume.
func (w preallocVolume) CreateOpen(ctx context.Context, parent uint64, name string, mode uint32) (uint64, *meta.Attr, uint64, syscall.Errno) {
	e, fh, st := w.V.Create(RootContext(ctx), meta.Ino(parent), name, uint16(mode), 0, syscall.O_RDWR|syscall.O_EXCL)
	if st != 0 {
		return 0, nil, 0, st
	}
	return uint64(e.Inode), e.Attr, fh, 0
}

// Open implements prealloc.Volume.
func (w preallocVolume) Open(ctx context.Context, ino uint64) (*meta.Attr, uint64, syscall.Errno) {
	e, fh, st := w.V.Open(RootContext(ctx), meta.Ino(ino), syscall.O_RDWR)
	if st != 0 {
		return nil, 0, st
	}
	return e.Attr, fh, 0
}

// Release implements prealloc.Volume.
func (w preallocVolume) Release(ctx context.Context, ino, fh uint64) {
	w.V.Release(RootContext(ctx), meta.Ino(ino), fh)
}

// Rename implements prealloc.Volume.
func (w preallocVolume) Rename(ctx context.Context, parent uint64, name string, newParent uint64, newName string, flags uint32) syscall.Errno {
	return w.V.Rename(RootContext(ctx), meta.Ino(parent), name, meta.Ino(newParent), newName, flags)
}

// Unlink implements prealloc.Volume.
func (w preallocVolume) Unlink(ctx context.Context, parent uint64, name string) syscall.Errno {
	return w.V.Unlink(RootContext(ctx), meta.Ino(parent), name)
}

// SetOwner implements prealloc.Volume.
func (w preallocVolume) SetOwner(ctx context.Context, ino uint64, mode, uid, gid uint32) syscall.Errno {
	// Straight to the metadata engine: VFS.SetAttr with a time would also
	// poke the open writer's mtime, racing with its commit thread. A writer
	// still open commits its own (later) mtime.
	set := uint16(meta.SetAttrMode | meta.SetAttrUID | meta.SetAttrGID | meta.SetAttrAtimeNow | meta.SetAttrMtimeNow)
	attr := &meta.Attr{Mode: uint16(mode & 0o7777), Uid: uid, Gid: gid}
	return w.V.Meta.SetAttr(RootContext(ctx), meta.Ino(ino), set, 0, attr)
}

// ReadDir implements prealloc.Volume.
func (w preallocVolume) ReadDir(ctx context.Context, dir uint64) ([]prealloc.DirEntry, syscall.Errno) {
	var entries []*meta.Entry
	if st := w.V.Meta.Readdir(RootContext(ctx), meta.Ino(dir), 1, &entries); st != 0 {
		return nil, st
	}
	out := make([]prealloc.DirEntry, 0, len(entries))
	for _, e := range entries {
		n := string(e.Name)
		if n == "." || n == ".." {
			continue
		}
		out = append(out, prealloc.DirEntry{Name: n, Ino: uint64(e.Inode), Length: e.Attr.Length, IsDir: e.Attr.Typ == meta.TypeDirectory})
	}
	return out, 0
}
