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
	// Two runs of a program (processes 1 and 4) read 10, 11, 12 together;
	// process 5 reads 40 and 41 together once; process 2 reads 10 and 20 far
	// apart in time (outside the window), and 30 alone.
	for _, pid := range []uint32{1, 4} {
		for _, ino := range []uint64{10, 11, 12} {
			l.Opened(pid, ino)
		}
	}
	l.Opened(5, 40)
	l.Opened(5, 41)
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
		{40, nil}, // seen together once: not an edge yet
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
	for _, pid := range []uint32{2, 3} { // files read together by two processes
		l.Read(pid, 20)
		l.Read(pid, 21)
	}
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

// A pair's weight counts every observation from its second on; a pair not
// seen again within two generations of newer pairs is forgotten.
func TestLearnerPairsRecur(t *testing.T) {
	tests := []struct {
		name string
		obs  [][2]uint64 // observed pairs, in order
		want map[[2]uint64]float64
	}{
		{"once", [][2]uint64{{1, 2}}, map[[2]uint64]float64{}},
		{"twice", [][2]uint64{{1, 2}, {1, 2}}, map[[2]uint64]float64{{1, 2}: 2}},
		{"four times", [][2]uint64{{1, 2}, {1, 2}, {1, 2}, {1, 2}}, map[[2]uint64]float64{{1, 2}: 4}},
		{"recurs within two generations", [][2]uint64{{1, 2}, {3, 4}, {5, 6}, {1, 2}}, map[[2]uint64]float64{{1, 2}: 2}},
		{"forgotten after two generations", [][2]uint64{{1, 2}, {3, 4}, {5, 6}, {7, 8}, {9, 10}, {1, 2}}, map[[2]uint64]float64{}},
		{"a touched pair moves to the newest generation", [][2]uint64{{1, 2}, {3, 4}, {1, 2}, {5, 6}, {7, 8}, {1, 2}}, map[[2]uint64]float64{{1, 2}: 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLearner(nil, nil, nil)
			l.seenGen = 2
			for _, p := range tc.obs {
				l.mu.Lock()
				l.pairLocked(p[0], p[1])
				l.mu.Unlock()
			}
			if len(l.pending) != len(tc.want) {
				t.Fatalf("pending %v, want %v", l.pending, tc.want)
			}
			for k, w := range tc.want {
				if l.pending[k] != w {
					t.Fatalf("pending %v, want %v", l.pending, tc.want)
				}
			}
			if n := len(l.cur) + len(l.prev); n > 2*l.seenGen {
				t.Fatalf("%d pairs remembered, bound %d", n, 2*l.seenGen)
			}
		})
	}
}
