// Package prealloc answers file creates in chosen directories from a pool of
// files created ahead of time, so that a create costs no metadata round trip.
//
// A create takes a pooled file, journals the mapping (pooled inode, real
// parent, real name, mode, owner) in a local bbolt journal with group commit,
// and answers at once. A background renamer moves the file to its real name
// with RENAME_NOREPLACE; if another node took the name meanwhile the file keeps
// a deterministic conflict name instead, so nothing is ever overwritten or
// lost. fsync of the file or its directory waits for the rename. After a crash
// the journal is replayed: pending renames are finished, unused pool files are
// reused or removed.
package prealloc

// Lock order in this file: entry.mu (one pending name: held while it lands,
// across the volume calls of its rename, so only requests about that name
// wait), then Manager.mu (the pools and name maps, taken briefly).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// HiddenDir is the volume's top-level directory that holds every node's pools.
const HiddenDir = ".disgrafs-prealloc"

// lostDirName holds files whose directory was deleted before their rename landed.
const lostDirName = "lost+found"

// MaxNameLen is the longest name a create accepts.
const MaxNameLen = 255

// Options configure a Manager.
type Options struct {
	// JournalPath is the bbolt journal file (in the daemon's state directory).
	JournalPath string
	// NoSync skips the journal's fsync (faster, but a machine crash may lose
	// the mapping of files created since the last fsync).
	NoSync bool
	// Dirs maps the inode of every enabled directory to its path (for logs).
	Dirs map[uint64]string
	// PoolSize is the number of ready files kept per enabled directory.
	PoolSize int
	// RefillBelow starts a refill when fewer than this fraction of PoolSize are left.
	RefillBelow float64
	// RenameDelay holds a background rename until the file is this old, so
	// renames do not compete with a burst of creates (fsync, listing and
	// name changes land it at once).
	RenameDelay time.Duration
	// NegativeTTL, when positive, answers lookups of names missing from a
	// background listing of an enabled directory younger than this without
	// a metadata round trip (see names.go).
	NegativeTTL time.Duration
	// AsyncClose answers closes of files created in enabled directories once
	// journaled and commits their data in the background (asyncclose.go).
	AsyncClose bool
	// Renamers and Fillers are the background concurrency (default 4 each).
	Renamers, Fillers int
	Volume            Volume
	// Registerer is the prealloc subsystem's (metrics.Registry.Subsystem):
	// metric names are relative to it ("hits_total" is exported as
	// disgrafs_prealloc_hits_total).
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Created is what a create from the pool answers.
type Created struct {
	Ino  uint64
	Fh   uint64
	Attr meta.Attr
}

// Conflict is a file that landed under a conflict name (or in lost+found).
type Conflict struct {
	Ino    uint64    `json:"ino"`
	Parent uint64    `json:"parent"`
	Name   string    `json:"name"`
	Landed string    `json:"landed_as"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Stats are the numbers shown by status.
type Stats struct {
	Node           string            `json:"node"`
	Journal        string            `json:"journal"`
	Dirs           map[string]int    `json:"pool_files_by_dir"`
	PoolFiles      int               `json:"pool_files"`
	PoolSize       int               `json:"pool_size"`
	Hits           uint64            `json:"hits"`
	Misses         uint64            `json:"misses"`
	Pending        int               `json:"pending_renames"`
	Landed         uint64            `json:"renames_landed"`
	Conflicts      uint64            `json:"conflicts"`
	Lost           uint64            `json:"lost"`
	RenameRetries  uint64            `json:"rename_retries"`
	RecentConflict []Conflict        `json:"recent_conflicts,omitempty"`
	AsyncClose     bool              `json:"async_close"`
	ClosesPending  int               `json:"async_closes_pending"`
	ClosesLanded   uint64            `json:"async_closes_landed"`
	CloseErrors    uint64            `json:"async_close_errors"`
	ClosesLost     uint64            `json:"async_closes_lost"`
	Errors         map[string]string `json:"errors,omitempty"`
}

type nameKey struct {
	parent uint64
	name   string
}

type slot struct {
	PoolFile
	attr meta.Attr
	fh   uint64
}

type pool struct {
	dir      uint64
	poolDir  uint64
	path     string
	free     []*slot
	inflight int
	filling  bool // a refill is under way: fill up to PoolSize
}

type entry struct {
	rec      Record
	mu       sync.Mutex // held while landing
	ownerSet atomic.Bool
	done     chan struct{}
	finished bool  // under mu
	err      error // under mu; reported by fsync
	start    time.Time
}

// Manager runs pre-allocation for one mount.
type Manager struct {
	opts Options
	vol  Volume
	j    *journal
	log  *slog.Logger

	nodeDir uint64 // /.disgrafs-prealloc/<node>

	mu       sync.Mutex
	pools    map[uint64]*pool  // by enabled directory
	poolDirs map[uint64]uint64 // enabled (or formerly enabled) directory -> pool directory
	byName   map[nameKey]*entry
	byIno    map[uint64]*entry
	failed   map[uint64]error // landed with an error not yet reported by fsync
	lostDir  uint64
	closing  bool
	recent   []Conflict
	errs     map[string]string

	cl *closer // async close; nil when off

	invalidate atomic.Pointer[Invalidator]
	names      map[uint64]*dirNames
	notes      map[uint64]map[string]time.Time

	queue  chan *entry
	refill chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	hits, misses, landed, conflicts, lost, retries atomic.Uint64
	mHits, mMisses, mConflicts, mLost              prometheus.Counter
	mLatency                                       prometheus.Histogram
}

// Invalidate, when set before Start, is told about names that no longer mean
// the file this mount answered for (conflicts), so the kernel forgets them.
type Invalidator func(parent uint64, name string)

var background = context.Background

// RenameNoReplace is renameat2's RENAME_NOREPLACE.
const RenameNoReplace = 1

// SetInvalidate installs the kernel invalidation callback.
func (m *Manager) SetInvalidate(f Invalidator) { m.invalidate.Store(&f) }

// Open opens the journal, makes the pool directories, and loads pending
// renames so that lookups answer for them at once. Call Start to begin
// background work. A corrupt journal gives a *CorruptError and changes nothing.
func Open(ctx context.Context, o Options) (*Manager, error) {
	if o.PoolSize <= 0 {
		o.PoolSize = 256
	}
	if o.RefillBelow <= 0 || o.RefillBelow > 1 {
		o.RefillBelow = 0.7
	}
	if o.Renamers <= 0 {
		o.Renamers = 4
	}
	if o.Fillers <= 0 {
		o.Fillers = 4
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Volume == nil {
		return nil, errors.New("prealloc: no volume")
	}
	j, err := openJournal(o.JournalPath, o.NoSync)
	if err != nil {
		return nil, err
	}
	poolRecs, pendRecs, err := j.load()
	if err != nil {
		_ = j.close()
		return nil, err
	}
	m := &Manager{
		opts: o, vol: o.Volume, j: j, log: o.Log.With("component", "prealloc", "node", j.node),
		pools: map[uint64]*pool{}, poolDirs: map[uint64]uint64{}, byName: map[nameKey]*entry{},
		byIno: map[uint64]*entry{}, names: map[uint64]*dirNames{}, notes: map[uint64]map[string]time.Time{}, failed: map[uint64]error{}, errs: map[string]string{},
		queue: make(chan *entry, 1<<16), refill: make(chan struct{}, 1),
	}
	m.ctx, m.cancel = context.WithCancel(background())
	fail := func(err error) (*Manager, error) {
		m.cancel()
		_ = j.close()
		return nil, err
	}
	if o.AsyncClose {
		m.cl = newCloser()
	}
	if err := m.makeDirs(ctx, poolRecs, pendRecs); err != nil {
		return fail(err)
	}
	for _, r := range pendRecs {
		e := &entry{rec: r, done: make(chan struct{}), start: r.Created}
		m.byName[nameKey{r.Parent, r.Name}] = e
		m.byIno[r.Ino] = e
	}
	// Replayed renames go first, in creation order.
	sort.Slice(pendRecs, func(a, b int) bool { return pendRecs[a].Created.Before(pendRecs[b].Created) })
	if err := m.initMetrics(o.Registerer); err != nil {
		return fail(err)
	}
	// Closes a crash left uncommitted are checked even with async close off
	// now: their report must not be lost with the option.
	if err := m.replayCloses(ctx); err != nil {
		return fail(err)
	}
	if c := m.cl; c != nil {
		c.running.Store(true)
		c.wg.Add(1)
		go m.closeLoop()
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.recoverPools(poolRecs, pendRecs)
		m.fillLoop()
	}()
	if o.NegativeTTL > 0 {
		m.wg.Add(1)
		go m.namesLoop()
	}
	for i := 0; i < o.Renamers; i++ {
		m.wg.Add(1)
		go m.renameLoop()
	}
	for _, r := range pendRecs {
		m.queue <- m.byIno[r.Ino]
	}
	if len(pendRecs) > 0 {
		m.log.Info("replaying pending renames from the journal", "count", len(pendRecs))
	}
	return m, nil
}

// Node is this journal's node id (the name of its pool directory).
func (m *Manager) Node() string { return m.j.node }

func (m *Manager) makeDirs(ctx context.Context, poolRecs []PoolFile, pendRecs []Record) error {
	hidden, err := m.ensureDir(ctx, 1, HiddenDir)
	if err != nil {
		return err
	}
	if m.nodeDir, err = m.ensureDir(ctx, hidden, m.j.node); err != nil {
		return err
	}
	for dir, p := range m.opts.Dirs {
		pd, err := m.ensureDir(ctx, m.nodeDir, poolDirName(dir))
		if err != nil {
			return err
		}
		m.pools[dir] = &pool{dir: dir, poolDir: pd, path: p}
		m.poolDirs[dir] = pd
	}
	// Directories that were enabled before still hold records.
	for _, d := range append(dirsOfPool(poolRecs), dirsOfPending(pendRecs)...) {
		if _, ok := m.poolDirs[d]; ok {
			continue
		}
		ino, _, st := m.vol.Lookup(ctx, m.nodeDir, poolDirName(d))
		if st != 0 {
			return fmt.Errorf("prealloc: pool directory /%s/%s/%s of the journal: %w", HiddenDir, m.j.node, poolDirName(d), st)
		}
		m.poolDirs[d] = ino
	}
	return nil
}

func dirsOfPool(rs []PoolFile) (out []uint64) {
	for _, r := range rs {
		out = append(out, r.Dir)
	}
	return out
}

func dirsOfPending(rs []Record) (out []uint64) {
	for _, r := range rs {
		out = append(out, r.Dir)
	}
	return out
}

func poolDirName(dir uint64) string { return "d" + strconv.FormatUint(dir, 10) }

func (m *Manager) ensureDir(ctx context.Context, parent uint64, name string) (uint64, error) {
	ino, attr, st := m.vol.Lookup(ctx, parent, name)
	if st == 0 {
		if attr != nil && attr.Typ != meta.TypeDirectory {
			return 0, fmt.Errorf("prealloc: %s exists and is not a directory", name)
		}
		return ino, nil
	}
	if st != syscall.ENOENT {
		return 0, fmt.Errorf("prealloc: look up %s: %w", name, st)
	}
	ino, st = m.vol.Mkdir(ctx, parent, name, 0o700)
	if st == syscall.EEXIST {
		ino, _, st = m.vol.Lookup(ctx, parent, name)
	}
	if st != 0 {
		return 0, fmt.Errorf("prealloc: make directory %s: %w", name, st)
	}
	return ino, nil
}

// Enabled reports whether creates in dir are answered from a pool.
func (m *Manager) Enabled(dir uint64) bool {
	_, ok := m.opts.Dirs[dir]
	return ok
}

// Create answers a create of name in parent from the pool. ok is false when
// the directory has no pool, the pool is empty, or the name is pending
// already: the caller then creates normally (after Settle). mode holds the
// permission bits after the umask.
func (m *Manager) Create(ctx context.Context, parent uint64, name string, mode, uid, gid uint32) (c *Created, ok bool, err error) {
	if !m.Enabled(parent) {
		return nil, false, nil
	}
	if len(name) > MaxNameLen {
		return nil, false, syscall.ENAMETOOLONG
	}
	k := nameKey{parent, name}
	m.mu.Lock()
	p := m.pools[parent]
	if m.closing || m.byName[k] != nil || p == nil {
		m.mu.Unlock()
		return nil, false, nil
	}
	if len(p.free) == 0 {
		m.mu.Unlock()
		m.misses.Add(1)
		m.mMisses.Inc()
		m.kickRefill()
		return nil, false, nil
	}
	s := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	now := time.Now()
	e := &entry{rec: Record{Ino: s.Ino, Dir: parent, PoolName: s.Name, Parent: parent, Name: name,
		Mode: mode & 0o7777, Uid: uid, Gid: gid, Created: now}, done: make(chan struct{}), start: now}
	m.byName[k] = e
	m.noteName(parent, name)
	if float64(len(p.free)) < m.opts.RefillBelow*float64(m.opts.PoolSize) {
		m.kickRefill()
	}
	m.mu.Unlock()

	err = m.j.update(ctx, func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketPool).Delete(key(s.Ino)); err != nil {
			return err
		}
		return putJSON(tx, bucketPending, s.Ino, e.rec)
	})
	if err != nil {
		m.mu.Lock()
		delete(m.byName, k)
		p.free = append(p.free, s)
		m.mu.Unlock()
		m.log.Warn("journal write failed; creating without the pool", "error", err)
		m.setErr("journal", err)
		return nil, false, nil
	}
	m.mu.Lock()
	m.byIno[s.Ino] = e
	m.mu.Unlock()
	m.hits.Add(1)
	m.mHits.Inc()
	m.queue <- e
	attr := s.attr
	m.overlay(e, &attr)
	return &Created{Ino: s.Ino, Fh: s.fh, Attr: attr}, true, nil
}

func (m *Manager) overlay(e *entry, a *meta.Attr) {
	if e.ownerSet.Load() {
		return
	}
	a.Mode = uint16(e.rec.Mode)
	a.Uid, a.Gid = e.rec.Uid, e.rec.Gid
	a.Parent = meta.Ino(e.rec.Parent)
	sec, nsec := e.rec.Created.Unix(), uint32(e.rec.Created.Nanosecond())
	if a.Mtime < sec {
		a.Atime, a.Atimensec = sec, nsec
		a.Mtime, a.Mtimensec = sec, nsec
		a.Ctime, a.Ctimensec = sec, nsec
	}
}

// Lookup answers for names whose rename has not landed.
func (m *Manager) Lookup(parent uint64, name string) (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.byName[nameKey{parent, name}]; e != nil && m.byIno[e.rec.Ino] == e {
		return e.rec.Ino, true
	}
	return 0, false
}

// Overlay shows the mode, owner and times a pending file was created with
// until the renamer has applied them.
func (m *Manager) Overlay(ino uint64, a *meta.Attr) {
	m.mu.Lock()
	e := m.byIno[ino]
	m.mu.Unlock()
	if e != nil {
		m.overlay(e, a)
	}
}

// Pending reports whether any rename is pending.
func (m *Manager) Pending() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byIno) > 0
}

// SettleOwner applies a pending file's mode and owner now, before the caller
// changes its attributes.
func (m *Manager) SettleOwner(ctx context.Context, ino uint64) error {
	m.mu.Lock()
	e := m.byIno[ino]
	m.mu.Unlock()
	if e == nil || e.ownerSet.Load() {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.finished || e.ownerSet.Load() {
		return nil
	}
	return m.setOwner(ctx, e)
}

func (m *Manager) setOwner(ctx context.Context, e *entry) error {
	if st := m.vol.SetOwner(ctx, e.rec.Ino, e.rec.Mode, e.rec.Uid, e.rec.Gid); st != 0 {
		return st
	}
	e.ownerSet.Store(true)
	return nil
}

// Settle lands a pending name now and says where the file is: the caller is
// about to change the name (unlink, rename, link over it). A name that landed
// under a conflict name answers with that name, so the caller acts on the
// file this mount created.
func (m *Manager) Settle(ctx context.Context, parent uint64, name string) (uint64, string, error) {
	m.mu.Lock()
	e := m.byName[nameKey{parent, name}]
	m.mu.Unlock()
	if e == nil {
		return parent, name, nil
	}
	p, n, err := m.landNow(ctx, e)
	if p != 0 {
		// Landed (possibly in lost+found): act on the file where it is.
		return p, n, nil
	}
	return parent, name, err
}

// landNow lands e, retrying with backoff until ctx ends.
func (m *Manager) landNow(ctx context.Context, e *entry) (uint64, string, error) {
	backoff := 10 * time.Millisecond
	for {
		e.mu.Lock()
		p, n, done, err := m.landLocked(ctx, e)
		e.mu.Unlock()
		if done {
			return p, n, err
		}
		m.retries.Add(1)
		m.log.Warn("rename of a pre-allocated file failed; retrying", "name", e.rec.Name, "ino", e.rec.Ino, "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-e.done:
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// WaitIno waits until ino's rename has landed (landing it now) and returns
// the error it landed with: what fsync reports.
func (m *Manager) WaitIno(ctx context.Context, ino uint64) error {
	if err := m.WaitClosed(ctx, ino); err != nil {
		return err
	}
	m.mu.Lock()
	e := m.byIno[ino]
	if e == nil {
		err := m.failed[ino]
		delete(m.failed, ino)
		m.mu.Unlock()
		return err
	}
	m.mu.Unlock()
	_, _, err := m.landNow(ctx, e)
	m.mu.Lock()
	delete(m.failed, ino)
	m.mu.Unlock()
	return err
}

// WaitDir waits for every pending rename into dir; the first error is returned.
func (m *Manager) WaitDir(ctx context.Context, dir uint64) error {
	if err := m.waitClosesInDir(ctx, dir); err != nil {
		return err
	}
	m.mu.Lock()
	var es []*entry
	for _, e := range m.byIno {
		if e.rec.Parent == dir {
			es = append(es, e)
		}
	}
	m.mu.Unlock()
	var first error
	for _, e := range es {
		if _, _, err := m.landNow(ctx, e); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (m *Manager) renameLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case e := <-m.queue:
			if d := time.Until(e.start.Add(m.opts.RenameDelay)); d > 0 {
				select {
				case <-time.After(d):
				case <-e.done:
				case <-m.ctx.Done():
					return
				}
			}
			_, _, _ = m.landNow(m.ctx, e)
		}
	}
}

// ConflictName is where a file goes when its name was taken by another node:
// deterministic, so a replay finds it again.
func ConflictName(name, node string, ino uint64) string {
	suffix := ".conflict-" + node + "-" + strconv.FormatUint(ino, 10)
	if len(name)+len(suffix) > MaxNameLen {
		name = name[:MaxNameLen-len(suffix)]
		for !utf8.ValidString(name) && len(name) > 0 {
			name = name[:len(name)-1]
		}
	}
	return name + suffix
}

func lostName(r Record) string {
	return ConflictName(path.Base("d"+strconv.FormatUint(r.Parent, 10)+"-"+r.Name), "lost", r.Ino)
}

// landLocked makes one attempt to land e. done is false when the attempt
// failed in a way worth retrying (metadata unreachable).
func (m *Manager) landLocked(ctx context.Context, e *entry) (parent uint64, name string, done bool, err error) {
	r := e.rec
	if e.finished {
		return e.rec.Parent, e.rec.Name, true, e.err
	}
	if !e.ownerSet.Load() {
		if err := m.setOwner(ctx, e); err != nil {
			if errors.Is(err, syscall.ENOENT) {
				return m.resolveMissing(ctx, e)
			}
			return 0, "", false, fmt.Errorf("set mode and owner: %w", err)
		}
	}
	m.mu.Lock()
	poolDir := m.poolDirs[r.Dir]
	m.mu.Unlock()
	st := m.vol.Rename(ctx, poolDir, r.PoolName, r.Parent, r.Name, RenameNoReplace)
	switch st {
	case 0:
		m.finish(e, r.Parent, r.Name, "", nil)
		return r.Parent, r.Name, true, nil
	case syscall.EEXIST:
		cn := ConflictName(r.Name, m.j.node, r.Ino)
		st = m.vol.Rename(ctx, poolDir, r.PoolName, r.Parent, cn, RenameNoReplace)
		if st == 0 {
			m.finish(e, r.Parent, cn, "name taken by another node", nil)
			return r.Parent, cn, true, nil
		}
		if st == syscall.ENOENT {
			return m.resolveMissing(ctx, e)
		}
		return 0, "", false, fmt.Errorf("rename to conflict name %q: %w", cn, st)
	case syscall.ENOENT, syscall.ENOTDIR:
		return m.resolveMissing(ctx, e)
	case syscall.ENAMETOOLONG, syscall.EINVAL, syscall.EPERM, syscall.EACCES, syscall.EISDIR, syscall.ENOTEMPTY:
		return m.toLost(ctx, e, poolDir, st)
	}
	return 0, "", false, fmt.Errorf("rename into place: %w", st)
}

// resolveMissing handles ENOENT: either the real parent is gone (the file is
// still in the pool: keep it in lost+found) or a previous process renamed it
// already and died before journaling that (find it where it landed).
func (m *Manager) resolveMissing(ctx context.Context, e *entry) (uint64, string, bool, error) {
	r := e.rec
	m.mu.Lock()
	poolDir := m.poolDirs[r.Dir]
	m.mu.Unlock()
	ino, _, st := m.vol.Lookup(ctx, poolDir, r.PoolName)
	if st == 0 && ino == r.Ino {
		return m.toLost(ctx, e, poolDir, syscall.ENOENT)
	}
	if st != 0 && st != syscall.ENOENT {
		return 0, "", false, fmt.Errorf("look up pool file: %w", st)
	}
	cn := ConflictName(r.Name, m.j.node, r.Ino)
	for _, n := range []string{r.Name, cn} {
		if ino, _, st := m.vol.Lookup(ctx, r.Parent, n); st == 0 && ino == r.Ino {
			reason := ""
			if n != r.Name {
				reason = "name taken by another node"
			}
			m.finish(e, r.Parent, n, reason, nil)
			return r.Parent, n, true, nil
		}
	}
	if lost, err := m.lostDirIno(ctx); err == nil {
		if ino, _, st := m.vol.Lookup(ctx, lost, lostName(r)); st == 0 && ino == r.Ino {
			m.finish(e, lost, lostName(r), "directory deleted", syscall.ENOENT)
			return lost, lostName(r), true, syscall.ENOENT
		}
	}
	m.log.Warn("pre-allocated file vanished before its rename landed (removed by another node?)", "name", r.Name, "ino", r.Ino)
	m.finish(e, r.Parent, r.Name, "", syscall.ENOENT)
	return r.Parent, r.Name, true, syscall.ENOENT
}

func (m *Manager) lostDirIno(ctx context.Context) (uint64, error) {
	m.mu.Lock()
	l := m.lostDir
	m.mu.Unlock()
	if l != 0 {
		return l, nil
	}
	l, err := m.ensureDir(ctx, m.nodeDir, lostDirName)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	m.lostDir = l
	m.mu.Unlock()
	return l, nil
}

func (m *Manager) toLost(ctx context.Context, e *entry, poolDir uint64, cause syscall.Errno) (uint64, string, bool, error) {
	lost, err := m.lostDirIno(ctx)
	if err != nil {
		return 0, "", false, err
	}
	n := lostName(e.rec)
	if st := m.vol.Rename(ctx, poolDir, e.rec.PoolName, lost, n, RenameNoReplace); st != 0 && st != syscall.EEXIST {
		return 0, "", false, fmt.Errorf("move to lost+found: %w", st)
	}
	m.lost.Add(1)
	m.mLost.Inc()
	m.log.Error("pre-allocated file could not take its name; kept in lost+found", "name", e.rec.Name,
		"parent", e.rec.Parent, "kept_as", "/"+HiddenDir+"/"+m.j.node+"/"+lostDirName+"/"+n, "cause", cause)
	m.finish(e, lost, n, "could not take its name: "+cause.Error(), cause)
	return lost, n, true, cause
}

// finish records where e landed, drops its journal record and wakes waiters.
// Called with e.mu held.
func (m *Manager) finish(e *entry, parent uint64, name, reason string, err error) {
	r := e.rec
	// Not waited for: a replay finds the file where it landed.
	m.j.later(func(tx *bolt.Tx) error { return tx.Bucket(bucketPending).Delete(key(r.Ino)) })
	e.finished, e.err = true, err
	m.mu.Lock()
	if m.byName[nameKey{r.Parent, r.Name}] == e {
		delete(m.byName, nameKey{r.Parent, r.Name})
	}
	delete(m.byIno, r.Ino)
	// A listing taken before the landing must not hide the name.
	m.noteName(parent, name)
	m.noteName(r.Parent, r.Name) // after a conflict: the other node's file
	if err != nil {
		m.failed[r.Ino] = err
	}
	if reason != "" {
		m.addRecent(Conflict{Ino: r.Ino, Parent: r.Parent, Name: r.Name, Landed: name, Reason: reason, At: time.Now()})
	}
	m.mu.Unlock()
	m.landed.Add(1)
	m.mLatency.Observe(time.Since(e.start).Seconds())
	if reason != "" {
		if err == nil {
			m.conflicts.Add(1)
			m.mConflicts.Inc()
			m.log.Warn("name taken by another node before the rename landed; kept under a conflict name",
				"name", r.Name, "parent", r.Parent, "kept_as", name)
		}
		if inv := m.invalidate.Load(); inv != nil {
			// Not inline: a landing forced by a request (unlink, fsync of the
			// directory) runs while the kernel holds the directory's lock,
			// which the invalidation needs too.
			go (*inv)(r.Parent, r.Name)
		}
	}
	close(e.done)
}

// addRecent keeps the last 50 conflicts and lost closes for status. Called
// with m.mu held.
func (m *Manager) addRecent(c Conflict) {
	m.recent = append(m.recent, c)
	if len(m.recent) > 50 {
		m.recent = m.recent[len(m.recent)-50:]
	}
}
