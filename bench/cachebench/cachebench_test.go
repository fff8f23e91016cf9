package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, c *config)
	}{
		{name: "defaults", check: func(t *testing.T, c *config) {
			if c.data.smallFiles != 20000 || c.data.largeFiles != 8 || c.data.largeMiB != 1024 || c.runs != 3 {
				t.Errorf("defaults are not the issue's data set: %+v runs %d", c.data, c.runs)
			}
			if len(c.latencies) != 2 || c.latencies[0] != time.Millisecond || c.latencies[1] != 10*time.Millisecond {
				t.Errorf("latencies %v", c.latencies)
			}
			if len(c.threads) != 2 || c.threads[0] != 1 || c.threads[1] != 8 {
				t.Errorf("threads %v", c.threads)
			}
			if strings.Join(c.targets, ",") != strings.Join(allTargets(), ",") {
				t.Errorf("targets %v", c.targets)
			}
		}},
		{name: "targets keep report order", args: []string{"-targets", "native, juicefs-cold,native"}, check: func(t *testing.T, c *config) {
			if strings.Join(c.targets, ",") != "juicefs-cold,native" {
				t.Errorf("targets %v", c.targets)
			}
		}},
		{name: "unknown target", args: []string{"-targets", "juicefs"}, wantErr: "unknown target"},
		{name: "no target", args: []string{"-targets", ","}, wantErr: "no target"},
		{name: "latency not in ms", args: []string{"-latencies", "1500us"}, wantErr: "milliseconds"},
		{name: "bad latency", args: []string{"-latencies", "fast"}, wantErr: "milliseconds"},
		{name: "bad threads", args: []string{"-threads", "0"}, wantErr: "thread count"},
		{name: "page cache", args: []string{"-page-cache", "keep"}, wantErr: "-page-cache"},
		{name: "runs", args: []string{"-runs", "0"}, wantErr: "-runs"},
		{name: "sizes", args: []string{"-small-min-kib", "8", "-small-max-kib", "4"}, wantErr: "small-min-kib"},
		{name: "extra args", args: []string{"x"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func smallSpec() dataSpec {
	return dataSpec{seed: 7, smallFiles: 300, minKiB: 4, maxKiB: 64, largeFiles: 2, largeMiB: 3}
}

func TestDataSetDeterministic(t *testing.T) {
	a, err := newDataSet(smallSpec())
	if err != nil {
		t.Fatal(err)
	}
	b, err := newDataSet(smallSpec())
	if err != nil {
		t.Fatal(err)
	}
	if len(a.files) != 302 || len(a.byKind(kindSmall)) != 300 || len(a.byKind(kindLarge)) != 2 {
		t.Fatalf("got %d files", len(a.files))
	}
	dirs := map[string]bool{}
	for i := range a.files {
		fa, fb := a.files[i], b.files[i]
		if fa.rel != fb.rel || fa.size != fb.size || fa.crc != fb.crc {
			t.Fatalf("file %d differs between two data sets of one seed: %+v / %+v", i, fa, fb)
		}
		if fa.kind == kindSmall {
			if fa.size < 4<<10 || fa.size > 64<<10 {
				t.Errorf("%s: size %d outside 4-64 KiB", fa.rel, fa.size)
			}
			dirs[filepath.Dir(fa.rel)] = true
		} else if fa.size != 3<<20 {
			t.Errorf("%s: size %d", fa.rel, fa.size)
		}
	}
	if len(dirs) < 2 {
		t.Errorf("small files are not spread over a tree: %v", dirs)
	}
	spec := smallSpec()
	spec.seed = 8
	c, _ := newDataSet(spec)
	if c.files[0].crc == a.files[0].crc && c.files[1].crc == a.files[1].crc {
		t.Error("another seed gives the same content")
	}
}

// TestWriteAndReadPass writes a data set into a real directory, reads it back
// with the reader in a child process (this test binary stands in for the
// command through TestMain), and checks that corruption and truncation fail.
func TestWriteAndReadPass(t *testing.T) {
	ds, err := newDataSet(smallSpec())
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := writeTree(context.Background(), root, ds, 4, false, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(t.TempDir(), "manifest.tsv")
	if err := writeManifest(manifest, ds.files); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{kindSmall, kindLarge} {
		for _, threads := range []int{1, 8} {
			files, err := readManifest(manifest, kind)
			if err != nil {
				t.Fatal(err)
			}
			r, err := readPass(context.Background(), root, files, threads, 3, 0)
			if err != nil {
				t.Fatalf("%s x%d: %v", kind, threads, err)
			}
			if r.Files != len(ds.byKind(kind)) || r.Bytes != ds.bytesOf(kind) || r.Partial {
				t.Errorf("%s x%d: %+v, want %d files, %d bytes", kind, threads, r, len(ds.byKind(kind)), ds.bytesOf(kind))
			}
		}
	}

	// The same through the "read" subcommand in a child process.
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "read", "-root", root, "-manifest", manifest, "-kind", kindSmall, "-threads", "8")
	cmd.Env = append(os.Environ(), "CACHEBENCH_TEST_MAIN=1")
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("read subcommand: %v", err)
	}
	if !strings.Contains(out.String(), `"files":300`) {
		t.Errorf("read subcommand said %s", out.String())
	}

	// One flipped byte, then a truncated file: the pass must fail and name the file.
	small := ds.byKind(kindSmall)[17]
	path := filepath.Join(root, small.rel)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	files, _ := readManifest(manifest, kindSmall)
	if _, err := readPass(context.Background(), root, files, 4, 3, 0); err == nil || !strings.Contains(err.Error(), "content differs") || !strings.Contains(err.Error(), small.rel) {
		t.Errorf("corrupted file: err = %v", err)
	}
	if err := os.WriteFile(path, b[:len(b)-1], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readPass(context.Background(), root, files, 4, 3, 0); err == nil || !strings.Contains(err.Error(), "read") {
		t.Errorf("truncated file: err = %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := readPass(context.Background(), root, files, 4, 3, 0); err == nil || !os.IsNotExist(unwrapPathErr(err)) {
		t.Errorf("missing file: err = %v", err)
	}
}

func unwrapPathErr(err error) error {
	for err != nil {
		if pe, ok := err.(*os.PathError); ok {
			return pe
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) > 0 {
			err = j.Unwrap()[0]
			continue
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
	return nil
}

func TestShuffledIsAPermutation(t *testing.T) {
	ds, _ := newDataSet(smallSpec())
	files := ds.byKind(kindSmall)
	a, b, c := shuffled(files, 1), shuffled(files, 1), shuffled(files, 2)
	seen := map[string]bool{}
	same := 0
	for i := range a {
		seen[a[i].rel] = true
		if a[i].rel != b[i].rel {
			t.Fatal("one seed gives two orders")
		}
		if a[i].rel == files[i].rel {
			same++
		}
	}
	if len(seen) != len(files) {
		t.Errorf("shuffled order has %d distinct files of %d", len(seen), len(files))
	}
	if same > len(files)/4 || a[0].rel == c[0].rel && a[1].rel == c[1].rel && a[2].rel == c[2].rel {
		t.Error("order is hardly shuffled")
	}
}

func TestPassLimit(t *testing.T) {
	r := passResult{Files: 50, Total: 200, Seconds: 10, Partial: true}
	if r.epoch() != 40 {
		t.Errorf("extrapolated epoch %v, want 40", r.epoch())
	}
	if (passResult{Files: 200, Total: 200, Seconds: 10}).epoch() != 10 {
		t.Error("complete pass epoch")
	}
}

func TestReport(t *testing.T) {
	cfg, err := parseFlags([]string{"-latencies", "10ms", "-threads", "1", "-runs", "2", "-large", "1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	lat := 10 * time.Millisecond
	res := results{}
	add := func(kind, target string, filesPerSec ...float64) {
		for _, v := range filesPerSec {
			res[passKey{lat, kind, 1, target}] = append(res[passKey{lat, kind, 1, target}],
				passResult{Files: int(v), Total: int(v), Bytes: int64(v) * 1e6, Seconds: 1})
		}
	}
	add(kindSmall, tJuiceCold, 10, 12)
	add(kindSmall, tJuiceWarm, 100, 100)
	add(kindSmall, tDgCold, 20, 20)
	add(kindSmall, tDgWarm, 300, 300)
	add(kindSmall, tNative, 500, 500)
	add(kindLarge, tDgWarm, 1, 1)
	add(kindLarge, tNative, 1, 1)
	res[passKey{lat, kindLarge, 1, tJuiceCold}] = []passResult{{Files: 0, Total: 1, Bytes: 5e6, Seconds: 1, Partial: true}}
	info := gatherInfo("/")
	info.commandLine = "cachebench -x"
	out := renderReport(cfg, info, res)
	for _, want := range []string{
		"### 10 ms latency",
		"| (d) disgrafs, after disgrafs warmup --tag | 1.00 | 300 | 300 |",
		"| small files: disgrafs warm / juicefs warm (d/b) | >= 2 | 3.00 |",
		"| small files: disgrafs warm / native (d/e) | >= 0.5 | 0.60 |",
		"| small files: disgrafs cold / juicefs cold (c/a) | >= 3 at 10 ms | **1.82** |",
		"| large files: disgrafs warm / native (d/e) | >= 0.9 | 1.00 |",
		"| large files: disgrafs cold / juicefs cold (c/a) | (no goal) | n/a |",
		"| (a) juicefs CLI, cold | 5.00* |",
		"| 10 ms | small | 1 | juicefs-cold | 10.0, 12.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckLine(t *testing.T) {
	got := checkLine("x\n2026/11/22 03:31:28.658563 juicefs[27786] <INFO>: check cache: 1001 files checked, 97 MiB of 97 MiB (100.0%) cached [warmup@warmup.go:332]\n")
	if got != "`check cache: 1001 files checked, 97 MiB of 97 MiB (100.0%) cached`" {
		t.Errorf("checkLine = %s", got)
	}
}

// TestToxiproxyLatency starts a real redis-server and toxiproxy and checks
// that the latency toxic slows a PING by about the latency asked for.
func TestToxiproxyLatency(t *testing.T) {
	home, _ := os.UserHomeDir()
	toxi := envOr("CACHEBENCH_TOXIPROXY", filepath.Join(home, ".cache/disgrafs/bin/server"))
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		need(t, "redis-server (apt-get install redis-server)")
	}
	if _, err := os.Stat(toxi); err != nil {
		need(t, "toxiproxy at "+toxi+" (scripts/toxiproxy.sh install)")
	}
	redisPort := envInt("CACHEBENCH_TEST_REDIS_PORT", 16392)
	proxyPort := envInt("CACHEBENCH_TEST_PROXY_PORT", 16499)
	apiPort := envInt("CACHEBENCH_TEST_TOXIPROXY_API_PORT", 18474)
	for _, p := range []int{redisPort, proxyPort, apiPort} {
		if portInUse(p) {
			need(t, "free port "+strconv.Itoa(p)+" (set CACHEBENCH_TEST_*_PORT)")
		}
	}
	dir := t.TempDir()
	ctx := context.Background()
	r, err := startRedis(ctx, redisBin, redisPort, dir, filepath.Join(dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.terminate()
	x, err := startToxiproxy(ctx, toxi, apiPort, filepath.Join(dir, "toxiproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.proc.terminate()
	if err := x.createProxy(ctx, proxyPort, redisPort); err != nil {
		t.Fatal(err)
	}
	ping := func() time.Duration {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(proxyPort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 16)
		best := time.Hour
		for range 5 {
			start := time.Now()
			if _, err := c.Write([]byte("PING\r\n")); err != nil {
				t.Fatal(err)
			}
			if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "+PONG") {
				t.Fatalf("PING through the proxy: %q %v", buf[:n], err)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	if d := ping(); d > 5*time.Millisecond {
		t.Errorf("PING without latency took %s", d)
	}
	if err := x.setLatency(ctx, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := ping(); d < 20*time.Millisecond || d > 200*time.Millisecond {
		t.Errorf("PING with 20 ms latency took %s", d)
	}
	// Replacing and removing the toxic.
	if err := x.setLatency(ctx, 40*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := ping(); d < 40*time.Millisecond {
		t.Errorf("PING with 40 ms latency took %s", d)
	}
	if err := x.setLatency(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if d := ping(); d > 10*time.Millisecond {
		t.Errorf("PING after removing the latency took %s", d)
	}
	if _, err := startRedis(ctx, redisBin, redisPort, dir, filepath.Join(dir, "redis2.log")); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second redis on a busy port: err = %v", err)
	}
}

// need skips a test whose tool is missing, or fails it when
// DISGRAFS_REQUIRE_ALL=1 (CI), as tests/harness_test.go does.
func need(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("DISGRAFS_REQUIRE_ALL") == "1" {
		t.Fatalf("needs %s (DISGRAFS_REQUIRE_ALL=1)", what)
	}
	t.Skipf("needs %s", what)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

// TestMain lets the test binary act as the command for child processes.
func TestMain(m *testing.M) {
	if os.Getenv("CACHEBENCH_TEST_MAIN") == "1" && len(os.Args) > 1 && os.Args[1] == "read" {
		os.Exit(readerMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestParseCounters(t *testing.T) {
	text := `# HELP disgrafs_cache_hits_total x
# TYPE disgrafs_cache_hits_total counter
disgrafs_cache_hits_total{kind="files"} 12
disgrafs_cache_hits_total{kind="bytes"} 4096
disgrafs_other 3
juicefs_blockcache_hits{mp="/m",vol_name="v"} 7
juicefs_object_request_durations_histogram_seconds_bucket{method="GET",le="0.1"} 5
juicefs_object_request_durations_histogram_seconds_count{method="GET",mp="/m"} 9
`
	got, err := parseCounters(bufio.NewScanner(strings.NewReader(text)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{`disgrafs_cache_hits_total{kind="files"}`: 12, `disgrafs_cache_hits_total{kind="bytes"}`: 4096,
		"juicefs_blockcache_hits": 7, `juicefs_object_request_durations_histogram_seconds_count{method="GET"}`: 9}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	before := map[string]float64{"juicefs_blockcache_hits": 2, `disgrafs_cache_hits_total{kind="bytes"}`: 4096}
	if d := counterDelta(before, got); d != `disgrafs_cache_hits_total{kind="files"}=12 juicefs_blockcache_hits=5 juicefs_object_request_durations_histogram_seconds_count{method="GET"}=9` {
		t.Errorf("delta %s", d)
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name, line string
		want       time.Duration
		wantErr    bool
	}{
		{"plain", "1234 (redis-server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 0", 3 * time.Second, false},
		{"name with spaces and parens", "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0", 100 * time.Millisecond, false},
		{"truncated", "42 (x) R 1 2", 0, true},
		{"no name", "garbage", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat(tc.line)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseProcStat = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseMachineStat(t *testing.T) {
	busy, total, err := parseMachineStat("cpu  100 5 45 800 50 0 0 0 30 0")
	if err != nil || busy != 1500*time.Millisecond || total != 10*time.Second {
		t.Fatalf("parseMachineStat = %v, %v, %v; want 1.5s busy of 10s", busy, total, err)
	}
	if _, _, err := parseMachineStat("intr 1 2 3"); err == nil {
		t.Fatal("a line that is not the cpu line parsed")
	}
	// The running machine's own line parses, and time moves.
	if _, total, err := machineCPU(); err != nil || total <= 0 {
		t.Fatalf("machineCPU = %v, %v", total, err)
	}
	if d, err := procCPU(os.Getpid()); err != nil || d < 0 {
		t.Fatalf("procCPU(self) = %v, %v", d, err)
	}
	if pp, err := parsePPID("42 (a) b) S 7 42"); err != nil || pp != 7 {
		t.Fatalf("parsePPID = %v, %v; want 7", pp, err)
	}
	// A busy child counts in its parent's tree.
	child := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	time.Sleep(1500 * time.Millisecond)
	own, _ := procCPU(os.Getpid())
	tree, err := treeCPU(os.Getpid())
	if err != nil || tree <= own {
		t.Fatalf("treeCPU(self) = %v, %v; own %v: the busy child was not counted", tree, err, own)
	}
}
