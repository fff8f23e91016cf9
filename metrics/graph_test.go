package metrics

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/boltstore"
)

func TestGraphStoreRecords(t *testing.T) {
	bs, err := boltstore.Open(filepath.Join(t.TempDir(), "g.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	g, err := InstrumentGraph(bs, "bbolt", prometheus.WrapRegistererWithPrefix("disgrafs_graph_", reg))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	errCount := func(op, kind string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "disgrafs_graph_errors_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, p := range m.GetLabel() {
					l[p.GetName()] = p.GetValue()
				}
				if l["op"] == op && l["kind"] == kind && l["backend"] == "bbolt" {
					return m.GetCounter().GetValue()
				}
			}
		}
		t.Fatalf("no errors_total{op=%s,kind=%s}", op, kind)
		return 0
	}
	available := func() float64 {
		t.Helper()
		n, err := testutil.GatherAndCount(reg, "disgrafs_graph_available")
		if err != nil || n != 1 {
			t.Fatalf("available: %d series, %v", n, err)
		}
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "disgrafs_graph_available" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}

	steps := []struct {
		name      string
		call      func() error
		op, kind  string // the error expected, if any
		available float64
	}{
		{"update", func() error {
			return g.Update(ctx, []graph.Change{{File: graph.File{ID: 1, Name: "a"}, Add: []string{"x"}}})
		}, "", "", 1},
		{"a tag that does not exist is an answer", func() error {
			_, err := g.Files(ctx, []string{"nope"})
			return err
		}, GraphFiles, ErrKindRejected, 1},
		{"an expired deadline", func() error {
			dctx, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
			defer cancel()
			_, err := g.Tags(dctx)
			return err
		}, GraphTags, ErrKindTimeout, 0},
		{"answers again", func() error { return g.Ping(ctx) }, "", "", 1},
		{"a closed store is unavailable", func() error {
			if err := bs.Close(); err != nil {
				return err
			}
			_, err := g.TagsOf(ctx, 1)
			return err
		}, GraphTagsOf, ErrKindUnavailable, 0},
	}
	for _, s := range steps {
		err := s.call()
		if (err != nil) != (s.kind != "") {
			t.Fatalf("%s: error %v", s.name, err)
		}
		if s.kind != "" && errCount(s.op, s.kind) != 1 {
			t.Fatalf("%s: errors_total{op=%s,kind=%s} != 1", s.name, s.op, s.kind)
		}
		if a := available(); a != s.available {
			t.Fatalf("%s: available %v, want %v", s.name, a, s.available)
		}
		if g.Available() != (s.available == 1) {
			t.Fatalf("%s: Available() disagrees with the gauge", s.name)
		}
	}
	calls, failed, took := g.Totals()
	if calls != uint64(len(steps)) || failed != 3 || took <= 0 {
		t.Fatalf("totals: %d calls, %d failed, %s", calls, failed, took)
	}
	// Every (op) latency series exists from the start; the calls above landed.
	if n, _ := testutil.GatherAndCount(reg, "disgrafs_graph_query_duration_seconds"); n != len(graphOps) {
		t.Fatalf("%d latency series, want %d", n, len(graphOps))
	}
}

func TestGraphProbe(t *testing.T) {
	bs, err := boltstore.Open(filepath.Join(t.TempDir(), "g.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	g, err := InstrumentGraph(bs, "bbolt", prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Probe(ctx, 10*time.Millisecond, time.Second); close(done) }()
	// An idle store that goes away is noticed without any other call.
	_ = bs.Close()
	deadline := time.Now().Add(5 * time.Second)
	for g.Available() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if g.Available() {
		t.Fatal("the probe did not notice a closed store")
	}
}
