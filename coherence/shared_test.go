package coherence

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestTrackedChange(t *testing.T) {
	for _, tc := range []struct {
		keys []string
		want Change
	}{
		{[]string{"i12", "d1"}, Change{Attrs: []uint64{12}, Dirs: []uint64{1}}},
		{[]string{"delfiles", "dirUsedSpace", "i", "x12", "c12_0"}, Change{}},
		{nil, Change{}},
		{[]string{"i18446744073709551615"}, Change{Attrs: []uint64{18446744073709551615}}},
		{[]string{"i18446744073709551616"}, Change{}}, // overflows
	} {
		got := trackedChange(tc.keys)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("trackedChange(%q) = %+v, want %+v", tc.keys, got, tc.want)
		}
	}
}

func TestTrackingOK(t *testing.T) {
	resp2 := func(flags []any, redirect int64) any {
		return []any{"flags", flags, "redirect", redirect, "prefixes", []any{"i", "d"}}
	}
	for _, tc := range []struct {
		name string
		info any
		sub  int64
		want bool
	}{
		{"on, broadcast, to the subscription", resp2([]any{"on", "bcast"}, 7), 7, true},
		{"RESP3 map", map[any]any{"flags": []any{"on", "bcast"}, "redirect": int64(7)}, 7, true},
		{"redirected elsewhere (the subscription reconnected)", resp2([]any{"on", "bcast"}, 6), 7, false},
		{"off (the connection was replaced)", resp2([]any{"off"}, -1), 7, false},
		{"broken redirect", resp2([]any{"on", "bcast", "broken_redirect"}, 7), 7, false},
		{"not broadcast", resp2([]any{"on"}, 7), 7, false},
		{"garbage", "OK", 7, false},
	} {
		if got := trackingOK(tc.info, tc.sub); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// testRedis is the Redis server scripts/test.sh starts; a database of its
// own, flushed.
func testRedis(t *testing.T) *redis.Options {
	t.Helper()
	addr := os.Getenv("DISGRAFS_TEST_REDIS")
	if addr == "" {
		if os.Getenv("DISGRAFS_REQUIRE_ALL") != "" {
			t.Fatal("DISGRAFS_TEST_REDIS is not set (scripts/test.sh starts a Redis server)")
		}
		t.Skip("DISGRAFS_TEST_REDIS is not set (scripts/test.sh starts a Redis server)")
	}
	opt := &redis.Options{Addr: addr, DB: 15}
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s: %v", addr, err)
	}
	return opt
}

// node runs a Shared channel until the test ends.
func node(t *testing.T, opt *redis.Options, trust bool, apply func(Change)) *Shared {
	t.Helper()
	s, err := NewShared(SharedConfig{Redis: opt, Volume: "unit", Trust: trust,
		Lease: time.Second, DoubtAfter: 400 * time.Millisecond, Ping: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle(apply, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A change published by one node is applied by every trusting node before
// Publish returns; a node that stops applying (stuck, or cut off) loses its
// lease and its trust, and the writer stops waiting for it after the lease.
func TestSharedPublishWaitsForHolders(t *testing.T) {
	opt := testRedis(t)
	var mu sync.Mutex
	var applied []Change
	block := make(chan struct{})
	blocking := false
	a := node(t, opt, true, func(c Change) {
		mu.Lock()
		applied = append(applied, c)
		b := blocking
		mu.Unlock()
		if b {
			<-block
		}
	})
	defer close(block)
	b := node(t, opt, false, nil)
	if err := b.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node A to trust", func() bool { _, ok := a.Epoch(); return ok })
	if _, ok := b.Epoch(); ok {
		t.Error("a node that does not trust says it does")
	}

	change := Change{Inodes: []uint64{5}, Entries: []Entry{{Parent: 1, Name: "odd \n name"}}}
	if err := b.Publish(context.Background(), change); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(applied)
	mu.Unlock()
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(change) {
		t.Fatalf("when Publish returned, A had applied %+v, want exactly %+v", got, change)
	}

	// A's own changes are not applied back to it, and nobody else waits.
	if err := a.Publish(context.Background(), Change{Attrs: []uint64{9}}); err != nil {
		t.Fatal(err)
	}

	// A gets stuck applying: the writer waits about a lease, A stops
	// trusting well before the writer stops waiting.
	epoch, _ := a.Epoch()
	mu.Lock()
	blocking = true
	mu.Unlock()
	began := time.Now()
	if err := b.Publish(context.Background(), Change{Inodes: []uint64{6}}); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(began)
	if waited < 500*time.Millisecond || waited > 5*time.Second {
		t.Errorf("the writer waited %v for a stuck node with a 1 s lease", waited)
	}
	if e, ok := a.Epoch(); ok || e == epoch {
		t.Errorf("the stuck node still trusts (epoch %d, was %d)", e, epoch)
	}
	if n := b.m.gaveUp.Load(); n != 1 {
		t.Errorf("waits ended by a lease: %d, want 1", n)
	}
	if n := a.m.fallbacks.Load(); n != 1 {
		t.Errorf("A's fallbacks: %d, want 1", n)
	}
}
