// Package coherence decides when a mount may serve a cached copy of a file
// without asking the metadata engine, at every open, whether the file
// changed.
//
// An open of a file that other nodes may change must see what they closed
// before it (close-to-open). Asking the engine at every open keeps that
// promise for one round trip per file; a change channel keeps it for none:
// as long as the channel is healthy and has delivered every change, a copy
// found current by an open that asked the engine stays current until the
// channel, or a request of this mount, reports a change to the file.
//
// Trust is given per epoch. A channel that may have lost a change (a
// disconnect, a gap in a change log, a stall past its deadline) moves to a
// new epoch, which voids all trust at once; opens then ask the engine again
// until the channel is back and caught up.
package coherence

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Channel is how a mount learns that files changed on the volume.
type Channel interface {
	// Epoch returns the current trust epoch and whether trust may be given
	// and used now. Trust given in another epoch is void.
	Epoch() (epoch uint64, ok bool)
	// State describes the channel, for status and metrics.
	State() State
}

// State is a channel's description.
type State struct {
	// Mode: "exclusive" (this daemon makes every change), or "check" (no
	// channel: every open asks the metadata engine).
	Mode string
	// Trusted: opens of files known current are answered without the engine.
	Trusted bool
	// Detail says why, for a person.
	Detail string
}

// Exclusive is the channel of a volume that only this daemon can change: the
// embedded volume, whose metadata database and object directory the daemon
// holds locked. Every change reaches the volume through this mount's own
// requests, which drop the trust of the files they change before they
// change them, so trust never lapses.
type Exclusive struct {
	// Detail replaces the default description.
	Detail string
}

// Epoch is always the same, and always trusted.
func (Exclusive) Epoch() (uint64, bool) { return 1, true }

// State describes the exclusive channel.
func (e Exclusive) State() State {
	d := e.Detail
	if d == "" {
		d = "the embedded volume: this daemon makes every change, so opens of cached files known current need no metadata round trip"
	}
	return State{Mode: "exclusive", Trusted: true, Detail: d}
}

// Check is the absence of a channel: every open asks the engine.
type Check struct {
	// Why there is no channel, for a person.
	Why string
}

// Epoch never allows trust.
func (Check) Epoch() (uint64, bool) { return 0, false }

// State describes the per-open check.
func (c Check) State() State {
	return State{Mode: "check", Detail: c.Why}
}

// Counters count what the opens of cached files cost. A nil *Counters counts
// nothing.
type Counters struct {
	local, checked atomic.Uint64
	lookups        atomic.Uint64 // LOOKUPs answered without the engine
}

// NewCounters creates the counters; with a registerer (the "coherence"
// subsystem's) they are exported as disgrafs_coherence_opens_total{check}
// (read from the counters at scrape time: an open costs one atomic add) and
// disgrafs_coherence_trusted.
func NewCounters(ch Channel, reg prometheus.Registerer) *Counters {
	c := &Counters{}
	if reg == nil {
		return c
	}
	const help = "Read-only opens of regular files by how their copy's currency was known: local (trusted: no metadata round trip) or engine (asked the metadata engine)."
	opens := func(check string, n *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "opens_total", Help: help,
			ConstLabels: prometheus.Labels{"check": check}}, func() float64 { return float64(n.Load()) })
	}
	trusted := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "trusted",
		Help: "1 while opens of cached files known current are answered without the metadata engine (the change channel is healthy), 0 while every open asks it."},
		func() float64 {
			if _, ok := ch.Epoch(); ok {
				return 1
			}
			return 0
		})
	lookups := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "local_lookups_total",
		Help: "LOOKUPs of names of files known current answered without the metadata engine (after the kernel dropped or expired its entry)."},
		func() float64 { return float64(c.lookups.Load()) })
	reg.MustRegister(opens("local", &c.local), opens("engine", &c.checked), trusted, lookups)
	return c
}

// Opened counts a read-only open of a regular file; local: answered without
// the metadata engine.
func (c *Counters) Opened(local bool) {
	if c == nil {
		return
	}
	if local {
		c.local.Add(1)
	} else {
		c.checked.Add(1)
	}
}

// LookedUp counts a LOOKUP answered without the metadata engine.
func (c *Counters) LookedUp() {
	if c != nil {
		c.lookups.Add(1)
	}
}

// Opens returns the opens answered locally and those that asked the engine.
func (c *Counters) Opens() (local, checked uint64) {
	if c == nil {
		return 0, 0
	}
	return c.local.Load(), c.checked.Load()
}
