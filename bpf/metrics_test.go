package bpf

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func sumOf(t *testing.T, mfs []*dto.MetricFamily, name string, label ...string) (float64, bool) {
	t.Helper()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			if len(label) == 2 && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == label[0] && l.GetValue() == label[1]
			}) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
		return sum, true
	}
	return 0, false
}

// The collectors come out under the names dashboards use, and a drain moves
// them by its deltas.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics()
	sub := func(name string) prometheus.Registerer {
		return prometheus.WrapRegistererWithPrefix("disgrafs_"+name+"_", reg)
	}
	if err := m.Register(sub); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := sumOf(t, mfs, "disgrafs_bpf_enabled"); !ok || v != 0 {
		t.Errorf("disgrafs_bpf_enabled = %v (present %v) before SetEnabled, want 0", v, ok)
	}
	// Off, the read series are absent rather than zero.
	for _, name := range []string{"disgrafs_read_bytes_total", "disgrafs_read_calls_total", "disgrafs_fuse_request_duration_seconds"} {
		if _, ok := sumOf(t, mfs, name); ok {
			t.Errorf("%s exported before any drain", name)
		}
	}

	m.SetEnabled(true)
	var in InodeDelta
	in.Ino = 7
	in.Calls = [3]uint64{1, 2, 3}
	in.Bytes = [3]uint64{100, 50, 30}
	in.MissBytes = 20
	op := FuseOp{Opcode: 15, Name: "READ", Count: 4, Sum: 4 * time.Millisecond}
	op.Buckets[3] = 4
	d := Drained{Inodes: []InodeDelta{in, in}, Opens: make([]OpenEvent, 3), Fuse: []FuseOp{op}}
	if b, c := d.Totals(); b != (Split{Passthrough: 200, PageCache: 60, Daemon: 100}) || c != [3]uint64{2, 4, 6} {
		t.Fatalf("Totals() = %+v, %v", b, c)
	}
	m.Observe(d)
	m.Observe(Drained{Fuse: []FuseOp{op}}) // histograms are cumulative: kept, not added

	mfs, err = reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		label []string
		want  float64
	}{
		{"disgrafs_bpf_enabled", nil, 1},
		{"disgrafs_bpf_open_events_total", nil, 3},
		{"disgrafs_read_bytes_total", []string{"source", "passthrough"}, 200},
		{"disgrafs_read_bytes_total", []string{"source", "page_cache"}, 60},
		{"disgrafs_read_bytes_total", []string{"source", "daemon"}, 100},
		{"disgrafs_read_calls_total", []string{"class", "passthrough"}, 2},
		{"disgrafs_read_calls_total", []string{"class", "cached"}, 4},
		{"disgrafs_read_calls_total", []string{"class", "direct"}, 6},
		{"disgrafs_fuse_request_duration_seconds", []string{"opcode", "READ"}, 4},
	} {
		if v, ok := sumOf(t, mfs, c.name, c.label...); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.label, v, ok, c.want)
		}
	}
}
