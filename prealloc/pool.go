package prealloc

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// recoverPools reconciles the pool directories with the journal after a
// restart: journaled pool files are reopened and reused, pool files of
// directories no longer enabled are removed, and empty files a crash left
// unjournaled are removed. A file with data that no record explains is kept
// and reported, never deleted.
func (m *Manager) recoverPools(poolRecs []PoolFile, pendRecs []Record) {
	ctx := m.ctx
	pending := map[uint64]bool{}
	for _, r := range pendRecs {
		pending[r.Ino] = true
	}
	known := map[uint64]map[string]PoolFile{}
	for _, p := range poolRecs {
		if known[p.Dir] == nil {
			known[p.Dir] = map[string]PoolFile{}
		}
		known[p.Dir][p.Name] = p
	}
	m.mu.Lock()
	dirs := make(map[uint64]uint64, len(m.poolDirs))
	for d, pd := range m.poolDirs {
		dirs[d] = pd
	}
	m.mu.Unlock()
	var drop []uint64
	for dir, pd := range dirs {
		list, st := m.vol.ReadDir(ctx, pd)
		if st != 0 {
			m.log.Warn("cannot list a pool directory; its files are left as they are", "dir", dir, "error", st)
			m.setErr("recover", fmt.Errorf("list pool of directory %d: %w", dir, st))
			continue
		}
		seen := map[string]bool{}
		p := m.pools[dir]
		for _, de := range list {
			seen[de.Name] = true
			if pending[de.Ino] || de.IsDir {
				continue
			}
			rec, isPool := known[dir][de.Name]
			switch {
			case isPool && rec.Ino == de.Ino && p != nil && de.Length == 0:
				attr, fh, st := m.vol.Open(ctx, de.Ino)
				if st != 0 {
					m.log.Warn("cannot reopen a pool file; removing it", "name", de.Name, "error", st)
					_ = m.vol.Unlink(ctx, pd, de.Name)
					drop = append(drop, rec.Ino)
					continue
				}
				m.mu.Lock()
				p.free = append(p.free, &slot{PoolFile: rec, attr: *attr, fh: fh})
				m.mu.Unlock()
			case de.Length == 0:
				// Unused: a pool of a directory no longer enabled, or a file
				// created just before a crash and never journaled.
				if st := m.vol.Unlink(ctx, pd, de.Name); st != 0 && st != syscall.ENOENT {
					m.log.Warn("cannot remove an unused pool file", "name", de.Name, "error", st)
					continue
				}
				if isPool {
					drop = append(drop, rec.Ino)
				}
			default:
				m.log.Warn("a pool file holds data but no journal record names it; left in place",
					"path", "/"+HiddenDir+"/"+m.j.node+"/"+poolDirName(dir)+"/"+de.Name, "bytes", de.Length)
				if isPool {
					drop = append(drop, rec.Ino)
				}
			}
		}
		for name, rec := range known[dir] {
			if !seen[name] {
				drop = append(drop, rec.Ino)
			}
		}
	}
	if len(drop) > 0 {
		err := m.j.update(ctx, func(tx *bolt.Tx) error {
			for _, ino := range drop {
				if err := tx.Bucket(bucketPool).Delete(key(ino)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			m.log.Warn("journal: could not drop stale pool records", "error", err)
		}
	}
}

func (m *Manager) kickRefill() {
	select {
	case m.refill <- struct{}{}:
	default:
	}
}

// fillLoop keeps every pool full: at start, when a create takes the pool
// under its threshold, and every second to retry after failures.
func (m *Manager) fillLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	first := true
	for {
		m.fillOnce(first)
		first = false
		select {
		case <-m.ctx.Done():
			return
		case <-m.refill:
		case <-tick.C:
		}
	}
}

var poolSeq atomic.Uint64

func (m *Manager) fillOnce(always bool) {
	sem := make(chan struct{}, m.opts.Fillers)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for !failed.Load() {
		m.mu.Lock()
		var p *pool
		for _, q := range m.pools {
			have := len(q.free) + q.inflight
			if have >= m.opts.PoolSize {
				q.filling = false
				continue
			}
			// A refill that started goes on until the pool is full, even
			// when a moment comes with no file in flight.
			if always || q.filling || float64(len(q.free)) < m.opts.RefillBelow*float64(m.opts.PoolSize) {
				q.filling = true
				p = q
				break
			}
		}
		if p == nil || m.closing {
			m.mu.Unlock()
			break
		}
		p.inflight++
		m.mu.Unlock()
		select {
		case sem <- struct{}{}:
		case <-m.ctx.Done():
			m.mu.Lock()
			p.inflight--
			m.mu.Unlock()
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := m.addPoolFile(p)
			<-sem
			m.mu.Lock()
			p.inflight--
			m.mu.Unlock()
			if err != nil {
				// Stop this round (retried on the next tick).
				failed.Store(true)
				m.setErr("refill", err)
			}
		}()
	}
	wg.Wait()
}

func (m *Manager) addPoolFile(p *pool) error {
	ctx := m.ctx
	name := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatUint(poolSeq.Add(1), 36)
	ino, attr, fh, st := m.vol.CreateOpen(ctx, p.poolDir, name, 0o600)
	if st != 0 {
		return fmt.Errorf("create a pool file for %s: %w", p.path, st)
	}
	rec := PoolFile{Ino: ino, Dir: p.dir, Name: name}
	// Not waited for: an unjournaled empty pool file is removed by recovery;
	// a create that takes it commits the record first (same transaction).
	m.j.later(func(tx *bolt.Tx) error { return putJSON(tx, bucketPool, ino, rec) })
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		m.vol.Release(ctx, ino, fh)
		return nil
	}
	p.free = append(p.free, &slot{PoolFile: rec, attr: *attr, fh: fh})
	delete(m.errs, "refill")
	m.mu.Unlock()
	return nil
}

func (m *Manager) setErr(what string, err error) {
	m.mu.Lock()
	m.errs[what] = err.Error()
	m.mu.Unlock()
}

func (m *Manager) errSnapshot() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.errs) == 0 {
		return nil
	}
	out := make(map[string]string, len(m.errs))
	for k, v := range m.errs {
		out[k] = v
	}
	return out
}

func (m *Manager) initMetrics(r prometheus.Registerer) error {
	m.mHits = prometheus.NewCounter(prometheus.CounterOpts{Name: "hits_total", Help: "Creates answered from a pre-allocation pool."})
	m.mMisses = prometheus.NewCounter(prometheus.CounterOpts{Name: "misses_total", Help: "Creates in enabled directories that found the pool empty and created normally."})
	m.mConflicts = prometheus.NewCounter(prometheus.CounterOpts{Name: "conflicts_total", Help: "Pre-allocated files kept under a conflict name because another node took the name."})
	m.mLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "lost_total", Help: "Pre-allocated files kept in lost+found because their directory was deleted."})
	m.mLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rename_latency_seconds",
		Help: "Time from a create answered from the pool until its rename landed.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)})
	pool := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pool_files", Help: "Pre-allocated files ready in the pools."},
		func() float64 { return float64(m.poolFiles()) })
	pend := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pending_renames", Help: "Creates answered from a pool whose rename has not landed yet."},
		func() float64 { m.mu.Lock(); defer m.mu.Unlock(); return float64(len(m.byIno)) })
	cs := []prometheus.Collector{m.mHits, m.mMisses, m.mConflicts, m.mLost, m.mLatency, pool, pend}
	if m.cl != nil {
		cs = append(cs, m.cl.collectors()...)
	}
	if r == nil {
		return nil
	}
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("prealloc metrics: %w", err)
		}
	}
	return nil
}

func (m *Manager) poolFiles() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, p := range m.pools {
		n += len(p.free)
	}
	return n
}

// Stats returns the numbers status shows.
func (m *Manager) Stats() Stats {
	s := Stats{Node: m.j.node, Journal: m.j.path, PoolSize: m.opts.PoolSize, Dirs: map[string]int{},
		Hits: m.hits.Load(), Misses: m.misses.Load(), Landed: m.landed.Load(), Conflicts: m.conflicts.Load(),
		Lost: m.lost.Load(), RenameRetries: m.retries.Load(), Errors: m.errSnapshot()}
	m.mu.Lock()
	for _, p := range m.pools {
		s.Dirs[p.path] = len(p.free)
		s.PoolFiles += len(p.free)
	}
	s.Pending = len(m.byIno)
	s.RecentConflict = append([]Conflict(nil), m.recent...)
	m.mu.Unlock()
	if c := m.cl; c != nil {
		s.AsyncClose = true
		s.ClosesPending = c.pending()
		s.ClosesLanded, s.CloseErrors, s.ClosesLost = c.landed.Load(), c.errs.Load(), c.lost.Load()
	}
	return s
}

// Close drains pending renames (until ctx ends), closes the pool files'
// handles (they stay in the pool for the next mount) and the journal.
// Renames still pending when ctx ends stay journaled for the next mount.
func (m *Manager) Close(ctx context.Context) error {
	// Async closes first: until they commit, their data exists only in this
	// process. They get a longer budget than renames, which the journal can
	// always finish later.
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Minute)
	closesLeft := m.drainCloses(cctx)
	ccancel()
	m.mu.Lock()
	m.closing = true
	es := make([]*entry, 0, len(m.byIno))
	for _, e := range m.byIno {
		es = append(es, e)
	}
	m.mu.Unlock()
	var left int
	for _, e := range es {
		if _, _, err := m.landNow(ctx, e); err != nil && ctx.Err() != nil {
			left++
		}
	}
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	var slots []*slot
	for _, p := range m.pools {
		slots = append(slots, p.free...)
		p.free = nil
	}
	m.mu.Unlock()
	for _, s := range slots {
		m.vol.Release(background(), s.Ino, s.fh)
	}
	jerr := m.j.close()
	if closesLeft > 0 {
		return fmt.Errorf("prealloc: %d async closes had not committed their data after 5 minutes (journaled; the next mount reports them)", closesLeft)
	}
	if left > 0 {
		return fmt.Errorf("prealloc: %d renames still pending (journaled; the next mount finishes them)", left)
	}
	return jerr
}
