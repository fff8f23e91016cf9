package metrics

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/disgrafs/disgrafs/graph"
)

// Graph store operations, the op label of the graph metrics.
const (
	GraphUpdate      = "update"
	GraphForget      = "forget"
	GraphCreateTag   = "create_tag"
	GraphDeleteTag   = "delete_tag"
	GraphTags        = "tags"
	GraphTagsOf      = "tags_of"
	GraphFiles       = "files"
	GraphCoTags      = "co_tags"
	GraphQuery       = "query"
	GraphRelated     = "related"
	GraphAddCoAccess = "add_co_access"
	GraphCoAccessed  = "co_accessed"
	GraphPing        = "ping"
)

var graphOps = []string{GraphUpdate, GraphForget, GraphCreateTag, GraphDeleteTag, GraphTags, GraphTagsOf,
	GraphFiles, GraphCoTags, GraphQuery, GraphRelated, GraphAddCoAccess, GraphCoAccessed, GraphPing}

// Kinds of graph errors, the kind label of disgrafs_graph_errors_total.
const (
	ErrKindUnavailable = "unavailable" // the store does not answer
	ErrKindTimeout     = "timeout"     // the call's deadline passed
	ErrKindCanceled    = "canceled"    // the caller gave up
	ErrKindRejected    = "rejected"    // the store answered no (no such tag, not empty, bad tag)
	ErrKindOther       = "other"
)

// GraphDurationBuckets (seconds) span a bbolt lookup (tens of µs) to a slow
// remote graph (seconds).
var GraphDurationBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
}

type graphOpMetrics struct {
	dur    prometheus.Observer
	errors [len(errKindsArr)]prometheus.Counter
}

var errKindsArr = [...]string{ErrKindUnavailable, ErrKindTimeout, ErrKindCanceled, ErrKindRejected, ErrKindOther}

// GraphStore is a graph.Store that records the latency and errors of every
// call and whether the store answers. It wraps any backend.
type GraphStore struct {
	graph.Store
	ops       map[string]*graphOpMetrics // fixed after construction
	available atomic.Int32               // 1 answers, 0 does not
	lastOK    atomic.Int64               // unix nanoseconds of the latest answer
	calls     atomic.Uint64
	failed    atomic.Uint64
	ns        atomic.Uint64
}

var _ graph.Store = (*GraphStore)(nil)

// InstrumentGraph wraps store and registers on r (the "graph" subsystem):
//   - query_duration_seconds{backend,op}: latency of every store call;
//   - errors_total{backend,op,kind}: failed calls (kind: unavailable,
//     timeout, canceled, rejected, other);
//   - available{backend}: 1 while the store answers, 0 after a call found it
//     unreachable (until one succeeds again).
//   - last_success_timestamp_seconds{backend}.
func InstrumentGraph(store graph.Store, backend string, r prometheus.Registerer) (*GraphStore, error) {
	g := &GraphStore{Store: store, ops: make(map[string]*graphOpMetrics, len(graphOps))}
	g.available.Store(1)
	constLabels := prometheus.Labels{"backend": backend}
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "query_duration_seconds", Help: "Latency of graph store calls, by backend and operation.",
		Buckets: GraphDurationBuckets, ConstLabels: constLabels,
	}, []string{"op"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "errors_total", Help: "Graph store calls that failed, by backend, operation and kind.",
		ConstLabels: constLabels,
	}, []string{"op", "kind"})
	avail := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "available", Help: "1 while the graph store answers, 0 after a call found it unreachable.",
		ConstLabels: constLabels,
	}, func() float64 { return float64(g.available.Load()) })
	last := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "last_success_timestamp_seconds", Help: "When the graph store last answered (unix seconds).",
		ConstLabels: constLabels,
	}, func() float64 { return float64(g.lastOK.Load()) / 1e9 })
	for _, c := range []prometheus.Collector{hist, errs, avail, last} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	for _, op := range graphOps {
		m := &graphOpMetrics{dur: hist.WithLabelValues(op)}
		for i, k := range errKindsArr {
			m.errors[i] = errs.WithLabelValues(op, k)
		}
		g.ops[op] = m
	}
	return g, nil
}

// Available reports whether the latest call found the store answering.
func (g *GraphStore) Available() bool { return g.available.Load() == 1 }

// Totals returns how many calls the store served since it was wrapped, how
// many failed, and the time they took.
func (g *GraphStore) Totals() (calls, failed uint64, took time.Duration) {
	return g.calls.Load(), g.failed.Load(), time.Duration(g.ns.Load())
}

// Unwrap returns the backend.
func (g *GraphStore) Unwrap() graph.Store { return g.Store }

func errKind(ctx context.Context, err error) int {
	switch {
	case errors.Is(err, graph.ErrUnavailable):
		return 0
	case errors.Is(err, context.DeadlineExceeded):
		return 1
	case errors.Is(err, context.Canceled) || ctx.Err() == context.Canceled:
		return 2
	case errors.Is(err, graph.ErrNoTag), errors.Is(err, graph.ErrNotEmpty), errors.Is(err, graph.ErrBadTag):
		return 3
	}
	return 4
}

func (g *GraphStore) record(ctx context.Context, op string, began time.Time, err error) {
	m := g.ops[op]
	d := time.Since(began)
	m.dur.Observe(d.Seconds())
	g.calls.Add(1)
	g.ns.Add(uint64(d))
	if err == nil {
		g.answered()
		return
	}
	k := errKind(ctx, err)
	m.errors[k].Inc()
	g.failed.Add(1)
	switch k {
	case 0, 1: // unreachable or too slow to be of use
		g.available.Store(0)
	case 3: // it answered
		g.answered()
	}
}

func (g *GraphStore) answered() {
	g.available.Store(1)
	g.lastOK.Store(time.Now().UnixNano())
}

// Update implements graph.Store.
func (g *GraphStore) Update(ctx context.Context, changes []graph.Change) error {
	t := time.Now()
	err := g.Store.Update(ctx, changes)
	g.record(ctx, GraphUpdate, t, err)
	return err
}

// Forget implements graph.Store.
func (g *GraphStore) Forget(ctx context.Context, ids []graph.FileID) error {
	t := time.Now()
	err := g.Store.Forget(ctx, ids)
	g.record(ctx, GraphForget, t, err)
	return err
}

// CreateTag implements graph.Store.
func (g *GraphStore) CreateTag(ctx context.Context, tag string) error {
	t := time.Now()
	err := g.Store.CreateTag(ctx, tag)
	g.record(ctx, GraphCreateTag, t, err)
	return err
}

// DeleteTag implements graph.Store.
func (g *GraphStore) DeleteTag(ctx context.Context, tag string) error {
	t := time.Now()
	err := g.Store.DeleteTag(ctx, tag)
	g.record(ctx, GraphDeleteTag, t, err)
	return err
}

// Tags implements graph.Store.
func (g *GraphStore) Tags(ctx context.Context) ([]graph.TagCount, error) {
	t := time.Now()
	r, err := g.Store.Tags(ctx)
	g.record(ctx, GraphTags, t, err)
	return r, err
}

// TagsOf implements graph.Store.
func (g *GraphStore) TagsOf(ctx context.Context, id graph.FileID) ([]string, error) {
	t := time.Now()
	r, err := g.Store.TagsOf(ctx, id)
	g.record(ctx, GraphTagsOf, t, err)
	return r, err
}

// Files implements graph.Store.
func (g *GraphStore) Files(ctx context.Context, tags []string) ([]graph.File, error) {
	t := time.Now()
	r, err := g.Store.Files(ctx, tags)
	g.record(ctx, GraphFiles, t, err)
	return r, err
}

// CoTags implements graph.Store.
func (g *GraphStore) CoTags(ctx context.Context, tags []string) ([]string, error) {
	t := time.Now()
	r, err := g.Store.CoTags(ctx, tags)
	g.record(ctx, GraphCoTags, t, err)
	return r, err
}

// Query implements graph.Store.
func (g *GraphStore) Query(ctx context.Context, e graph.Expr) ([]graph.File, error) {
	t := time.Now()
	r, err := g.Store.Query(ctx, e)
	g.record(ctx, GraphQuery, t, err)
	return r, err
}

// Related implements graph.Store.
func (g *GraphStore) Related(ctx context.Context, id graph.FileID, limit int) ([]graph.Scored, error) {
	t := time.Now()
	r, err := g.Store.Related(ctx, id, limit)
	g.record(ctx, GraphRelated, t, err)
	return r, err
}

// AddCoAccess implements graph.Store.
func (g *GraphStore) AddCoAccess(ctx context.Context, edges []graph.CoAccess) error {
	t := time.Now()
	err := g.Store.AddCoAccess(ctx, edges)
	g.record(ctx, GraphAddCoAccess, t, err)
	return err
}

// CoAccessed implements graph.Store.
func (g *GraphStore) CoAccessed(ctx context.Context, id graph.FileID, limit int, halfLife time.Duration, now time.Time) ([]graph.Scored, error) {
	t := time.Now()
	r, err := g.Store.CoAccessed(ctx, id, limit, halfLife, now)
	g.record(ctx, GraphCoAccessed, t, err)
	return r, err
}

// Ping implements graph.Store.
func (g *GraphStore) Ping(ctx context.Context) error {
	t := time.Now()
	err := g.Store.Ping(ctx)
	g.record(ctx, GraphPing, t, err)
	return err
}

// Probe pings the store every interval while no other call has answered
// within it, so that the availability gauge tells the truth on an idle node.
// It returns when ctx ends.
func (g *GraphStore) Probe(ctx context.Context, interval, timeout time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if g.Available() && time.Since(time.Unix(0, g.lastOK.Load())) < interval {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		_ = g.Ping(pctx)
		cancel()
	}
}
