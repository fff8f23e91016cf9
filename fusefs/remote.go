package fusefs

// Changes made by other nodes, and this mount's changes told to them (a
// volume shared through a change channel, coherence.Shared).
//
// A reader node trusts a copy from a checked open until the channel reports
// a change to the file; the kernel keeps the names and attributes of cached
// files for --cache-ttl while the channel is current. A writer node tells the
// others what each request changed once JuiceFS committed it, and answers
// the request when they have applied it (Publish waits), so that a reader
// that hears from the writer afterwards sees the change: close-to-open for
// data (a close, an fsync, a truncate) and for names (unlink, rmdir, rename).
// New names need no message: no node caches a missing name (negative entries
// are not kept when the channel is in use).
//
// Kernel semantics relied on: an entry invalidation (EntryNotify) takes the
// directory's inode lock, which a LOOKUP or READDIRPLUS holds (shared) until
// its reply is installed, so a lookup that raced with the change is undone
// too. An open answered with attributes that raced with a change is caught
// by the remote marks (remoteSince): it is served, but not trusted.

import (
	"context"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/disgrafs/disgrafs/coherence"
)

// Publisher is a change channel that other nodes learn this mount's changes
// through.
type Publisher interface {
	Publish(ctx context.Context, c coherence.Change) error
}

// maxGiven bounds the inodes given long kernel timeouts on the strength of
// the channel; past it no more are given until trust lapses and clears it.
const maxGiven = 1 << 20

// remoteMarkLocked records a change reported by the channel (tmu held).
func (c *cacheLayer) remoteMarkLocked(ino uint64) {
	c.rgen++
	if len(c.changed) >= 1<<16 {
		clear(c.changed)
		c.rfloor = c.rgen
	}
	c.changed[ino] = c.rgen
	delete(c.trust, ino)
}

// remoteGen is the count of changes reported so far.
func (c *cacheLayer) remoteGen() uint64 {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	return c.rgen
}

// remoteSinceLocked reports whether a change to ino may have been reported
// after gen (tmu held).
func (c *cacheLayer) remoteSinceLocked(ino, gen uint64) bool {
	return c.rfloor > gen || c.changed[ino] > gen
}

// applyRemote drops what this mount holds of a change another node made:
// trust, copies of changed data, the kernel's pages, attributes and names.
// It returns once the kernel has been told.
func (c *cacheLayer) applyRemote(ch coherence.Change, forgetLookup func(ino uint64)) {
	c.tmu.Lock()
	for _, ino := range ch.Inodes {
		c.remoteMarkLocked(ino)
	}
	for _, ino := range ch.Attrs {
		c.remoteMarkLocked(ino)
	}
	c.tmu.Unlock()
	for _, ino := range ch.Inodes {
		forgetLookup(ino)
		// Open descriptors keep reading the copy they opened (its file
		// stays open); new opens read the new version.
		c.Cache.Invalidate(ino)
		c.mu.Lock()
		delete(c.pages, ino)
		c.mu.Unlock()
		if c.server != nil {
			c.server.InodeNotify(ino, 0, 0) // attributes and every page
		}
	}
	for _, ino := range ch.Attrs {
		forgetLookup(ino)
		if c.server != nil {
			c.server.InodeNotify(ino, -1, 0)
		}
	}
	for _, e := range ch.Entries {
		if c.names != nil {
			c.names.Remove(e.Parent, e.Name)
		}
		if c.server != nil {
			// ENOENT: the kernel holds no such entry.
			c.server.EntryNotify(e.Parent, e.Name)
			c.server.InodeNotify(e.Parent, 0, 0) // the directory's listing
		}
	}
}

// doubt takes back the long timeouts given while the channel was current:
// the channel may have missed a change, and writers stop waiting for this
// node once its lease ends.
func (c *cacheLayer) doubt() {
	c.gmu.Lock()
	given := c.given
	c.given = map[uint64]struct{}{}
	c.gmu.Unlock()
	if c.server == nil {
		return
	}
	for ino := range given {
		if c.names != nil {
			for _, d := range c.names.Names(ino) {
				c.server.EntryNotify(d.Parent, d.Name)
			}
		}
		c.server.InodeNotify(ino, -1, 0)
	}
	c.log.Info("change channel lapsed: the kernel's names and attributes of cached files were dropped", "inodes", len(given))
}

// leasedTTL decides a long timeout under a lease channel: given, and
// remembered so that a lapse can take it back, only while it is current.
func (c *cacheLayer) leasedTTL(ino uint64) bool {
	if c.Publisher == nil {
		return true
	}
	if _, ok := c.Coherence.Epoch(); !ok {
		return false
	}
	c.gmu.Lock()
	defer c.gmu.Unlock()
	if _, ok := c.given[ino]; ok {
		return true
	}
	if len(c.given) >= maxGiven {
		return false
	}
	c.given[ino] = struct{}{}
	return true
}

// publish tells the other nodes about a change this mount committed; a
// failure fails the request (the change is made, but other nodes may not
// see it at their next open).
func (c *cacheLayer) publish(_ <-chan struct{}, ch coherence.Change) fuse.Status {
	if c.Publisher == nil {
		return fuse.OK
	}
	// Not cancelled by an interrupt: the change is committed, and the
	// wait is bounded by the other nodes' leases. (Go programs interrupt
	// their own system calls with preemption signals all the time.)
	ctx := context.Background()
	if err := c.Publisher.Publish(ctx, ch); err != nil {
		c.log.Error("a change could not be told to the other nodes: they may serve the old state until their lease ends", "error", err)
		return fuse.EIO
	}
	return fuse.OK
}

// Write marks the handle as holding writes that other nodes must hear of at
// its flush.
func (c *cacheLayer) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, status := c.RawFileSystem.Write(cancel, in, data)
	if status == fuse.OK && c.Publisher != nil {
		if h := c.handles.get(in.Fh); h != nil {
			h.dirty.Store(true)
		}
	}
	return n, status
}

// committed publishes a change to the handle's file when it holds writes
// that the request just committed.
func (c *cacheLayer) committed(cancel <-chan struct{}, fh, ino uint64) fuse.Status {
	if c.Publisher == nil {
		return fuse.OK
	}
	if h := c.handles.get(fh); h == nil || !h.dirty.Swap(false) {
		return fuse.OK
	}
	return c.publish(cancel, coherence.Change{Inodes: []uint64{ino}})
}

// Flush commits the file's writes (JuiceFS), then tells the other nodes.
func (c *cacheLayer) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if status := c.RawFileSystem.Flush(cancel, in); status != fuse.OK {
		return status
	}
	return c.committed(cancel, in.Fh, in.NodeId)
}

// Fsync commits, then tells the other nodes.
func (c *cacheLayer) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if status := c.RawFileSystem.Fsync(cancel, in); status != fuse.OK {
		return status
	}
	return c.committed(cancel, in.Fh, in.NodeId)
}

// Fallocate changes the file's data at once.
func (c *cacheLayer) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	c.invalidate(in.NodeId)
	if status := c.RawFileSystem.Fallocate(cancel, in); status != fuse.OK {
		return status
	}
	return c.publish(cancel, coherence.Change{Inodes: []uint64{in.NodeId}})
}

// CopyFileRange changes the destination's data at once.
func (c *cacheLayer) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	c.invalidate(in.NodeIdOut)
	n, status := c.RawFileSystem.CopyFileRange(cancel, in)
	if status != fuse.OK {
		return n, status
	}
	return n, c.publish(cancel, coherence.Change{Inodes: []uint64{in.NodeIdOut}})
}

// Unlink tells the other nodes the name is gone.
func (c *cacheLayer) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if status := c.RawFileSystem.Unlink(cancel, h, name); status != fuse.OK {
		return status
	}
	return c.publish(cancel, coherence.Change{Entries: []coherence.Entry{{Parent: h.NodeId, Name: name}}})
}

// Rmdir tells the other nodes the name is gone.
func (c *cacheLayer) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if status := c.RawFileSystem.Rmdir(cancel, h, name); status != fuse.OK {
		return status
	}
	return c.publish(cancel, coherence.Change{Entries: []coherence.Entry{{Parent: h.NodeId, Name: name}}})
}

// Rename tells the other nodes both names changed.
func (c *cacheLayer) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if status := c.RawFileSystem.Rename(cancel, in, oldName, newName); status != fuse.OK {
		return status
	}
	return c.publish(cancel, coherence.Change{Entries: []coherence.Entry{
		{Parent: in.NodeId, Name: oldName}, {Parent: in.Newdir, Name: newName}}})
}

// aclXattr reports whether an extended attribute decides who may open the
// file.
func aclXattr(name string) bool { return strings.HasPrefix(name, "system.posix_acl_") }

// publishAttrs tells the other nodes the file's attributes changed.
func (c *cacheLayer) publishAttrs(cancel <-chan struct{}, ino uint64, status fuse.Status) fuse.Status {
	if status != fuse.OK {
		return status
	}
	return c.publish(cancel, coherence.Change{Attrs: []uint64{ino}})
}
