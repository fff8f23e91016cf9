package cache

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// ringNeighbours relates each of n files to the next four (1..n, wrapping).
type ringNeighbours struct {
	n     uint64
	calls atomic.Int64
}

func (r *ringNeighbours) Neighbours(ctx context.Context, ino uint64, limit int, skip func(uint64) bool) ([]uint64, error) {
	r.calls.Add(1)
	var out []uint64
	for i := uint64(1); i <= 4 && len(out) < limit; i++ {
		id := (ino+i-1)%r.n + 1
		if skip == nil || !skip(id) {
			out = append(out, id)
		}
	}
	return out, nil
}

func TestExpandEvery(t *testing.T) {
	for _, c := range []struct {
		fruitless int
		want      uint64
	}{
		{0, 1},
		{fruitlessStep - 1, 1},
		{fruitlessStep, 2},
		{3 * fruitlessStep, 8},
		{maxSkipShift * fruitlessStep, 1 << maxSkipShift},
		{1000 * fruitlessStep, 1 << maxSkipShift},
	} {
		if got := expandEvery(c.fruitless); got != c.want {
			t.Errorf("expandEvery(%d) = %d, want %d", c.fruitless, got, c.want)
		}
	}
}

// When everything around the reader is cached, opens stop costing graph
// queries; a miss brings the expansions back at once.
func TestPrefetcherBacksOffWhenAllCached(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 50
	c, src, _ := newTestCache(t, 1<<20)
	var inos []uint64
	for ino := uint64(1); ino <= n; ino++ {
		src.write(t, ino, bytes.Repeat([]byte{byte(ino)}, 100))
		inos = append(inos, ino)
	}
	if _, err := c.Warmup(ctx, src, inos, ModeWarm, 2, nil); err != nil {
		t.Fatal(err)
	}
	nb := &ringNeighbours{n: n}
	p := NewPrefetcher(c, src, nb, PrefetchConfig{}, nil)
	go p.Run(ctx)
	const opens = 400
	for i := range opens {
		p.Opened(uint64(i%n)+1, true)
		time.Sleep(time.Millisecond) // let the expander keep up
	}
	expanded := nb.calls.Load()
	if expanded > opens/4 {
		t.Fatalf("%d of %d opens of cached files were expanded, with nothing to fetch", expanded, opens)
	}
	p.Opened(1, false)
	deadline := time.Now().Add(5 * time.Second)
	for nb.calls.Load() == expanded {
		if time.Now().After(deadline) {
			t.Fatal("an open that missed the cache was not expanded")
		}
		time.Sleep(time.Millisecond)
	}
}
