package tagging

import (
	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics registers the tagging service's metrics on r (the "tagger"
// subsystem: names come out as disgrafs_tagger_...). auto may be nil when
// automatic tagging is off. Every value is read from the service's counters
// at scrape time, so tagging itself pays nothing for them.
//   - tag_changes_total: files whose tags changed (by hand or automatically);
//   - index_pending: index changes waiting for the graph;
//   - index_errors_total: index writes that failed (and were retried);
//   - index_dropped_total: index changes dropped because the queue was full
//     (a reindex repairs them);
//   - files_tagged_total, failures_total, dropped_total, queue_length: the
//     automatic tagger's files tagged, files it failed on, files it did not
//     queue because the queue was full, and files waiting.
func RegisterMetrics(r prometheus.Registerer, svc *Service, auto *AutoTagger) error {
	cs := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tag_changes_total",
			Help: "Files whose tags changed, by hand or automatically."},
			func() float64 { return float64(svc.stats.Tagged.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "index_pending",
			Help: "Index changes waiting to reach the graph store."},
			func() float64 { return float64(svc.stats.IndexPending.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "index_errors_total",
			Help: "Index writes that failed and were queued for retry."},
			func() float64 { return float64(svc.stats.IndexErrors.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "index_dropped_total",
			Help: "Index changes dropped because the retry queue was full ('disgrafs reindex' repairs them)."},
			func() float64 { return float64(svc.dropped.Load()) }),
	}
	if auto != nil {
		cs = append(cs,
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "files_tagged_total",
				Help: "Files the automatic tagger tagged."},
				func() float64 { return float64(auto.Done.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "failures_total",
				Help: "Files the automatic tagger failed to tag."},
				func() float64 { return float64(auto.Failed.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dropped_total",
				Help: "Written files not queued for automatic tagging because the queue was full."},
				func() float64 { return float64(auto.Dropped.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "queue_length",
				Help: "Files waiting for the automatic tagger."},
				func() float64 { return float64(auto.Queued()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "queue_capacity",
				Help: "How many files the automatic tagger's queue holds."},
				func() float64 { return float64(auto.Capacity()) }),
		)
	}
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Capacity is how many files the queue holds.
func (a *AutoTagger) Capacity() int { return cap(a.queue) }
