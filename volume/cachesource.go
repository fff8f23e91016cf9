package volume

import (
	"context"
	"fmt"
	"io"
	"syscall"

	"github.com/disgrafs/disgrafs/cache"
	"github.com/juicedata/juicefs/pkg/chunk"
	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"
)

// FileVersion is the cache version of a file's attributes.
func FileVersion(a *meta.Attr) cache.Version {
	return cache.Version{
		Length: a.Length,
		Mtime:  a.Mtime*1e9 + int64(a.Mtimensec),
		Ctime:  a.Ctime*1e9 + int64(a.Ctimensec),
	}
}

// cacheSource reads files for the whole-file cache through JuiceFS, as root.
type cacheSource struct {
	v     *vfs.VFS
	store chunk.ChunkStore
}

// CacheSource returns the cache's view of the volume: versions from the
// metadata engine, contents through JuiceFS's VFS, and dropping a cached
// file's blocks from JuiceFS's block cache (when there is one) so its bytes
// are held once.
func (v *Volume) CacheSource() cache.Source {
	return &cacheSource{v: v.VFS, store: v.Store}
}

func (s *cacheSource) Stat(ctx context.Context, ino uint64) (cache.Version, error) {
	var a meta.Attr
	if err := s.v.Meta.GetAttr(RootContext(ctx), meta.Ino(ino), &a); err != 0 {
		return cache.Version{}, fmt.Errorf("stat inode %d: %w", ino, err)
	}
	if a.Typ != meta.TypeFile {
		return cache.Version{}, fmt.Errorf("inode %d is not a regular file", ino)
	}
	return FileVersion(&a), nil
}

func (s *cacheSource) Open(ctx context.Context, ino uint64) (cache.Reader, cache.Version, error) {
	lctx := RootContext(ctx)
	e, fh, err := s.v.Open(lctx, meta.Ino(ino), syscall.O_RDONLY)
	if err != 0 {
		return nil, cache.Version{}, fmt.Errorf("open inode %d: %w", ino, err)
	}
	if e.Attr.Typ != meta.TypeFile {
		s.v.Release(lctx, meta.Ino(ino), fh)
		return nil, cache.Version{}, fmt.Errorf("inode %d is not a regular file", ino)
	}
	return &vfsReader{v: s.v, ctx: lctx, ino: meta.Ino(ino), fh: fh, size: e.Attr.Length}, FileVersion(e.Attr), nil
}

// Cached drops the file's blocks from JuiceFS's block cache. The cache calls
// it while the handle that filled the copy is still open, so the metadata
// engine answers the file's slice lists from that open file's memory: no
// round trip.
func (s *cacheSource) Cached(ctx context.Context, ino uint64, length uint64) {
	if s.store == nil {
		return
	}
	mctx := RootContext(ctx)
	for indx := uint32(0); uint64(indx)*meta.ChunkSize < length; indx++ {
		var slices []meta.Slice
		if s.v.Meta.Read(mctx, meta.Ino(ino), indx, &slices) != 0 {
			return
		}
		for _, sl := range slices {
			if sl.Id > 0 {
				_ = s.store.EvictCache(sl.Id, sl.Size)
			}
		}
	}
}

type vfsReader struct {
	v    *vfs.VFS
	ctx  vfs.LogContext
	ino  meta.Ino
	fh   uint64
	size uint64
}

func (r *vfsReader) ReadAt(p []byte, off int64) (int, error) {
	got := 0
	for got < len(p) {
		n, err := r.v.Read(r.ctx, r.ino, p[got:], uint64(off)+uint64(got), r.fh)
		if err != 0 {
			return got, fmt.Errorf("read inode %d: %w", r.ino, err)
		}
		if n == 0 {
			return got, io.EOF
		}
		got += n
	}
	return got, nil
}

func (r *vfsReader) Close() error {
	r.v.Release(r.ctx, r.ino, r.fh)
	return nil
}
