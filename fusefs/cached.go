package fusefs

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/disgrafs/disgrafs/cache"
	"github.com/disgrafs/disgrafs/volume"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"
	"golang.org/x/sys/unix"
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
}

// cacheState is the per-mount state of cached opens.
type cacheState struct {
	CacheOptions
	passthrough atomic.Bool // false once the kernel refused a backing file

	mu      sync.Mutex
	handles map[uint64]*cachedHandle // by JuiceFS file handle
	inodes  map[uint64]*inodeIO
	pages   map[uint64]cache.Version // version of the pages the kernel holds

	// inflight counts reads going to JuiceFS: the prefetcher yields to them.
	inflight atomic.Int64

	// warmDirs are the directories holding files with a current copy, and
	// their ancestors (see warmDirTTL); dirParents the parents of the
	// directories looked up, to find those ancestors.
	dmu        sync.Mutex
	warmDirs   map[uint64]struct{}
	dirParents map[uint64]uint64
}

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

type cachedHandle struct {
	ino         uint64
	passthrough bool
	file        *os.File    // local copy (reads served by the daemon)
	stale       atomic.Bool // the file was written through this mount since
	readThrough bool        // a read-only open that missed the cache
	cachedIO    bool        // counted in inodeIO.cached
	size        uint64
}

// inodeIO tracks how an inode is open: the kernel refuses (EIO) to mix
// passthrough opens with opens that use the page cache.
type inodeIO struct {
	passthrough int
	cached      int
	backingID   int32
	backingVer  cache.Version
	handles     map[*cachedHandle]struct{}
}

func newCacheState(o CacheOptions) *cacheState {
	s := &cacheState{CacheOptions: o, handles: map[uint64]*cachedHandle{}, inodes: map[uint64]*inodeIO{}, pages: map[uint64]cache.Version{},
		warmDirs: map[uint64]struct{}{}, dirParents: map[uint64]uint64{}}
	s.passthrough.Store(o.Passthrough)
	return s
}

// PassthroughActive reports whether cached files are being served through
// FUSE passthrough (false when off, or when the kernel refused it).
func (fs *FS) PassthroughActive() bool {
	return fs.cache != nil && fs.cache.passthrough.Load()
}

// ForegroundReads is the number of reads in flight through the daemon.
func (fs *FS) ForegroundReads() int64 {
	if fs.cache == nil {
		return 0
	}
	return fs.cache.inflight.Load()
}

func (s *cacheState) inode(ino uint64) *inodeIO {
	io := s.inodes[ino]
	if io == nil {
		io = &inodeIO{handles: map[*cachedHandle]struct{}{}}
		s.inodes[ino] = io
	}
	return io
}

// openCached decides how an open of a regular file is served. It is called
// after JuiceFS opened it (so e.Attr is fresh from the metadata engine).
func (fs *FS) openCached(ctx *reqContext, in *fuse.OpenIn, e *meta.Entry, fh uint64, out *fuse.OpenOut) syscall.Errno {
	s := fs.cache
	ino := in.NodeId
	write := in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0
	h := &cachedHandle{ino: ino, size: e.Attr.Length}
	if write {
		s.mu.Lock()
		defer s.mu.Unlock()
		io := s.inode(ino)
		if io.passthrough > 0 {
			// The kernel requires every open of an inode that has a backing
			// file to use it, and writes must reach JuiceFS, not the copy:
			// the file is busy until its passthrough readers close it.
			return syscall.ETXTBSY
		}
		fs.invalidateLocked(ino)
		io.cached++
		h.cachedIO = true
		s.handles[fh] = h
		io.handles[h] = struct{}{}
		return 0
	}
	ver := volume.FileVersion(e.Attr)
	if e.Attr.Length <= awaitFillMax {
		// A prefetch or a warmup is copying this very file: wait for the
		// copy, which has already done part of what reading the file
		// through JuiceFS would do again (in a cold pass over 20,000 small
		// files at 10 ms, 23% of opens raced their file's prefetch and
		// read it a second time). Small files only: a reader of a large
		// file should not wait for all of it before its first byte.
		s.Cache.AwaitFill(context.Background(), ino, awaitFillWait)
	}
	// Open and check the copy (disk I/O, and a whole read for its checksum
	// on first use) before taking the lock, so that opens of different files
	// run in parallel.
	hit, ok := s.Cache.Get(ino, ver)
	defer func() { // after the lock is released (defers run last first)
		if s.Prefetch != nil {
			s.Prefetch.Opened(ino, ok)
		}
		if s.Learner != nil {
			s.Learner.Opened(ctx.pid, ino)
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok && !s.Cache.Has(ino, ver) {
		// A write open dropped the copy meanwhile.
		_ = hit.File.Close()
		hit, ok = nil, false
	}
	io := s.inode(ino)
	if io.passthrough > 0 {
		// Every open of an inode with a backing file must use it.
		if ok {
			_ = hit.File.Close()
		}
		if !ok || io.backingVer != ver {
			fs.opts.Log.Warn("a file open here through passthrough changed on the volume: new opens are refused until those readers close it",
				"ino", ino)
			return syscall.EBUSY
		}
		io.passthrough++
		h.passthrough = true
		out.BackingID = io.backingID
		out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
		s.handles[fh] = h
		io.handles[h] = struct{}{}
		s.Metrics.Passthrough()
		return 0
	}
	old := time.Since(time.Unix(e.Attr.Mtime, int64(e.Attr.Mtimensec))) >= s.PassthroughMinAge
	if ok && s.passthrough.Load() && hit.Size >= s.PassthroughMin && old && io.cached == 0 {
		if io.backingID == 0 {
			// Every passthrough open of the inode reads through this one
			// open file, so its readers share its readahead state; they are
			// nearly always whole-file sequential reads of a data set, and
			// a doubled window keeps several of them streaming (8 readers
			// of two 1 GiB files: 7.6-8.0 -> 11.2-12.0 GB/s, native 10-12,
			// from the host's cache). The kernel still reads random
			// accesses without readahead.
			if err := unix.Fadvise(int(hit.File.Fd()), 0, 0, unix.FADV_SEQUENTIAL); err != nil {
				fs.opts.Log.Debug("fadvise of a cached file", "ino", ino, "error", err)
			}
			id, errno := fs.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(hit.File.Fd())})
			if errno != 0 {
				s.passthrough.Store(false)
				fs.opts.Log.Warn("FUSE passthrough refused by the kernel; cached files are served through the page cache", "error", errno)
			} else {
				io.backingID, io.backingVer = id, ver
			}
		}
		if io.backingID != 0 {
			_ = hit.File.Close()
			io.passthrough++
			h.passthrough = true
			out.BackingID = io.backingID
			out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
			s.handles[fh] = h
			io.handles[h] = struct{}{}
			s.Metrics.Passthrough()
			return 0
		}
	}
	io.cached++
	h.cachedIO = true
	if ok {
		h.file = hit.File
	} else {
		h.readThrough = true
	}
	if ok && s.pages[ino] == ver {
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	} else {
		switch {
		case e.Attr.KeepCache && !ok:
			out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
		case ctx.validated != nil:
			// The kernel has just received these attributes in the reply
			// to this open's own LOOKUP: its size is current.
		case fs.server != nil:
			// The kernel may hold older attributes (a cached file's last
			// for --cache-ttl): have it read them again, so that it does
			// not cut reads at a stale size.
			fs.server.InodeNotify(ino, -1, 0)
		}
		if ok {
			if len(s.pages) > 1<<20 {
				s.pages = map[uint64]cache.Version{}
			}
			s.pages[ino] = ver
		} else {
			delete(s.pages, ino)
		}
	}
	s.handles[fh] = h
	io.handles[h] = struct{}{}
	return 0
}

// trackCreated records the handle of a file created through this mount (it
// uses the page cache, which rules out passthrough opens while it is open).
func (fs *FS) trackCreated(ino, fh uint64) {
	s := fs.cache
	s.mu.Lock()
	defer s.mu.Unlock()
	io := s.inode(ino)
	h := &cachedHandle{ino: ino, cachedIO: true}
	io.cached++
	s.handles[fh] = h
	io.handles[h] = struct{}{}
}

// invalidateLocked drops the cached copy of ino: it is being written through
// this mount. Open handles reading the local copy switch to JuiceFS.
func (fs *FS) invalidateLocked(ino uint64) {
	s := fs.cache
	s.Cache.Invalidate(ino)
	delete(s.pages, ino)
	if io := s.inodes[ino]; io != nil {
		for h := range io.handles {
			if h.file != nil {
				h.stale.Store(true)
			}
		}
	}
}

// invalidate is invalidateLocked for callers without the lock.
func (fs *FS) invalidate(ino uint64) {
	if fs.cache == nil {
		return
	}
	fs.cache.mu.Lock()
	fs.invalidateLocked(ino)
	fs.cache.mu.Unlock()
}

// readCached serves a read from the local copy when the handle has one.
func (fs *FS) readCached(fh uint64, buf []byte, off uint64) (fuse.ReadResult, bool) {
	s := fs.cache
	s.mu.Lock()
	h := s.handles[fh]
	s.mu.Unlock()
	if h == nil || h.file == nil || h.stale.Load() {
		return nil, false
	}
	n, err := h.file.ReadAt(buf, int64(off))
	if err != nil && n == 0 && off < h.size {
		return nil, false // let JuiceFS answer
	}
	return fuse.ReadResultData(buf[:n]), true
}

// releaseCached forgets a handle.
func (fs *FS) releaseCached(fh uint64) {
	s := fs.cache
	s.mu.Lock()
	h := s.handles[fh]
	if h == nil {
		s.mu.Unlock()
		return
	}
	delete(s.handles, fh)
	io := s.inodes[h.ino]
	if io != nil {
		delete(io.handles, h)
		switch {
		case h.passthrough:
			io.passthrough--
			if io.passthrough == 0 && io.backingID != 0 {
				if errno := fs.server.UnregisterBackingFd(io.backingID); errno != 0 {
					fs.opts.Log.Debug("unregistering a backing file", "error", errno)
				}
				io.backingID = 0
			}
		case h.cachedIO:
			io.cached--
		}
		if len(io.handles) == 0 {
			delete(s.inodes, h.ino)
		}
	}
	s.mu.Unlock()
	if h.file != nil {
		_ = h.file.Close()
	}
	if h.readThrough && s.Prefetch != nil && s.ReadThroughMax > 0 && h.size <= uint64(s.ReadThroughMax) && h.size > 0 {
		s.Prefetch.Read(h.ino)
	}
}

// cacheTTL returns the long timeout for a regular file whose cached copy is
// current, or for a directory on the way to one (see warmDirTTL); 0 for the
// others.
func (fs *FS) cacheTTL(e *meta.Entry) time.Duration {
	if fs.cache == nil || fs.cache.TTL <= 0 {
		return 0
	}
	switch e.Attr.Typ {
	case meta.TypeFile:
		if fs.cache.Cache.Has(uint64(e.Inode), volume.FileVersion(e.Attr)) {
			fs.cache.warmParent(e.Attr.Parent)
			return fs.cache.TTL
		}
	case meta.TypeDirectory:
		return fs.cache.warmDirTTL(e)
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
func (s *cacheState) warmDirTTL(e *meta.Entry) time.Duration {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if e.Attr.Parent != 0 {
		if len(s.dirParents) >= maxWarmDirs {
			clear(s.dirParents)
		}
		s.dirParents[uint64(e.Inode)] = uint64(e.Attr.Parent)
	}
	if _, ok := s.warmDirs[uint64(e.Inode)]; !ok {
		return 0
	}
	s.warmLocked(uint64(e.Attr.Parent))
	return s.TTL
}

// warmParent records that directory ino holds a file with a current copy,
// and so do its ancestors, as far as lookups have shown them.
func (s *cacheState) warmParent(ino meta.Ino) {
	s.dmu.Lock()
	s.warmLocked(uint64(ino))
	s.dmu.Unlock()
}

func (s *cacheState) warmLocked(ino uint64) {
	for ino != 0 && ino != uint64(meta.RootInode) {
		if _, ok := s.warmDirs[ino]; ok {
			return
		}
		if len(s.warmDirs) >= maxWarmDirs {
			clear(s.warmDirs)
		}
		s.warmDirs[ino] = struct{}{}
		ino = s.dirParents[ino]
	}
}
