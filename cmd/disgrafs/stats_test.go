package main

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
)

const scrapeA = `# TYPE disgrafs_fuse_ops_total counter
disgrafs_fuse_ops_total{op="read",mp="/m"} 100
disgrafs_fuse_ops_total{op="getattr",mp="/m"} 10
# TYPE disgrafs_fuse_op_duration_seconds histogram
disgrafs_fuse_op_duration_seconds_bucket{op="read",le="+Inf"} 110
disgrafs_fuse_op_duration_seconds_sum{op="read"} 1
disgrafs_fuse_op_duration_seconds_count{op="read"} 110
# TYPE juicefs_fuse_read_size_bytes histogram
juicefs_fuse_read_size_bytes_bucket{le="+Inf"} 1
juicefs_fuse_read_size_bytes_sum 0
juicefs_fuse_read_size_bytes_count 1
# TYPE juicefs_object_request_data_bytes counter
juicefs_object_request_data_bytes{method="GET"} 0
juicefs_object_request_data_bytes{method="PUT"} 0
# TYPE disgrafs_tagger_queue_length gauge
disgrafs_tagger_queue_length 5
# TYPE disgrafs_tagger_index_pending gauge
disgrafs_tagger_index_pending 0
# TYPE disgrafs_graph_available gauge
disgrafs_graph_available{backend="bbolt"} 1
# TYPE disgrafs_cache_hit_files_total counter
disgrafs_cache_hit_files_total 10
# TYPE disgrafs_cache_miss_files_total counter
disgrafs_cache_miss_files_total 4
`

const scrapeB = `# TYPE disgrafs_fuse_ops_total counter
disgrafs_fuse_ops_total{op="read",mp="/m"} 300
disgrafs_fuse_ops_total{op="getattr",mp="/m"} 20
# TYPE disgrafs_fuse_op_duration_seconds histogram
disgrafs_fuse_op_duration_seconds_bucket{op="read",le="+Inf"} 320
disgrafs_fuse_op_duration_seconds_sum{op="read"} 1.42
disgrafs_fuse_op_duration_seconds_count{op="read"} 320
# TYPE juicefs_fuse_read_size_bytes histogram
juicefs_fuse_read_size_bytes_bucket{le="+Inf"} 2
juicefs_fuse_read_size_bytes_sum 209715200
juicefs_fuse_read_size_bytes_count 2
# TYPE juicefs_object_request_data_bytes counter
juicefs_object_request_data_bytes{method="GET"} 1048576
juicefs_object_request_data_bytes{method="PUT"} 0
# TYPE disgrafs_tagger_queue_length gauge
disgrafs_tagger_queue_length 7
# TYPE disgrafs_tagger_index_pending gauge
disgrafs_tagger_index_pending 2
# TYPE disgrafs_graph_available gauge
disgrafs_graph_available{backend="bbolt"} 0
# TYPE disgrafs_cache_hit_files_total counter
disgrafs_cache_hit_files_total 1010
# TYPE disgrafs_cache_miss_files_total counter
disgrafs_cache_miss_files_total 10
`

func TestFormatStats(t *testing.T) {
	parse := func(s string, at time.Time) statsSample {
		var p expfmt.TextParser
		mfs, err := p.TextToMetricFamilies(strings.NewReader(s))
		if err != nil {
			t.Fatal(err)
		}
		return sampleFrom(mfs, at)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, b := parse(scrapeA, t0), parse(scrapeB, t0.Add(2*time.Second))
	line := formatStats(a, b, 1)
	f := strings.Fields(line)
	// 210 requests in 2 s; 210 timed in 0.42 s: 2 ms each; 200 MiB in 2 s.
	// 1000 cache hits and 6 misses in 2 s.
	for _, want := range []string{"03:04:07", "105", "2.00", "100MiB", "512KiB", "no", "7", "2", "500", "3"} {
		found := false
		for _, x := range f {
			if x == want {
				found = true
			}
		}
		if !found {
			t.Errorf("line lacks %q: %s", want, line)
		}
	}
	if !strings.HasSuffix(line, "| read 100") || strings.Contains(line, "getattr") {
		t.Errorf("--top 1 shows more than the busiest op: %s", line)
	}
	// A daemon without tags shows dashes, not zeros.
	c := parse(`# TYPE disgrafs_fuse_ops_total counter
disgrafs_fuse_ops_total{op="read"} 1
`, t0)
	if l := formatStats(c, c, 4); !strings.Contains(l, "    -    -") || !strings.Contains(l, "      -      -") {
		t.Errorf("no tags: %s", l)
	}
}
