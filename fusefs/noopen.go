package fusefs

// Locks in this file: noOpenLayer.mu is taken alone; an inode's
// noOpenFile.mu is held across the open of its handle below (only reads of
// that inode wait for it), never with noOpenLayer.mu.

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// noOpenLayer serves a read-only mount of a volume nothing else can change
// without OPEN, RELEASE or FLUSH requests. It answers the first OPEN and the
// first FLUSH with ENOSYS: the kernel then stops sending them for the rest of
// the connection (fc->no_open, fc->no_flush), opens files on its own with
// FOPEN_KEEP_CACHE, and sends READs with file handle 0. A warm file whose
// pages and attributes the kernel holds then costs no request at all.
//
// Reads are served by inode: the first read of an inode opens one read-only
// handle through the layers below (the cache layer decides, as for any
// open, whether it reads the local copy or JuiceFS), which serves every
// later read of that inode until the kernel forgets the inode.
//
// Without OPEN there is no FUSE passthrough (the backing file is handed
// over in the OPEN reply): large cached files are read through the page
// cache, the daemon reading the local copy once.
type noOpenLayer struct {
	fuse.RawFileSystem // the next layer

	mu    sync.Mutex
	files map[uint64]*noOpenFile // inode -> its handle below
}

type noOpenFile struct {
	mu sync.Mutex
	fh uint64 // the handle below; 0 until opened
}

func newNoOpenLayer(next fuse.RawFileSystem) *noOpenLayer {
	return &noOpenLayer{RawFileSystem: next, files: map[uint64]*noOpenFile{}}
}

// Open answers ENOSYS for regular files: from then on the kernel opens
// files without asking. Directories still get OPENDIR (a separate switch).
func (l *noOpenLayer) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&writeFlags != 0 {
		return fuse.Status(syscall.EROFS)
	}
	return fuse.ENOSYS
}

// Flush answers ENOSYS: nothing is written on this mount.
func (l *noOpenLayer) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

// Read serves a read by inode through the inode's handle below.
func (l *noOpenLayer) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if in.Fh != 0 {
		// Opened before the kernel learnt not to ask (cannot happen: the
		// first OPEN already answered ENOSYS), or a layer's own handle.
		return l.RawFileSystem.Read(cancel, in, buf)
	}
	fh, status := l.handle(cancel, &in.InHeader)
	if status != fuse.OK {
		return nil, status
	}
	r := *in
	r.Fh = fh
	return l.RawFileSystem.Read(cancel, &r, buf)
}

// handle returns the inode's handle below, opening it on first use.
func (l *noOpenLayer) handle(cancel <-chan struct{}, h *fuse.InHeader) (uint64, fuse.Status) {
	l.mu.Lock()
	f := l.files[h.NodeId]
	if f == nil {
		f = &noOpenFile{}
		l.files[h.NodeId] = f
	}
	l.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fh == 0 {
		var out fuse.OpenOut
		if status := l.RawFileSystem.Open(cancel, &fuse.OpenIn{InHeader: *h, Flags: syscall.O_RDONLY}, &out); status != fuse.OK {
			return 0, status // a later read tries again
		}
		f.fh = out.Fh
	}
	return f.fh, fuse.OK
}

// Forget releases the handle of an inode the kernel no longer knows. The
// kernel forgets an inode only once nothing uses it, so no read of it is in
// flight and none follows without a new LOOKUP: the handle cannot be opened
// again behind the release.
func (l *noOpenLayer) Forget(nodeid, nlookup uint64) {
	l.release(nodeid)
	l.RawFileSystem.Forget(nodeid, nlookup)
}

func (l *noOpenLayer) release(ino uint64) {
	l.mu.Lock()
	f := l.files[ino]
	delete(l.files, ino)
	l.mu.Unlock()
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fh != 0 {
		l.RawFileSystem.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: ino}, Fh: f.fh})
		f.fh = 0
	}
}

// Fsync answers ENOSYS: nothing is written on this mount, and the kernel
// then answers fsync itself.
func (l *noOpenLayer) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.ENOSYS
}

// Locks never arrive: the mount leaves them to the kernel
// (MountConfig.LocalLocks), which is exact on a volume no other node can
// reach; JuiceFS's locks would need a handle per open.
