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

	"github.com/disgrafs/disgrafs/coherence"
	"github.com/disgrafs/disgrafs/names"
)

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

// removeName forgets a name another node changed; a lookup that read it
// before will not put it back (addName).
func (c *cacheLayer) removeName(parent uint64, name string) {
	if c.names == nil {
		return
	}
	c.tmu.Lock()
	c.egen++
	c.names.Remove(parent, name)
	c.tmu.Unlock()
}

// entryGen (openVoucher) counts the name changes other nodes reported.
func (c *cacheLayer) entryGen() uint64 {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	return c.egen
}

// addName (openVoucher) records a name a lookup read, unless another node
// changed a name since the lookup began (gen).
func (c *cacheLayer) addName(parent uint64, name string, ino, gen uint64) {
	if c.names == nil {
		return
	}
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if c.egen == gen {
		c.names.Add(parent, name, ino)
	}
}

// leased (openVoucher): see CacheOptions.Leased.
func (c *cacheLayer) leased() bool { return c.Leased }

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
	// An attribute change tells the kernel only about files it may hold
	// for longer than a plain attribute timeout: trusted, or with pages
	// kept, or given a long timeout. Key tracking reports every write on
	// the volume, this node's own included, and the kernel need not
	// reread the attributes of a file this node is writing.
	held := make([]bool, len(ch.Attrs))
	for i, ino := range ch.Attrs {
		_, held[i] = c.trust[ino]
		c.remoteMarkLocked(ino)
	}
	c.tmu.Unlock()
	for i, ino := range ch.Attrs {
		c.mu.Lock()
		if _, ok := c.pages[ino]; ok {
			held[i] = true
			delete(c.pages, ino)
		}
		c.mu.Unlock()
		c.gmu.Lock()
		if _, ok := c.given[ino]; ok {
			held[i] = true
		}
		c.gmu.Unlock()
	}
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
	for i, ino := range ch.Attrs {
		forgetLookup(ino)
		if held[i] && c.server != nil {
			c.server.InodeNotify(ino, -1, 0)
		}
	}
	if len(ch.Dirs) > 0 {
		c.dirsChanged(ch.Dirs)
	}
	for _, e := range ch.Entries {
		c.removeName(e.Parent, e.Name)
		if c.server != nil {
			// ENOENT: the kernel holds no such entry.
			c.server.EntryNotify(e.Parent, e.Name)
			c.server.InodeNotify(e.Parent, 0, 0) // the directory's listing
		}
	}
}

// dirsChanged queues directories whose entries changed without saying
// which (key tracking) for a check of the names the kernel holds in them
// with long timeouts (runDirChecks).
func (c *cacheLayer) dirsChanged(dirs []uint64) {
	c.dqmu.Lock()
	for _, d := range dirs {
		c.dirQueue[d] = struct{}{}
	}
	c.dqmu.Unlock()
	select {
	case c.dirWake <- struct{}{}:
	default: // a wake-up is pending
	}
}

// runDirChecks checks the queued directories until ctx ends; changes that
// come while a check runs are coalesced into the next one. list returns a
// directory's names and their inodes, from the metadata engine.
func (c *cacheLayer) runDirChecks(ctx context.Context, list func(ctx context.Context, dir uint64) (map[string]uint64, error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.dirWake:
		}
		c.dqmu.Lock()
		dirs := c.dirQueue
		c.dirQueue = map[uint64]struct{}{}
		c.dqmu.Unlock()
		for d := range dirs {
			c.checkDir(ctx, d, list)
		}
	}
}

// checkDir drops the kernel's entries in dir, given long timeouts, whose
// names no longer lead to the inode the kernel was told.
func (c *cacheLayer) checkDir(ctx context.Context, dir uint64, list func(ctx context.Context, dir uint64) (map[string]uint64, error)) {
	if c.server == nil || c.names == nil {
		return
	}
	type kid struct {
		name string
		ino  uint64
	}
	var kids []kid
	c.gmu.Lock()
	for ino, g := range c.given {
		for _, d := range c.givenNames(ino, g) {
			if d.Parent == dir {
				kids = append(kids, kid{d.Name, ino})
			}
		}
	}
	c.gmu.Unlock()
	c.server.InodeNotify(dir, 0, 0) // its attributes and listing
	if len(kids) == 0 {
		return
	}
	now, err := list(ctx, dir)
	if err != nil {
		c.log.Debug("listing a directory another writer changed; dropping all its entries", "ino", dir, "error", err)
	}
	for _, k := range kids {
		if err == nil && now[k.name] == k.ino {
			continue
		}
		c.removeName(dir, k.name)
		c.server.EntryNotify(dir, k.name)
	}
}

// doubt takes back the long timeouts given while the channel was current:
// the channel may have missed a change, and writers stop waiting for this
// node once its lease ends.
func (c *cacheLayer) doubt() {
	c.gmu.Lock()
	given := c.given
	c.given = map[uint64]names.Dentry{}
	c.gmu.Unlock()
	if c.server == nil {
		return
	}
	for ino, g := range given {
		for _, d := range c.givenNames(ino, g) {
			c.server.EntryNotify(d.Parent, d.Name)
		}
		c.server.InodeNotify(ino, -1, 0)
	}
	c.log.Info("change channel lapsed: the kernel's names and attributes of cached files were dropped", "inodes", len(given))
}

// leasedTTL decides a long timeout under a lease channel: given, and
// remembered so that a lapse can take it back, only while it is current.
// The name the reply is for (parent 0: none) is remembered with it: the name
// index may have forgotten it by the time it must be taken back.
func (c *cacheLayer) leasedTTL(ino, parent uint64, name []byte) bool {
	if !c.Leased {
		return true
	}
	if _, ok := c.Coherence.Epoch(); !ok {
		return false
	}
	c.gmu.Lock()
	defer c.gmu.Unlock()
	if d, ok := c.given[ino]; ok && (parent == 0 || d.Parent == parent && d.Name == string(name)) {
		return true
	}
	if len(c.given) >= maxGiven {
		return false
	}
	c.given[ino] = names.Dentry{Parent: parent, Name: string(name)}
	return true
}

// givenNames are the names of ino the kernel may hold for long: the one
// given with it and those the name index knows.
func (c *cacheLayer) givenNames(ino uint64, given names.Dentry) []names.Dentry {
	var out []names.Dentry
	if given.Parent != 0 {
		out = append(out, given)
	}
	if c.names != nil {
		for _, d := range c.names.Names(ino) {
			if d != given {
				out = append(out, d)
			}
		}
	}
	return out
}
