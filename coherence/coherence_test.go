package coherence

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestChannels(t *testing.T) {
	tests := []struct {
		name    string
		ch      Channel
		trusted bool
		mode    string
	}{
		{"exclusive", Exclusive{}, true, "exclusive"},
		{"exclusive with a detail", Exclusive{Detail: "read-only"}, true, "exclusive"},
		{"check", Check{Why: "no channel"}, false, "check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ok := tt.ch.Epoch()
			st := tt.ch.State()
			if ok != tt.trusted || st.Trusted != tt.trusted || st.Mode != tt.mode || st.Detail == "" {
				t.Errorf("epoch ok %v, state %+v; want trusted %v, mode %s and a detail", ok, st, tt.trusted, tt.mode)
			}
		})
	}
}

func TestCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewCounters(Exclusive{}, reg)
	c.Opened(true)
	c.Opened(true)
	c.Opened(false)
	c.LookedUp()
	if local, checked := c.Opens(); local != 2 || checked != 1 {
		t.Errorf("opens local %d, checked %d; want 2 and 1", local, checked)
	}
	want := `
# HELP local_lookups_total LOOKUPs of names of files known current answered without the metadata engine (after the kernel dropped or expired its entry).
# TYPE local_lookups_total counter
local_lookups_total 1
# HELP opens_total Read-only opens of regular files by how their copy's currency was known: local (trusted: no metadata round trip) or engine (asked the metadata engine).
# TYPE opens_total counter
opens_total{check="engine"} 1
opens_total{check="local"} 2
# HELP trusted 1 while opens of cached files known current are answered without the metadata engine (the change channel is healthy), 0 while every open asks it.
# TYPE trusted gauge
trusted 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	var nilCounters *Counters
	nilCounters.Opened(true) // counts nothing, does not panic
	nilCounters.LookedUp()
	if l, e := nilCounters.Opens(); l != 0 || e != 0 {
		t.Errorf("nil counters say %d, %d", l, e)
	}
}
