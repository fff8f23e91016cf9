package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/disgrafs/disgrafs/control"
)

// scrape fetches a daemon's /metrics and returns the text and how long it took.
func scrape(t testing.TB, addr string) (string, time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	began := time.Now()
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(began)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: HTTP %d, %v", addr, resp.StatusCode, err)
	}
	return string(body), took
}

func parseMetrics(t testing.TB, text string) map[string]*dto.MetricFamily {
	t.Helper()
	var p expfmt.TextParser
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return mfs
}

// sampleNames are the names a PromQL query can use: family names, and the
// _bucket, _sum and _count series of histograms and summaries.
func sampleNames(mfs map[string]*dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	for name, mf := range mfs {
		out[name] = true
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name+"_sum"], out[name+"_count"] = true, true
		}
	}
	return out
}

// readDirect reads a file with O_DIRECT, so that every byte is a FUSE read
// the daemon serves (not the page cache), and returns how many bytes it read.
func readDirect(t *testing.T, path string) int {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("open O_DIRECT: %v", err)
	}
	defer syscall.Close(fd)
	raw := make([]byte, 1<<20+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&raw[0]))%4096)
	buf := raw[off : off+1<<20]
	total := 0
	for {
		n, err := syscall.Read(fd, buf)
		if err != nil {
			t.Fatalf("read O_DIRECT: %v", err)
		}
		if n == 0 {
			return total
		}
		total += n
	}
}

// promServer is a real Prometheus server scraping one daemon.
type promServer struct {
	addr string
	hc   *http.Client
}

func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: disgrafs
    honor_labels: true
    static_configs:
      - targets: [%q]
`, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var log lockedBuffer
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	p := &promServer{addr: addr, hc: &http.Client{Timeout: 10 * time.Second}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := p.hc.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30s:\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) float(t testing.TB) float64 {
	v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
	if err != nil {
		t.Fatalf("sample value %v: %v", s.Value, err)
	}
	return v
}

// query runs an instant PromQL query over the HTTP API.
func (p *promServer) query(q string) ([]promSample, error) {
	resp, err := p.hc.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("decode the reply to %s: %w", q, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, r.Error)
	}
	if r.Data.ResultType == "scalar" {
		var v [2]any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		return []promSample{{Value: v}}, nil
	}
	var out []promSample
	if err := json.Unmarshal(r.Data.Result, &out); err != nil {
		return nil, fmt.Errorf("query %s: %w", q, err)
	}
	return out, nil
}

// waitFor polls a query until ok accepts its result.
func (p *promServer) waitFor(t *testing.T, q string, timeout time.Duration, ok func([]promSample) bool) []promSample {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last []promSample
	var err error
	for time.Now().Before(deadline) {
		last, err = p.query(q)
		if err == nil && ok(last) {
			return last
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("query %s: no acceptable answer within %s (last: %+v, %v)", q, timeout, last, err)
	return nil
}

func one(t *testing.T, want func(float64) bool) func([]promSample) bool {
	return func(s []promSample) bool { return len(s) == 1 && want(s[0].float(t)) }
}

// dashboardQueries returns every PromQL expression of a Grafana dashboard:
// the panels' targets (rows' panels too) and the template variables' queries.
func dashboardQueries(t *testing.T, path string) (panels map[string][]string, vars []string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Title      string            `json:"title"`
		UID        string            `json:"uid"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Fatalf("%s: no title or uid", path)
	}
	panels = map[string][]string{}
	var walk func([]json.RawMessage)
	walk = func(list []json.RawMessage) {
		for _, r := range list {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("panel does not parse: %v", err)
			}
			if p.Type != "row" {
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				if _, dup := panels[p.Title]; dup {
					t.Errorf("two panels are titled %q", p.Title)
				}
				for _, tg := range p.Targets {
					panels[p.Title] = append(panels[p.Title], tg.Expr)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	var sawInstance bool
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			vars = append(vars, v.Definition)
		}
		sawInstance = sawInstance || v.Name == "instance"
	}
	if !sawInstance {
		t.Errorf("%s has no instance template variable", path)
	}
	return panels, vars
}

var metricRef = regexp.MustCompile(`\b((?:disgrafs|juicefs|go|process)_[A-Za-z0-9_]+)`)

// grafanaToPromQL replaces the dashboard's variables with values Prometheus takes.
func grafanaToPromQL(q string) string {
	return strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*", "$mp", ".*").Replace(q)
}

// TestObservability: the daemon's metrics pass promtool, carry the node
// labels, reach a real Prometheus server that answers PromQL about a known
// workload, and feed every panel of the Grafana dashboard; status and stats
// report the same activity.
func TestObservability(t *testing.T) {
	promtool := needTool(t, "promtool")
	promBin := needTool(t, "prometheus")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m := startMount(t, MountOpts{Extra: []string{"--metrics", addr, "--prealloc", "/pre", "--prealloc-pool", "8"}})
	prom := startPrometheus(t, promBin, addr)
	mp := m.Dir
	sel := fmt.Sprintf(`vol_name="disgrafs",mp=%q,instance=%q`, mp, host)
	// The first scrape landed: the daemon is a target and its labels are kept.
	prom.waitFor(t, fmt.Sprintf(`process_start_time_seconds{%s}`, sel), 30*time.Second, one(t, func(v float64) bool { return v > 0 }))

	// A known workload: one file created, written, then read back with O_DIRECT.
	const size = 3<<20 + 12345
	if err := os.MkdirAll(m.Path("train", "cats"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := randBytes(t, size)
	if err := os.WriteFile(m.Path("train", "cats", "notes.txt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if n := readDirect(t, m.Path("train", "cats", "notes.txt")); n != size {
		t.Fatalf("read %d bytes, want %d", n, size)
	}
	// And one empty file created in a pre-allocated directory.
	if err := os.WriteFile(m.Path("pre", "p0"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("promql", func(t *testing.T) {
		for _, c := range []struct {
			q  string
			ok func(float64) bool
		}{
			// JuiceFS counts what applications wrote and read.
			{fmt.Sprintf(`juicefs_fuse_written_size_bytes_sum{%s}`, sel), func(v float64) bool { return v == size }},
			// The auto-tagger reads the file's head through the VFS too.
			{fmt.Sprintf(`juicefs_fuse_read_size_bytes_sum{%s}`, sel), func(v float64) bool { return v >= size }},
			// ...and what reached the object storage.
			{fmt.Sprintf(`sum(juicefs_object_request_data_bytes{%s,method="PUT"})`, sel), func(v float64) bool { return v >= size }},
			{fmt.Sprintf(`disgrafs_fuse_ops_total{%s,op="create"}`, sel), func(v float64) bool { return v == 2 }},
			{fmt.Sprintf(`disgrafs_prealloc_hits_total{%s}`, sel), func(v float64) bool { return v == 1 }},
			{fmt.Sprintf(`disgrafs_fuse_ops_total{%s,op="mkdir"}`, sel), func(v float64) bool { return v == 2 }},
			{fmt.Sprintf(`disgrafs_fuse_ops_total{%s,op="write"}`, sel), func(v float64) bool { return v >= 4 }},
			// 1 MiB O_DIRECT reads of a 3 MiB+ file: at least four.
			{fmt.Sprintf(`disgrafs_fuse_ops_total{%s,op="read"}`, sel), func(v float64) bool { return v >= 4 }},
			{fmt.Sprintf(`disgrafs_fuse_op_duration_seconds_count{%s,op="read"}`, sel), func(v float64) bool { return v >= 4 }},
			{fmt.Sprintf(`sum(rate(disgrafs_fuse_ops_total{%s}[1m])) > 0`, sel), func(v float64) bool { return v > 0 }},
			{fmt.Sprintf(`histogram_quantile(0.5, sum by (le) (rate(disgrafs_fuse_op_duration_seconds_bucket{%s,op="write"}[1m])))`, sel), func(v float64) bool { return v > 0 && v < 10 }},
			// The auto-tagger tagged both files (train, cats, text, keywords; pre).
			{fmt.Sprintf(`disgrafs_tagger_files_tagged_total{%s}`, sel), func(v float64) bool { return v == 2 }},
			{fmt.Sprintf(`disgrafs_tagger_queue_length{%s}`, sel), func(v float64) bool { return v == 0 }},
			{fmt.Sprintf(`disgrafs_graph_available{%s,backend="bbolt"}`, sel), func(v float64) bool { return v == 1 }},
			{fmt.Sprintf(`sum(disgrafs_graph_query_duration_seconds_count{%s,backend="bbolt",op="update"})`, sel), func(v float64) bool { return v >= 1 }},
		} {
			prom.waitFor(t, c.q, 30*time.Second, one(t, c.ok))
		}
	})

	t.Run("cache", func(t *testing.T) {
		// The O_DIRECT read was a miss; the file is cached once closed, and
		// the next open is a hit.
		prom.waitFor(t, fmt.Sprintf(`disgrafs_cache_miss_files_total{%s}`, sel), 30*time.Second, one(t, func(v float64) bool { return v == 1 }))
		prom.waitFor(t, fmt.Sprintf(`disgrafs_cache_files{%s}`, sel), 30*time.Second, one(t, func(v float64) bool { return v == 1 }))
		got, err := os.ReadFile(m.Path("train", "cats", "notes.txt"))
		if err != nil || string(got) != string(data) {
			t.Fatalf("read from the cache: %v (%d bytes)", err, len(got))
		}
		prom.waitFor(t, fmt.Sprintf(`disgrafs_cache_hit_files_total{%s}`, sel), 30*time.Second, one(t, func(v float64) bool { return v == 1 }))
		prom.waitFor(t, fmt.Sprintf(`disgrafs_cache_hit_bytes_total{%s}`, sel), 30*time.Second, one(t, func(v float64) bool { return v == size }))
		prom.waitFor(t, fmt.Sprintf(`disgrafs_cache_bytes{%s}`, sel), 30*time.Second, one(t, func(v float64) bool { return v == size }))
	})

	text, took := scrape(t, addr)
	t.Logf("one scrape: %s, %d bytes", took, len(text))
	mfs := parseMetrics(t, text)
	names := sampleNames(mfs)

	t.Run("promtool", func(t *testing.T) {
		// JuiceFS's own names break two conventions (counters without _total,
		// "histogram" in names); they are kept as JuiceFS exports them so that
		// existing JuiceFS dashboards work. Everything else must be clean.
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 3) {
			t.Fatalf("promtool check metrics: %v\n%s", err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" && !strings.HasPrefix(line, "juicefs_") {
				t.Errorf("promtool: %s", line)
			}
		}
		var ours strings.Builder
		for _, line := range strings.SplitAfter(text, "\n") {
			if !strings.Contains(line, "juicefs_") {
				ours.WriteString(line)
			}
		}
		cmd = exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(ours.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool check metrics on DisGraFS's, Go's and process series: %v\n%s", err, out)
		}
	})

	t.Run("labels", func(t *testing.T) {
		for name, mf := range mfs {
			for _, m := range mf.GetMetric() {
				got := map[string]string{}
				for _, l := range m.GetLabel() {
					got[l.GetName()] = l.GetValue()
				}
				if got["vol_name"] != "disgrafs" || got["mp"] != mp || got["instance"] != host {
					t.Fatalf("%s lacks the node labels: %v", name, got)
				}
			}
		}
		for _, want := range []string{"disgrafs_fuse_ops_total", "disgrafs_fuse_op_duration_seconds",
			"disgrafs_cache_hit_files_total", "disgrafs_cache_bytes", "disgrafs_prefetch_used_total", "disgrafs_warmup_files_total",
			"disgrafs_graph_query_duration_seconds", "disgrafs_graph_errors_total", "disgrafs_graph_available",
			"disgrafs_tagger_files_tagged_total", "disgrafs_tagger_failures_total", "disgrafs_tagger_queue_length",
			"juicefs_fuse_read_size_bytes", "juicefs_uptime", "juicefs_cpu_usage", "juicefs_memory",
			"go_goroutines", "process_resident_memory_bytes"} {
			if mfs[want] == nil {
				t.Errorf("no %s", want)
			}
		}
		// No per-file labels: every label of ours has a small fixed set of
		// values (after a workload on several files).
		values := map[string]map[string]bool{}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "disgrafs_") {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					k := mf.GetName() + " " + l.GetName()
					if values[k] == nil {
						values[k] = map[string]bool{}
					}
					values[k][l.GetValue()] = true
				}
			}
		}
		for name, vs := range values {
			if len(vs) > 40 {
				t.Errorf("metric and label %s have %d values", name, len(vs))
			}
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		panels, vars := dashboardQueries(t, filepath.Join("..", "deploy", "grafana", "disgrafs.json"))
		if len(panels) < 10 {
			t.Fatalf("only %d panels", len(panels))
		}
		// eBPF's vectors have series only while it runs (--bpf=auto falls
		// back when the kernel refuses); their panels are checked then.
		bpfOn := false
		if v, ok := metricSum(mfs, "disgrafs_bpf_enabled", nil); ok && v == 1 {
			bpfOn = true
		}
		bpfOnly := regexp.MustCompile(`disgrafs_(read_bytes_total|read_calls_total|fuse_request_duration_seconds)`)
		// The change stream exists on Redis volumes only; its panels are
		// checked by TestCoherenceSharedCloseToOpen.
		streamOnly := regexp.MustCompile(streamMetrics)
		titles := make([]string, 0, len(panels))
		for title := range panels {
			titles = append(titles, title)
		}
		sort.Strings(titles)
		for _, title := range titles {
			for _, q := range panels[title] {
				if !bpfOn && bpfOnly.MatchString(q) {
					t.Logf("eBPF is off on this daemon: panel %q not checked", title)
					continue
				}
				if streamOnly.MatchString(q) {
					t.Logf("no change stream on the embedded volume: panel %q not checked here", title)
					continue
				}
				refs := metricRef.FindAllString(q, -1)
				if len(refs) == 0 {
					t.Errorf("panel %q: query names no metric: %s", title, q)
				}
				for _, r := range refs {
					if !names[r] {
						t.Errorf("panel %q: %s is not exported by the daemon", title, r)
					}
				}
				// Prometheus runs it and it has data after the workload
				// (object uploads may land a scrape later).
				var res []promSample
				var err error
				for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
					res, err = prom.query(grafanaToPromQL(q))
					if err != nil || len(res) > 0 || time.Now().After(deadline) {
						break
					}
				}
				if err != nil {
					t.Errorf("panel %q: %v", title, err)
				} else if len(res) == 0 {
					t.Errorf("panel %q: no data: %s", title, q)
				}
			}
		}
		for _, q := range vars {
			for _, r := range metricRef.FindAllString(q, -1) {
				if !names[r] {
					t.Errorf("variable query %s: %s is not exported", q, r)
				}
			}
		}
		// The instance variable lists this node.
		res, err := prom.query(fmt.Sprintf(`count by (instance) (disgrafs_fuse_ops_total{instance=%q})`, host))
		if err != nil || len(res) != 1 {
			t.Errorf("no series for instance %s: %v %v", host, res, err)
		}
	})

	t.Run("status", func(t *testing.T) {
		// Keep the mount busy so that the rates are not zero.
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = os.Stat(m.Path("train", "cats", "notes.txt"))
				_, _ = os.ReadDir(m.Path("train"))
				time.Sleep(5 * time.Millisecond)
			}
		}()
		defer func() { close(stop); <-done }()
		time.Sleep(1500 * time.Millisecond)
		out, err := run(t, "status", "--json", mp)
		if err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		var st control.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		if st.Instance != host || st.MetricsAddr != addr || st.FUSE == nil || st.FUSE.OpsPerSecond <= 0 || !st.FUSE.Timed {
			t.Fatalf("status: %+v\nfuse: %+v", st, st.FUSE)
		}
		if st.Tags == nil || !st.Tags.Available || st.Tags.AutoDone != 2 || st.Tags.GraphCalls == 0 {
			t.Fatalf("status tags: %+v", st.Tags)
		}
		if st.Ops["create"] != 2 || st.Ops["mkdir"] != 2 {
			t.Fatalf("status ops: %v", st.Ops)
		}
		human, err := run(t, "status", mp)
		for _, want := range []string{"Tag index:", "(available)", "Tag queue:", "Recent ops:", "getattr", "Metrics:", host} {
			if err != nil || !strings.Contains(human, want) {
				t.Fatalf("status lacks %q: %v\n%s", want, err, human)
			}
		}

		out, err = run(t, "stats", "--count", "2", "--interval", "500ms", mp)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err != nil || len(lines) != 3 || !strings.Contains(lines[0], "fuse: ops/s") {
			t.Fatalf("stats: %v\n%s", err, out)
		}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) < 4 || !regexp.MustCompile(`^\d\d:\d\d:\d\d$`).MatchString(f[0]) {
				t.Fatalf("stats line: %q", l)
			}
			if ops, err := strconv.ParseFloat(f[2], 64); err != nil || ops <= 0 {
				t.Fatalf("stats shows no FUSE ops while the mount is busy: %q", l)
			}
		}
		if out, err := run(t, "stats", "--count", "1", t.TempDir()); err == nil || !strings.Contains(out, "is not mounted by disgrafs") {
			t.Fatalf("stats of nothing: %v\n%s", err, out)
		}
	})
}

// BenchmarkScrape measures one scrape of a running daemon's /metrics, the
// cost Prometheus puts on every node each interval. Run with
// go test -run '^$' -bench Scrape ./tests/
// DISGRAFS_BENCH_SCRAPE_FILES (default 100) files are written and read first:
// no metric grows with the number of files, and this shows it.
func BenchmarkScrape(b *testing.B) {
	files := 100
	if v := os.Getenv("DISGRAFS_BENCH_SCRAPE_FILES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("DISGRAFS_BENCH_SCRAPE_FILES=%q: want a positive number", v)
		}
		files = n
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePortB(b))
	// Without the auto-tagger, which would keep tagging the files in the
	// background (and compete for the CPU) long after they are written.
	m := startMount(b, MountOpts{Extra: []string{"--metrics", addr, "--auto-tag=false"}})
	for i := range files {
		dir := m.Path(fmt.Sprintf("d%03d", i/1000))
		p := filepath.Join(dir, fmt.Sprintf("f%06d", i))
		if i%1000 == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			b.Fatal(err)
		}
		if _, err := os.ReadFile(p); err != nil {
			b.Fatal(err)
		}
	}
	// Measure the steady state: nothing left for the index, and (with the
	// whole-file cache on) the files read above cached.
	var text string
	var cached, last float64
	steady := 0
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(time.Second) {
		text, _ = scrape(b, addr)
		mfs := parseMetrics(b, text)
		cached, _ = metricSum(mfs, "disgrafs_cache_files", nil)
		p, _ := metricSum(mfs, "disgrafs_tagger_index_pending", nil)
		if cached == last {
			steady++
		} else {
			steady = 0
		}
		last = cached
		if p == 0 && (cached >= float64(files) || steady >= 3) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("no steady state after 10 minutes: %v index changes pending, %v files cached", p, cached)
		}
	}
	series := 0
	for _, l := range strings.Split(text, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			series++
		}
	}
	for b.Loop() {
		scrape(b, addr)
	}
	b.ReportMetric(float64(series), "series")
	b.ReportMetric(float64(len(text)), "bytes/scrape")
	b.ReportMetric(float64(files), "files")
	b.ReportMetric(cached, "cached-files")
}

func freePortB(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// controlMetrics reads a daemon's metrics over its control socket.
func controlMetrics(t *testing.T, mp string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := control.Dial(control.PathsFor(mp).Socket).Do(ctx, "GET", "metrics", nil)
	if err != nil {
		t.Fatalf("metrics over the control socket: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return parseMetrics(t, string(body))
}

// metricSum adds up the values of a family's series whose labels include want.
func metricSum(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	var sum float64
	found := false
	for _, m := range mfs[name].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		match := true
		for k, v := range want {
			if l[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, found
}

// TestGraphMetricsDown: the graph metrics tell the truth when the graph
// server goes away and comes back: availability drops to 0, the failures are
// counted by kind, and availability returns without any file activity.
func TestGraphMetricsDown(t *testing.T) {
	b := startBolt(t)
	meta, _ := formatShared(t, "graphmetrics")
	m := graphMount(t, b, meta)
	neo := map[string]string{"backend": "neo4j"}
	avail := func() float64 {
		v, ok := metricSum(controlMetrics(t, m.Dir), "disgrafs_graph_available", neo)
		if !ok {
			t.Fatal("no disgrafs_graph_available{backend=\"neo4j\"}")
		}
		return v
	}
	if err := os.WriteFile(m.Path("one"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, 10*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "before", m.Path("one"))
	eventually(t, 10*time.Second, func() error { return hasEntry(m.Path(".tags", "before"), "one") })
	if a := avail(); a != 1 {
		t.Fatalf("available %v with the graph up", a)
	}
	mfs := controlMetrics(t, m.Dir)
	if n, _ := metricSum(mfs, "disgrafs_graph_query_duration_seconds", map[string]string{"backend": "neo4j", "op": "update"}); n < 1 {
		t.Fatalf("no timed update call: %v", n)
	}

	b.stop(t)
	_, _ = exec.Command("ls", m.Path(".tags", "before")).CombinedOutput()
	eventually(t, 30*time.Second, func() error {
		if a := avail(); a != 0 {
			return fmt.Errorf("available %v with the graph down", a)
		}
		return nil
	})
	mfs = controlMetrics(t, m.Dir)
	down := 0.0
	for _, kind := range []string{"unavailable", "timeout"} {
		v, _ := metricSum(mfs, "disgrafs_graph_errors_total", map[string]string{"backend": "neo4j", "kind": kind})
		down += v
	}
	if down == 0 {
		t.Fatal("no unavailable or timeout errors counted while the graph was down")
	}
	out, err := run(t, "status", "--json", m.Dir)
	var st control.Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Tags == nil || st.Tags.Available || st.Tags.GraphErrors == 0 {
		t.Fatalf("status with the graph down: %v\n%s", err, out)
	}

	b.start(t)
	eventually(t, 40*time.Second, func() error {
		if a := avail(); a != 1 {
			return fmt.Errorf("available %v after the graph came back", a)
		}
		return nil
	})
}
