package boltstore

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/graphbench"
)

// BenchmarkRelated times Related alone on a 100,000-file index built once
// (kept in $DISGRAFS_BENCH_DB if set, else a temporary file).
func BenchmarkRelated(b *testing.B) {
	ctx := context.Background()
	path := os.Getenv("DISGRAFS_BENCH_DB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "bench.db")
	}
	_, statErr := os.Stat(path)
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	cfg := graphbench.Config{Files: 100_000}
	if statErr != nil {
		changes := graphbench.Changes(cfg)
		for i := 0; i < len(changes); i += 5000 {
			if err := s.Update(ctx, changes[i:min(i+5000, len(changes))]); err != nil {
				b.Fatal(err)
			}
		}
	}
	rng := rand.New(rand.NewSource(1))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Related(ctx, graph.FileID(rng.Intn(cfg.Files)+1), 20); err != nil {
			b.Fatal(err)
		}
	}
}
