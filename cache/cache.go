// Package cache keeps whole files of a JuiceFS volume on the local disk so
// that reads can bypass the daemon (FUSE passthrough or the kernel's page
// cache), warms it by tag or query, and prefetches files related to the ones
// being opened.
//
// JuiceFS's own block cache holds blocks of slices, never whole files, so it
// cannot back a passthrough file; this cache is a separate store keyed by
// inode and validated against the file's attributes at every open.
package cache

import (
	"cmp"
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sync/singleflight"
)

// Version identifies one content of a file: any write through JuiceFS, on any
// node, changes the length or the modification and change times.
type Version struct {
	Length uint64
	Mtime  int64 // nanoseconds since the epoch
	Ctime  int64
}

// Source reads files from the volume. It is implemented over JuiceFS's VFS.
type Source interface {
	// Stat returns the file's current version from the metadata engine.
	Stat(ctx context.Context, ino uint64) (Version, error)
	// Open opens the file for reading its whole content.
	Open(ctx context.Context, ino uint64) (Reader, Version, error)
	// Cached says the file, of length bytes, is now held whole here: the
	// source can drop its own cached blocks of it, so that its bytes are
	// cached once. It is called while the Reader that filled the copy is
	// still open, so the source can use what that open already read.
	Cached(ctx context.Context, ino uint64, length uint64)
}

// Reader reads one open file of the source.
type Reader interface {
	io.ReaderAt
	Close() error
}

// Errors of Fill.
var (
	// ErrTooBig: the file is larger than the whole cache budget.
	ErrTooBig = errors.New("file larger than the cache budget")
	// ErrNoSpace: the cache disk is full (or at its free-space floor).
	ErrNoSpace = errors.New("no space left for the cache")
	// ErrChanged: the file changed while it was being copied.
	ErrChanged = errors.New("file changed while caching")
	// ErrClosed: the cache is closed.
	ErrClosed = errors.New("cache closed")
	// ErrRecentlyUsed: a speculative fill (a prefetch) would have to evict
	// files used more recently than the one it brings; nothing was evicted.
	ErrRecentlyUsed = errors.New("cache full of files used more recently")
)

// Config sets where the cache lives and how much it may hold.
type Config struct {
	Dir string
	// Capacity is the budget in bytes of cached file contents.
	Capacity int64
	// FreeRatio keeps at least this share of the cache disk free (like
	// juicefs --free-space-ratio).
	FreeRatio float64
	Log       *slog.Logger
	Metrics   *Metrics // may be nil
}

// entry is one cached file.
type entry struct {
	ino     uint64
	ver     Version
	size    int64  // bytes on disk (== ver.Length)
	crc     uint32 // CRC-32C of the content
	fctime  int64  // change time of the cache file when it was written
	lastUse int64
	// seq names the entry's file (see filePath): every copy gets a file of
	// its own, so that the file of a forgotten copy can be removed after the
	// lock is released without racing a new copy of the same inode.
	seq uint64
	// verified: the content matched crc since this process started. Entries
	// found on disk at start are checked before they are first served.
	verified bool
	elem     *list.Element
}

// An index record is recordLen bytes; records written before copies had
// their own file names are oldRecordLen bytes and name the file by inode
// alone (seq 0).
const (
	recordLen    = 8 * 8
	oldRecordLen = 8 * 7
)

func (e *entry) marshal() []byte {
	b := make([]byte, recordLen)
	binary.BigEndian.PutUint64(b[0:], e.ver.Length)
	binary.BigEndian.PutUint64(b[8:], uint64(e.ver.Mtime))
	binary.BigEndian.PutUint64(b[16:], uint64(e.ver.Ctime))
	binary.BigEndian.PutUint64(b[24:], uint64(e.size))
	binary.BigEndian.PutUint64(b[32:], uint64(e.crc))
	binary.BigEndian.PutUint64(b[40:], uint64(e.fctime))
	binary.BigEndian.PutUint64(b[48:], uint64(e.lastUse))
	binary.BigEndian.PutUint64(b[56:], e.seq)
	return b
}

func unmarshal(ino uint64, b []byte) (*entry, error) {
	if len(b) != recordLen && len(b) != oldRecordLen {
		return nil, fmt.Errorf("cache index record of inode %d: %d bytes, want %d", ino, len(b), recordLen)
	}
	var seq uint64
	if len(b) == recordLen {
		seq = binary.BigEndian.Uint64(b[56:])
	}
	return &entry{
		seq: seq,
		ino: ino,
		ver: Version{
			Length: binary.BigEndian.Uint64(b[0:]),
			Mtime:  int64(binary.BigEndian.Uint64(b[8:])),
			Ctime:  int64(binary.BigEndian.Uint64(b[16:])),
		},
		size:    int64(binary.BigEndian.Uint64(b[24:])),
		crc:     uint32(binary.BigEndian.Uint64(b[32:])),
		fctime:  int64(binary.BigEndian.Uint64(b[40:])),
		lastUse: int64(binary.BigEndian.Uint64(b[48:])),
	}, nil
}

var bucket = []byte("files")

// Cache is the whole-file cache of one mount.
type Cache struct {
	cfg Config
	log *slog.Logger
	db  *bolt.DB
	met *Metrics
	sf  singleflight.Group
	crc *crc32.Table
	// bufs holds copy buffers: a fill of a small file must not allocate
	// a megabyte (warming 100,000 small files made 100 GB of garbage).
	bufs sync.Pool
	// seq is the last sequence number given to a copy's file (fileName).
	seq atomic.Uint64

	mu       sync.Mutex
	entries  map[uint64]*entry
	lru      *list.List // front: most recently used
	used     int64      // bytes of cached files
	reserved int64      // bytes being fetched
	dirty    map[uint64]struct{}
	closed   bool
	onEvict  []func(ino uint64)
	// filling holds a channel per file being copied in, closed when the
	// copy ends: an open can wait for it instead of reading the file
	// through JuiceFS beside the copy.
	filling map[uint64]chan struct{}
	// ghosts remembers the last use of files evicted for lack of room (two
	// generations of at most maxGhosts each: ghosts is the newer). A file
	// evicted by the LRU was used less recently than every file it left
	// behind, so a prefetch of it may evict nothing (see reserve): without
	// this, a prefetch that follows tags brings back the very file the
	// budget has just pushed out, evicting a file used since, and the two
	// chase each other.
	ghosts, oldGhosts map[uint64]int64
}

// maxGhosts bounds each generation of Cache.ghosts (16 bytes an entry).
const maxGhosts = 1 << 16

// FillMode says what a fill may evict to make room.
type FillMode int

const (
	// Demand: a reader asked for the file (a warmup, a read that missed):
	// the least recently used files make room, whatever their last use.
	Demand FillMode = iota
	// Speculative: a prefetch. It may evict only files used less recently
	// than the file it brings was: its last use when it was evicted for
	// lack of room before (see Cache.ghosts), now for a file the cache has
	// not held. When that frees too little it fails with ErrRecentlyUsed
	// and evicts nothing.
	Speculative
)

// Open opens (or creates) the cache in cfg.Dir and checks it: entries whose
// file is missing or has the wrong size are dropped, files the index does not
// know and partial downloads are removed. Contents are checked against their
// checksum before they are first served.
func Open(cfg Config) (*Cache, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cache: no directory")
	}
	if cfg.Capacity <= 0 {
		return nil, errors.New("cache: the budget must be positive")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, "files"), filepath.Join(cfg.Dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("cache directory: %w", err)
		}
	}
	// Partial downloads from a previous run are useless.
	if err := os.RemoveAll(filepath.Join(cfg.Dir, "tmp")); err != nil {
		return nil, fmt.Errorf("cache: clear partial files: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	c := &Cache{
		cfg: cfg, log: cfg.Log, met: cfg.Metrics, crc: crc32.MakeTable(crc32.Castagnoli),
		entries: map[uint64]*entry{}, lru: list.New(), dirty: map[uint64]struct{}{}, filling: map[uint64]chan struct{}{},
		ghosts: map[uint64]int64{}, oldGhosts: map[uint64]int64{},
	}
	if err := c.safeOpenIndex(); err != nil {
		return nil, err
	}
	if err := c.safeLoad(); err != nil {
		// The index is damaged in a way bbolt only notices while reading
		// it. The cached files are only copies: start empty.
		_ = c.db.Close()
		c.entries, c.lru, c.used = map[uint64]*entry{}, list.New(), 0
		path := filepath.Join(cfg.Dir, "index.db")
		if err := c.discardIndex(path, err); err != nil {
			return nil, err
		}
	}
	c.met.setBudget(cfg.Capacity)
	c.report()
	return c, nil
}

// safeOpenIndex is openIndex, with bbolt's panics on a corrupt file turned
// into starting empty.
func (c *Cache) safeOpenIndex() (err error) {
	path := filepath.Join(c.cfg.Dir, "index.db")
	defer func() {
		if r := recover(); r != nil {
			if c.db != nil {
				_ = c.db.Close()
				c.db = nil
			}
			err = c.discardIndex(path, fmt.Errorf("corrupt cache index: %v", r))
		}
	}()
	return c.openIndex()
}

// safeLoad is load, with bbolt's panics on corrupt pages turned into errors.
func (c *Cache) safeLoad() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt cache index: %v", r)
		}
	}()
	return c.load()
}

// discardIndex moves a bad index aside, clears the cached files and opens a
// new, empty index.
func (c *Cache) discardIndex(path string, why error) error {
	aside := path + ".corrupt-" + strconv.FormatInt(time.Now().Unix(), 10)
	c.log.Warn("the cache index is unreadable: starting with an empty cache", "index", path, "moved_to", aside, "error", why)
	if err := os.Rename(path, aside); err != nil {
		return fmt.Errorf("cache index %s: %w (and cannot move it aside: %v)", path, why, err)
	}
	if err := os.RemoveAll(filepath.Join(c.cfg.Dir, "files")); err != nil {
		return fmt.Errorf("cache: clear files: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(c.cfg.Dir, "files"), 0o700); err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoSync: true})
	if err != nil {
		return fmt.Errorf("cache index %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bucket); return err }); err != nil {
		_ = db.Close()
		return fmt.Errorf("cache index %s: %w", path, err)
	}
	c.db = db
	return nil
}

// openIndex opens the bbolt index; a corrupt index is moved aside and the
// cache starts empty (its files are only a copy of the volume's).
func (c *Cache) openIndex() error {
	path := filepath.Join(c.cfg.Dir, "index.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoSync: true})
	if errors.Is(err, berrors.ErrTimeout) {
		return fmt.Errorf("cache index %s is locked: is another daemon using this cache directory?", path)
	}
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucket)
			return err
		})
		if err != nil {
			_ = db.Close()
		}
	}
	if err != nil {
		return c.discardIndex(path, err)
	}
	c.db = db
	return nil
}

// fileName is the name under files/ of a copy: the inode in hex, and its
// sequence number (none for copies indexed before copies had one).
func fileName(ino, seq uint64) string {
	if seq == 0 {
		return strconv.FormatUint(ino, 16)
	}
	return strconv.FormatUint(ino, 16) + "." + strconv.FormatUint(seq, 16)
}

func (c *Cache) filePath(ino, seq uint64) string {
	return filepath.Join(c.cfg.Dir, "files", fileName(ino, seq))
}

// removeFiles deletes the files of forgotten copies; it runs after c.mu is
// released (deleting a large file takes milliseconds).
func removeFiles(paths []string) {
	for _, p := range paths {
		_ = os.Remove(p)
	}
}

// load reads the index and reconciles it with the files on disk.
func (c *Cache) load() error {
	var drop []uint64
	var all []*entry
	err := c.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return nil
			}
			ino := binary.BigEndian.Uint64(k)
			e, err := unmarshal(ino, v)
			if err != nil {
				c.log.Warn("dropping a bad cache index record", "error", err)
				drop = append(drop, ino)
				return nil
			}
			all = append(all, e)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("read cache index: %w", err)
	}
	// Least recently used first, so that pushing each to the front leaves
	// the most recent at the front.
	sortByLastUse(all)
	known := map[string]bool{}
	for _, e := range all {
		var st syscall.Stat_t
		if err := syscall.Stat(c.filePath(e.ino, e.seq), &st); err != nil || st.Size != e.size || int64(e.ver.Length) != e.size {
			c.log.Info("dropping a cache entry whose file is missing or has the wrong size", "ino", e.ino)
			drop = append(drop, e.ino)
			_ = os.Remove(c.filePath(e.ino, e.seq))
			continue
		}
		e.elem = c.lru.PushFront(e)
		c.entries[e.ino] = e
		c.used += e.size
		known[fileName(e.ino, e.seq)] = true
		if e.seq > c.seq.Load() {
			c.seq.Store(e.seq)
		}
	}
	if len(drop) > 0 {
		if err := c.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			for _, ino := range drop {
				if err := b.Delete(key(ino)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("update cache index: %w", err)
		}
	}
	// Files the index does not know (written before a crash, before their
	// record was committed) cannot be trusted.
	des, err := os.ReadDir(filepath.Join(c.cfg.Dir, "files"))
	if err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	for _, de := range des {
		if !known[de.Name()] {
			_ = os.Remove(filepath.Join(c.cfg.Dir, "files", de.Name()))
		}
	}
	return nil
}

func sortByLastUse(es []*entry) {
	slices.SortFunc(es, func(a, b *entry) int { return cmp.Compare(a.lastUse, b.lastUse) })
}

func key(ino uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], ino)
	return k[:]
}

// Hit is an open served from the cache.
type Hit struct {
	Path string
	Size int64
	// File is the cache file opened for reading; the caller closes it.
	File *os.File
}

// Get returns the cached copy of ino if it holds version v, opened for
// reading. It counts a hit or a miss of an open and refreshes recency. A copy
// that was changed behind the cache's back (size or change time of the cache
// file) is checked against its checksum, and dropped if it does not match.
func (c *Cache) Get(ino uint64, v Version) (*Hit, bool) {
	h, ok := c.lookup(ino, v, true)
	if ok {
		c.met.hit(h.Size)
	} else {
		c.met.miss(int64(v.Length))
	}
	return h, ok
}

// Use counts a hit of an open of ino at version v and refreshes its recency
// without opening the copy: for an open whose reads the kernel will most
// likely answer from pages it already holds. A copy not yet checked since
// the start is not used this way (Get checks it). OpenCopy opens the copy,
// with Get's checks, when a read reaches the daemon after all.
func (c *Cache) Use(ino uint64, v Version) (size int64, ok bool) {
	now := time.Now().UnixNano()
	c.mu.Lock()
	e := c.entries[ino]
	if e == nil || c.closed || e.ver != v || !e.verified {
		c.mu.Unlock()
		return 0, false
	}
	size = e.size
	e.lastUse = now
	c.lru.MoveToFront(e.elem)
	c.dirty[ino] = struct{}{}
	c.mu.Unlock()
	c.met.hit(size)
	return size, true
}

// OpenCopy opens the copy of ino at version v, as Get does, without counting
// an open or refreshing recency.
func (c *Cache) OpenCopy(ino uint64, v Version) (*Hit, bool) { return c.lookup(ino, v, false) }

// Has reports whether ino is cached at version v (no counting, no recency).
func (c *Cache) Has(ino uint64, v Version) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[ino]
	return e != nil && e.ver == v
}

func (c *Cache) lookup(ino uint64, v Version, touch bool) (*Hit, bool) {
	c.mu.Lock()
	e := c.entries[ino]
	if e == nil || c.closed {
		c.mu.Unlock()
		return nil, false
	}
	if e.ver != v {
		// The file changed on the volume: this copy is stale for good.
		doomed := c.removeLocked(e)
		c.mu.Unlock()
		removeFiles([]string{doomed})
		c.log.Debug("dropping a stale cache entry", "ino", ino)
		return nil, false
	}
	verified, fctime, size, sum, seq := e.verified, e.fctime, e.size, e.crc, e.seq
	c.mu.Unlock()

	path := c.filePath(ino, seq)
	f, err := os.Open(path)
	if err != nil {
		c.drop(ino, e, "cache file unreadable: "+err.Error())
		return nil, false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Size != size {
		_ = f.Close()
		c.drop(ino, e, "cache file has the wrong size")
		return nil, false
	}
	if !verified || st.Ctim.Nano() != fctime {
		// First use since start, or someone touched the file: read it all
		// once against its checksum (singleflight: concurrent opens share).
		ok, _, _ := c.sf.Do("verify:"+strconv.FormatUint(ino, 10), func() (any, error) {
			got, err := c.checksum(f)
			return err == nil && got == sum, nil
		})
		if !ok.(bool) {
			_ = f.Close()
			c.drop(ino, e, "cache file does not match its checksum")
			return nil, false
		}
		c.mu.Lock()
		if c.entries[ino] == e {
			e.verified = true
			if e.fctime != st.Ctim.Nano() {
				e.fctime = st.Ctim.Nano()
				c.dirty[ino] = struct{}{}
			}
		}
		c.mu.Unlock()
	}
	if touch {
		c.touch(ino)
	}
	return &Hit{Path: path, Size: size, File: f}, true
}

func (c *Cache) checksum(f *os.File) (uint32, error) {
	h := crc32.New(c.crc)
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}

// drop removes e (if it is still the entry of ino) because its file is bad.
func (c *Cache) drop(ino uint64, e *entry, why string) {
	c.log.Warn("dropping a corrupt cache entry; the file is read from the volume", "ino", ino, "reason", why)
	c.met.corrupt()
	var doomed []string
	c.mu.Lock()
	if c.entries[ino] == e {
		doomed = append(doomed, c.removeLocked(e))
	}
	c.mu.Unlock()
	removeFiles(doomed)
}

// Touch marks ino as used now (an open, or a read seen by eBPF).
func (c *Cache) Touch(ino uint64) { c.touch(ino) }

func (c *Cache) touch(ino uint64) {
	now := time.Now().UnixNano()
	c.mu.Lock()
	if e := c.entries[ino]; e != nil {
		e.lastUse = now
		c.lru.MoveToFront(e.elem)
		c.dirty[ino] = struct{}{}
	}
	c.mu.Unlock()
}

// Invalidate drops the copy of ino (it is being written, or was removed).
func (c *Cache) Invalidate(ino uint64) {
	var doomed []string
	c.mu.Lock()
	if e := c.entries[ino]; e != nil {
		doomed = append(doomed, c.removeLocked(e))
	}
	c.mu.Unlock()
	removeFiles(doomed)
}

// Evict drops the copies of the given files (warmup --evict) and returns how
// many bytes that freed.
func (c *Cache) Evict(inos []uint64) (files int, bytes int64) {
	var doomed []string
	c.mu.Lock()
	for _, ino := range inos {
		if e := c.entries[ino]; e != nil {
			files++
			bytes += e.size
			doomed = append(doomed, c.removeLocked(e))
		}
	}
	c.mu.Unlock()
	removeFiles(doomed)
	return files, bytes
}

// removeLocked forgets e and returns the path of its file, for the caller to
// remove once c.mu is released (removeFiles). c.mu is held.
func (c *Cache) removeLocked(e *entry) string {
	delete(c.entries, e.ino)
	c.lru.Remove(e.elem)
	c.used -= e.size
	c.dirty[e.ino] = struct{}{}
	c.met.setUsage(c.used, len(c.entries))
	return c.filePath(e.ino, e.seq)
}

// OnEvict registers fn to be called (outside the lock) with each file the
// budget pushes out; the prefetcher counts prefetched files evicted unread.
func (c *Cache) OnEvict(fn func(ino uint64)) {
	c.mu.Lock()
	c.onEvict = append(c.onEvict, fn)
	c.mu.Unlock()
}

// reserve makes room for n more bytes of ino, evicting the least recently
// used files; it fails when even an empty cache could not hold them, and for
// a speculative fill when the files it may evict (see FillMode) free too
// little, in which case it evicts nothing.
func (c *Cache) reserve(ino uint64, n int64, mode FillMode) error {
	if n > c.cfg.Capacity {
		return fmt.Errorf("%w: %d bytes, budget %d", ErrTooBig, n, c.cfg.Capacity)
	}
	var evicted []uint64
	var doomed []string
	defer func() { removeFiles(doomed) }() // after c.mu is released
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	need := c.used + c.reserved + n - c.cfg.Capacity
	short := c.diskShortfall(n)
	if short > need {
		need = short
	}
	if mode == Speculative && need > 0 {
		claim := time.Now().UnixNano()
		if last, ok := c.ghostLocked(ino); ok {
			claim = last
		}
		free := int64(0)
		for el := c.lru.Back(); el != nil && free < need; el = el.Prev() {
			e := el.Value.(*entry)
			if e.lastUse >= claim {
				break // the LRU is in order of last use: the rest are newer
			}
			free += e.size
		}
		if free < need {
			c.mu.Unlock()
			return fmt.Errorf("%w: inode %d needs %d bytes, %d are held by files used less recently", ErrRecentlyUsed, ino, need, free)
		}
	}
	for need > 0 {
		back := c.lru.Back()
		if back == nil {
			break
		}
		e := back.Value.(*entry)
		c.log.Debug("evicting", "ino", e.ino, "bytes", e.size, "idle", time.Duration(time.Now().UnixNano()-e.lastUse))
		need -= e.size
		evicted = append(evicted, e.ino)
		c.rememberLocked(e)
		doomed = append(doomed, c.removeLocked(e))
	}
	if need > 0 && c.reserved+n > c.cfg.Capacity {
		c.mu.Unlock()
		return fmt.Errorf("%w: other downloads hold the budget", ErrNoSpace)
	}
	if need > 0 && short > 0 && c.used == 0 {
		c.mu.Unlock()
		return fmt.Errorf("%w: the cache disk is below its free-space floor", ErrNoSpace)
	}
	c.reserved += n
	hooks := c.onEvict
	c.mu.Unlock()
	c.met.evicted(len(evicted))
	for _, ino := range evicted {
		for _, fn := range hooks {
			fn(ino)
		}
	}
	return nil
}

// rememberLocked records the last use of e, evicted for lack of room.
func (c *Cache) rememberLocked(e *entry) {
	if len(c.ghosts) >= maxGhosts {
		c.oldGhosts, c.ghosts = c.ghosts, make(map[uint64]int64, maxGhosts)
	}
	c.ghosts[e.ino] = e.lastUse
	delete(c.oldGhosts, e.ino)
}

// ghostLocked returns the last use of ino if it was evicted for lack of room
// and is remembered.
func (c *Cache) ghostLocked(ino uint64) (int64, bool) {
	if t, ok := c.ghosts[ino]; ok {
		return t, true
	}
	t, ok := c.oldGhosts[ino]
	return t, ok
}

// diskShortfall is how many bytes must be freed so that writing n more
// bytes keeps the free-space ratio of the cache disk.
func (c *Cache) diskShortfall(n int64) int64 {
	if c.cfg.FreeRatio <= 0 {
		return 0
	}
	var s syscall.Statfs_t
	if err := syscall.Statfs(c.cfg.Dir, &s); err != nil {
		return 0
	}
	total := int64(s.Blocks) * s.Bsize
	free := int64(s.Bavail) * s.Bsize
	floor := int64(float64(total) * c.cfg.FreeRatio)
	return floor - (free - n)
}

func (c *Cache) unreserve(n int64) {
	c.mu.Lock()
	c.reserved -= n
	c.mu.Unlock()
}

// Fill copies ino from src into the cache unless it is already there at its
// current version. Concurrent fills of one file share the work.
func (c *Cache) Fill(ctx context.Context, src Source, ino uint64) (bytes int64, err error) {
	return c.FillUpTo(ctx, src, ino, 0, Demand)
}

// AwaitFill waits until a copy of ino that is in flight (a prefetch, a
// warmup) ends, for at most max or until ctx ends. It reports whether there
// was one and it ended: the caller then looks the file up again. It returns
// at once, without a timer, when no copy is in flight (every open asks).
func (c *Cache) AwaitFill(ctx context.Context, ino uint64, max time.Duration) bool {
	c.mu.Lock()
	done := c.filling[ino]
	c.mu.Unlock()
	if done == nil {
		return false
	}
	c.met.fillWaitInc()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// ErrLarger is returned by FillUpTo for a file over its limit.
var ErrLarger = errors.New("file larger than the limit")

// FillUpTo is Fill for files of at most max bytes (0: any size), making room
// as mode allows. Concurrent fills of one file share the first one's work
// and its mode.
func (c *Cache) FillUpTo(ctx context.Context, src Source, ino uint64, max int64, mode FillMode) (bytes int64, err error) {
	v, err, _ := c.sf.Do("fill:"+strconv.FormatUint(ino, 10), func() (any, error) {
		done := make(chan struct{})
		c.mu.Lock()
		c.filling[ino] = done
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			delete(c.filling, ino)
			c.mu.Unlock()
			close(done)
		}()
		return c.fill(ctx, src, ino, max, mode)
	})
	n, _ := v.(int64)
	return n, err
}

func (c *Cache) fill(ctx context.Context, src Source, ino uint64, max int64, mode FillMode) (int64, error) {
	r, ver, err := src.Open(ctx, ino)
	if err != nil {
		return 0, err
	}
	defer func() { _ = r.Close() }()
	if c.Has(ino, ver) {
		return 0, nil
	}
	if max > 0 && int64(ver.Length) > max {
		return 0, ErrLarger
	}
	size := int64(ver.Length)
	if err := c.reserve(ino, size, mode); err != nil {
		return 0, err
	}
	defer c.unreserve(size)

	tmp, err := os.CreateTemp(filepath.Join(c.cfg.Dir, "tmp"), strconv.FormatUint(ino, 16)+".*")
	if err != nil {
		return 0, noSpace(fmt.Errorf("cache: %w", err))
	}
	keep := false
	defer func() {
		if !keep {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := crc32.New(c.crc)
	var buf []byte
	if size < 1<<20 {
		buf = make([]byte, size+1) // +1: never zero-length
	} else {
		bp, _ := c.bufs.Get().(*[]byte)
		if bp == nil {
			b := make([]byte, 1<<20)
			bp = &b
		}
		defer c.bufs.Put(bp)
		buf = *bp
	}
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		want := min(int64(len(buf)), size-off)
		n, err := r.ReadAt(buf[:want], off)
		if n > 0 {
			if _, werr := tmp.Write(buf[:n]); werr != nil {
				return 0, noSpace(fmt.Errorf("cache: write %s: %w", tmp.Name(), werr))
			}
			h.Write(buf[:n])
			off += int64(n)
		}
		if err != nil && !(errors.Is(err, io.EOF) && off == size) {
			if errors.Is(err, io.EOF) {
				return 0, ErrChanged // shorter than its length: truncated meanwhile
			}
			return 0, fmt.Errorf("read inode %d: %w", ino, err)
		}
		if n == 0 && err == nil {
			return 0, ErrChanged
		}
	}
	// No need to stat again: if the file changed during the copy, its
	// version moved on, so every later open sees a different version and
	// drops this copy unserved.
	if err := tmp.Close(); err != nil {
		return 0, noSpace(fmt.Errorf("cache: %w", err))
	}
	seq := c.seq.Add(1)
	final := c.filePath(ino, seq)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	keep = true
	var st syscall.Stat_t
	if err := syscall.Stat(final, &st); err != nil {
		return 0, fmt.Errorf("cache: %w", err)
	}
	e := &entry{ino: ino, ver: ver, size: size, crc: h.Sum32(), fctime: st.Ctim.Nano(), lastUse: time.Now().UnixNano(), seq: seq, verified: true}
	var doomed []string
	defer func() { removeFiles(doomed) }() // after c.mu is released
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		doomed = append(doomed, final)
		return 0, ErrClosed
	}
	if old := c.entries[ino]; old != nil {
		doomed = append(doomed, c.removeLocked(old))
	}
	e.elem = c.lru.PushFront(e)
	c.entries[ino] = e
	delete(c.ghosts, ino)
	delete(c.oldGhosts, ino)
	c.used += size
	c.dirty[ino] = struct{}{}
	c.met.setUsage(c.used, len(c.entries))
	c.mu.Unlock()
	c.met.filled(size)
	src.Cached(ctx, ino, ver.Length) // before the deferred r.Close
	return size, nil
}

func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %v", ErrNoSpace, err)
	}
	return err
}

// Flush writes the changed index records (new files, recency) to disk.
func (c *Cache) Flush() error {
	c.mu.Lock()
	type rec struct {
		ino uint64
		val []byte // nil: delete
	}
	recs := make([]rec, 0, len(c.dirty))
	for ino := range c.dirty {
		if e := c.entries[ino]; e != nil {
			recs = append(recs, rec{ino, e.marshal()})
		} else {
			recs = append(recs, rec{ino, nil})
		}
	}
	c.dirty = map[uint64]struct{}{}
	c.mu.Unlock()
	if len(recs) == 0 {
		return nil
	}
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, r := range recs {
			var err error
			if r.val == nil {
				err = b.Delete(key(r.ino))
			} else {
				err = b.Put(key(r.ino), r.val)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = c.db.Sync()
	}
	if err != nil {
		return fmt.Errorf("cache index: %w", err)
	}
	return nil
}

// Run flushes the index now and then until ctx ends.
func (c *Cache) Run(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.Flush(); err != nil {
				c.log.Warn("saving the cache index", "error", err)
			}
		}
	}
}

// Stats describes the cache.
type Stats struct {
	Dir       string  `json:"dir"`
	Files     int     `json:"files"`
	Bytes     int64   `json:"bytes"`
	Capacity  int64   `json:"capacity"`
	FreeRatio float64 `json:"free_ratio"`
}

// Stats returns the cache's size and budget.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Dir: c.cfg.Dir, Files: len(c.entries), Bytes: c.used, Capacity: c.cfg.Capacity, FreeRatio: c.cfg.FreeRatio}
}

// Capacity is the budget in bytes.
func (c *Cache) Capacity() int64 { return c.cfg.Capacity }

func (c *Cache) report() {
	c.mu.Lock()
	c.met.setUsage(c.used, len(c.entries))
	c.mu.Unlock()
}

// Close saves the index and closes it.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	ferr := c.Flush()
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("close cache index: %w", err)
	}
	return ferr
}

// Contains reports whether any version of ino is cached.
func (c *Cache) Contains(ino uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[ino] != nil
}
