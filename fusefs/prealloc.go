package fusefs

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"
)

// Pre-allocation hooks: FS calls these at the few places where a name whose
// rename has not landed must behave as if it had been created in place.

// waitCtx turns a request's interrupt channel into a context for waits.
func waitCtx(c *reqContext) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	if c.cancel != nil {
		go func() {
			select {
			case <-c.cancel:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	return ctx, cancel
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

// preCreate answers a create from the pool. handled is false when the normal
// create must run (no pool, pool empty, O_EXCL).
func (fs *FS) preCreate(ctx *reqContext, in *fuse.CreateIn, name string, out *fuse.CreateOut) (fuse.Status, bool) {
	p := fs.opts.Prealloc
	if p == nil || !p.Enabled(in.NodeId) {
		return fuse.OK, false
	}
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	if in.Flags&syscall.O_EXCL == 0 {
		perm := in.Mode & 0o7777 &^ in.Umask
		c, ok, err := p.Create(wctx, in.NodeId, name, perm, in.Uid, in.Gid)
		if err != nil {
			return st(errnoOf(err)), true
		}
		if ok {
			out.Fh = c.Fh
			fs.markWritten(c.Fh)
			fs.trackAsync(c.Fh, c.Ino, in.NodeId, name, c.Attr.Length)
			fs.opts.Names.Add(in.NodeId, name, c.Ino)
			if fs.cache != nil {
				fs.trackCreated(c.Ino, c.Fh)
			}
			attr := c.Attr
			return fs.replyEntry(ctx, &meta.Entry{Inode: meta.Ino(c.Ino), Attr: &attr}, &out.EntryOut), true
		}
	}
	p.NoteName(in.NodeId, name)
	// Exclusive creates go to the metadata engine, which checks the name
	// atomically against every node; a pending name lands first.
	if _, _, err := p.Settle(wctx, in.NodeId, name); err != nil {
		return st(errnoOf(err)), true
	}
	return fuse.OK, false
}

// preLookup answers for names whose rename has not landed.
func (fs *FS) preLookup(ctx *reqContext, parent uint64, name string, out *fuse.EntryOut) (fuse.Status, bool) {
	p := fs.opts.Prealloc
	if p == nil {
		return fuse.OK, false
	}
	ino, ok := p.Lookup(parent, name)
	if !ok {
		if p.Absent(parent, name) {
			return fuse.ENOENT, true
		}
		return fuse.OK, false
	}
	e, err := fs.v.GetAttr(ctx, meta.Ino(ino), 0)
	if err != 0 {
		return st(err), true
	}
	return fs.replyEntry(ctx, e, out), true
}

// preOverlay shows a pending file's requested mode and owner.
func (fs *FS) preOverlay(e *meta.Entry) {
	if p := fs.opts.Prealloc; p != nil && e.Attr.Typ == meta.TypeFile {
		p.Overlay(uint64(e.Inode), e.Attr)
	}
}

// preSettle lands a pending name before it changes; it returns where the file
// this mount created is now (a conflict name if another node took it).
func (fs *FS) preSettle(ctx *reqContext, parent uint64, name string) (uint64, string, syscall.Errno) {
	p := fs.opts.Prealloc
	if p == nil {
		return parent, name, 0
	}
	p.NoteName(parent, name)
	if !p.Pending() {
		return parent, name, 0
	}
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	np, nn, err := p.Settle(wctx, parent, name)
	return np, nn, errnoOf(err)
}

// preSettleOwner applies a pending file's mode and owner before a setattr.
func (fs *FS) preSettleOwner(ctx *reqContext, ino uint64) syscall.Errno {
	p := fs.opts.Prealloc
	if p == nil {
		return 0
	}
	// A directory's own attribute change must not be hidden by our copy.
	fs.preDirs.Delete(ino)
	if !p.Pending() {
		return 0
	}
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	return errnoOf(p.SettleOwner(wctx, ino))
}

// preWaitIno makes fsync wait for the file's rename and report its error.
func (fs *FS) preWaitIno(ctx *reqContext, ino uint64) syscall.Errno {
	p := fs.opts.Prealloc
	if p == nil {
		return 0
	}
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	return errnoOf(p.WaitIno(wctx, ino))
}

// preWaitDir lands every pending name in dir (fsync and listing of the
// directory).
func (fs *FS) preWaitDir(ctx *reqContext, dir uint64) syscall.Errno {
	p := fs.opts.Prealloc
	if p == nil || !p.Pending() {
		return 0
	}
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	return errnoOf(p.WaitDir(wctx, dir))
}

// preWaitChild lands the pending names of parent/name before rmdir.
func (fs *FS) preWaitChild(ctx *reqContext, parent uint64, name string) syscall.Errno {
	p := fs.opts.Prealloc
	if p == nil || !p.Pending() {
		return 0
	}
	e, err := fs.v.Lookup(ctx, meta.Ino(parent), name)
	if err != 0 {
		return 0
	}
	return fs.preWaitDir(ctx, uint64(e.Inode))
}

// preRename lands pending names on both sides first. A source that landed
// under a conflict name is renamed from there. handled is true when the
// rename was answered here.
func (fs *FS) preRename(ctx *reqContext, in *fuse.RenameIn, oldName, newName string) (fuse.Status, bool) {
	p := fs.opts.Prealloc
	if p == nil {
		return fuse.OK, false
	}
	p.NoteName(in.Newdir, newName)
	if !p.Pending() {
		return fuse.OK, false
	}
	sp, sn, err := fs.preSettle(ctx, in.NodeId, oldName)
	if err != 0 {
		return st(err), true
	}
	if _, _, err := fs.preSettle(ctx, in.Newdir, newName); err != 0 {
		return st(err), true
	}
	if sp == in.NodeId && sn == oldName {
		return fuse.OK, false
	}
	// The source landed elsewhere (conflict name): rename the file this
	// mount created, then drop the kernel's stale entry.
	err = fs.v.Rename(ctx, meta.Ino(sp), sn, meta.Ino(in.Newdir), newName, in.Flags)
	return st(err), true
}

type cachedDirAttr struct {
	attr meta.Attr
	at   time.Time
}

// preGetAttr answers the attributes of a pre-allocation directory from a
// copy younger than the attribute timeout. Every create in a directory makes
// the kernel forget the directory's attributes, and with default_permissions
// the next create checks write permission on it with a GETATTR: without this
// each create would still cost a metadata round trip. The staleness is the
// attribute cache's (mode and owner of the directory, its times and size).
func (fs *FS) preGetAttr(ctx *reqContext, ino uint64, out *fuse.AttrOut) (fuse.Status, bool) {
	p := fs.opts.Prealloc
	if p == nil || !p.Enabled(ino) || fs.opts.AttrTimeout <= 0 {
		return fuse.OK, false
	}
	if v, ok := fs.preDirs.Load(ino); ok {
		c := v.(*cachedDirAttr)
		if time.Since(c.at) < fs.opts.AttrTimeout {
			a := c.attr
			attrToFuse(meta.Ino(ino), &a, &out.Attr)
			out.SetTimeout(fs.opts.AttrTimeout - time.Since(c.at))
			return fuse.OK, true
		}
	}
	start := time.Now()
	e, err := fs.v.GetAttr(ctx, meta.Ino(ino), 0)
	if err != 0 {
		return st(err), true
	}
	fs.preDirs.Store(ino, &cachedDirAttr{attr: *e.Attr, at: start})
	out.SetTimeout(fs.replyAttr(ctx, e, &out.Attr))
	return fuse.OK, true
}
