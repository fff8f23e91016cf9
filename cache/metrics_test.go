package cache

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The names dashboards and tests use: each collector's name is relative to
// its subsystem.
func TestMetricsNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(func(name string) prometheus.Registerer {
		return prometheus.WrapRegistererWithPrefix("disgrafs_"+name+"_", reg)
	})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		got = append(got, mf.GetName())
	}
	want := []string{
		"disgrafs_cache_budget_bytes", "disgrafs_cache_bytes", "disgrafs_cache_corrupt_files_total",
		"disgrafs_cache_evictions_total", "disgrafs_cache_files", "disgrafs_cache_fill_waits_total",
		"disgrafs_cache_filled_bytes_total", "disgrafs_cache_filled_files_total", "disgrafs_cache_hit_bytes_total",
		"disgrafs_cache_hit_files_total", "disgrafs_cache_miss_bytes_total", "disgrafs_cache_miss_files_total",
		"disgrafs_cache_passthrough_opens_total", "disgrafs_coaccess_edges_total",
		"disgrafs_prefetch_done_total", "disgrafs_prefetch_dropped_total", "disgrafs_prefetch_failed_total",
		"disgrafs_prefetch_in_flight", "disgrafs_prefetch_queue_length", "disgrafs_prefetch_queued_total",
		"disgrafs_prefetch_refused_total", "disgrafs_prefetch_skipped_opens_total", "disgrafs_prefetch_used_total",
		"disgrafs_prefetch_wasted_total", "disgrafs_warmup_active", "disgrafs_warmup_bytes_total",
		"disgrafs_warmup_files_total",
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("exported\n%v\nwant\n%v", got, want)
	}
}
