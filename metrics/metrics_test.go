package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestNodeLabelsAndNames(t *testing.T) {
	r := NewWithInstance("vol", "/mnt/x", "node-7")
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "hits_total", Help: "h"})
	r.Subsystem("cache").MustRegister(c)
	c.Add(3)
	jfs := prometheus.NewGauge(prometheus.GaugeOpts{Name: "blockcache_bytes", Help: "b"})
	r.JuiceFS.MustRegister(jfs)

	mfs, err := r.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got[LabelVolume] != "vol" || got[LabelMountpoint] != "/mnt/x" || got[LabelInstance] != "node-7" {
				t.Fatalf("%s: labels %v", mf.GetName(), got)
			}
		}
	}
	for _, want := range []string{"disgrafs_cache_hits_total", "juicefs_blockcache_bytes", "go_goroutines", "process_start_time_seconds",
		"juicefs_uptime", "juicefs_cpu_usage", "juicefs_memory"} {
		if !seen[want] {
			t.Errorf("no %s", want)
		}
	}
	if v := testutil.ToFloat64(c); v != 3 {
		t.Fatalf("counter: %v", v)
	}

	// The handler serves the text format; its own error counter carries the labels too.
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	if !strings.Contains(body, `disgrafs_cache_hits_total{instance="node-7",mp="/mnt/x",vol_name="vol"} 3`) {
		t.Fatalf("scrape lacks the counter:\n%.2000s", body)
	}
	if !strings.Contains(body, "juicefs_memory{") || rss() <= 0 {
		t.Fatalf("no juicefs_memory, or rss %d", rss())
	}
	// A second handler (control socket and HTTP) shares the error counter.
	r.Handler()
}

func TestHostname(t *testing.T) {
	if Hostname() == "" {
		t.Fatal("empty host name")
	}
}
