package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Steps are undone last first, each once, and every failure is reported.
func TestStopStackUndoesInReverse(t *testing.T) {
	s := &stopStack{log: quiet}
	var order []string
	errB, errD := errors.New("b failed"), errors.New("d failed")
	for _, c := range []struct {
		name string
		err  error
	}{{"a", nil}, {"b", errB}, {"c", nil}, {"d", errD}} {
		s.push(c.name, func() error { order = append(order, c.name); return c.err })
	}
	err := s.stopAll()
	if want := []string{"d", "c", "b", "a"}; !slices.Equal(order, want) {
		t.Fatalf("undone in order %v, want %v", order, want)
	}
	if !errors.Is(err, errB) || !errors.Is(err, errD) {
		t.Fatalf("stopAll() = %v, want both failures", err)
	}
	if err := s.stopAll(); err != nil || len(order) != 4 {
		t.Fatalf("a second stopAll undid again (%v, %v)", order, err)
	}
}

// stop returns only once every job has returned, however long it takes
// after its context ended; nothing starts once stop has begun.
func TestRunGroupStopWaitsForEveryJob(t *testing.T) {
	g := newRunGroup(quiet)
	var done atomic.Int32
	for range 3 {
		g.Go("slow", func(ctx context.Context) {
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond) // still using what it uses
			done.Add(1)
		})
	}
	inDo := make(chan struct{})
	doErr := make(chan error, 1)
	var doCtxEnded atomic.Bool
	go func() {
		doErr <- g.Do(context.Background(), "request", func(ctx context.Context) {
			close(inDo)
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond)
			doCtxEnded.Store(true)
		})
	}()
	<-inDo
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	if n := done.Load(); n != 3 {
		t.Fatalf("stop returned with %d of 3 jobs done", n)
	}
	if !doCtxEnded.Load() {
		t.Fatal("stop returned before a Do job returned")
	}
	if err := <-doErr; err != nil {
		t.Fatalf("Do = %v", err)
	}
	if g.Go("late", func(context.Context) { t.Error("a job started after stop") }) {
		t.Fatal("Go accepted a job after stop")
	}
	if err := g.Do(context.Background(), "late", func(context.Context) { t.Error("a request ran after stop") }); !errors.Is(err, errStopping) {
		t.Fatalf("Do after stop = %v, want errStopping", err)
	}
}

// A Do job's context ends with its caller's too.
func TestRunGroupDoEndsWithCaller(t *testing.T) {
	g := newRunGroup(quiet)
	defer g.stop()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Do(ctx, "request", func(ctx context.Context) { <-ctx.Done() }); err != nil {
		t.Fatal(err)
	}
}
