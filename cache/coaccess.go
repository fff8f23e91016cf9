package cache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/disgrafs/disgrafs/graph"
)

// EdgeSink stores co-access observations (the graph store).
type EdgeSink interface {
	AddCoAccess(ctx context.Context, edges []graph.CoAccess) error
}

// Learner turns opens into co-access edges: two files opened by one process
// within Window of each other are a co-access. A pair becomes an edge once it
// recurs: its first observation is only remembered, in memory; from its
// second on each observation adds 1 to the edge's weight in the store, which
// decays weights by age when it ranks them.
//
// Most pairs never recur: an epoch over a shuffled data set pairs each file
// with a few random others, and the next epoch pairs it with different ones.
// Writing each of those to the store cost a third of the daemon's CPU in a
// warm 8-reader pass and grew the store without bound, for edges that never
// predict anything. Pairs that do recur (a file and its sidecar, the files a
// program always loads together) are written from their second observation.
type Learner struct {
	sink   EdgeSink
	log    *slog.Logger
	met    *Metrics
	window time.Duration
	// perProc bounds how many recent opens of one process pair with a new one.
	perProc int

	// fromReads: eBPF reports which files each process reads; opens
	// reported by the daemon are then ignored (eBPF sees them as reads too).
	fromReads atomic.Bool

	mu      sync.Mutex
	recent  map[uint32][]opened
	pending map[[2]uint64]float64
	// seen counts the observations of recent pairs in two generations: a
	// pair observed is moved to cur; when cur holds seenGen pairs it becomes
	// prev and the old prev is forgotten. Memory stays bounded (about 5 MB),
	// and a pair is remembered for at least seenGen newer pairs.
	cur, prev map[[2]uint64]uint32
	seenGen   int
}

type opened struct {
	ino uint64
	at  time.Time
}

// maxProcs bounds the processes tracked at once.
const maxProcs = 4096

// NewLearner returns a learner writing to sink.
func NewLearner(sink EdgeSink, met *Metrics, log *slog.Logger) *Learner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Learner{sink: sink, log: log, met: met, window: 2 * time.Second, perProc: 4,
		recent: map[uint32][]opened{}, pending: map[[2]uint64]float64{},
		cur: map[[2]uint64]uint32{}, prev: map[[2]uint64]uint32{}, seenGen: 1 << 16}
}

// pairLocked records one observation of the pair a < b and queues the
// weight it adds to the store: none the first time, 2 (both observations)
// the second, 1 after.
func (l *Learner) pairLocked(a, b uint64) {
	k := [2]uint64{a, b}
	n, ok := l.cur[k]
	if !ok {
		if n, ok = l.prev[k]; ok {
			delete(l.prev, k)
		}
	}
	n++
	if !ok && len(l.cur) >= l.seenGen {
		l.prev, l.cur = l.cur, make(map[[2]uint64]uint32, l.seenGen)
	}
	l.cur[k] = n
	if n < 2 || len(l.pending) >= 1<<20 {
		return
	}
	if n == 2 {
		l.pending[k] += 2
	} else {
		l.pending[k]++
	}
}

// UseReads switches the learner to reads reported by eBPF (Read): files read
// together by one process, also through long-lived opens the daemon saw once.
func (l *Learner) UseReads() { l.fromReads.Store(true) }

// Opened records that process pid opened ino (unless the learner uses reads);
// it never blocks on I/O.
func (l *Learner) Opened(pid uint32, ino uint64) {
	if l.fromReads.Load() {
		return
	}
	l.observe(pid, ino)
}

// Read records that process pid read ino (from eBPF's per-process counts).
func (l *Learner) Read(pid uint32, ino uint64) { l.observe(pid, ino) }

func (l *Learner) observe(pid uint32, ino uint64) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.recent[pid]
	keep := r[:0]
	for _, o := range r {
		if now.Sub(o.at) <= l.window && o.ino != ino {
			keep = append(keep, o)
			l.pairLocked(min(o.ino, ino), max(o.ino, ino))
		}
	}
	if len(keep) >= l.perProc {
		keep = keep[len(keep)-l.perProc+1:]
	}
	l.recent[pid] = append(keep, opened{ino, now})
	if len(l.recent) > maxProcs {
		for p, r := range l.recent {
			if len(r) == 0 || now.Sub(r[len(r)-1].at) > l.window {
				delete(l.recent, p)
			}
		}
	}
}

// Flush sends the pending edges to the store.
func (l *Learner) Flush(ctx context.Context) error {
	l.mu.Lock()
	pending := l.pending
	l.pending = map[[2]uint64]float64{}
	l.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	now := time.Now()
	edges := make([]graph.CoAccess, 0, len(pending))
	for k, w := range pending {
		edges = append(edges, graph.CoAccess{A: graph.FileID(k[0]), B: graph.FileID(k[1]), Weight: w, At: now})
	}
	for len(edges) > 0 {
		n := min(len(edges), 1000)
		if err := l.sink.AddCoAccess(ctx, edges[:n]); err != nil {
			return err
		}
		if l.met != nil {
			l.met.coaccessEdges.Add(float64(n))
		}
		edges = edges[n:]
	}
	return nil
}

// Run flushes every few seconds until ctx ends.
func (l *Learner) Run(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = l.Flush(fctx)
			cancel()
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := l.Flush(fctx); err != nil {
				l.log.Debug("saving co-access edges", "error", err)
			}
			cancel()
		}
	}
}
