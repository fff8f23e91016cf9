package fusefs

import (
	"context"
	"log/slog"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/disgrafs/disgrafs/coherence"
)

// Publisher is a change channel that other nodes learn this mount's changes
// through (coherence.Shared).
type Publisher interface {
	Publish(ctx context.Context, c coherence.Change) error
}

// publishLayer tells the other nodes of a shared volume what each request of
// this mount changed, once JuiceFS committed it, and answers the request
// when they have applied it (Publisher waits): a reader that hears from this
// node afterwards sees the change (remote.go). It is in the stack whenever
// the volume has a change channel, whether or not this mount caches.
type publishLayer struct {
	fuse.RawFileSystem // the next layer
	pub                Publisher
	handles            *handleTable
	log                *slog.Logger
}

// publish tells the other nodes about a change this mount committed; a
// failure fails the request (the change is made, but other nodes may not
// see it at their next open).
func (p *publishLayer) publish(ch coherence.Change) fuse.Status {
	// Not cancelled by an interrupt: the change is committed, and the
	// wait is bounded by the other nodes' leases. (Go programs interrupt
	// their own system calls with preemption signals all the time.)
	if err := p.pub.Publish(context.Background(), ch); err != nil {
		p.log.Error("a change could not be told to the other nodes: they may serve the old state until their lease ends", "error", err)
		return fuse.EIO
	}
	return fuse.OK
}

// after publishes ch when the request succeeded.
func (p *publishLayer) after(status fuse.Status, ch coherence.Change) fuse.Status {
	if status != fuse.OK {
		return status
	}
	return p.publish(ch)
}

func one(ino uint64) []uint64 { return []uint64{ino} }

// Write marks the handle as holding writes that other nodes must hear of at
// its flush.
func (p *publishLayer) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, status := p.RawFileSystem.Write(cancel, in, data)
	if status == fuse.OK {
		if h := p.handles.get(in.Fh); h != nil {
			h.dirty.Store(true)
		}
	}
	return n, status
}

// committed publishes a change to the handle's file when it holds writes
// that the request just committed.
func (p *publishLayer) committed(status fuse.Status, fh, ino uint64) fuse.Status {
	if status != fuse.OK {
		return status
	}
	if h := p.handles.get(fh); h == nil || !h.dirty.Swap(false) {
		return fuse.OK
	}
	return p.publish(coherence.Change{Inodes: one(ino)})
}

// Flush commits the file's writes (JuiceFS), then tells the other nodes.
func (p *publishLayer) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return p.committed(p.RawFileSystem.Flush(cancel, in), in.Fh, in.NodeId)
}

// Fsync commits, then tells the other nodes.
func (p *publishLayer) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return p.committed(p.RawFileSystem.Fsync(cancel, in), in.Fh, in.NodeId)
}

// Fallocate changes the file's data at once.
func (p *publishLayer) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return p.after(p.RawFileSystem.Fallocate(cancel, in), coherence.Change{Inodes: one(in.NodeId)})
}

// CopyFileRange changes the destination's data at once.
func (p *publishLayer) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	n, status := p.RawFileSystem.CopyFileRange(cancel, in)
	return n, p.after(status, coherence.Change{Inodes: one(in.NodeIdOut)})
}

// SetAttr: a size change is a data change, anything else an attribute one.
func (p *publishLayer) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	status := p.RawFileSystem.SetAttr(cancel, in, out)
	if in.Valid&fuse.FATTR_SIZE == 0 {
		return p.after(status, coherence.Change{Attrs: one(in.NodeId)})
	}
	if in.Valid&fuse.FATTR_FH != 0 && status == fuse.OK {
		// A truncate through a descriptor open for writing (ftruncate,
		// an open with O_TRUNC): like its writes, other nodes hear of it
		// at the descriptor's flush or fsync. One message, one wait, per
		// rewritten file.
		if h := p.handles.get(in.Fh); h != nil && h.wrote.Load() {
			h.dirty.Store(true)
			return status
		}
	}
	return p.after(status, coherence.Change{Inodes: one(in.NodeId)})
}

// SetXAttr: an ACL decides who may open the file.
func (p *publishLayer) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	status := p.RawFileSystem.SetXAttr(cancel, in, attr, data)
	if !aclXattr(attr) {
		return status
	}
	return p.after(status, coherence.Change{Attrs: one(in.NodeId)})
}

// RemoveXAttr: as SetXAttr.
func (p *publishLayer) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	status := p.RawFileSystem.RemoveXAttr(cancel, h, attr)
	if !aclXattr(attr) {
		return status
	}
	return p.after(status, coherence.Change{Attrs: one(h.NodeId)})
}

// Unlink tells the other nodes the name is gone.
func (p *publishLayer) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return p.after(p.RawFileSystem.Unlink(cancel, h, name), coherence.Change{Entries: []coherence.Entry{{Parent: h.NodeId, Name: name}}})
}

// Rmdir tells the other nodes the name is gone.
func (p *publishLayer) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return p.after(p.RawFileSystem.Rmdir(cancel, h, name), coherence.Change{Entries: []coherence.Entry{{Parent: h.NodeId, Name: name}}})
}

// Rename tells the other nodes both names changed.
func (p *publishLayer) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return p.after(p.RawFileSystem.Rename(cancel, in, oldName, newName), coherence.Change{Entries: []coherence.Entry{
		{Parent: in.NodeId, Name: oldName}, {Parent: in.Newdir, Name: newName}}})
}

// aclXattr reports whether an extended attribute decides who may open the
// file.
func aclXattr(name string) bool { return strings.HasPrefix(name, "system.posix_acl_") }
