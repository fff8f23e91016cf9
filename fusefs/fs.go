// Package fusefs serves a JuiceFS volume to the kernel over FUSE, as a stack
// of translator layers in the shape of the GlusterFS translator stack the
// project grew from (../shared/seeds/004): each layer is a type that embeds
// the next fuse.RawFileSystem, overrides only the operations it changes and
// passes everything else down. Top to bottom:
//
//	instrumented  counts and times every request (ops.go)
//	tagsLayer     the virtual .tags and .query trees, tagging by ln/mv/rm and
//	              setfattr, index upkeep on unlink and rename (tags.go,
//	              tagtree.go)
//	preallocLayer creates answered from a pool, pending names, async close
//	              (prealloc.go)
//	noOpenLayer   a read-only mount without OPEN, FLUSH and RELEASE: reads
//	              by inode (noopen.go; --read-only on the embedded volume)
//	publishLayer  tells the other nodes of a shared volume what each request
//	              changed, and waits until they applied it (publish.go)
//	cacheLayer    reads of cached files through passthrough or the page
//	              cache, invalidation of copies this mount writes (cached.go)
//	baseFS        a thin translator to JuiceFS's VFS (base.go)
//
// Every layer but instrumented and baseFS is optional: New leaves it out when
// its feature is off, and an operation a layer does not override costs it
// nothing. What each layer may assume:
//   - Node ids are JuiceFS inodes, except the tags layer's virtual inodes
//     (isVirtual), which never travel below it: the tags layer overrides
//     every operation that takes a node id or a handle
//     (TestTagsLayerKeepsVirtualInodes).
//   - File handles are JuiceFS handles. Each has one entry in the handle
//     table (handles.go), added by the layer that obtained it (the base
//     layer, or the pre-allocation layer for a create from its pool) and
//     removed by the base layer at RELEASE; layers keep their per-handle
//     state in the entry's slots. There is one release path: a layer that
//     delays a release (async close) calls the next layer's Release later.
//   - Names are in the mount's one name index (package names), fed by the
//     base layer (lookups, listings, creates, renames, removals) and by the
//     pre-allocation layer (creates from the pool); layers read it and fall
//     back to a lookup through the next layer on a miss.
//   - Only the base layer holds JuiceFS attributes (meta.Attr). It applies
//     the attribute policies of the layers above to every reply that carries
//     attributes (attrPolicy: the pre-allocation overlay, then the cache's
//     timeouts), since READDIRPLUS entries cannot be revisited on the way up,
//     and records in each handle entry the attributes its open saw.
//
// Adding a FUSE operation: implement it in baseFS (or leave go-fuse's
// default), count it in instrumented, and, when it takes a node id or a
// handle, answer virtual inodes in tagsLayer; the test lists every
// RawFileSystem method. Adding a feature: a new layer type embedding the next
// RawFileSystem, constructed in New at its place in the order, overriding
// only what it changes; per-handle state goes in a new slot of the handle
// entry, reply attributes in an attrPolicy.
//
// Locks: each file that takes more than one lock states their order at its
// top. Across layers, a request never holds a lock of its own layer while it
// calls the next one.
package fusefs

import (
	"context"
	"log/slog"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/vfs"

	"github.com/disgrafs/disgrafs/coherence"
	"github.com/disgrafs/disgrafs/names"
	"github.com/disgrafs/disgrafs/prealloc"
)

// Options tune how long the kernel may cache what we tell it, and which
// layers the stack has.
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
	// Tags enables the tags layer (nil Service: off).
	Tags TagOptions
	// Cache enables the cache layer (nil: every read goes through JuiceFS).
	Cache *CacheOptions
	// Log receives the file system's warnings.
	Log *slog.Logger
	// Written is called (in the background) with the inode of a regular file
	// after a handle that wrote to it is released: the auto-tagger's trigger.
	Written func(ino uint64)
	// Prealloc enables the pre-allocation layer (nil: off).
	Prealloc *prealloc.Manager
	// Names is the mount's name index (nil: names are not remembered).
	Names *names.Index
	// Publisher, on a volume with a change channel, tells the other nodes
	// what this mount changes (nil: nobody to tell).
	Publisher Publisher
	// NoOpen serves a read-only mount of a volume nothing else can change
	// without OPEN, FLUSH and RELEASE requests (see noOpenLayer).
	NoOpen bool
}

// DefaultOptions are JuiceFS's defaults: one second for attributes and entries.
func DefaultOptions() Options {
	return Options{AttrTimeout: time.Second, EntryTimeout: time.Second, DirEntryTimeout: time.Second}
}

// FS is the FUSE file system of one mount: the top of its layer stack.
type FS struct {
	fuse.RawFileSystem // the top layer (instrumented)
	ops                *opCounters
	base               *baseFS
	tags               *tagsLayer  // nil when tags are off
	cache              *cacheLayer // nil when the whole-file cache is off
}

// New builds the stack over an open JuiceFS VFS.
func New(v *vfs.VFS, opts Options) *FS {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	handles := newHandleTable()
	fs := &FS{ops: &opCounters{}}
	fs.base = newBase(v, opts, handles)
	var next fuse.RawFileSystem = fs.base
	if opts.Cache != nil && opts.Cache.Cache != nil {
		fs.cache = newCacheLayer(next, *opts.Cache, handles, opts.Names, opts.Log)
		fs.base.filesAbove = true
		fs.base.voucher = fs.cache
		next = fs.cache
	}
	if opts.Publisher != nil {
		next = &publishLayer{RawFileSystem: next, pub: opts.Publisher, handles: handles, log: opts.Log}
	}
	if opts.NoOpen {
		next = newNoOpenLayer(next)
	}
	if opts.Prealloc != nil {
		p := newPreallocLayer(next, opts.Prealloc, fs.base, handles, opts.Names, opts.AttrTimeout, opts.Log)
		fs.base.policies = append(fs.base.policies, p) // the overlay first: it changes what others see
		next = p
	}
	if fs.cache != nil {
		fs.base.policies = append(fs.base.policies, fs.cache)
	}
	if opts.Tags.Service != nil {
		fs.tags = newTagsLayer(next, opts.Tags, opts.Names)
		next = fs.tags
	}
	fs.RawFileSystem = &instrumented{RawFileSystem: next, ops: fs.ops}
	return fs
}

// raw is what the FUSE server calls.
func (fs *FS) raw() fuse.RawFileSystem { return fs.RawFileSystem }

// Idle reports whether no request has arrived for d: background work (the
// auto-tagger) waits for that so it never competes with foreground I/O.
func (fs *FS) Idle(d time.Duration) bool { return fs.ops.idleFor() >= d }

// OpCounts returns how many requests of each kind the mount has served.
func (fs *FS) OpCounts() map[string]uint64 { return fs.ops.snapshot() }

// TagsChanged makes the virtual directories list afresh (after a reindex).
func (fs *FS) TagsChanged() {
	if fs.tags != nil {
		fs.tags.t.changed()
	}
}

// PassthroughActive reports whether cached files are being served through
// FUSE passthrough (false when off, or when the kernel refused it).
func (fs *FS) PassthroughActive() bool {
	return fs.cache != nil && fs.cache.passthrough.Load()
}

// ApplyRemote drops what the mount holds of a change another node made
// (coherence.Shared calls it in stream order).
func (fs *FS) ApplyRemote(ch coherence.Change) {
	if fs.cache == nil {
		return
	}
	fs.cache.applyRemote(ch, fs.base.forgetRemote)
}

// RunRemote does the background part of applying other writers' changes
// (directory checks) until ctx ends.
func (fs *FS) RunRemote(ctx context.Context) {
	if fs.cache != nil {
		fs.cache.runDirChecks(ctx, fs.base.listDir)
	}
}

// Doubt takes back what the kernel was given on the strength of a change
// channel that has lapsed.
func (fs *FS) Doubt() {
	if fs.cache != nil {
		fs.cache.doubt()
	}
}

// ForegroundReads is the number of reads in flight through the daemon.
func (fs *FS) ForegroundReads() int64 {
	if fs.cache == nil {
		return 0
	}
	return fs.cache.inflight.Load()
}
