package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// errStopping answers work asked for while the daemon stops.
var errStopping = errors.New("the daemon is stopping")

// runGroup owns the daemon's background work: every job runs under the
// group's context, and stop cancels that context and returns once every job
// has returned. Jobs are refused once stop has begun, so when stop returns
// nothing the jobs use (the volume, the cache index, the graph store) is in
// use any more.
type runGroup struct {
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger

	mu      sync.Mutex
	wg      sync.WaitGroup // Add only under mu, and only before stopped
	stopped bool
	running map[string]int // jobs by name, for the log of a slow stop
}

func newRunGroup(log *slog.Logger) *runGroup {
	ctx, cancel := context.WithCancel(context.Background())
	return &runGroup{ctx: ctx, cancel: cancel, log: log, running: map[string]int{}}
}

// enter registers one job; false once stop has begun.
func (g *runGroup) enter(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	g.wg.Add(1)
	g.running[name]++
	return true
}

func (g *runGroup) leave(name string) {
	g.mu.Lock()
	if g.running[name]--; g.running[name] == 0 {
		delete(g.running, name)
	}
	g.mu.Unlock()
	g.wg.Done()
}

// Go runs job on a goroutine of its own with the group's context; false
// (and job never runs) once stop has begun.
func (g *runGroup) Go(name string, job func(ctx context.Context)) bool {
	if !g.enter(name) {
		return false
	}
	go func() {
		defer g.leave(name)
		job(g.ctx)
	}()
	return true
}

// Do runs fn on the calling goroutine as one of the group's jobs, under a
// context that ends with ctx or when the group stops; errStopping (and fn
// never runs) once stop has begun.
func (g *runGroup) Do(ctx context.Context, name string, fn func(ctx context.Context)) error {
	if !g.enter(name) {
		return errStopping
	}
	defer g.leave(name)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(g.ctx, cancel)()
	fn(ctx)
	return nil
}

// stopWarnEvery is how often a stop that waits for jobs names them.
const stopWarnEvery = 10 * time.Second

// stop cancels every job and waits for all of them to return, however long
// it takes: what they use is closed only afterwards.
func (g *runGroup) stop() error {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	g.cancel()
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	t := time.NewTicker(stopWarnEvery)
	defer t.Stop()
	for waited := stopWarnEvery; ; waited += stopWarnEvery {
		select {
		case <-done:
			return nil
		case <-t.C:
			g.mu.Lock()
			names := slices.Sorted(maps.Keys(g.running))
			g.mu.Unlock()
			g.log.Warn("background work still running at shutdown; waiting for it", "jobs", names, "waited", waited)
		}
	}
}

// stopStack undoes start: each step of start that needs undoing pushes how,
// and stopAll undoes them last-in first-out, when start fails halfway and at
// shutdown alike.
type stopStack struct {
	log   *slog.Logger
	steps []stopStep
}

type stopStep struct {
	name string
	fn   func() error
}

// push adds the undoing of a step that just succeeded.
func (s *stopStack) push(name string, fn func() error) {
	s.steps = append(s.steps, stopStep{name, fn})
}

// stopAll runs every step once, the last pushed first, whatever the others
// return; it logs each failure and returns them joined.
func (s *stopStack) stopAll() error {
	var errs []error
	for len(s.steps) > 0 {
		st := s.steps[len(s.steps)-1]
		s.steps = s.steps[:len(s.steps)-1]
		s.log.Debug("stopping", "step", st.name)
		if err := st.fn(); err != nil {
			s.log.Error("stopping "+st.name, "error", err)
			errs = append(errs, fmt.Errorf("%s: %w", st.name, err))
		}
	}
	return errors.Join(errs...)
}
