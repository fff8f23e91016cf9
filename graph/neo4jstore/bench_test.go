package neo4jstore

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/graph/graphbench"
)

// BenchmarkScale runs graphbench against the Bolt server of the tests:
//
//	DISGRAFS_TEST_BOLT=... go test -run XXX -bench Scale -benchtime 1x -timeout 60m ./graph/neo4jstore
//
// NornicDB is far slower than bbolt, so the default is 10,000 files and 100
// Related queries, in batches of 100 files; DISGRAFS_BENCH_FILES,
// DISGRAFS_BENCH_RELATED and DISGRAFS_BENCH_BATCH override.
func BenchmarkScale(b *testing.B) {
	env := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	for i := 0; i < b.N; i++ {
		s := openStore(b, Options{Timeout: 30 * time.Minute})
		res, err := graphbench.Run(context.Background(), s, graphbench.Config{
			Files:   env("DISGRAFS_BENCH_FILES", 10_000),
			Related: env("DISGRAFS_BENCH_RELATED", 100),
			Lists:   3,
			// NornicDB (Badger) refuses a transaction past about 10,000
			// writes ("Txn is too big"): 100 files x 20 tags stays below.
			Batch: env("DISGRAFS_BENCH_BATCH", 100),
			Logf:  b.Logf,
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%v", res)
		b.ReportMetric(res.TagRate, "files/s")
		b.ReportMetric(float64(res.ListBest.Microseconds())/1000, "list-ms")
		b.ReportMetric(float64(res.RelatedP50.Microseconds())/1000, "related-p50-ms")
		b.ReportMetric(float64(res.RelatedP99.Microseconds())/1000, "related-p99-ms")
	}
}
