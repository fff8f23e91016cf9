package prealloc

// Async close (--prealloc-async-close). Closing a written JuiceFS file commits
// its buffered data to the metadata engine: several round trips per file,
// which dominate the seed's file switch once creates are free. With async
// close, the close of a file created in an enabled directory is answered once
// the close is journaled; the data stays in this daemon's write buffer and a
// single background worker commits the closes in the order they were made.
//
// What waits for a commit: fsync of the file (through a new descriptor) or of
// its directory, a later open of the file by this mount, and unmount. Other
// nodes see the data once it lands. A commit error is logged, counted and
// reported by the next fsync of the file.
//
// What a crash does: the buffered data lives in the daemon's memory, so a
// kill -9 before a commit lands loses that file's unsynced data, as a machine
// crash loses unsynced data on a local disk. The journal makes the loss
// visible instead of silent: the next mount compares each uncommitted close
// with the file's length in the volume and reports every file that came up
// short (log, status, disgrafs_prealloc_async_close_lost_total).

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

var bucketCloses = []byte("closes")

// maxQueuedCloses bounds the closes waiting for their commit; beyond it
// closes are synchronous again (memory stays bounded, nothing blocks forever).
const maxQueuedCloses = 4096

// CloseRecord is a close answered before the file's data was committed.
type CloseRecord struct {
	Seq    uint64    `json:"seq"`
	Ino    uint64    `json:"ino"`
	Parent uint64    `json:"parent"`
	Name   string    `json:"name"`
	Size   uint64    `json:"size"` // the file's length in this mount at close
	Closed time.Time `json:"closed"`
}

// CloseTicket is one journaled close whose commit has not landed.
type CloseTicket struct {
	rec  CloseRecord
	done chan struct{}
	err  error // set before done is closed
}

// CloseCommit commits a file's data and releases its handle; it runs on the
// background worker and returns the commit's error.
type CloseCommit func(ctx context.Context) error

type closeJob struct {
	t      *CloseTicket
	commit CloseCommit
}

// closer is the async close state of a Manager (nil when off).
type closer struct {
	mu      sync.Mutex
	staged  map[*CloseTicket]struct{} // journaled, handle not released yet
	queued  map[uint64][]*CloseTicket // released, commit not landed, by inode
	nQueued int                       // tickets in queued
	failed  map[uint64]error          // commit errors not yet reported by fsync
	jobs    chan closeJob
	wg      sync.WaitGroup
	running atomic.Bool

	landed, errs, lost atomic.Uint64
	mLanded, mErrs     prometheus.Counter
	mLost              prometheus.Counter
	mLag               prometheus.Histogram
}

func newCloser() *closer {
	return &closer{staged: map[*CloseTicket]struct{}{}, queued: map[uint64][]*CloseTicket{},
		failed: map[uint64]error{}, jobs: make(chan closeJob, maxQueuedCloses)}
}

func (c *closer) collectors() []prometheus.Collector {
	c.mLanded = prometheus.NewCounter(prometheus.CounterOpts{Name: "async_closes_total", Help: "Async closes whose data commit landed."})
	c.mErrs = prometheus.NewCounter(prometheus.CounterOpts{Name: "async_close_errors_total", Help: "Async closes whose data commit failed (reported by the next fsync)."})
	c.mLost = prometheus.NewCounter(prometheus.CounterOpts{Name: "async_close_lost_total",
		Help: "Async closes found uncommitted and short after a crash (their unsynced data was lost)."})
	c.mLag = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "async_close_lag_seconds",
		Help: "Time from an async close until its data commit landed.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)})
	pend := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "async_close_pending", Help: "Async closes whose data commit has not landed."},
		func() float64 { return float64(c.pending()) })
	return []prometheus.Collector{c.mLanded, c.mErrs, c.mLost, c.mLag, pend}
}

// pending counts the closes whose commit is queued or running: released
// handles. A staged close whose handle is still open (the descriptor was
// dup'd or inherited by a child, whose close the kernel also reports) is not
// pending: its file is simply open.
func (c *closer) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nQueued
}

// held counts staged and queued closes: what the queue's bound applies to.
func (c *closer) held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.staged) + c.nQueued
}

// AsyncClose reports whether closes of files created in enabled directories
// may be answered before their data is committed.
func (m *Manager) AsyncClose() bool { return m.cl != nil }

// StageClose journals the close of ino (created as parent/name, size bytes
// long in this mount) and returns its ticket. The caller answers the close
// at once and hands the ticket to QueueClose when the handle is released.
// A nil ticket (and nil error) means: close synchronously (queue full,
// unmounting).
func (m *Manager) StageClose(ctx context.Context, ino, parent uint64, name string, size uint64) (*CloseTicket, error) {
	c := m.cl
	if c == nil {
		return nil, nil
	}
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	if closing || c.held() >= maxQueuedCloses {
		return nil, nil
	}
	t := &CloseTicket{rec: CloseRecord{Ino: ino, Parent: parent, Name: name, Size: size, Closed: time.Now()}, done: make(chan struct{})}
	err := m.j.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCloses)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		t.rec.Seq = seq
		data, err := json.Marshal(t.rec)
		if err != nil {
			return err
		}
		return b.Put(key(seq), data)
	})
	if err != nil {
		m.setErr("journal", err)
		return nil, fmt.Errorf("journal an async close: %w", err)
	}
	c.mu.Lock()
	c.staged[t] = struct{}{}
	c.mu.Unlock()
	return t, nil
}

// QueueClose hands a staged close to the background worker, which runs
// commit in the order closes were queued. With the worker gone (unmounting)
// commit runs now.
func (m *Manager) QueueClose(t *CloseTicket, commit CloseCommit) {
	c := m.cl
	c.mu.Lock()
	delete(c.staged, t)
	c.queued[t.rec.Ino] = append(c.queued[t.rec.Ino], t)
	c.nQueued++
	running := c.running.Load()
	c.mu.Unlock()
	if running {
		select {
		case c.jobs <- closeJob{t: t, commit: commit}:
			return
		default: // cannot happen: staging is bounded by the channel's size
		}
	}
	m.runClose(closeJob{t: t, commit: commit})
}

func (m *Manager) runClose(j closeJob) {
	c := m.cl
	// Not cancelled by unmount (Close drains the queue); JuiceFS's own
	// retries bound each commit.
	err := j.commit(background())
	t := j.t
	t.err = err
	c.mu.Lock()
	ts := c.queued[t.rec.Ino]
	for i, x := range ts {
		if x == t {
			ts = append(ts[:i:i], ts[i+1:]...)
			c.nQueued--
			break
		}
	}
	if len(ts) == 0 {
		delete(c.queued, t.rec.Ino)
	} else {
		c.queued[t.rec.Ino] = ts
	}
	if err != nil {
		c.failed[t.rec.Ino] = err
	}
	c.mu.Unlock()
	if err != nil {
		c.errs.Add(1)
		c.mErrs.Inc()
		m.log.Error("the data commit of an async close failed; the next fsync of the file reports it",
			"name", t.rec.Name, "parent", t.rec.Parent, "ino", t.rec.Ino, "error", err)
	} else {
		c.landed.Add(1)
		c.mLanded.Inc()
		c.mLag.Observe(time.Since(t.rec.Closed).Seconds())
	}
	seq := t.rec.Seq
	// Not waited for: after a crash the replay checks the file's length.
	m.j.later(func(tx *bolt.Tx) error { return tx.Bucket(bucketCloses).Delete(key(seq)) })
	close(t.done)
}

func (m *Manager) closeLoop() {
	c := m.cl
	defer c.wg.Done()
	for j := range c.jobs {
		m.runClose(j)
	}
}

// WaitClosed waits until every queued close of ino has landed and returns
// (once) the error a failed commit left: what fsync and open report.
func (m *Manager) WaitClosed(ctx context.Context, ino uint64) error {
	c := m.cl
	if c == nil {
		return nil
	}
	if err := m.WaitCommitted(ctx, ino); err != nil {
		return err
	}
	c.mu.Lock()
	err := c.failed[ino]
	delete(c.failed, ino)
	c.mu.Unlock()
	return err
}

// WaitCommitted waits until every queued close of ino has landed (a later
// open by this mount sees the committed data, as close-to-open promises).
// Commit errors are left for fsync.
func (m *Manager) WaitCommitted(ctx context.Context, ino uint64) error {
	c := m.cl
	if c == nil {
		return nil
	}
	c.mu.Lock()
	ts := append([]*CloseTicket(nil), c.queued[ino]...)
	c.mu.Unlock()
	for _, t := range ts {
		select {
		case <-t.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// ClosesPending reports whether any queued close has not landed (a cheap
// check before WaitClosed on hot paths).
func (m *Manager) ClosesPending() bool {
	c := m.cl
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queued) > 0 || len(c.failed) > 0
}

// waitClosesInDir waits for the queued closes of files created in dir.
func (m *Manager) waitClosesInDir(ctx context.Context, dir uint64) error {
	c := m.cl
	if c == nil {
		return nil
	}
	var inos []uint64
	c.mu.Lock()
	for ino, ts := range c.queued {
		for _, t := range ts {
			if t.rec.Parent == dir {
				inos = append(inos, ino)
				break
			}
		}
	}
	c.mu.Unlock()
	var first error
	for _, ino := range inos {
		if err := m.WaitClosed(ctx, ino); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// drainCloses waits for every queued close (until ctx ends) and stops the
// worker. Closes still staged (handles the kernel never released) or queued
// when ctx ends stay journaled: the next mount reports them if they came up
// short.
func (m *Manager) drainCloses(ctx context.Context) int {
	c := m.cl
	if c == nil {
		return 0
	}
	c.mu.Lock()
	var ts []*CloseTicket
	for _, q := range c.queued {
		ts = append(ts, q...)
	}
	c.mu.Unlock()
	if len(ts) > 0 {
		m.log.Info("unmount: waiting for async closes to commit", "count", len(ts))
	}
	left := 0
	for _, t := range ts {
		select {
		case <-t.done:
		case <-ctx.Done():
			left++
		}
	}
	if left == 0 && c.running.CompareAndSwap(true, false) {
		close(c.jobs)
		c.wg.Wait()
	}
	return left
}

// replayCloses checks the closes a crash left uncommitted: a file at least
// as long as it was at close landed; a shorter one lost its unsynced tail and
// is reported; a deleted one is forgotten. Records that cannot be checked
// now (volume errors) stay for the next mount.
func (m *Manager) replayCloses(ctx context.Context) error {
	var recs []CloseRecord
	err := m.j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCloses).ForEach(func(_, v []byte) error {
			var r CloseRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return &CorruptError{Path: m.j.path, Err: err}
	}
	sort.Slice(recs, func(a, b int) bool { return recs[a].Seq < recs[b].Seq })
	var done []uint64
	for _, r := range recs {
		a, st := m.vol.GetAttr(ctx, r.Ino)
		switch {
		case st == syscall.ENOENT:
			done = append(done, r.Seq)
		case st != 0:
			m.log.Warn("cannot check an uncommitted async close yet; kept for the next mount", "name", r.Name, "ino", r.Ino, "error", st)
		case a.Length >= r.Size:
			done = append(done, r.Seq)
		default:
			done = append(done, r.Seq)
			m.reportLost(r, a.Length)
		}
	}
	if len(done) == 0 {
		return nil
	}
	return m.j.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCloses)
		for _, s := range done {
			if err := b.Delete(key(s)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (m *Manager) reportLost(r CloseRecord, found uint64) {
	m.log.Error("an async close had not committed when the daemon stopped: the file is shorter than when it was closed (unsynced data lost)",
		"name", r.Name, "parent", r.Parent, "ino", r.Ino, "closed_at", r.Closed, "length_at_close", r.Size, "length_now", found)
	if c := m.cl; c != nil {
		c.lost.Add(1)
		c.mLost.Inc()
	}
	m.mu.Lock()
	m.addRecent(Conflict{Ino: r.Ino, Parent: r.Parent, Name: r.Name, Landed: r.Name,
		Reason: fmt.Sprintf("async close lost: %d of %d bytes committed before the daemon stopped", found, r.Size), At: time.Now()})
	m.mu.Unlock()
}

// checkCloses validates the closes bucket (journal check).
func checkCloses(tx *bolt.Tx) error {
	b := tx.Bucket(bucketCloses)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		if len(k) != 8 {
			return fmt.Errorf("bucket %s: bad key %x", bucketCloses, k)
		}
		var r CloseRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("bucket %s: record %d: %w", bucketCloses, binary.BigEndian.Uint64(k), err)
		}
		if r.Seq != binary.BigEndian.Uint64(k) {
			return errors.New("bucket closes: record under the wrong key")
		}
		return nil
	})
}
