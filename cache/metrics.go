package cache

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the cache's Prometheus collectors, in four subsystems:
// cache_* (the whole-file cache), prefetch_*, warmup_* and coaccess_*. A nil
// *Metrics counts nothing.
type Metrics struct {
	hitFiles, hitBytes, missFiles, missBytes prometheus.Counter
	evictions, corruptions                   prometheus.Counter
	filledFiles, filledBytes                 prometheus.Counter
	passthroughOpens, fillWaits              prometheus.Counter
	bytes, files, budget                     prometheus.Gauge

	prefetchQueued, prefetchDone, prefetchDropped prometheus.Counter
	prefetchUsed, prefetchWasted, prefetchFailed  prometheus.Counter
	prefetchSkipped, prefetchRefused              prometheus.Counter
	prefetchQueue, prefetchInFlight               prometheus.Gauge

	warmupFiles, warmupBytes prometheus.Counter
	warmupActive             prometheus.Gauge
	coaccessEdges            prometheus.Counter
}

// NewMetrics creates the cache's collectors and, unless subsystem is nil,
// registers each on its subsystem's registerer: subsystem is
// metrics.Registry.Subsystem, and "hit_files_total" of subsystem "cache" is
// exported as disgrafs_cache_hit_files_total.
func NewMetrics(subsystem func(name string) prometheus.Registerer) *Metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &Metrics{
		hitFiles:         c("hit_files_total", "Opens of regular files served from the whole-file cache."),
		hitBytes:         c("hit_bytes_total", "Size of the files whose opens were served from the whole-file cache."),
		missFiles:        c("miss_files_total", "Opens of regular files for reading that the whole-file cache could not serve."),
		missBytes:        c("miss_bytes_total", "Size of the files whose opens missed the whole-file cache."),
		evictions:        c("evictions_total", "Files evicted from the whole-file cache to respect its budget."),
		corruptions:      c("corrupt_files_total", "Cached files found truncated, corrupt or missing, and dropped."),
		filledFiles:      c("filled_files_total", "Files copied into the whole-file cache."),
		filledBytes:      c("filled_bytes_total", "Bytes copied into the whole-file cache."),
		passthroughOpens: c("passthrough_opens_total", "Opens served through FUSE passthrough to a cached file."),
		fillWaits:        c("fill_waits_total", "Opens that found the file being copied into the cache (a prefetch, a warmup) and waited for the copy."),
		bytes:            g("bytes", "Bytes held by the whole-file cache."),
		files:            g("files", "Files held by the whole-file cache."),
		budget:           g("budget_bytes", "Budget of the whole-file cache."),
		prefetchQueued:   c("queued_total", "Files queued by the prefetcher."),
		prefetchDone:     c("done_total", "Files the prefetcher copied into the cache."),
		prefetchDropped:  c("dropped_total", "Queued prefetches dropped (queue full, stale, or no longer needed)."),
		prefetchFailed:   c("failed_total", "Prefetches that failed (file gone, changed, no space)."),
		prefetchUsed:     c("used_total", "Prefetched files that were opened afterwards."),
		prefetchWasted:   c("wasted_total", "Prefetched files evicted before anyone opened them."),
		prefetchSkipped:  c("skipped_opens_total", "Opens whose neighbours were not looked for because the last ones looked for were all cached already."),
		prefetchRefused:  c("refused_total", "Prefetches refused because the cache is full of files used more recently than the one proposed (often one evicted for lack of room and not used since)."),
		prefetchQueue:    g("queue_length", "Files waiting in the prefetch queue."),
		prefetchInFlight: g("in_flight", "Prefetch work under way: files being copied, and opens whose related files are being looked for. With prefetch_queue_length also 0 the prefetcher is idle."),
		warmupFiles:      c("files_total", "Files processed by warmups (cached, already cached or evicted)."),
		warmupBytes:      c("bytes_total", "Bytes copied into the cache by warmups."),
		warmupActive:     g("active", "Warmups running now."),
		coaccessEdges:    c("edges_total", "Co-access observations sent to the graph store."),
	}
	if subsystem != nil {
		subsystem("cache").MustRegister(m.hitFiles, m.hitBytes, m.missFiles, m.missBytes, m.evictions, m.corruptions,
			m.filledFiles, m.filledBytes, m.passthroughOpens, m.fillWaits, m.bytes, m.files, m.budget)
		subsystem("prefetch").MustRegister(m.prefetchQueued, m.prefetchDone, m.prefetchDropped, m.prefetchFailed, m.prefetchUsed,
			m.prefetchWasted, m.prefetchSkipped, m.prefetchRefused, m.prefetchQueue, m.prefetchInFlight)
		subsystem("warmup").MustRegister(m.warmupFiles, m.warmupBytes, m.warmupActive)
		subsystem("coaccess").MustRegister(m.coaccessEdges)
	}
	return m
}

func (m *Metrics) hit(n int64) {
	if m != nil {
		m.hitFiles.Inc()
		m.hitBytes.Add(float64(n))
	}
}

func (m *Metrics) miss(n int64) {
	if m != nil {
		m.missFiles.Inc()
		m.missBytes.Add(float64(n))
	}
}

func (m *Metrics) evicted(n int) {
	if m != nil && n > 0 {
		m.evictions.Add(float64(n))
	}
}

func (m *Metrics) corrupt() {
	if m != nil {
		m.corruptions.Inc()
	}
}

func (m *Metrics) filled(n int64) {
	if m != nil {
		m.filledFiles.Inc()
		m.filledBytes.Add(float64(n))
	}
}

// Passthrough counts an open served through FUSE passthrough.
func (m *Metrics) Passthrough() {
	if m != nil {
		m.passthroughOpens.Inc()
	}
}

func (m *Metrics) setUsage(bytes int64, files int) {
	if m != nil {
		m.bytes.Set(float64(bytes))
		m.files.Set(float64(files))
	}
}

func (m *Metrics) setBudget(n int64) {
	if m != nil {
		m.budget.Set(float64(n))
	}
}

func (m *Metrics) prefetchQueuedInc() {
	if m != nil {
		m.prefetchQueued.Inc()
	}
}

func (m *Metrics) prefetchDoneInc() {
	if m != nil {
		m.prefetchDone.Inc()
	}
}

func (m *Metrics) prefetchDroppedInc() {
	if m != nil {
		m.prefetchDropped.Inc()
	}
}

func (m *Metrics) fillWaitInc() {
	if m != nil {
		m.fillWaits.Inc()
	}
}

func (m *Metrics) prefetchSkippedInc() {
	if m != nil {
		m.prefetchSkipped.Inc()
	}
}

func (m *Metrics) prefetchFailedInc() {
	if m != nil {
		m.prefetchFailed.Inc()
	}
}

func (m *Metrics) prefetchUsedInc() {
	if m != nil {
		m.prefetchUsed.Inc()
	}
}

func (m *Metrics) prefetchWastedInc() {
	if m != nil {
		m.prefetchWasted.Inc()
	}
}

func (m *Metrics) prefetchQueueSet(n int) {
	if m != nil {
		m.prefetchQueue.Set(float64(n))
	}
}

func (m *Metrics) prefetchRefusedInc() {
	if m != nil {
		m.prefetchRefused.Inc()
	}
}

func (m *Metrics) prefetchInFlightSet(n int64) {
	if m != nil {
		m.prefetchInFlight.Set(float64(n))
	}
}
