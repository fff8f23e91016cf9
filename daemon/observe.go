package daemon

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/fusefs"
	"github.com/disgrafs/disgrafs/tagging"
)

// observer holds what the daemon keeps for its status and metrics.
type observer struct {
	mu       sync.Mutex
	samples  []opSample // a ring of per-second snapshots, oldest first
	sections []statusSection
}

type opSample struct {
	at     time.Time
	totals []fusefs.OpTotal
}

type statusSection struct {
	name, title string
	fn          func() (lines []string, data any)
}

// rateWindow is the span of the rates in the status.
const rateWindow = 10 * time.Second

// AddStatusSection adds a subsystem's part to 'disgrafs status' without a
// typed field in control.Status. fn is called for every status request and
// must not block for long.
func (d *Daemon) AddStatusSection(name, title string, fn func() (lines []string, data any)) {
	d.obs.mu.Lock()
	defer d.obs.mu.Unlock()
	d.obs.sections = append(d.obs.sections, statusSection{name: name, title: title, fn: fn})
}

// registerMetrics registers the metrics of the FUSE layer and the tagger
// (the graph store is wrapped when it opens).
func (d *Daemon) registerMetrics() error {
	if err := d.fs.RegisterMetrics(d.reg.Subsystem("fuse")); err != nil {
		return fmt.Errorf("FUSE metrics: %w", err)
	}
	if d.tags != nil {
		if err := tagging.RegisterMetrics(d.reg.Subsystem("tagger"), d.tags.svc, d.tags.auto); err != nil {
			return fmt.Errorf("tagger metrics: %w", err)
		}
	}
	return nil
}

// runObserve starts the probe of the graph store and the sampler of the
// FUSE rates.
func (d *Daemon) runObserve() {
	if d.tags != nil && d.tags.metered != nil {
		d.run.Go("graph probe", func(ctx context.Context) { d.tags.metered.Probe(ctx, 10*time.Second, 5*time.Second) })
	}
	d.sample()
	d.run.Go("rate sampler", func(ctx context.Context) {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				d.sample()
			}
		}
	})
}

// registerObsControl serves the metrics on the control socket too, so that
// 'disgrafs stats' works with --metrics off.
func (d *Daemon) registerObsControl() {
	d.handleRaw("GET", "metrics", d.reg.Handler().ServeHTTP)
}

func (d *Daemon) sample() {
	s := opSample{at: time.Now(), totals: d.fs.OpTotals()}
	keep := int(rateWindow/time.Second) + 1
	d.obs.mu.Lock()
	d.obs.samples = append(d.obs.samples, s)
	if len(d.obs.samples) > keep {
		d.obs.samples = append(d.obs.samples[:0], d.obs.samples[len(d.obs.samples)-keep:]...)
	}
	d.obs.mu.Unlock()
}

// fuseInfo computes the rates between the oldest sample of the window and now.
func (d *Daemon) fuseInfo() *control.FUSEInfo {
	now := opSample{at: time.Now(), totals: d.fs.OpTotals()}
	d.obs.mu.Lock()
	var first opSample
	if len(d.obs.samples) > 0 {
		first = d.obs.samples[0]
	}
	d.obs.mu.Unlock()
	info := &control.FUSEInfo{Rates: []control.OpRate{}, Timed: true}
	if first.totals == nil {
		return info
	}
	span := now.at.Sub(first.at).Seconds()
	info.Window = span
	names := fusefs.OpNames()
	for i, cur := range now.totals {
		n := cur.Count - first.totals[i].Count
		if n == 0 {
			continue
		}
		r := control.OpRate{Op: names[i], Total: cur.Count}
		if span > 0 {
			r.PerSecond = float64(n) / span
		}
		if dt := cur.Time - first.totals[i].Time; dt > 0 {
			r.AvgLatencyMs = float64(dt) / float64(n) / float64(time.Millisecond)
		}
		info.OpsPerSecond += r.PerSecond
		info.Rates = append(info.Rates, r)
	}
	sort.Slice(info.Rates, func(i, j int) bool {
		if info.Rates[i].PerSecond != info.Rates[j].PerSecond {
			return info.Rates[i].PerSecond > info.Rates[j].PerSecond
		}
		return info.Rates[i].Op < info.Rates[j].Op
	})
	return info
}

func (d *Daemon) statusSections(ctx context.Context) []control.Section {
	d.obs.mu.Lock()
	secs := append([]statusSection(nil), d.obs.sections...)
	d.obs.mu.Unlock()
	out := make([]control.Section, 0, len(secs))
	for _, s := range secs {
		if ctx.Err() != nil {
			break
		}
		lines, data := s.fn()
		out = append(out, control.Section{Name: s.name, Title: s.title, Lines: lines, Data: data})
	}
	return out
}
