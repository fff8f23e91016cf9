package cache

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/boltstore"
)

func TestLearnerWritesCoAccessEdges(t *testing.T) {
	ctx := context.Background()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "graph.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := NewLearner(st, nil, nil)
	// Process 1 reads 10, 11, 12 together; process 2 reads 10 and 20 far
	// apart in time (outside the window), and 30 alone.
	for _, ino := range []uint64{10, 11, 12} {
		l.Opened(1, ino)
	}
	l.Opened(2, 10)
	l.window = 0 // the next open of process 2 is "much later"
	l.Opened(2, 20)
	l.Opened(3, 30)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ino  uint64
		want []uint64
	}{
		{10, []uint64{11, 12}},
		{11, []uint64{10, 12}},
		{20, nil},
		{30, nil},
	}
	for _, c := range cases {
		got, err := st.CoAccessed(ctx, graph.FileID(c.ino), 10, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ids := map[uint64]bool{}
		for _, s := range got {
			ids[uint64(s.File.ID)] = true
		}
		if len(ids) != len(c.want) {
			t.Errorf("co-accessed with %d: %v, want %v", c.ino, ids, c.want)
			continue
		}
		for _, w := range c.want {
			if !ids[w] {
				t.Errorf("co-accessed with %d: %v, want %v", c.ino, ids, c.want)
			}
		}
	}
}

func TestLearnerFromReads(t *testing.T) {
	ctx := context.Background()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "graph.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l := NewLearner(st, nil, nil)
	l.UseReads()
	l.Opened(1, 10) // the daemon's opens no longer count once eBPF reports reads
	l.Opened(1, 11)
	l.Read(2, 20) // files read together by process 2
	l.Read(2, 21)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ino  uint64
		want int
	}{{10, 0}, {20, 1}} {
		got, err := st.CoAccessed(ctx, graph.FileID(c.ino), 10, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != c.want {
			t.Errorf("co-accessed with %d: %d files, want %d", c.ino, len(got), c.want)
		}
	}
}
