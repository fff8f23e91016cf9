package fusefs

// Lock order in this file: inodeIO.mu, then cacheLayer.mu, then the handle
// table's lock; cacheLayer.tmu, then the handle table's lock. cacheLayer.dmu
// and dqmu are taken alone; gmu, then the name index's lock; tmu, then the
// name index's lock (remote.go).
// applyRemote takes tmu, mu and gmu one after another, never two at once,
// and tells the kernel (InodeNotify, EntryNotify) holding none: an
// invalidation waits for the kernel's inode and directory locks, which
// requests in flight hold. Opens of one inode serialize
// on its inodeIO.mu, which is held across the ioctls that register and
// unregister a passthrough backing file: only opens of the same file wait
// for them.

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"
	"golang.org/x/sys/unix"

	"github.com/disgrafs/disgrafs/cache"
	"github.com/disgrafs/disgrafs/coherence"
	"github.com/disgrafs/disgrafs/names"
	"github.com/disgrafs/disgrafs/volume"
)

// CacheOptions serve opens of cached files without the daemon on the read
// path.
type CacheOptions struct {
	Cache *cache.Cache
	// Prefetch (may be nil) is told about opens and read-through misses.
	Prefetch *cache.Prefetcher
	// Learner (may be nil) learns co-access from opens.
	Learner *cache.Learner
	// Passthrough hands files of at least PassthroughMin bytes to the kernel
	// (FUSE passthrough, needs CAP_SYS_ADMIN); smaller cached files are read
	// from the local copy once and then kept in the page cache, which is
	// faster for small files (see ../shared/FACTS.md).
	Passthrough    bool
	PassthroughMin int64
	// PassthroughMinAge keeps files modified more recently than this on the
	// page cache: a file open through passthrough cannot be opened for
	// writing on this node until its readers close it, and recently written
	// files are the ones likely to be written again.
	PassthroughMinAge time.Duration
	// TTL is the entry and attribute timeout for files whose copy is cached
	// and valid; opens are still checked against the metadata engine.
	TTL time.Duration
	// ReadThroughMax: a file read through the daemon (a miss) is copied into
	// the cache afterwards if it is at most this big (0: never).
	ReadThroughMax int64
	Metrics        *cache.Metrics
	// Coherence is the volume's change channel: while it is healthy, opens
	// of files whose copy was found current are answered without asking the
	// metadata engine (see trust). Nil: every open asks.
	Coherence coherence.Channel
	// Opens counts how read-only opens learnt their copy was current (may
	// be nil).
	Opens *coherence.Counters
	// Leased: the channel's trust is a lease that may lapse (a shared
	// volume): long kernel timeouts are given only while it is current, and
	// taken back when it lapses (remote.go).
	Leased bool
}

// cacheLayer serves reads of cached files: from the local copy through FUSE
// passthrough (the kernel reads the copy, the daemon never sees the reads)
// or through the page cache (the daemon reads the copy once). It decides the
// page-cache flags of every open regular file (the base layer leaves them to
// it), invalidates copies that this mount writes, and gives cached files and
// their directories long kernel timeouts (attrPolicy).
type cacheLayer struct {
	fuse.RawFileSystem // the next layer
	CacheOptions
	handles     *handleTable
	names       *names.Index
	log         *slog.Logger
	server      *fuse.Server
	passthrough atomic.Bool // false once the kernel refused a backing file
	// inflight counts reads going to JuiceFS: the prefetcher yields to them.
	inflight atomic.Int64

	mu     sync.Mutex
	inodes map[uint64]*inodeIO      // inodes being opened or open through passthrough
	pages  map[uint64]cache.Version // version of the pages the kernel holds

	// warmDirs are the directories holding files with a current copy, and
	// their ancestors as far as the name index knows them (see warmDirTTL).
	dmu      sync.Mutex
	warmDirs map[uint64]struct{}

	// trust holds the files whose copy an open found current after asking
	// the metadata engine, with the attributes it read and the channel's
	// epoch at the time. Invariant: an entry exists only while no handle of
	// this mount may write the file, and every request of this mount that
	// changes a file (a write open, setattr, xattrs) removes the entry
	// before it reaches JuiceFS; changes elsewhere move the channel's epoch
	// or, once channels report single files, remove it.
	tmu   sync.Mutex
	trust map[uint64]trusted
	// Changes the channel reported (remote.go): changed[ino] is the count
	// rgen at the file's last one; counts up to rfloor are forgotten.
	changed      map[uint64]uint64
	rgen, rfloor uint64
	egen         uint64 // name changes other nodes reported (remote.go: removeName)

	// given: inodes given long kernel timeouts while the channel was
	// current, taken back when it lapses (remote.go).
	gmu   sync.Mutex
	given map[uint64]names.Dentry
	// dirQueue: directories to check (remote.go: runDirChecks).
	dqmu     sync.Mutex
	dirQueue map[uint64]struct{}
	dirWake  chan struct{}
}

// trusted is an entry of the trust table.
type trusted struct {
	attr  meta.Attr
	epoch uint64
}

// maxTrusted bounds the trust table; when it is full it starts over (files
// are trusted again after their next checked open).
const maxTrusted = 1 << 20

// maxWarmDirs bounds warmDirs; when it is full it starts over (the
// directories are learnt again from the next lookups).
const maxWarmDirs = 1 << 16

// An open waits for an in-flight copy of its file into the cache when the
// file is at most awaitFillMax bytes (one JuiceFS block: one object read),
// for at most awaitFillWait; then it reads through JuiceFS.
const (
	awaitFillMax  = 4 << 20
	awaitFillWait = time.Second
)

// cachedHandle is the cache layer's slot of a handle.
type cachedHandle struct {
	passthrough bool
	stale       atomic.Bool // the file was written through this mount since
	readThrough bool        // a read-only open that missed the cache
	size        uint64
	// copied: reads are served from the local copy of version ver, opened
	// at the open or, when the kernel was expected to hold the file's
	// pages (lazy), at the first read that reaches the daemon.
	copied bool
	lazy   bool
	ver    cache.Version
	fmu    sync.Mutex
	file   *os.File // fmu; nil until opened, or when the copy is gone
	failed bool     // fmu: the lazy open found no usable copy
}

// copyFile returns the open local copy, opening it first for a lazy handle;
// nil when reads must go to JuiceFS.
func (ch *cachedHandle) copyFile(c *cache.Cache, ino uint64) *os.File {
	if !ch.copied || ch.stale.Load() {
		return nil
	}
	ch.fmu.Lock()
	defer ch.fmu.Unlock()
	if ch.file == nil && ch.lazy && !ch.failed {
		if hit, ok := c.OpenCopy(ino, ch.ver); ok {
			ch.file = hit.File
		} else {
			ch.failed = true
		}
	}
	return ch.file
}

// closeFile closes the local copy, if open.
func (ch *cachedHandle) closeFile() {
	ch.fmu.Lock()
	if ch.file != nil {
		_ = ch.file.Close()
		ch.file = nil
	}
	ch.fmu.Unlock()
}

// inodeIO is the passthrough state of one inode. The kernel refuses (EIO) to
// mix passthrough opens of an inode with opens that use the page cache, and
// all passthrough opens of an inode share one backing file.
type inodeIO struct {
	mu          sync.Mutex
	refs        int // cacheLayer.mu: acquirers; the entry goes at 0 without passthrough handles
	passthrough int // handles reading through backingID
	backingID   int32
	backingVer  cache.Version
}

func newCacheLayer(next fuse.RawFileSystem, o CacheOptions, handles *handleTable, idx *names.Index, log *slog.Logger) *cacheLayer {
	c := &cacheLayer{RawFileSystem: next, CacheOptions: o, handles: handles, names: idx, log: log,
		inodes: map[uint64]*inodeIO{}, pages: map[uint64]cache.Version{}, warmDirs: map[uint64]struct{}{},
		trust: map[uint64]trusted{}, changed: map[uint64]uint64{}, given: map[uint64]names.Dentry{},
		dirQueue: map[uint64]struct{}{}, dirWake: make(chan struct{}, 1)}
	if c.Coherence == nil {
		c.Coherence = coherence.Check{Why: "no change channel"}
	}
	c.passthrough.Store(o.Passthrough)
	return c
}

// Init receives the server: backing files are registered through it.
func (c *cacheLayer) Init(s *fuse.Server) {
	c.server = s
	c.RawFileSystem.Init(s)
}

// acquire returns ino's state, locked.
func (c *cacheLayer) acquire(ino uint64) *inodeIO {
	c.mu.Lock()
	io := c.inodes[ino]
	if io == nil {
		io = &inodeIO{}
		c.inodes[ino] = io
	}
	io.refs++
	c.mu.Unlock()
	io.mu.Lock()
	return io
}

// release unlocks io, forgetting it when nobody uses it.
func (c *cacheLayer) release(ino uint64, io *inodeIO) {
	c.mu.Lock()
	io.refs--
	if io.refs == 0 && io.passthrough == 0 {
		delete(c.inodes, ino)
	}
	c.mu.Unlock()
	io.mu.Unlock()
}

// Open opens through the next layer, then decides how the handle's reads
// are served. A refused open releases the handle it got.
func (c *cacheLayer) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	// The epoch before the engine is asked: a change the channel reports
	// after this point may be one the engine's answer does not show yet.
	epoch, healthy := c.Coherence.Epoch()
	gen := c.remoteGen()
	if status := c.RawFileSystem.Open(cancel, in, out); status != fuse.OK {
		return status
	}
	h := c.handles.get(out.Fh)
	if h == nil || h.attr.Typ != meta.TypeFile || vfs.IsSpecialNode(meta.Ino(in.NodeId)) {
		return fuse.OK
	}
	if errno := c.openCached(in, h, out, epoch, gen, healthy); errno != 0 {
		h.wrote.Store(false) // nothing was written through it
		c.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: in.InHeader, Fh: out.Fh})
		return st(errno)
	}
	return fuse.OK
}

// openCached decides how an open of a regular file is served, from the
// attributes JuiceFS has just opened it with.
func (c *cacheLayer) openCached(in *fuse.OpenIn, h *handle, out *fuse.OpenOut, epoch, gen uint64, healthy bool) syscall.Errno {
	ino := in.NodeId
	ch := &cachedHandle{size: h.attr.Length}
	if in.Flags&writeFlags != 0 {
		io := c.acquire(ino)
		defer c.release(ino, io)
		if io.passthrough > 0 {
			// The kernel requires every open of an inode that has a backing
			// file to use it, and writes must reach JuiceFS, not the copy:
			// the file is busy until its passthrough readers close it.
			return syscall.ETXTBSY
		}
		c.invalidate(ino)
		h.cached.Store(ch)
		return 0
	}
	ver := volume.FileVersion(&h.attr)
	ch.ver = ver
	// A file served through the page cache whose pages the kernel kept
	// from an earlier open of this version: its reads will most likely
	// never reach the daemon, so the copy is opened only if one does.
	lazy := false
	if int64(h.attr.Length) < c.PassthroughMin || !c.passthrough.Load() {
		c.mu.Lock()
		kept := c.pages[ino] == ver
		c.mu.Unlock()
		if kept {
			_, lazy = c.Cache.Use(ino, ver)
		}
	}
	var hit *cache.Hit
	ok := lazy
	if !lazy {
		if h.attr.Length <= awaitFillMax {
			// A prefetch or a warmup is copying this very file: wait for
			// the copy, which has already done part of what reading the
			// file through JuiceFS would do again. Small files only: a
			// reader of a large file should not wait for all of it before
			// its first byte.
			c.Cache.AwaitFill(context.Background(), ino, awaitFillWait)
		}
		// Open and check the copy (disk I/O, and a whole read for its
		// checksum on first use) before taking any lock, so that opens
		// of different files run in parallel.
		hit, ok = c.Cache.Get(ino, ver)
	}
	defer func() { // after the inode is released (defers run last first)
		if c.Prefetch != nil {
			c.Prefetch.Opened(ino, ok)
		}
		if c.Learner != nil {
			c.Learner.Opened(in.Pid, ino)
		}
	}()
	io := c.acquire(ino)
	defer c.release(ino, io)
	if ok && !c.Cache.Has(ino, ver) {
		// A write open dropped the copy meanwhile.
		if hit != nil {
			_ = hit.File.Close()
		}
		hit, ok, lazy = nil, false, false
	}
	c.Opens.Opened(h.vouched)
	if ok && healthy && !h.vouched {
		c.trustFile(ino, &h.attr, epoch, gen)
	}
	if ok {
		// A read-only open of a copy: the kernel need not send FLUSH at
		// each close (JuiceFS commits nothing for a reader). POSIX locks
		// taken through the handle are released at RELEASE instead (JuiceFS
		// unlocks the handle's lock owner there).
		out.OpenFlags |= fuse.FOPEN_NOFLUSH
	}
	if io.passthrough > 0 {
		// Every open of an inode with a backing file must use it.
		if hit != nil {
			_ = hit.File.Close()
		}
		if !ok || io.backingVer != ver {
			c.log.Warn("a file open here through passthrough changed on the volume: new opens are refused until those readers close it",
				"ino", ino)
			return syscall.EBUSY
		}
		return c.joinPassthrough(io, h, ch, out)
	}
	old := time.Since(time.Unix(h.attr.Mtime, int64(h.attr.Mtimensec))) >= c.PassthroughMinAge
	if hit != nil && c.passthrough.Load() && hit.Size >= c.PassthroughMin && old && !c.otherPageCacheHandles(ino, h) {
		if io.backingID == 0 {
			// Every passthrough open of the inode reads through this one
			// open file, so its readers share its readahead state; they are
			// nearly always whole-file sequential reads of a data set, and
			// a doubled window keeps several of them streaming. The kernel
			// still reads random accesses without readahead.
			if err := unix.Fadvise(int(hit.File.Fd()), 0, 0, unix.FADV_SEQUENTIAL); err != nil {
				c.log.Debug("fadvise of a cached file", "ino", ino, "error", err)
			}
			id, errno := c.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(hit.File.Fd())})
			if errno != 0 {
				c.passthrough.Store(false)
				c.log.Warn("FUSE passthrough refused by the kernel; cached files are served through the page cache", "error", errno)
			} else {
				io.backingID, io.backingVer = id, ver
			}
		}
		if io.backingID != 0 {
			_ = hit.File.Close()
			return c.joinPassthrough(io, h, ch, out)
		}
	}
	switch {
	case hit != nil:
		ch.copied, ch.file = true, hit.File
	case lazy:
		ch.copied, ch.lazy = true, true
	default:
		ch.readThrough = true
	}
	c.mu.Lock()
	keep := ok && c.pages[ino] == ver
	switch {
	case keep:
	case ok:
		if len(c.pages) > 1<<20 {
			c.pages = map[uint64]cache.Version{}
		}
		c.pages[ino] = ver
	default:
		delete(c.pages, ino)
	}
	c.mu.Unlock()
	switch {
	case keep:
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	case h.attr.KeepCache && !ok:
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	case h.validated, h.vouched:
		// The kernel has just received these attributes in the reply to
		// this open's own LOOKUP, or they did not change since an open
		// that made sure of them: its size is current.
	case c.server != nil:
		// The kernel may hold older attributes (a cached file's last for
		// --cache-ttl): have it read them again, so that it does not cut
		// reads at a stale size.
		c.server.InodeNotify(ino, -1, 0)
	}
	h.cached.Store(ch)
	return 0
}

// joinPassthrough serves h through io's backing file. io is locked.
func (c *cacheLayer) joinPassthrough(io *inodeIO, h *handle, ch *cachedHandle, out *fuse.OpenOut) syscall.Errno {
	io.passthrough++
	ch.passthrough = true
	out.BackingID = io.backingID
	out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
	h.cached.Store(ch)
	c.Metrics.Passthrough()
	return 0
}

// otherPageCacheHandles reports whether ino has an open handle other than h
// that is not served through passthrough (a writer, a create, a page-cache
// reader): the kernel would refuse to mix them.
func (c *cacheLayer) otherPageCacheHandles(ino uint64, h *handle) bool {
	found := false
	c.handles.each(ino, func(o *handle) {
		if o == h {
			return
		}
		if ch := o.cached.Load(); ch == nil || !ch.passthrough {
			found = true
		}
	})
	return found
}

// writeFlags are the open flags that may change a file.
const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC

// vouch (openVoucher) returns the attributes of a file known current, for
// a read-only open in the channel's current epoch.
func (c *cacheLayer) vouch(ino uint64, flags uint32) (meta.Attr, bool) {
	if flags&writeFlags != 0 {
		return meta.Attr{}, false
	}
	epoch, ok := c.Coherence.Epoch()
	if !ok {
		return meta.Attr{}, false
	}
	c.tmu.Lock()
	defer c.tmu.Unlock()
	t, ok := c.trust[ino]
	if !ok || t.epoch != epoch {
		return meta.Attr{}, false
	}
	return t.attr, true
}

// vouchEntry (openVoucher) answers a LOOKUP of a name whose file is known
// current. The name index is exact while the channel is: every name change
// of this mount updates it, and other nodes' changes reach it (applyRemote,
// checkDir) before their writers go on. A name the index does not know, or
// a file not trusted, is looked up in the engine.
func (c *cacheLayer) vouchEntry(parent uint64, name string) (uint64, meta.Attr, bool) {
	if c.names == nil {
		return 0, meta.Attr{}, false
	}
	ino, ok := c.names.Ino(parent, name)
	if !ok {
		return 0, meta.Attr{}, false
	}
	attr, ok := c.vouch(ino, 0)
	if ok {
		c.Opens.LookedUp()
	}
	return ino, attr, ok
}

// trustFile records that an open which asked the engine in epoch found the
// copy of ino current, unless a handle of this mount may write the file or
// the channel reported a change to it since the open began (gen).
// The check and the record are one step under tmu, and a write open
// publishes its handle before it distrusts the file: either this sees the
// writer, or the writer's distrust comes after the record.
func (c *cacheLayer) trustFile(ino uint64, attr *meta.Attr, epoch, gen uint64) {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if c.remoteSinceLocked(ino, gen) {
		return
	}
	writer := false
	c.handles.each(ino, func(h *handle) {
		if h.wrote.Load() {
			writer = true
		}
	})
	if writer {
		return
	}
	if len(c.trust) >= maxTrusted {
		clear(c.trust)
	}
	c.trust[ino] = trusted{attr: *attr, epoch: epoch}
}

// distrust makes the next open of ino ask the metadata engine.
func (c *cacheLayer) distrust(ino uint64) {
	c.tmu.Lock()
	delete(c.trust, ino)
	c.tmu.Unlock()
}

// invalidate drops the cached copy of ino: it is being written through this
// mount. Open handles reading the local copy switch to JuiceFS.
func (c *cacheLayer) invalidate(ino uint64) {
	c.distrust(ino)
	c.Cache.Invalidate(ino)
	c.mu.Lock()
	delete(c.pages, ino)
	c.mu.Unlock()
	c.handles.each(ino, func(h *handle) {
		if ch := h.cached.Load(); ch != nil && ch.copied {
			ch.stale.Store(true)
		}
	})
}

// Read serves a read from the local copy when the handle has one.
func (c *cacheLayer) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if h := c.handles.get(in.Fh); h != nil {
		if f := h.cachedCopy(c.Cache); f != nil {
			ch := h.cached.Load()
			n, err := f.ReadAt(buf, int64(in.Offset))
			if err == nil || n > 0 || in.Offset >= ch.size {
				return fuse.ReadResultData(buf[:n]), fuse.OK
			}
			// The copy failed: let JuiceFS answer.
		}
	}
	c.inflight.Add(1)
	defer c.inflight.Add(-1)
	return c.RawFileSystem.Read(cancel, in, buf)
}

// SetAttr drops the copy of a file whose size changes, and the trust of
// any file it changes (its mode and owner decide who may open it).
func (c *cacheLayer) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	c.distrust(in.NodeId)
	status := c.RawFileSystem.SetAttr(cancel, in, out)
	if status == fuse.OK && in.Valid&fuse.FATTR_SIZE != 0 {
		c.invalidate(in.NodeId)
	}
	return status
}

// SetXAttr distrusts the file: an ACL decides who may open it.
func (c *cacheLayer) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	c.distrust(in.NodeId)
	return c.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

// RemoveXAttr distrusts the file, as SetXAttr.
func (c *cacheLayer) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	c.distrust(h.NodeId)
	return c.RawFileSystem.RemoveXAttr(cancel, h, attr)
}

// Fallocate drops the copy: the file's data changes.
func (c *cacheLayer) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	c.invalidate(in.NodeId)
	return c.RawFileSystem.Fallocate(cancel, in)
}

// CopyFileRange drops the destination's copy: its data changes.
func (c *cacheLayer) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	c.invalidate(in.NodeIdOut)
	return c.RawFileSystem.CopyFileRange(cancel, in)
}

// Release forgets the handle's slot, then releases it below; a file read
// through JuiceFS (a miss) is queued for copying afterwards.
func (c *cacheLayer) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	var ch *cachedHandle
	if h := c.handles.get(in.Fh); h != nil {
		ch = h.cached.Load()
	}
	if ch != nil && ch.passthrough {
		io := c.acquire(in.NodeId)
		io.passthrough--
		if io.passthrough == 0 && io.backingID != 0 {
			if errno := c.server.UnregisterBackingFd(io.backingID); errno != 0 {
				c.log.Debug("unregistering a backing file", "error", errno)
			}
			io.backingID = 0
		}
		c.release(in.NodeId, io)
	}
	if ch != nil {
		ch.closeFile()
	}
	c.RawFileSystem.Release(cancel, in)
	if ch != nil && ch.readThrough && c.Prefetch != nil && c.ReadThroughMax > 0 && ch.size <= uint64(c.ReadThroughMax) && ch.size > 0 {
		c.Prefetch.Read(in.NodeId)
	}
}

// replyAttr (attrPolicy) gives the long timeout to a regular file whose
// cached copy is current, and to a directory on the way to one (see
// warmDirTTL).
func (c *cacheLayer) replyAttr(e *meta.Entry, parent uint64) time.Duration {
	if c.TTL <= 0 {
		return 0
	}
	switch e.Attr.Typ {
	case meta.TypeFile:
		if c.Cache.Has(uint64(e.Inode), volume.FileVersion(e.Attr)) && c.leasedTTL(uint64(e.Inode), parent, e.Name) {
			c.warmParent(uint64(e.Attr.Parent))
			return c.TTL
		}
	case meta.TypeDirectory:
		return c.warmDirTTL(e, parent)
	}
	return 0
}

// warmDirTTL gives the directories that hold cached files, and their
// ancestors, the long timeout of the cached files themselves. A training job
// reads a warmed data set in random order; with JuiceFS's one second for
// directory entries, every file's path walk would look its directories up
// again in the metadata engine, a round trip each. What a longer timeout
// lets the kernel keep is the directory's name and attributes: a directory
// renamed or removed by another node keeps answering here by its old path
// for up to --cache-ttl, like the cached files' own names. The files' data
// is still checked at every open.
func (c *cacheLayer) warmDirTTL(e *meta.Entry, parent uint64) time.Duration {
	c.dmu.Lock()
	_, warm := c.warmDirs[uint64(e.Inode)]
	c.dmu.Unlock()
	if !warm || !c.leasedTTL(uint64(e.Inode), parent, e.Name) {
		return 0
	}
	c.warmParent(uint64(e.Attr.Parent))
	return c.TTL
}

// warmParent records that directory ino holds a file with a current copy,
// and so do its ancestors, as far as the name index knows them.
func (c *cacheLayer) warmParent(ino uint64) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	for depth := 0; ino != 0 && ino != uint64(meta.RootInode) && depth < 256; depth++ {
		if _, ok := c.warmDirs[ino]; ok {
			return
		}
		if len(c.warmDirs) >= maxWarmDirs {
			clear(c.warmDirs)
		}
		c.warmDirs[ino] = struct{}{}
		d, ok := c.names.Name(ino)
		if !ok {
			return
		}
		ino = d.Parent
	}
}

// cachedCopy is the local copy h's reads are served from, nil when none.
func (h *handle) cachedCopy(c *cache.Cache) *os.File {
	ch := h.cached.Load()
	if ch == nil {
		return nil
	}
	return ch.copyFile(c, h.ino)
}
