// Package fusefs serves a JuiceFS volume to the kernel over FUSE. It speaks
// go-fuse's raw protocol API because JuiceFS's VFS is itself inode based: every
// kernel node id is a JuiceFS inode number, so there is no second inode table to
// keep in step and one request costs one VFS call.
package fusefs

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"

	"github.com/disgrafs/disgrafs/names"
	"github.com/disgrafs/disgrafs/prealloc"
	"github.com/disgrafs/disgrafs/tagging"
)

// Options tune how long the kernel may cache what we tell it.
type Options struct {
	AttrTimeout     time.Duration
	EntryTimeout    time.Duration
	DirEntryTimeout time.Duration
	// NegEntryTimeout caches "no such file" answers; zero keeps them uncached,
	// which is the safe choice when other nodes create files.
	NegEntryTimeout time.Duration
	// OpenCheckWindow lets an open use the attributes a LOOKUP by the same
	// thread read from the metadata engine at most this long before, instead
	// of reading them again (see openvalid.go); zero reads them at every open.
	OpenCheckWindow time.Duration
	// Tags enables the virtual tag tree (.tags, .query) and index upkeep.
	Tags TagOptions
	// Cache serves cached files without the daemon on the read path (nil:
	// every read goes through JuiceFS).
	Cache *CacheOptions
	// Log receives the file system's warnings.
	Log *slog.Logger
	// Written is called (in the background) with the inode of a regular file
	// after a handle that wrote to it is released: the auto-tagger's trigger.
	Written func(ino uint64)
	// Prealloc answers creates in enabled directories from a pool (nil: off).
	Prealloc *prealloc.Manager
	// Names learns the name of every inode seen (nil: off).
	Names *names.Index
}

// DefaultOptions are JuiceFS's defaults: one second for attributes and entries.
func DefaultOptions() Options {
	return Options{AttrTimeout: time.Second, EntryTimeout: time.Second, DirEntryTimeout: time.Second}
}

// FS is the FUSE file system of one mount.
type FS struct {
	fuse.RawFileSystem
	v      *vfs.VFS
	opts   Options
	server *fuse.Server
	ops    opCounters
	tags   *tagTree    // nil when tags are off
	cache  *cacheState // nil when the whole-file cache is off
	// lookups remembers what recent lookups read, for the opens of the same
	// path walks (nil when OpenCheckWindow is zero).
	lookups          *lookupMemo
	opensAfterLookup atomic.Uint64 // opens that used their lookup's attributes

	preDirs sync.Map // pre-allocation directory inode -> *cachedDirAttr
	async   sync.Map // handle -> *asyncHandle (async close)

	wmu     sync.Mutex
	written map[uint64]struct{} // handles that wrote

}

// New returns the file system for an open JuiceFS VFS.
func New(v *vfs.VFS, opts Options) *FS {
	fs := &FS{RawFileSystem: fuse.NewDefaultRawFileSystem(), v: v, opts: opts, written: map[uint64]struct{}{}}
	if opts.Log == nil {
		opts.Log = slog.Default()
		fs.opts.Log = opts.Log
	}
	if opts.Tags.Service != nil {
		fs.tags = newTagTree(opts.Tags)
	}
	if opts.Cache != nil && opts.Cache.Cache != nil {
		fs.cache = newCacheState(*opts.Cache)
	}
	fs.lookups = newLookupMemo(opts.OpenCheckWindow)
	return fs
}

// String names the file system for go-fuse's debug output.
func (fs *FS) String() string { return "disgrafs" }

// Init receives the server so that we can send cache invalidations.
func (fs *FS) Init(s *fuse.Server) {
	fs.server = s
	fs.v.InvalidateEntry = func(parent meta.Ino, name string) syscall.Errno {
		return syscall.Errno(s.EntryNotify(uint64(parent), name))
	}
	if fs.opts.Prealloc != nil {
		fs.opts.Prealloc.SetInvalidate(func(parent uint64, name string) { s.EntryNotify(parent, name) })
	}
}

// Idle reports whether no request has arrived for d: background work (the
// auto-tagger) waits for that so it never competes with foreground I/O.
func (fs *FS) Idle(d time.Duration) bool {
	return fs.ops.idleFor() >= d
}


// OpCounts returns how many requests of each kind the mount has served.
func (fs *FS) OpCounts() map[string]uint64 { return fs.ops.snapshot() }

func st(err syscall.Errno) fuse.Status { return fuse.Status(err) }

// replyAttr fills out from entry. A file written through this mount during the
// request gets fresh attributes and the length its open writers know about.
func (fs *FS) replyAttr(ctx *reqContext, e *meta.Entry, out *fuse.Attr) time.Duration {
	timeout := fs.opts.AttrTimeout
	if vfs.IsSpecialNode(e.Inode) {
		timeout = time.Hour
	} else if e.Attr.Typ == meta.TypeFile && fs.v.ModifiedSince(e.Inode, ctx.start) {
		var a meta.Attr
		if fs.v.Meta.GetAttr(ctx, e.Inode, &a) == 0 {
			*e.Attr = a
		}
	}
	fs.preOverlay(e)
	fs.v.UpdateLength(e.Inode, e.Attr)
	attrToFuse(e.Inode, e.Attr, out)
	if ttl := fs.cacheTTL(e); ttl > timeout {
		timeout = ttl
	}
	return timeout
}

func (fs *FS) replyEntry(ctx *reqContext, e *meta.Entry, out *fuse.EntryOut) fuse.Status {
	out.NodeId = uint64(e.Inode)
	out.Generation = 1
	if e.Attr.Typ == meta.TypeDirectory {
		out.SetEntryTimeout(max(fs.opts.DirEntryTimeout, fs.cacheTTL(e)))
	} else {
		out.SetEntryTimeout(max(fs.opts.EntryTimeout, fs.cacheTTL(e)))
	}
	out.SetAttrTimeout(fs.replyAttr(ctx, e, &out.Attr))
	return fuse.OK
}

func attrToFuse(ino meta.Ino, a *meta.Attr, out *fuse.Attr) {
	out.Ino = uint64(ino)
	out.Uid = a.Uid
	out.Gid = a.Gid
	out.Mode = a.SMode()
	out.Nlink = a.Nlink
	out.Atime, out.Atimensec = uint64(a.Atime), a.Atimensec
	out.Mtime, out.Mtimensec = uint64(a.Mtime), a.Mtimensec
	out.Ctime, out.Ctimensec = uint64(a.Ctime), a.Ctimensec
	out.Size, out.Blocks, out.Rdev = 0, 0, 0
	switch a.Typ {
	case meta.TypeDirectory, meta.TypeSymlink, meta.TypeFile:
		out.Size = a.Length
		out.Blocks = (a.Length + 511) / 512
	case meta.TypeBlockDev, meta.TypeCharDev:
		out.Rdev = a.Rdev
	}
	out.Blksize = 1 << 16
}

// Lookup resolves a name in a directory.
func (fs *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	fs.ops.inc(OpLookup)
	ctx := newContext(cancel, h)
	if fs.tags != nil {
		if isVirtual(h.NodeId) {
			v := fs.tags.node(h.NodeId)
			if v == nil {
				return fuse.ENOENT
			}
			return fs.tags.lookup(v, name, func(ino uint64, out *fuse.EntryOut) fuse.Status {
				e, err := fs.v.GetAttr(ctx, meta.Ino(ino), 0)
				if err != 0 {
					return st(err)
				}
				fs.lookups.note(h.Pid, e.Inode, e.Attr)
				return fs.replyEntry(ctx, e, out)
			}, out)
		}
		if h.NodeId == 1 {
			if status, ok := fs.tags.rootLookup(name, out); ok {
				return status
			}
		}
	}
	if status, ok := fs.preLookup(ctx, h.NodeId, name, out); ok {
		return status
	}
	e, err := fs.v.Lookup(ctx, meta.Ino(h.NodeId), name)
	if err == 0 {
		fs.lookups.note(h.Pid, e.Inode, e.Attr)
	}
	if err == 0 && fs.tags != nil {
		fs.tags.rememberDentry(h.NodeId, name, uint64(e.Inode))
		fs.opts.Names.Add(h.NodeId, name, uint64(e.Inode))
	}
	if err != 0 {
		if err == syscall.ENOENT && fs.opts.NegEntryTimeout > 0 {
			out.NodeId = 0
			out.SetEntryTimeout(fs.opts.NegEntryTimeout)
			return fuse.OK
		}
		return st(err)
	}
	return fs.replyEntry(ctx, e, out)
}

// Forget drops the kernel's references to a node; only virtual directories
// keep state per node.
func (fs *FS) Forget(nodeid, nlookup uint64) {
	if fs.tags != nil && isVirtual(nodeid) {
		fs.tags.forget(nodeid, nlookup)
	}
}

// GetAttr returns a node's attributes.
func (fs *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	fs.ops.inc(OpGetattr)
	if fs.tags != nil && isVirtual(in.NodeId) {
		if fs.tags.node(in.NodeId) == nil {
			return fuse.ENOENT
		}
		fs.tags.dirAttr(in.NodeId, &out.Attr)
		out.SetTimeout(listingTTL)
		return fuse.OK
	}
	ctx := newContext(cancel, &in.InHeader)
	if status, ok := fs.preGetAttr(ctx, in.NodeId, out); ok {
		return status
	}
	var opened uint8
	if in.Fh() != 0 {
		opened = 1
	}
	e, err := fs.v.GetAttr(ctx, meta.Ino(in.NodeId), opened)
	if err != 0 {
		return st(err)
	}
	out.SetTimeout(fs.replyAttr(ctx, e, &out.Attr))
	return fuse.OK
}

// SetAttr changes mode, owner, size or times.
func (fs *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	fs.ops.inc(OpSetattr)
	if isVirtual(in.NodeId) {
		return fuse.EPERM
	}
	ctx := newContext(cancel, &in.InHeader)
	if err := fs.preSettleOwner(ctx, in.NodeId); err != 0 {
		return st(err)
	}
	e, err := fs.v.SetAttr(ctx, meta.Ino(in.NodeId), int(in.Valid), in.Fh, in.Mode, in.Uid, in.Gid,
		int64(in.Atime), int64(in.Mtime), in.Atimensec, in.Mtimensec, in.Size)
	if err != 0 {
		return st(err)
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		fs.invalidate(in.NodeId)
		if in.Valid&fuse.FATTR_FH != 0 {
			fs.asyncTruncated(in.Fh, in.Size)
		}
	}
	out.SetTimeout(fs.replyAttr(ctx, e, &out.Attr))
	return fuse.OK
}

// Mknod creates a special file, FIFO or socket.
func (fs *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	fs.ops.inc(OpMknod)
	if status, stop := fs.refuseVirtual(in.NodeId, name); stop {
		return status
	}
	ctx := newContext(cancel, &in.InHeader)
	if _, _, err := fs.preSettle(ctx, in.NodeId, name); err != 0 {
		return st(err)
	}
	e, err := fs.v.Mknod(ctx, meta.Ino(in.NodeId), name, uint16(in.Mode), uint16(in.Umask), in.Rdev)
	if err != 0 {
		return st(err)
	}
	return fs.replyEntry(ctx, e, out)
}

// Mkdir creates a directory.
func (fs *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	fs.ops.inc(OpMkdir)
	if fs.tags != nil && isVirtual(in.NodeId) {
		if v := fs.tags.node(in.NodeId); v != nil {
			return fs.tags.mkdir(v, name, out)
		}
		return fuse.ENOENT
	}
	if status, stop := fs.refuseVirtual(in.NodeId, name); stop {
		return status
	}
	ctx := newContext(cancel, &in.InHeader)
	if _, _, err := fs.preSettle(ctx, in.NodeId, name); err != 0 {
		return st(err)
	}
	e, err := fs.v.Mkdir(ctx, meta.Ino(in.NodeId), name, uint16(in.Mode), uint16(in.Umask))
	if err != 0 {
		return st(err)
	}
	return fs.replyEntry(ctx, e, out)
}

// Unlink removes a name.
func (fs *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	fs.ops.inc(OpUnlink)
	if fs.tags != nil && isVirtual(h.NodeId) {
		return fs.untag(h, name)
	}
	if status, stop := fs.refuseVirtual(h.NodeId, name); stop {
		return status
	}
	ctx := newContext(cancel, h)
	parent, name, perr := fs.preSettle(ctx, h.NodeId, name)
	if perr != 0 {
		return st(perr)
	}
	victim := fs.inodeOf(ctx, parent, name)
	err := fs.v.Unlink(ctx, meta.Ino(parent), name)
	if err == 0 {
		fs.opts.Names.Remove(parent, name)
		fs.afterRemove(ctx, parent, name, victim)
	}
	return st(err)
}

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	fs.ops.inc(OpRmdir)
	if fs.tags != nil && isVirtual(h.NodeId) {
		if v := fs.tags.node(h.NodeId); v != nil {
			return fs.tags.rmdir(v, name)
		}
		return fuse.ENOENT
	}
	if status, stop := fs.refuseVirtual(h.NodeId, name); stop {
		return status
	}
	ctx := newContext(cancel, h)
	if err := fs.preWaitChild(ctx, h.NodeId, name); err != 0 {
		return st(err)
	}
	err := fs.v.Rmdir(ctx, meta.Ino(h.NodeId), name)
	if err == 0 {
		fs.opts.Names.Remove(h.NodeId, name)
	}
	return st(err)
}

// Rename moves a name, honouring RENAME_NOREPLACE and RENAME_EXCHANGE.
func (fs *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	fs.ops.inc(OpRename)
	if fs.tags != nil && (isVirtual(in.NodeId) || isVirtual(in.Newdir)) {
		return fs.retag(in, oldName, newName)
	}
	if s1, stop := fs.refuseVirtual(in.NodeId, oldName); stop {
		return s1
	}
	if s2, stop := fs.refuseVirtual(in.Newdir, newName); stop {
		return s2
	}
	ctx := newContext(cancel, &in.InHeader)
	if s, ok := fs.preRename(ctx, in, oldName, newName); ok {
		return s
	}
	src := fs.inodeOf(ctx, in.NodeId, oldName)
	dst := fs.inodeOf(ctx, in.Newdir, newName)
	err := fs.v.Rename(ctx, meta.Ino(in.NodeId), oldName, meta.Ino(in.Newdir), newName, in.Flags)
	if err == 0 {
		fs.opts.Names.Renamed(in.NodeId, oldName, in.Newdir, newName, in.Flags&unixRenameExchange != 0)
		fs.afterRename(ctx, in, oldName, newName, src, dst)
	}
	return st(err)
}

// Link makes a hard link.
func (fs *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	fs.ops.inc(OpLink)
	ctx := newContext(cancel, &in.InHeader)
	if fs.tags != nil && isVirtual(in.NodeId) {
		return fs.tagByLink(ctx, in, name, out)
	}
	if status, stop := fs.refuseVirtual(in.NodeId, name); stop {
		return status
	}
	if _, _, err := fs.preSettle(ctx, in.NodeId, name); err != 0 {
		return st(err)
	}
	if err := fs.preWaitIno(ctx, in.Oldnodeid); err != 0 {
		return st(err)
	}
	e, err := fs.v.Link(ctx, meta.Ino(in.Oldnodeid), meta.Ino(in.NodeId), name)
	if err != 0 {
		return st(err)
	}
	fs.opts.Names.Add(in.NodeId, name, uint64(e.Inode))
	return fs.replyEntry(ctx, e, out)
}

// Symlink makes a symbolic link.
func (fs *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	fs.ops.inc(OpSymlink)
	if status, stop := fs.refuseVirtual(h.NodeId, name); stop {
		return status
	}
	ctx := newContext(cancel, h)
	if _, _, err := fs.preSettle(ctx, h.NodeId, name); err != 0 {
		return st(err)
	}
	e, err := fs.v.Symlink(ctx, target, meta.Ino(h.NodeId), name)
	if err != 0 {
		return st(err)
	}
	return fs.replyEntry(ctx, e, out)
}

// Readlink reads a symbolic link.
func (fs *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	fs.ops.inc(OpReadlink)
	p, err := fs.v.Readlink(newContext(cancel, h), meta.Ino(h.NodeId))
	return p, st(err)
}

// Access checks permissions (only used without default_permissions).
func (fs *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	fs.ops.inc(OpAccess)
	if isVirtual(in.NodeId) {
		return fuse.OK
	}
	return st(fs.v.Access(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), int(in.Mask)))
}

// GetXAttr reads an extended attribute.
func (fs *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	fs.ops.inc(OpGetxattr)
	if isVirtual(h.NodeId) {
		return 0, fuse.ENODATA
	}
	val, err := fs.v.GetXattr(newContext(cancel, h), meta.Ino(h.NodeId), attr, uint32(len(dest)))
	if err != 0 {
		return uint32(len(val)), st(err)
	}
	copy(dest, val)
	return uint32(len(val)), fuse.OK
}

// ListXAttr lists extended attribute names.
func (fs *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	fs.ops.inc(OpListxattr)
	if isVirtual(h.NodeId) {
		return 0, fuse.OK
	}
	data, err := fs.v.ListXattr(newContext(cancel, h), meta.Ino(h.NodeId), len(dest))
	if err != 0 {
		return uint32(len(data)), st(err)
	}
	copy(dest, data)
	return uint32(len(data)), fuse.OK
}

// SetXAttr writes an extended attribute.
func (fs *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	fs.ops.inc(OpSetxattr)
	if isVirtual(in.NodeId) {
		return fuse.EPERM
	}
	if fs.tags != nil && attr == tagging.XattrName {
		return fs.setTagsXattr(newContext(cancel, &in.InHeader), in, data)
	}
	return st(fs.v.SetXattr(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), attr, data, in.Flags))
}

// RemoveXAttr removes an extended attribute.
func (fs *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	fs.ops.inc(OpRemovexattr)
	if isVirtual(h.NodeId) {
		return fuse.EPERM
	}
	err := fs.v.RemoveXattr(newContext(cancel, h), meta.Ino(h.NodeId), attr)
	if err == 0 && fs.tags != nil && attr == tagging.XattrName {
		fs.tags.svc.Indexed(context.Background(), h.NodeId, nil)
		fs.tags.changed()
	}
	return st(err)
}

// Create creates and opens a file.
func (fs *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	fs.ops.inc(OpCreate)
	if status, stop := fs.refuseVirtual(in.NodeId, name); stop {
		return status
	}
	ctx := newContext(cancel, &in.InHeader)
	if status, ok := fs.preCreate(ctx, in, name, out); ok {
		return status
	}
	e, fh, err := fs.v.Create(ctx, meta.Ino(in.NodeId), name, uint16(in.Mode), uint16(in.Umask), in.Flags)
	if err != 0 {
		return st(err)
	}
	out.Fh = fh
	fs.markWritten(fh)
	fs.trackAsync(fh, uint64(e.Inode), in.NodeId, name, e.Attr.Length)
	fs.opts.Names.Add(in.NodeId, name, uint64(e.Inode))
	if fs.cache != nil {
		fs.trackCreated(uint64(e.Inode), fh)
	}
	return fs.replyEntry(ctx, e, &out.EntryOut)
}

// Open opens a file. Unless JuiceFS vouches that the file did not change since
// the kernel cached its pages, the page cache is dropped (close-to-open
// consistency across nodes).
func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	fs.ops.inc(OpOpen)
	if isVirtual(in.NodeId) {
		return fuse.Status(syscall.EISDIR)
	}
	ctx := newContext(cancel, &in.InHeader)
	if errno := fs.asyncWaitOpen(ctx, in.NodeId); errno != 0 {
		return st(errno)
	}
	if a, ok := fs.lookups.take(in.Pid, meta.Ino(in.NodeId)); ok {
		ctx.validated, ctx.validatedIno = &a, meta.Ino(in.NodeId)
		fs.opensAfterLookup.Add(1)
	}
	e, fh, err := fs.v.Open(ctx, meta.Ino(in.NodeId), in.Flags)
	if err != 0 {
		return st(err)
	}
	out.Fh = fh
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		fs.markWritten(fh)
	}
	if fs.cache != nil && e.Attr.Typ == meta.TypeFile && !vfs.IsSpecialNode(meta.Ino(in.NodeId)) {
		if errno := fs.openCached(ctx, in, e, fh, out); errno != 0 {
			fs.v.Release(ctx, meta.Ino(in.NodeId), fh)
			fs.takeWritten(fh)
			return st(errno)
		}
		return fuse.OK
	}
	switch {
	case vfs.IsSpecialNode(meta.Ino(in.NodeId)):
		out.OpenFlags |= fuse.FOPEN_DIRECT_IO
	case e.Attr.KeepCache:
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	default:
		if fs.server != nil {
			fs.server.InodeNotify(in.NodeId, -1, 0)
		}
	}
	return fuse.OK
}

// Read reads from an open file.
func (fs *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	fs.ops.inc(OpRead)
	if fs.cache != nil {
		if r, ok := fs.readCached(in.Fh, buf, in.Offset); ok {
			return r, fuse.OK
		}
		fs.cache.inflight.Add(1)
		defer fs.cache.inflight.Add(-1)
	}
	n, err := fs.v.Read(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), buf, in.Offset, in.Fh)
	if err != 0 {
		return nil, st(err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// Write writes to an open file.
func (fs *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	fs.ops.inc(OpWrite)
	err := fs.v.Write(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), data, in.Offset, in.Fh)
	if err != 0 {
		return 0, st(err)
	}
	fs.asyncWrote(in.Fh, in.Offset+uint64(len(data)))
	return uint32(len(data)), fuse.OK
}

// Flush commits a file's buffered writes when a descriptor is closed.
func (fs *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	fs.ops.inc(OpFlush)
	ctx := newContext(cancel, &in.InHeader)
	if fs.asyncFlush(ctx, in.Fh) {
		return fuse.OK
	}
	return st(fs.v.Flush(ctx, meta.Ino(in.NodeId), in.Fh, in.LockOwner))
}

// Fsync persists a file's data and metadata.
func (fs *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	fs.ops.inc(OpFsync)
	ctx := newContext(cancel, &in.InHeader)
	if err := fs.v.Fsync(ctx, meta.Ino(in.NodeId), int(in.FsyncFlags), in.Fh); err != 0 {
		return st(err)
	}
	return st(fs.preWaitIno(ctx, in.NodeId))
}

// FsyncDir succeeds: JuiceFS commits every directory change to the metadata
// engine before answering it.
func (fs *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	fs.ops.inc(OpFsync)
	return st(fs.preWaitDir(newContext(cancel, &in.InHeader), in.NodeId))
}

// Release closes a file handle.
func (fs *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	fs.ops.inc(OpRelease)
	if fs.asyncRelease(in.NodeId, in.Fh) {
		return
	}
	fs.v.Release(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), in.Fh)
	if fs.cache != nil {
		fs.releaseCached(in.Fh)
	}
	if fs.takeWritten(in.Fh) && fs.opts.Written != nil {
		fs.opts.Written(in.NodeId)
	}
}

// Fallocate preallocates or punches a range.
func (fs *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	fs.ops.inc(OpFallocate)
	return st(fs.v.Fallocate(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), uint8(in.Mode), int64(in.Offset), int64(in.Length), in.Fh))
}

// CopyFileRange copies between files inside the volume without moving data
// through the kernel.
func (fs *FS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	fs.ops.inc(OpCopyFileRange)
	n := in.Len
	if n > math.MaxUint32 {
		// The reply carries 32 bits; stay a whole chunk below that.
		n = math.MaxUint32 + 1 - meta.ChunkSize
	}
	copied, err := fs.v.CopyFileRange(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), in.FhIn, in.OffIn,
		meta.Ino(in.NodeIdOut), in.FhOut, in.OffOut, n, uint32(in.Flags))
	if err != 0 {
		return 0, st(err)
	}
	return uint32(copied), fuse.OK
}

// GetLk tests for a POSIX lock.
func (fs *FS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	fs.ops.inc(OpLock)
	l := in.Lk
	err := fs.v.Getlk(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), in.Fh, in.Owner, &l.Start, &l.End, &l.Typ, &l.Pid)
	if err == 0 {
		out.Lk = l
	}
	return st(err)
}

// SetLk takes or releases a lock without waiting.
func (fs *FS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return fs.setLk(cancel, in, false)
}

// SetLkw takes a lock, waiting for it.
func (fs *FS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return fs.setLk(cancel, in, true)
}

func (fs *FS) setLk(cancel <-chan struct{}, in *fuse.LkIn, block bool) fuse.Status {
	fs.ops.inc(OpLock)
	ctx := newContext(cancel, &in.InHeader)
	fs.asyncLocked(in.Fh)
	if in.LkFlags&fuse.FUSE_LK_FLOCK != 0 {
		return st(fs.v.Flock(ctx, meta.Ino(in.NodeId), in.Fh, in.Owner, in.Lk.Typ, block))
	}
	l := in.Lk
	return st(fs.v.Setlk(ctx, meta.Ino(in.NodeId), in.Fh, in.Owner, l.Start, l.End, l.Typ, l.Pid, block))
}

// OpenDir opens a directory for listing.
func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	fs.ops.inc(OpOpendir)
	if fs.tags != nil && isVirtual(in.NodeId) {
		v := fs.tags.node(in.NodeId)
		if v == nil {
			return fuse.ENOENT
		}
		return fs.tags.openDir(v, out)
	}
	ctx := newContext(cancel, &in.InHeader)
	if err := fs.preWaitDir(ctx, in.NodeId); err != 0 {
		return st(err)
	}
	fh, err := fs.v.Opendir(ctx, meta.Ino(in.NodeId), in.Flags)
	out.Fh = fh
	return st(err)
}

// ReadDir lists a directory.
func (fs *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	fs.ops.inc(OpReaddir)
	if fs.tags != nil && isVirtual(in.NodeId) {
		return fs.tags.readDir(in, out, false)
	}
	ctx := newContext(cancel, &in.InHeader)
	entries, _, err := fs.v.Readdir(ctx, meta.Ino(in.NodeId), in.Size, int(in.Offset), in.Fh, false)
	for i, e := range entries {
		if !out.AddDirEntry(fuse.DirEntry{Ino: uint64(e.Inode), Name: string(e.Name), Mode: e.Attr.SMode()}) {
			fs.v.UpdateReaddirOffset(ctx, meta.Ino(in.NodeId), in.Fh, int(in.Offset)+i)
			break
		}
	}
	return st(err)
}

// ReadDirPlus lists a directory with the attributes of each entry, saving the
// kernel a lookup per name.
func (fs *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	fs.ops.inc(OpReaddir)
	if fs.tags != nil && isVirtual(in.NodeId) {
		return fs.tags.readDir(in, out, true)
	}
	ctx := newContext(cancel, &in.InHeader)
	entries, readAt, err := fs.v.Readdir(ctx, meta.Ino(in.NodeId), in.Size, int(in.Offset), in.Fh, true)
	if err != 0 {
		return st(err)
	}
	ctx.start = readAt
	for i, e := range entries {
		eo := out.AddDirLookupEntry(fuse.DirEntry{Ino: uint64(e.Inode), Name: string(e.Name), Mode: e.Attr.SMode()})
		if eo == nil {
			fs.v.UpdateReaddirOffset(ctx, meta.Ino(in.NodeId), in.Fh, int(in.Offset)+i)
			break
		}
		if e.Attr.Full {
			fs.replyEntry(ctx, e, eo)
			if fs.tags != nil {
				fs.tags.rememberDentry(in.NodeId, string(e.Name), uint64(e.Inode))
				fs.opts.Names.Add(in.NodeId, string(e.Name), uint64(e.Inode))
			}
		} else {
			eo.Ino = uint64(e.Inode)
			eo.Generation = 1
		}
	}
	return fuse.OK
}

// ReleaseDir closes a directory handle.
func (fs *FS) ReleaseDir(in *fuse.ReleaseIn) {
	fs.ops.inc(OpReleasedir)
	if fs.tags != nil && isVirtual(in.NodeId) {
		fs.tags.releaseDir(in.Fh)
		return
	}
	fs.v.Releasedir(newContext(nil, &in.InHeader), meta.Ino(in.NodeId), in.Fh)
}

// StatFs reports the volume's capacity and inode counts.
func (fs *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	fs.ops.inc(OpStatfs)
	ino := h.NodeId
	if isVirtual(ino) {
		ino = 1
	}
	s, err := fs.v.StatFS(newContext(cancel, h), meta.Ino(ino))
	if err != 0 {
		return st(err)
	}
	out.NameLen = 255
	out.Frsize = 4096
	out.Bsize = 4096
	out.Blocks = max(s.Total/4096, 1)
	out.Bavail = s.Avail / 4096
	out.Bfree = out.Bavail
	out.Files = s.Files
	out.Ffree = s.Favail
	return fuse.OK
}
