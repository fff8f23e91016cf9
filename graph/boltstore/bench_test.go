package boltstore

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/disgrafs/disgrafs/graph/graphbench"
)

// BenchmarkScale runs graphbench at full scale (100,000 files x 20 tags):
//
//	go test -run XXX -bench Scale -benchtime 1x ./graph/boltstore
//
// DISGRAFS_BENCH_FILES overrides the number of files; DISGRAFS_BENCH_SYNC=1
// keeps fsync on (the default Options).
func BenchmarkScale(b *testing.B) {
	files := 100_000
	if v, err := strconv.Atoi(os.Getenv("DISGRAFS_BENCH_FILES")); err == nil && v > 0 {
		files = v
	}
	for i := 0; i < b.N; i++ {
		s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{NoSync: os.Getenv("DISGRAFS_BENCH_SYNC") != "1"})
		if err != nil {
			b.Fatal(err)
		}
		res, err := graphbench.Run(context.Background(), s, graphbench.Config{Files: files, Logf: b.Logf})
		if err != nil {
			b.Fatal(err)
		}
		st, _ := s.Stats(context.Background())
		s.Close()
		b.Logf("%v; index %d MiB", res, st.SizeBytes>>20)
		b.ReportMetric(res.TagRate, "files/s")
		b.ReportMetric(float64(res.ListBest.Microseconds())/1000, "list-ms")
		b.ReportMetric(float64(res.RelatedP50.Microseconds())/1000, "related-p50-ms")
		b.ReportMetric(float64(res.RelatedP99.Microseconds())/1000, "related-p99-ms")
	}
}
