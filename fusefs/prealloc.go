package fusefs

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"

	"github.com/disgrafs/disgrafs/names"
	"github.com/disgrafs/disgrafs/prealloc"
)

// preallocator is what the pre-allocation layer asks of the manager
// (prealloc.Manager): the pool, the names whose rename has not landed, and
// closes answered early.
type preallocator interface {
	Enabled(dir uint64) bool
	Create(ctx context.Context, parent uint64, name string, mode, uid, gid uint32) (*prealloc.Created, bool, error)
	NoteName(parent uint64, name string)
	Settle(ctx context.Context, parent uint64, name string) (uint64, string, error)
	SettleOwner(ctx context.Context, ino uint64) error
	Lookup(parent uint64, name string) (uint64, bool)
	Absent(parent uint64, name string) bool
	Overlay(ino uint64, a *meta.Attr)
	Pending() bool
	WaitIno(ctx context.Context, ino uint64) error
	WaitDir(ctx context.Context, dir uint64) error
	SetInvalidate(f prealloc.Invalidator)

	AsyncClose() bool
	StageClose(ctx context.Context, ino, parent uint64, name string, size uint64) (*prealloc.CloseTicket, error)
	QueueClose(t *prealloc.CloseTicket, commit prealloc.CloseCommit)
	ClosesPending() bool
	WaitCommitted(ctx context.Context, ino uint64) error
}

// entryReplier makes a reply's entry from JuiceFS attributes, applying the
// attribute policies of every layer (the base layer does it).
type entryReplier interface {
	replyEntry(ctx *reqContext, e *meta.Entry, parent uint64, out *fuse.EntryOut) fuse.Status
}

// preallocLayer answers creates in pre-allocation directories from a pool of
// files made in advance (the GlusterFS seed's translator, ../shared/seeds/004)
// and makes a name whose rename has not landed behave as if it had been
// created in place: lookups find it, changes to it land it first, fsync
// waits for it. With async close, a handle of a file created in such a
// directory answers its close (FLUSH) once the close is journaled; at RELEASE
// its data commit and the release of its JuiceFS handle go to the manager's
// ordered background worker, through the layers below. The JuiceFS handle
// stays open until then, so this mount keeps seeing the file's buffered data.
type preallocLayer struct {
	fuse.RawFileSystem // the next layer
	m                  preallocator
	replier            entryReplier
	handles            *handleTable
	names              *names.Index
	log                *slog.Logger
	attrTimeout        time.Duration
	preDirs            sync.Map // pre-allocation directory inode -> *cachedDirAttr
}

func newPreallocLayer(next fuse.RawFileSystem, m preallocator, replier entryReplier, handles *handleTable, idx *names.Index, attrTimeout time.Duration, log *slog.Logger) *preallocLayer {
	return &preallocLayer{RawFileSystem: next, m: m, replier: replier, handles: handles, names: idx, attrTimeout: attrTimeout, log: log}
}

// Init hands the manager a way to drop the kernel's entries.
func (p *preallocLayer) Init(s *fuse.Server) {
	p.m.SetInvalidate(func(parent uint64, name string) { s.EntryNotify(parent, name) })
	p.RawFileSystem.Init(s)
}

// waitCtx turns a request's interrupt channel into a context for waits.
func waitCtx(cancel <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, stop := context.WithCancel(context.Background())
	if cancel != nil {
		go func() {
			select {
			case <-cancel:
				stop()
			case <-ctx.Done():
			}
		}()
	}
	return ctx, stop
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	}
	return syscall.EIO
}

// replyAttr (attrPolicy) shows a pending file's requested mode and owner.
func (p *preallocLayer) replyAttr(e *meta.Entry, parent uint64) time.Duration {
	if e.Attr.Typ == meta.TypeFile {
		p.m.Overlay(uint64(e.Inode), e.Attr)
	}
	return 0
}

// Create answers from the pool. Exclusive creates, an empty pool and
// directories without pre-allocation go to the next layer.
func (p *preallocLayer) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if !p.m.Enabled(in.NodeId) {
		return p.RawFileSystem.Create(cancel, in, name, out)
	}
	wctx, stop := waitCtx(cancel)
	defer stop()
	if in.Flags&syscall.O_EXCL == 0 {
		perm := in.Mode & 0o7777 &^ in.Umask
		c, ok, err := p.m.Create(wctx, in.NodeId, name, perm, in.Uid, in.Gid)
		if err != nil {
			return st(errnoOf(err))
		}
		if ok {
			out.Fh = c.Fh
			h := &handle{fh: c.Fh, ino: c.Ino}
			h.wrote.Store(true)
			p.trackAsync(h, in.NodeId, name, c.Attr.Length)
			p.handles.add(h)
			p.names.Add(in.NodeId, name, c.Ino)
			attr := c.Attr
			return p.replier.replyEntry(newContext(cancel, &in.InHeader), &meta.Entry{Inode: meta.Ino(c.Ino), Attr: &attr}, in.NodeId, &out.EntryOut)
		}
	}
	p.m.NoteName(in.NodeId, name)
	// Exclusive creates go to the metadata engine, which checks the name
	// atomically against every node; a pending name lands first.
	if _, _, err := p.m.Settle(wctx, in.NodeId, name); err != nil {
		return st(errnoOf(err))
	}
	status := p.RawFileSystem.Create(cancel, in, name, out)
	if status == fuse.OK {
		if h := p.handles.get(out.Fh); h != nil {
			p.trackAsync(h, in.NodeId, name, out.Attr.Size)
		}
	}
	return status
}

// Lookup answers for names whose rename has not landed.
func (p *preallocLayer) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	ino, ok := p.m.Lookup(h.NodeId, name)
	if !ok {
		if p.m.Absent(h.NodeId, name) {
			return fuse.ENOENT
		}
		return p.RawFileSystem.Lookup(cancel, h, name, out)
	}
	var ao fuse.AttrOut
	status := p.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: withNode(h, ino)}, &ao)
	if status != fuse.OK {
		return status
	}
	entryFromAttr(ino, &ao, out)
	return fuse.OK
}

// entryFromAttr makes an entry reply of an attribute reply: the entry lasts
// as long as its attributes.
func entryFromAttr(ino uint64, ao *fuse.AttrOut, out *fuse.EntryOut) {
	out.NodeId = ino
	out.Generation = 1
	out.Attr = ao.Attr
	out.AttrValid, out.AttrValidNsec = ao.AttrValid, ao.AttrValidNsec
	out.EntryValid, out.EntryValidNsec = ao.AttrValid, ao.AttrValidNsec
}

type cachedDirAttr struct {
	attr fuse.Attr
	at   time.Time
}

// GetAttr answers the attributes of a pre-allocation directory from a copy
// younger than the attribute timeout. Every create in a directory makes the
// kernel forget the directory's attributes, and with default_permissions the
// next create checks write permission on it with a GETATTR: without this each
// create would still cost a metadata round trip. The staleness is the
// attribute cache's (mode and owner of the directory, its times and size).
func (p *preallocLayer) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if !p.m.Enabled(in.NodeId) || p.attrTimeout <= 0 {
		return p.RawFileSystem.GetAttr(cancel, in, out)
	}
	if v, ok := p.preDirs.Load(in.NodeId); ok {
		c := v.(*cachedDirAttr)
		if age := time.Since(c.at); age < p.attrTimeout {
			out.Attr = c.attr
			out.SetTimeout(p.attrTimeout - age)
			return fuse.OK
		}
	}
	start := time.Now()
	status := p.RawFileSystem.GetAttr(cancel, in, out)
	if status == fuse.OK {
		p.preDirs.Store(in.NodeId, &cachedDirAttr{attr: out.Attr, at: start})
	}
	return status
}

// SetAttr applies a pending file's mode and owner first; a directory's own
// attribute change must not be hidden by the copy GetAttr keeps.
func (p *preallocLayer) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	p.preDirs.Delete(in.NodeId)
	if p.m.Pending() {
		wctx, stop := waitCtx(cancel)
		err := p.m.SettleOwner(wctx, in.NodeId)
		stop()
		if err != nil {
			return st(errnoOf(err))
		}
	}
	status := p.RawFileSystem.SetAttr(cancel, in, out)
	if status == fuse.OK && in.Valid&fuse.FATTR_SIZE != 0 && in.Valid&fuse.FATTR_FH != 0 {
		if a := p.async(in.Fh); a != nil {
			a.size.Store(in.Size)
		}
	}
	return status
}

// settle lands a pending name before it changes; it returns where the file
// this mount created is now (a conflict name if another node took it).
func (p *preallocLayer) settle(cancel <-chan struct{}, parent uint64, name string) (uint64, string, syscall.Errno) {
	p.m.NoteName(parent, name)
	if !p.m.Pending() {
		return parent, name, 0
	}
	wctx, stop := waitCtx(cancel)
	defer stop()
	np, nn, err := p.m.Settle(wctx, parent, name)
	return np, nn, errnoOf(err)
}

// Mknod lands a pending name first.
func (p *preallocLayer) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if _, _, err := p.settle(cancel, in.NodeId, name); err != 0 {
		return st(err)
	}
	return p.RawFileSystem.Mknod(cancel, in, name, out)
}

// Mkdir lands a pending name first.
func (p *preallocLayer) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if _, _, err := p.settle(cancel, in.NodeId, name); err != 0 {
		return st(err)
	}
	return p.RawFileSystem.Mkdir(cancel, in, name, out)
}

// Symlink lands a pending name first.
func (p *preallocLayer) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if _, _, err := p.settle(cancel, h.NodeId, name); err != 0 {
		return st(err)
	}
	return p.RawFileSystem.Symlink(cancel, h, target, name, out)
}

// Unlink lands a pending name first, and removes the file this mount created
// wherever it landed.
func (p *preallocLayer) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	parent, name, err := p.settle(cancel, h.NodeId, name)
	if err != 0 {
		return st(err)
	}
	hh := *h
	hh.NodeId = parent
	return p.RawFileSystem.Unlink(cancel, &hh, name)
}

// Rmdir lands the pending names of the directory first.
func (p *preallocLayer) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if p.m.Pending() {
		var out fuse.EntryOut
		if p.RawFileSystem.Lookup(cancel, h, name, &out) == fuse.OK && out.NodeId != 0 {
			if err := p.waitDir(cancel, out.NodeId); err != 0 {
				return st(err)
			}
		}
	}
	return p.RawFileSystem.Rmdir(cancel, h, name)
}

// Rename lands pending names on both sides first. A source that landed
// under a conflict name is renamed from there.
func (p *preallocLayer) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	p.m.NoteName(in.Newdir, newName)
	if !p.m.Pending() {
		return p.RawFileSystem.Rename(cancel, in, oldName, newName)
	}
	sp, sn, err := p.settle(cancel, in.NodeId, oldName)
	if err != 0 {
		return st(err)
	}
	if _, _, err := p.settle(cancel, in.Newdir, newName); err != 0 {
		return st(err)
	}
	moved := *in
	moved.NodeId = sp
	return p.RawFileSystem.Rename(cancel, &moved, sn, newName)
}

// Link lands the new name, and the file's own name, first.
func (p *preallocLayer) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if _, _, err := p.settle(cancel, in.NodeId, name); err != 0 {
		return st(err)
	}
	if err := p.waitIno(cancel, in.Oldnodeid); err != 0 {
		return st(err)
	}
	return p.RawFileSystem.Link(cancel, in, name, out)
}

// waitIno makes fsync wait for the file's rename and report its error.
func (p *preallocLayer) waitIno(cancel <-chan struct{}, ino uint64) syscall.Errno {
	wctx, stop := waitCtx(cancel)
	defer stop()
	return errnoOf(p.m.WaitIno(wctx, ino))
}

// waitDir lands every pending name in dir (fsync and listing of the
// directory).
func (p *preallocLayer) waitDir(cancel <-chan struct{}, dir uint64) syscall.Errno {
	if !p.m.Pending() {
		return 0
	}
	wctx, stop := waitCtx(cancel)
	defer stop()
	return errnoOf(p.m.WaitDir(wctx, dir))
}

// Fsync waits for the file's rename too.
func (p *preallocLayer) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if status := p.RawFileSystem.Fsync(cancel, in); status != fuse.OK {
		return status
	}
	return st(p.waitIno(cancel, in.NodeId))
}

// FsyncDir lands the directory's pending names.
func (p *preallocLayer) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if err := p.waitDir(cancel, in.NodeId); err != 0 {
		return st(err)
	}
	return p.RawFileSystem.FsyncDir(cancel, in)
}

// OpenDir lands the directory's pending names, so the listing shows them.
func (p *preallocLayer) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if err := p.waitDir(cancel, in.NodeId); err != 0 {
		return st(err)
	}
	return p.RawFileSystem.OpenDir(cancel, in, out)
}

// asyncHandle is the pre-allocation layer's slot of a write handle whose
// close may be answered early.
type asyncHandle struct {
	parent uint64
	name   string
	size   atomic.Uint64 // the file's length as written through this handle
	locked atomic.Bool   // took a POSIX or flock lock: closes stay synchronous
	ticket atomic.Pointer[prealloc.CloseTicket]
}

// trackAsync makes h's close answerable early when async close is on and
// parent pre-allocates.
func (p *preallocLayer) trackAsync(h *handle, parent uint64, name string, size uint64) {
	if !p.m.AsyncClose() || !p.m.Enabled(parent) {
		return
	}
	a := &asyncHandle{parent: parent, name: name}
	a.size.Store(size)
	h.async.Store(a)
}

func (p *preallocLayer) async(fh uint64) *asyncHandle {
	if !p.m.AsyncClose() {
		return nil
	}
	if h := p.handles.get(fh); h != nil {
		return h.async.Load()
	}
	return nil
}

// Open waits for the file's queued commits, so that it reads what was closed
// (close-to-open within the mount).
func (p *preallocLayer) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if p.m.AsyncClose() && p.m.ClosesPending() {
		wctx, stop := waitCtx(cancel)
		err := p.m.WaitCommitted(wctx, in.NodeId)
		stop()
		if err != nil {
			return st(errnoOf(err))
		}
	}
	return p.RawFileSystem.Open(cancel, in, out)
}

// Write records the length a write left.
func (p *preallocLayer) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, status := p.RawFileSystem.Write(cancel, in, data)
	if status == fuse.OK {
		if a := p.async(in.Fh); a != nil {
			end := in.Offset + uint64(n)
			for {
				cur := a.size.Load()
				if end <= cur || a.size.CompareAndSwap(cur, end) {
					break
				}
			}
		}
	}
	return n, status
}

// SetLk makes the handle's closes synchronous: the close must release its
// locks, which only JuiceFS's flush does.
func (p *preallocLayer) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	p.locked(in.Fh)
	return p.RawFileSystem.SetLk(cancel, in)
}

// SetLkw: as SetLk.
func (p *preallocLayer) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	p.locked(in.Fh)
	return p.RawFileSystem.SetLkw(cancel, in)
}

func (p *preallocLayer) locked(fh uint64) {
	if a := p.async(fh); a != nil {
		a.locked.Store(true)
	}
}

// Flush answers a close early once it is journaled. It goes to the next
// layer when the close must run synchronously (not an async handle, locked,
// queue full, journal error).
func (p *preallocLayer) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	h := p.handles.get(in.Fh)
	var a *asyncHandle
	if h != nil && p.m.AsyncClose() {
		a = h.async.Load()
	}
	if a == nil || a.locked.Load() {
		return p.RawFileSystem.Flush(cancel, in)
	}
	if a.ticket.Load() != nil {
		// Closed before (a dup'd or inherited descriptor): the journal keeps
		// the first length, which only the report after a crash uses.
		return fuse.OK
	}
	wctx, stop := waitCtx(cancel)
	defer stop()
	t, err := p.m.StageClose(wctx, h.ino, a.parent, a.name, a.size.Load())
	if err != nil {
		p.log.Warn("async close unavailable; closing synchronously", "ino", h.ino, "error", err)
	}
	if t == nil {
		h.async.Store(nil)
		return p.RawFileSystem.Flush(cancel, in)
	}
	a.ticket.Store(t)
	return fuse.OK
}

// closerPid is the pid the queued commits of async closes run as.
var closerPid = uint32(os.Getpid())

// Release queues the commit and release of a handle whose close was
// answered early: the manager's worker flushes it and releases it through
// the layers below, in order. Other handles go down at once.
func (p *preallocLayer) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	h := p.handles.get(in.Fh)
	var t *prealloc.CloseTicket
	if h != nil {
		if a := h.async.Load(); a != nil {
			t = a.ticket.Load()
		}
	}
	if t == nil {
		p.RawFileSystem.Release(cancel, in)
		return
	}
	ino, fh := in.NodeId, in.Fh
	p.m.QueueClose(t, func(ctx context.Context) error {
		hdr := fuse.InHeader{NodeId: ino}
		hdr.Pid = closerPid
		status := p.RawFileSystem.Flush(ctx.Done(), &fuse.FlushIn{InHeader: hdr, Fh: fh})
		p.RawFileSystem.Release(ctx.Done(), &fuse.ReleaseIn{InHeader: hdr, Fh: fh})
		if status != fuse.OK {
			return syscall.Errno(status)
		}
		return nil
	})
}
