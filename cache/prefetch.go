package cache

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Neighbours proposes files worth prefetching after one was opened, best
// first (the graph: shared tags, co-access, the next files of its tags and
// directory in name order), leaving out those skip says are cached or queued.
type Neighbours interface {
	Neighbours(ctx context.Context, ino uint64, limit int, skip func(uint64) bool) ([]uint64, error)
}

// PrefetchConfig bounds the prefetcher.
type PrefetchConfig struct {
	// Width is how many related files one open queues.
	Width int
	// Depth 1 queues the files related to the opened one; 2 also those
	// related to each prefetched file, and so on.
	Depth int
	// Threads is how many files are fetched at once when no foreground read
	// goes through the daemon; half as many while some do.
	Threads int
	// QueueLen bounds the queue; the oldest entries are dropped first.
	QueueLen int
	// MaxFileSize: larger files are left to warmup.
	MaxFileSize int64
	// MaxAge: queued files not fetched within it are dropped as stale.
	MaxAge time.Duration
}

// DefaultPrefetchConfig suits datasets of many small files.
func DefaultPrefetchConfig() PrefetchConfig {
	return PrefetchConfig{Width: 16, Depth: 1, Threads: 32, QueueLen: 4096, MaxFileSize: 64 << 20, MaxAge: 30 * time.Second}
}

type job struct {
	ino   uint64
	depth int
	mode  FillMode // Demand for a file just read through the daemon
	at    time.Time
	elem  *list.Element
}

// Prefetcher copies files related to opened ones into the cache in the
// background, newest requests first.
type Prefetcher struct {
	cfg   PrefetchConfig
	cache *Cache
	src   Source
	nb    Neighbours
	log   *slog.Logger
	met   *Metrics
	// foreground reports reads in flight through the daemon; prefetching
	// shrinks to one fetch at a time while there are any.
	foreground func() int64

	expand chan job
	// inFlight counts opens sent to the expander and not yet expanded, and
	// fetches running (the prefetch_in_flight gauge).
	inFlight atomic.Int64

	mu         sync.Mutex
	cond       *sync.Cond
	queue      *list.List // front: newest
	queued     map[uint64]*job
	active     int
	prefetched map[uint64]struct{} // fetched and not yet opened
	closed     bool

	// Finding a file's neighbours reads the graph (files of its tags,
	// co-access) and costs far more CPU than serving a cached open. When the
	// data set around the reader is already cached, expansions find nothing
	// to fetch; after a run of those only every 2^k-th open is expanded (k
	// grows with the run, up to maxSkipShift), until an expansion finds work
	// again or an open misses the cache.
	opens     uint64
	fruitless int
}

// fruitlessStep is how many fruitless expansions in a row double the
// spacing of the next ones; maxSkipShift caps it at one open in 64.
const (
	fruitlessStep = 8
	maxSkipShift  = 6
)

// NewPrefetcher returns a prefetcher filling c from src.
func NewPrefetcher(c *Cache, src Source, nb Neighbours, cfg PrefetchConfig, log *slog.Logger) *Prefetcher {
	def := DefaultPrefetchConfig()
	if cfg.Width <= 0 {
		cfg.Width = def.Width
	}
	if cfg.Depth <= 0 {
		cfg.Depth = def.Depth
	}
	if cfg.Threads <= 0 {
		cfg.Threads = def.Threads
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = def.QueueLen
	}
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = def.MaxFileSize
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = def.MaxAge
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Prefetcher{
		cfg: cfg, cache: c, src: src, nb: nb, log: log, met: c.met,
		foreground: func() int64 { return 0 },
		expand:     make(chan job, 256),
		queue:      list.New(), queued: map[uint64]*job{}, prefetched: map[uint64]struct{}{},
	}
	p.cond = sync.NewCond(&p.mu)
	c.OnEvict(p.evicted)
	return p
}

// SetForeground sets how to learn the number of reads in flight through the
// daemon. Call before Run.
func (p *Prefetcher) SetForeground(fn func() int64) { p.foreground = fn }

// expandEvery is the spacing of expanded opens after a run of fruitless
// expansions.
func expandEvery(fruitless int) uint64 {
	return 1 << min(fruitless/fruitlessStep, maxSkipShift)
}

// Opened tells the prefetcher a file was opened for reading (hit: from the
// cache); it never blocks.
func (p *Prefetcher) Opened(ino uint64, hit bool) {
	p.mu.Lock()
	p.opens++
	if !hit {
		p.fruitless = 0
	}
	skip := p.opens%expandEvery(p.fruitless) != 0
	if _, ok := p.prefetched[ino]; ok {
		delete(p.prefetched, ino)
		p.met.prefetchUsedInc()
	}
	if j := p.queued[ino]; j != nil {
		// Being read now: its fetch would only duplicate the read.
		p.removeLocked(j)
		p.met.prefetchDroppedInc()
	}
	p.mu.Unlock()
	if skip {
		p.met.prefetchSkippedInc()
		return
	}
	p.addInFlight(1)
	select {
	case p.expand <- job{ino: ino, depth: 1, at: time.Now()}:
	default: // the expander is behind: this open's neighbours are skipped
		p.addInFlight(-1)
	}
}

func (p *Prefetcher) addInFlight(n int64) { p.met.prefetchInFlightSet(p.inFlight.Add(n)) }

// Read queues ino itself (after a read of it through the daemon missed the
// cache), ahead of everything else. The file was just used, so its copy may
// make room like any read (Demand); the prefetcher's guesses may only evict
// files used less recently (Speculative).
func (p *Prefetcher) Read(ino uint64) { p.push(ino, p.cfg.Depth, Demand) }

func (p *Prefetcher) evicted(ino uint64) {
	p.mu.Lock()
	if _, ok := p.prefetched[ino]; ok {
		delete(p.prefetched, ino)
		p.met.prefetchWastedInc()
	}
	p.mu.Unlock()
}

// push queues ino; false when it was queued already (or the prefetcher is
// closed).
func (p *Prefetcher) push(ino uint64, depth int, mode FillMode) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if j := p.queued[ino]; j != nil {
		if mode == Demand {
			j.mode = Demand
		}
		return false
	}
	j := &job{ino: ino, depth: depth, mode: mode, at: time.Now()}
	j.elem = p.queue.PushFront(j)
	p.queued[ino] = j
	p.met.prefetchQueuedInc()
	for p.queue.Len() > p.cfg.QueueLen {
		p.removeLocked(p.queue.Back().Value.(*job))
		p.met.prefetchDroppedInc()
	}
	p.met.prefetchQueueSet(p.queue.Len())
	p.cond.Signal()
	return true
}

func (p *Prefetcher) removeLocked(j *job) {
	p.queue.Remove(j.elem)
	delete(p.queued, j.ino)
	p.met.prefetchQueueSet(p.queue.Len())
}

// Run serves the queue until ctx ends.
func (p *Prefetcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.expander(ctx)
	}()
	for i := 0; i < p.cfg.Threads; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.worker(ctx)
		}()
	}
	// Foreground reads may hold workers back; look again now and then.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			p.mu.Lock()
			if p.queue.Len() > 0 {
				p.cond.Broadcast()
			}
			p.mu.Unlock()
		}
	}
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	wg.Wait()
}

func (p *Prefetcher) expander(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-p.expand:
			p.expandOne(ctx, j)
			p.addInFlight(-1)
		}
	}
}

// expandOne queues the files related to j's.
func (p *Prefetcher) expandOne(ctx context.Context, j job) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	inos, err := p.nb.Neighbours(qctx, j.ino, p.cfg.Width, p.skip)
	cancel()
	if err != nil {
		p.log.Debug("prefetch: finding related files", "ino", j.ino, "error", err)
		return
	}
	pushed := false
	for _, ino := range inos {
		if !p.cache.Contains(ino) {
			pushed = p.push(ino, j.depth, Speculative) || pushed
		}
	}
	p.mu.Lock()
	if pushed {
		p.fruitless = 0
	} else {
		p.fruitless++
	}
	p.mu.Unlock()
}

func (p *Prefetcher) next() *job {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed {
			return nil
		}
		if f := p.queue.Front(); f != nil && p.active < p.allowed() {
			j := f.Value.(*job)
			p.removeLocked(j)
			if time.Since(j.at) > p.cfg.MaxAge {
				p.met.prefetchDroppedInc()
				continue
			}
			p.active++
			p.addInFlight(1)
			return j
		}
		p.cond.Wait()
	}
}

// allowed is how many fetches may run now: all threads while no foreground
// read goes through the daemon, half of them (at least one) while some do.
// Reads from remote storage are bound by latency, not bandwidth, so a few
// fetches beside them cost them little, and each one that lands turns a later
// foreground miss into a hit.
func (p *Prefetcher) allowed() int {
	if p.foreground() == 0 {
		return p.cfg.Threads
	}
	return max(1, p.cfg.Threads/2)
}

func (p *Prefetcher) worker(ctx context.Context) {
	for {
		j := p.next()
		if j == nil {
			return
		}
		p.fetch(ctx, j)
		p.addInFlight(-1)
		p.mu.Lock()
		p.active--
		p.cond.Signal()
		p.mu.Unlock()
	}
}

func (p *Prefetcher) fetch(ctx context.Context, j *job) {
	fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// One Open answers the version and the size: a prefetch costs the
	// round trips of opening and reading the file, nothing more.
	n, err := p.cache.FillUpTo(fctx, p.src, j.ino, p.cfg.MaxFileSize, j.mode)
	if errors.Is(err, ErrLarger) {
		p.met.prefetchDroppedInc()
		return
	}
	if errors.Is(err, ErrRecentlyUsed) {
		p.log.Debug("prefetch refused", "ino", j.ino, "reason", err)
		p.met.prefetchRefusedInc()
		return
	}
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			p.log.Debug("prefetch failed", "ino", j.ino, "error", err)
		}
		p.met.prefetchFailedInc()
		return
	}
	p.met.prefetchDoneInc()
	if n > 0 {
		p.mu.Lock()
		if len(p.prefetched) < 1<<20 {
			p.prefetched[j.ino] = struct{}{}
		}
		p.mu.Unlock()
	}
	if j.depth < p.cfg.Depth {
		p.addInFlight(1)
		select {
		case p.expand <- job{ino: j.ino, depth: j.depth + 1, at: time.Now()}:
		default:
			p.addInFlight(-1)
		}
	}
}

// skip reports whether a file needs no prefetch: cached or already queued.
func (p *Prefetcher) skip(ino uint64) bool {
	if p.cache.Contains(ino) {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queued[ino] != nil
}

// QueueLen is the number of queued files.
func (p *Prefetcher) QueueLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queue.Len()
}

// MaxFileSize is the largest file the prefetcher copies.
func (p *Prefetcher) MaxFileSize() int64 { return p.cfg.MaxFileSize }
