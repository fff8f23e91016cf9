package fusefs

import (
	"math"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"

	"github.com/disgrafs/disgrafs/names"
)

// attrPolicy is what a layer above the base says about the attributes of a
// reply: it may change what they show (pre-allocation shows a pending file's
// requested mode and owner) and returns the timeout it wants for them, 0 for
// no opinion. parent is the directory the entry was found in, 0 when the
// reply is not about a name. Every reply that carries attributes is made by
// the base layer, which alone holds JuiceFS's attributes; READDIRPLUS fills
// its entries into a list the layers above cannot walk on the way up, so the
// policies are applied here.
type attrPolicy interface {
	replyAttr(e *meta.Entry, parent uint64) time.Duration
}

// openVoucher is a layer above the base (the cache) that may vouch for a
// file's attributes at an open, so that JuiceFS need not read them from the
// metadata engine: it knows the file unchanged since an open that did.
type openVoucher interface {
	vouch(ino uint64, flags uint32) (meta.Attr, bool)
	// vouchEntry returns the file a name leads to and its attributes when
	// both are known current, so that a LOOKUP need not ask either.
	vouchEntry(parent uint64, name string) (uint64, meta.Attr, bool)
	// entryGen counts the name changes other nodes reported; addName
	// records a name a lookup read unless one was reported since gen (the
	// lookup may have read it before the change).
	entryGen() uint64
	addName(parent uint64, name string, ino, gen uint64)
	// leased: names and attributes other nodes change reach this mount
	// by invalidation, which a listing read earlier cannot see.
	leased() bool
}

// baseFS is the bottom of the stack: a thin translator from FUSE requests to
// JuiceFS's VFS, in the spirit of JuiceFS's own pkg/fuse. Every node id is a
// JuiceFS inode and every file handle a JuiceFS handle. It feeds the name
// index, owns the handle table's entries for the handles it opens, and
// remembers the attributes a LOOKUP read for the OPEN of the same path walk
// (openvalid.go).
type baseFS struct {
	fuse.RawFileSystem // ENOSYS for what JuiceFS does not do (tmpfile, statx, ioctl)
	v                  *vfs.VFS
	opts               Options
	names              *names.Index
	handles            *handleTable
	policies           []attrPolicy
	voucher            openVoucher // nil: none
	// filesAbove: a layer above (the cache) decides how the kernel may
	// keep the pages and attributes of opened regular files.
	filesAbove       bool
	lookups          *lookupMemo
	opensAfterLookup atomic.Uint64
	server           *fuse.Server
}

func newBase(v *vfs.VFS, opts Options, handles *handleTable) *baseFS {
	return &baseFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), v: v, opts: opts, names: opts.Names,
		handles: handles, lookups: newLookupMemo(opts.OpenCheckWindow)}
}

func (b *baseFS) String() string { return "disgrafs" }

// Init receives the server, to send the kernel invalidations.
func (b *baseFS) Init(s *fuse.Server) {
	b.server = s
	b.v.InvalidateEntry = func(parent meta.Ino, name string) syscall.Errno {
		return syscall.Errno(s.EntryNotify(uint64(parent), name))
	}
}

func st(err syscall.Errno) fuse.Status { return fuse.Status(err) }

// replyAttr fills out from e and returns the attribute timeout, and the
// longest timeout a policy asked for (which lengthens entry timeouts too). A
// file written through this mount during the request gets fresh attributes
// and the length its open writers know about.
func (b *baseFS) replyAttr(ctx *reqContext, e *meta.Entry, parent uint64, out *fuse.Attr) (attr, policy time.Duration) {
	timeout := b.opts.AttrTimeout
	if vfs.IsSpecialNode(e.Inode) {
		timeout = time.Hour
	} else if e.Attr.Typ == meta.TypeFile && b.v.ModifiedSince(e.Inode, ctx.start) {
		var a meta.Attr
		if b.v.Meta.GetAttr(ctx, e.Inode, &a) == 0 {
			*e.Attr = a
		}
	}
	b.v.UpdateLength(e.Inode, e.Attr)
	var ttl time.Duration
	for _, p := range b.policies {
		ttl = max(ttl, p.replyAttr(e, parent))
	}
	if ctx.listing {
		ttl = 0
	}
	attrToFuse(e.Inode, e.Attr, out)
	return max(timeout, ttl), ttl
}

func (b *baseFS) replyEntry(ctx *reqContext, e *meta.Entry, parent uint64, out *fuse.EntryOut) fuse.Status {
	out.NodeId = uint64(e.Inode)
	out.Generation = 1
	attrTimeout, policy := b.replyAttr(ctx, e, parent, &out.Attr)
	out.SetAttrTimeout(attrTimeout)
	entry := b.opts.EntryTimeout
	if e.Attr.Typ == meta.TypeDirectory {
		entry = b.opts.DirEntryTimeout
	}
	out.SetEntryTimeout(max(entry, policy))
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
func (b *baseFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	ctx := newContext(cancel, h)
	var gen uint64
	if b.voucher != nil {
		gen = b.voucher.entryGen()
		if ino, attr, ok := b.voucher.vouchEntry(h.NodeId, name); ok {
			// A name and a file known current: no metadata round trip
			// (after drop_caches, or once the kernel's entry expired).
			return b.replyEntry(ctx, &meta.Entry{Inode: meta.Ino(ino), Name: []byte(name), Attr: &attr}, h.NodeId, out)
		}
	}
	e, err := b.v.Lookup(ctx, meta.Ino(h.NodeId), name)
	if err != 0 {
		if err == syscall.ENOENT && b.opts.NegEntryTimeout > 0 {
			out.NodeId = 0
			out.SetEntryTimeout(b.opts.NegEntryTimeout)
			return fuse.OK
		}
		return st(err)
	}
	b.lookups.note(h.Pid, e.Inode, e.Attr)
	if b.voucher != nil {
		b.voucher.addName(h.NodeId, name, uint64(e.Inode), gen)
	} else {
		b.names.Add(h.NodeId, name, uint64(e.Inode))
	}
	return b.replyEntry(ctx, e, h.NodeId, out)
}

// GetAttr returns a node's attributes.
func (b *baseFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	var opened uint8
	if in.Fh() != 0 {
		opened = 1
	}
	e, err := b.v.GetAttr(ctx, meta.Ino(in.NodeId), opened)
	if err != 0 {
		return st(err)
	}
	timeout, _ := b.replyAttr(ctx, e, 0, &out.Attr)
	out.SetTimeout(timeout)
	return fuse.OK
}

// SetAttr changes mode, owner, size or times.
func (b *baseFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	e, err := b.v.SetAttr(ctx, meta.Ino(in.NodeId), int(in.Valid), in.Fh, in.Mode, in.Uid, in.Gid,
		int64(in.Atime), int64(in.Mtime), in.Atimensec, in.Mtimensec, in.Size)
	if err != 0 {
		return st(err)
	}
	timeout, _ := b.replyAttr(ctx, e, 0, &out.Attr)
	out.SetTimeout(timeout)
	return fuse.OK
}

// Mknod creates a special file, FIFO or socket.
func (b *baseFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	e, err := b.v.Mknod(ctx, meta.Ino(in.NodeId), name, uint16(in.Mode), uint16(in.Umask), in.Rdev)
	if err != 0 {
		return st(err)
	}
	b.names.Add(in.NodeId, name, uint64(e.Inode))
	return b.replyEntry(ctx, e, in.NodeId, out)
}

// Mkdir creates a directory.
func (b *baseFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	e, err := b.v.Mkdir(ctx, meta.Ino(in.NodeId), name, uint16(in.Mode), uint16(in.Umask))
	if err != 0 {
		return st(err)
	}
	b.names.Add(in.NodeId, name, uint64(e.Inode))
	return b.replyEntry(ctx, e, in.NodeId, out)
}

// Unlink removes a name.
func (b *baseFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	err := b.v.Unlink(newContext(cancel, h), meta.Ino(h.NodeId), name)
	if err == 0 {
		b.names.Remove(h.NodeId, name)
	}
	return st(err)
}

// Rmdir removes an empty directory.
func (b *baseFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	err := b.v.Rmdir(newContext(cancel, h), meta.Ino(h.NodeId), name)
	if err == 0 {
		b.names.Remove(h.NodeId, name)
	}
	return st(err)
}

// renameExchange is RENAME_EXCHANGE.
const renameExchange = 1 << 1

// Rename moves a name, honouring RENAME_NOREPLACE and RENAME_EXCHANGE.
func (b *baseFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	err := b.v.Rename(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), oldName, meta.Ino(in.Newdir), newName, in.Flags)
	if err == 0 {
		b.names.Renamed(in.NodeId, oldName, in.Newdir, newName, in.Flags&renameExchange != 0)
	}
	return st(err)
}

// Link makes a hard link.
func (b *baseFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	e, err := b.v.Link(ctx, meta.Ino(in.Oldnodeid), meta.Ino(in.NodeId), name)
	if err != 0 {
		return st(err)
	}
	b.names.Add(in.NodeId, name, uint64(e.Inode))
	return b.replyEntry(ctx, e, in.NodeId, out)
}

// Symlink makes a symbolic link.
func (b *baseFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	ctx := newContext(cancel, h)
	e, err := b.v.Symlink(ctx, target, meta.Ino(h.NodeId), name)
	if err != 0 {
		return st(err)
	}
	b.names.Add(h.NodeId, name, uint64(e.Inode))
	return b.replyEntry(ctx, e, h.NodeId, out)
}

// Readlink reads a symbolic link.
func (b *baseFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	p, err := b.v.Readlink(newContext(cancel, h), meta.Ino(h.NodeId))
	return p, st(err)
}

// Access checks permissions (only used without default_permissions).
func (b *baseFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	return st(b.v.Access(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), int(in.Mask)))
}

// GetXAttr reads an extended attribute.
func (b *baseFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	val, err := b.v.GetXattr(newContext(cancel, h), meta.Ino(h.NodeId), attr, uint32(len(dest)))
	if err != 0 {
		return uint32(len(val)), st(err)
	}
	copy(dest, val)
	return uint32(len(val)), fuse.OK
}

// ListXAttr lists extended attribute names.
func (b *baseFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	data, err := b.v.ListXattr(newContext(cancel, h), meta.Ino(h.NodeId), len(dest))
	if err != 0 {
		return uint32(len(data)), st(err)
	}
	copy(dest, data)
	return uint32(len(data)), fuse.OK
}

// SetXAttr writes an extended attribute.
func (b *baseFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return st(b.v.SetXattr(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), attr, data, in.Flags))
}

// RemoveXAttr removes an extended attribute.
func (b *baseFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return st(b.v.RemoveXattr(newContext(cancel, h), meta.Ino(h.NodeId), attr))
}

// Create creates and opens a file.
func (b *baseFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	e, fh, err := b.v.Create(ctx, meta.Ino(in.NodeId), name, uint16(in.Mode), uint16(in.Umask), in.Flags)
	if err != 0 {
		return st(err)
	}
	out.Fh = fh
	h := &handle{fh: fh, ino: uint64(e.Inode)}
	h.wrote.Store(true)
	b.handles.add(h)
	b.names.Add(in.NodeId, name, uint64(e.Inode))
	return b.replyEntry(ctx, e, in.NodeId, &out.EntryOut)
}

// Open opens a file. Unless JuiceFS vouches that the file did not change since
// the kernel cached its pages, the page cache is dropped (close-to-open
// consistency across nodes); with the cache layer on, it decides that for
// regular files from what the handle entry records of this open.
func (b *baseFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	validated, vouched := false, false
	if a, ok := b.lookups.take(in.Pid, meta.Ino(in.NodeId)); ok {
		ctx.validated, ctx.validatedIno = &a, meta.Ino(in.NodeId)
		b.opensAfterLookup.Add(1)
		validated = true
	} else if b.voucher != nil {
		if a, ok := b.voucher.vouch(in.NodeId, in.Flags); ok {
			ctx.validated, ctx.validatedIno = &a, meta.Ino(in.NodeId)
			vouched = true
		}
	}
	e, fh, err := b.v.Open(ctx, meta.Ino(in.NodeId), in.Flags)
	if err != 0 {
		return st(err)
	}
	out.Fh = fh
	h := &handle{fh: fh, ino: in.NodeId, attr: *e.Attr, validated: validated, vouched: vouched}
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		h.wrote.Store(true)
	}
	b.handles.add(h)
	switch {
	case vfs.IsSpecialNode(meta.Ino(in.NodeId)):
		out.OpenFlags |= fuse.FOPEN_DIRECT_IO
	case b.filesAbove && e.Attr.Typ == meta.TypeFile:
	case e.Attr.KeepCache:
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	case b.server != nil:
		// The kernel may hold older attributes: have it read them again, so
		// that it does not cut reads at a stale size.
		b.server.InodeNotify(in.NodeId, -1, 0)
	}
	return fuse.OK
}

// Read reads from an open file.
func (b *baseFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	n, err := b.v.Read(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), buf, in.Offset, in.Fh)
	if err != 0 {
		return nil, st(err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

// Write writes to an open file.
func (b *baseFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	err := b.v.Write(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), data, in.Offset, in.Fh)
	if err != 0 {
		return 0, st(err)
	}
	return uint32(len(data)), fuse.OK
}

// Flush commits a file's buffered writes when a descriptor is closed.
func (b *baseFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return st(b.v.Flush(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), in.Fh, in.LockOwner))
}

// Fsync persists a file's data and metadata.
func (b *baseFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return st(b.v.Fsync(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), int(in.FsyncFlags), in.Fh))
}

// FsyncDir succeeds: JuiceFS commits every directory change to the metadata
// engine before answering it.
func (b *baseFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status { return fuse.OK }

// Release closes a file handle. Its entry in the handle table goes first:
// once JuiceFS has released the handle, its number may be handed to a new
// open. The written hook (the auto-tagger) runs after the release, when the
// data is committed.
func (b *baseFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	h := b.handles.remove(in.Fh)
	b.v.Release(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), in.Fh)
	if h != nil && h.wrote.Load() && b.opts.Written != nil {
		b.opts.Written(in.NodeId)
	}
}

// Fallocate preallocates or punches a range.
func (b *baseFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return st(b.v.Fallocate(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), uint8(in.Mode), int64(in.Offset), int64(in.Length), in.Fh))
}

// CopyFileRange copies between files inside the volume without moving data
// through the kernel.
func (b *baseFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	n := in.Len
	if n > math.MaxUint32 {
		// The reply carries 32 bits; stay a whole chunk below that.
		n = math.MaxUint32 + 1 - meta.ChunkSize
	}
	copied, err := b.v.CopyFileRange(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), in.FhIn, in.OffIn,
		meta.Ino(in.NodeIdOut), in.FhOut, in.OffOut, n, uint32(in.Flags))
	if err != 0 {
		return 0, st(err)
	}
	return uint32(copied), fuse.OK
}

// GetLk tests for a POSIX lock.
func (b *baseFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	l := in.Lk
	err := b.v.Getlk(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), in.Fh, in.Owner, &l.Start, &l.End, &l.Typ, &l.Pid)
	if err == 0 {
		out.Lk = l
	}
	return st(err)
}

// SetLk takes or releases a lock without waiting.
func (b *baseFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return b.setLk(cancel, in, false)
}

// SetLkw takes a lock, waiting for it.
func (b *baseFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return b.setLk(cancel, in, true)
}

func (b *baseFS) setLk(cancel <-chan struct{}, in *fuse.LkIn, block bool) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	if in.LkFlags&fuse.FUSE_LK_FLOCK != 0 {
		return st(b.v.Flock(ctx, meta.Ino(in.NodeId), in.Fh, in.Owner, in.Lk.Typ, block))
	}
	l := in.Lk
	return st(b.v.Setlk(ctx, meta.Ino(in.NodeId), in.Fh, in.Owner, l.Start, l.End, l.Typ, l.Pid, block))
}

// OpenDir opens a directory for listing.
func (b *baseFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	fh, err := b.v.Opendir(newContext(cancel, &in.InHeader), meta.Ino(in.NodeId), in.Flags)
	out.Fh = fh
	return st(err)
}

// ReadDir lists a directory.
func (b *baseFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	entries, _, err := b.v.Readdir(ctx, meta.Ino(in.NodeId), in.Size, int(in.Offset), in.Fh, false)
	for i, e := range entries {
		if !out.AddDirEntry(fuse.DirEntry{Ino: uint64(e.Inode), Name: string(e.Name), Mode: e.Attr.SMode()}) {
			b.v.UpdateReaddirOffset(ctx, meta.Ino(in.NodeId), in.Fh, int(in.Offset)+i)
			break
		}
	}
	return st(err)
}

// ReadDirPlus lists a directory with the attributes of each entry, saving the
// kernel a lookup per name.
func (b *baseFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	ctx := newContext(cancel, &in.InHeader)
	entries, readAt, err := b.v.Readdir(ctx, meta.Ino(in.NodeId), in.Size, int(in.Offset), in.Fh, true)
	if err != 0 {
		return st(err)
	}
	ctx.start = readAt
	// Under a lease, a listing read before another node's change would put
	// the old names back after their invalidation: its entries get the
	// plain timeouts and stay out of the name index.
	leased := b.voucher != nil && b.voucher.leased()
	ctx.listing = leased
	for i, e := range entries {
		eo := out.AddDirLookupEntry(fuse.DirEntry{Ino: uint64(e.Inode), Name: string(e.Name), Mode: e.Attr.SMode()})
		if eo == nil {
			b.v.UpdateReaddirOffset(ctx, meta.Ino(in.NodeId), in.Fh, int(in.Offset)+i)
			break
		}
		if e.Attr.Full {
			if !leased {
				b.names.Add(in.NodeId, string(e.Name), uint64(e.Inode))
			}
			b.replyEntry(ctx, e, in.NodeId, eo)
		} else {
			eo.Ino = uint64(e.Inode)
			eo.Generation = 1
		}
	}
	return fuse.OK
}

// ReleaseDir closes a directory handle.
func (b *baseFS) ReleaseDir(in *fuse.ReleaseIn) {
	b.v.Releasedir(newContext(nil, &in.InHeader), meta.Ino(in.NodeId), in.Fh)
}

// StatFs reports the volume's capacity and inode counts.
func (b *baseFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	s, err := b.v.StatFS(newContext(cancel, h), meta.Ino(h.NodeId))
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
