package fusefs

import (
	"context"
	"sync/atomic"
	"syscall"

	"github.com/juicedata/juicefs/pkg/meta"

	"github.com/disgrafs/disgrafs/prealloc"
	"github.com/disgrafs/disgrafs/volume"
)

// Async close hooks (--prealloc-async-close, see prealloc/asyncclose.go).
// A handle of a file created in a pre-allocation directory answers its
// close (FLUSH) once the close is journaled; at RELEASE its data commit and
// the release of the JuiceFS handle go to the manager's ordered background
// worker. The JuiceFS handle stays open until then, so this mount keeps
// seeing the file's buffered data (length, reads through other handles).

// asyncHandle is a write handle whose close may be answered early.
type asyncHandle struct {
	ino, parent uint64
	name        string
	size        atomic.Uint64 // the file's length as written through this handle
	locked      atomic.Bool   // took a POSIX or flock lock: closes stay synchronous
	ticket      atomic.Pointer[prealloc.CloseTicket]
}

func (fs *FS) asyncOn() bool {
	return fs.opts.Prealloc != nil && fs.opts.Prealloc.AsyncClose()
}

// trackAsync marks a handle created in parent as closable asynchronously.
func (fs *FS) trackAsync(fh, ino, parent uint64, name string, size uint64) {
	if !fs.asyncOn() || !fs.opts.Prealloc.Enabled(parent) {
		return
	}
	h := &asyncHandle{ino: ino, parent: parent, name: name}
	h.size.Store(size)
	fs.async.Store(fh, h)
}

func (fs *FS) asyncHandle(fh uint64) *asyncHandle {
	if !fs.asyncOn() {
		return nil
	}
	v, ok := fs.async.Load(fh)
	if !ok {
		return nil
	}
	return v.(*asyncHandle)
}

// asyncWrote records the length a write left.
func (fs *FS) asyncWrote(fh, end uint64) {
	h := fs.asyncHandle(fh)
	if h == nil {
		return
	}
	for {
		cur := h.size.Load()
		if end <= cur || h.size.CompareAndSwap(cur, end) {
			return
		}
	}
}

// asyncTruncated records a length set through a handle.
func (fs *FS) asyncTruncated(fh, size uint64) {
	if h := fs.asyncHandle(fh); h != nil {
		h.size.Store(size)
	}
}

// asyncLocked makes a handle's closes synchronous: the close must release
// its locks, which only JuiceFS's flush does.
func (fs *FS) asyncLocked(fh uint64) {
	if h := fs.asyncHandle(fh); h != nil {
		h.locked.Store(true)
	}
}

// asyncFlush answers a close early. handled is false when the close must
// run synchronously (not an async handle, locked, queue full, journal error).
func (fs *FS) asyncFlush(ctx *reqContext, fh uint64) bool {
	h := fs.asyncHandle(fh)
	if h == nil || h.locked.Load() {
		return false
	}
	if h.ticket.Load() != nil {
		// Closed before (a dup'd or inherited descriptor): the journal keeps
		// the first length, which only the report after a crash uses.
		return true
	}
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	t, err := fs.opts.Prealloc.StageClose(wctx, h.ino, h.parent, h.name, h.size.Load())
	if err != nil {
		fs.opts.Log.Warn("async close unavailable; closing synchronously", "ino", h.ino, "error", err)
	}
	if t == nil {
		fs.async.Delete(fh)
		return false
	}
	h.ticket.Store(t)
	return true
}

// asyncRelease queues the commit and release of a handle whose close was
// answered early; false when the handle is released normally.
func (fs *FS) asyncRelease(ino, fh uint64) bool {
	v, ok := fs.async.LoadAndDelete(fh)
	if !ok {
		return false
	}
	t := v.(*asyncHandle).ticket.Load()
	if t == nil {
		return false
	}
	fs.opts.Prealloc.QueueClose(t, func(ctx context.Context) error {
		c := volume.RootContext(ctx)
		errno := fs.v.Flush(c, meta.Ino(ino), fh, 0)
		// Per-handle state goes before the JuiceFS handle: once released its
		// number may be handed to a new open.
		if fs.cache != nil {
			fs.releaseCached(fh)
		}
		written := fs.takeWritten(fh)
		fs.v.Release(c, meta.Ino(ino), fh)
		if written && fs.opts.Written != nil {
			fs.opts.Written(ino)
		}
		if errno != 0 {
			return errno
		}
		return nil
	})
	return true
}

// asyncWaitOpen makes an open by this mount wait for the file's queued
// commits, so it reads what was closed (close-to-open within the mount).
func (fs *FS) asyncWaitOpen(ctx *reqContext, ino uint64) syscall.Errno {
	if !fs.asyncOn() || !fs.opts.Prealloc.ClosesPending() {
		return 0
	}
	wctx, cancel := waitCtx(ctx)
	defer cancel()
	return errnoOf(fs.opts.Prealloc.WaitCommitted(wctx, ino))
}
