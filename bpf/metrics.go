package bpf

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Totals sums the reads of every inode of one drain: bytes by source, and
// read calls by Class.
func (d Drained) Totals() (bytes Split, calls [3]uint64) {
	for _, in := range d.Inodes {
		sp := in.Split()
		bytes.Passthrough += sp.Passthrough
		bytes.PageCache += sp.PageCache
		bytes.Daemon += sp.Daemon
		for c := range calls {
			calls[c] += in.Calls[c]
		}
	}
	return bytes, calls
}

// Metrics are the read accounting's Prometheus collectors, fed from every
// drain:
//
//	disgrafs_bpf_enabled, disgrafs_bpf_open_events_total  (subsystem bpf)
//	disgrafs_read_bytes_total{source}, disgrafs_read_calls_total{class}  (subsystem read)
//	disgrafs_fuse_request_duration_seconds{opcode}  (subsystem fuse)
//
// The read series exist once a drain has counted something: with eBPF off
// they are absent, not zero.
type Metrics struct {
	enabled   prometheus.Gauge
	opens     prometheus.Counter
	readBytes *prometheus.CounterVec
	readCalls *prometheus.CounterVec
	fuse      *fuseCollector
}

// NewMetrics creates the collectors; nothing is exported until Register.
func NewMetrics() *Metrics {
	return &Metrics{
		enabled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "enabled", Help: "1 when eBPF read accounting runs on this mount, 0 when it is off or could not load (see 'disgrafs status').",
		}),
		opens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "open_events_total", Help: "Opens of files on the mount seen by eBPF.",
		}),
		readBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bytes_total", Help: "Bytes applications read from the mount, by source: passthrough (backing file), page_cache, daemon (FUSE READ). From eBPF.",
		}, []string{"source"}),
		readCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calls_total", Help: "Read system calls on the mount's files, by class: passthrough, cached, direct. From eBPF.",
		}, []string{"class"}),
		fuse: &fuseCollector{desc: prometheus.NewDesc("request_duration_seconds",
			"Time from the kernel queueing a FUSE request of this mount to its reply, by opcode. From eBPF.", []string{"opcode"}, nil)},
	}
}

// Register registers the collectors, each on its subsystem's registerer:
// subsystem is metrics.Registry.Subsystem.
func (m *Metrics) Register(subsystem func(name string) prometheus.Registerer) error {
	for _, r := range []struct {
		sub string
		cs  []prometheus.Collector
	}{
		{"bpf", []prometheus.Collector{m.enabled, m.opens}},
		{"read", []prometheus.Collector{m.readBytes, m.readCalls}},
		{"fuse", []prometheus.Collector{m.fuse}},
	} {
		reg := subsystem(r.sub)
		for _, c := range r.cs {
			if err := reg.Register(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// SetEnabled sets disgrafs_bpf_enabled.
func (m *Metrics) SetEnabled(on bool) {
	v := 0.0
	if on {
		v = 1
	}
	m.enabled.Set(v)
}

// Observe adds one drain to the counters and keeps its FUSE latency
// histograms (they are cumulative) for the next scrape. It runs once per
// drain, never on a read, so it resolves the read series' children itself:
// they come into being at the first drain.
func (m *Metrics) Observe(d Drained) {
	bytes, calls := d.Totals()
	m.readBytes.WithLabelValues("passthrough").Add(float64(bytes.Passthrough))
	m.readBytes.WithLabelValues("page_cache").Add(float64(bytes.PageCache))
	m.readBytes.WithLabelValues("daemon").Add(float64(bytes.Daemon))
	for c, n := range calls {
		m.readCalls.WithLabelValues(Class(c).String()).Add(float64(n))
	}
	m.opens.Add(float64(len(d.Opens)))
	m.fuse.set(d.Fuse)
}

// fuseCollector exports the cumulative FUSE latency histograms of the last drain.
type fuseCollector struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	ops  []FuseOp
}

func (c *fuseCollector) set(ops []FuseOp) {
	c.mu.Lock()
	c.ops = ops
	c.mu.Unlock()
}

func (c *fuseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *fuseCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	ops := c.ops
	c.mu.Unlock()
	for _, op := range ops {
		buckets := make(map[float64]uint64, LatencyBuckets-1)
		var cum uint64
		for b := 0; b < LatencyBuckets-1; b++ {
			cum += op.Buckets[b]
			buckets[BucketBound(b).Seconds()] = cum
		}
		m, err := prometheus.NewConstHistogram(c.desc, op.Count, op.Sum.Seconds(), buckets, op.Name)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.desc, err)
			continue
		}
		ch <- m
	}
}
