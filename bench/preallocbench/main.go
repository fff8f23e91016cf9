// Command preallocbench measures the seed's file switch (issue 5): an
// application writing one large and one small file per camera closes all of
// them and creates as many new ones, from one thread, with the metadata in
// Redis behind toxiproxy adding latency. It compares the juicefs CLI v1.4.1,
// disgrafs without pre-allocation and disgrafs with it, with and without
// async close.
//
//	go run ./bench/preallocbench -redis 127.0.0.1:16380 -latencies 1,10,30
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/disgrafs/disgrafs/control"
)

const toxiproxyVersion = "v2.12.0"

type config struct {
	disgrafs, juicefs, toxiproxy string
	redis                        string
	proxyListen, proxyAPI        string
	latencies                    []int
	files                        int
	bigWrite, tailWrite          int
	work                         string
	targets                      []string
	db                           int
	metricsPort                  int
	extra                        []string // more disgrafs mount flags
}

type result struct {
	target    string
	latency   int
	closeAll  time.Duration
	createAll time.Duration
	p50, p99  time.Duration
	hits      int
	landed    time.Duration // async close: from the switch's start until every commit landed
}

func main() {
	home, _ := os.UserHomeDir()
	c := config{}
	var lat, targets string
	flag.StringVar(&c.disgrafs, "disgrafs", "bin/disgrafs", "disgrafs binary")
	flag.StringVar(&c.juicefs, "juicefs", "/var/tmp/bench/juicefs", "juicefs CLI v1.4.1 (scripts/build-juicefs-peer.sh)")
	flag.StringVar(&c.toxiproxy, "toxiproxy", filepath.Join(home, ".cache/disgrafs/bin/server"), "toxiproxy server "+toxiproxyVersion+" (installed there when missing)")
	flag.StringVar(&c.redis, "redis", "", "Redis server (host:port) to put behind the proxy; required: databases -db to 15 are FLUSHED")
	flag.IntVar(&c.db, "db", 1, "first Redis database to use")
	flag.StringVar(&c.proxyListen, "proxy", "127.0.0.1:16480", "address the proxy listens on")
	flag.StringVar(&c.proxyAPI, "proxy-api", "127.0.0.1:16489", "toxiproxy API address")
	flag.IntVar(&c.metricsPort, "metrics-port", 9582, "metrics port of the mounts")
	var extra string
	flag.StringVar(&extra, "mount-flags", "", "more flags for the disgrafs mounts (space separated)")
	flag.StringVar(&lat, "latencies", "1,10,30", "added latencies in ms")
	flag.IntVar(&c.files, "files", 200, "files switched (half large, half small)")
	flag.IntVar(&c.bigWrite, "big-write", 1<<20, "bytes written to each large file before the switch")
	flag.IntVar(&c.tailWrite, "tail-write", 64<<10, "bytes written to each large file just before its close")
	flag.StringVar(&c.work, "work", "/var/tmp/preallocbench", "work directory")
	flag.StringVar(&targets, "targets", "juicefs,disgrafs,disgrafs-prealloc,disgrafs-prealloc-nosync,disgrafs-prealloc-async,disgrafs-prealloc-async-nosync",
		"targets: juicefs, disgrafs, disgrafs-prealloc, disgrafs-prealloc-nosync (journal without fsync), disgrafs-prealloc-async (--prealloc-async-close), disgrafs-prealloc-async-nosync")
	flag.Parse()
	for _, s := range strings.Split(lat, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fatal(fmt.Errorf("-latencies: %w", err))
		}
		c.latencies = append(c.latencies, n)
	}
	c.targets = strings.Split(targets, ",")
	c.extra = strings.Fields(extra)
	if c.redis == "" {
		fatal(errors.New("-redis HOST:PORT is required (a Redis whose databases -db to 15 may be flushed)"))
	}
	if err := run(c); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "preallocbench:", err)
	os.Exit(1)
}

func run(c config) error {
	ctx := context.Background()
	var err error
	if c.disgrafs, err = filepath.Abs(c.disgrafs); err != nil {
		return err
	}
	if err := ensureToxiproxy(c.toxiproxy); err != nil {
		return err
	}
	if err := os.MkdirAll(c.work, 0o755); err != nil {
		return err
	}
	tp := exec.Command(c.toxiproxy, "-host", strings.Split(c.proxyAPI, ":")[0], "-port", strings.Split(c.proxyAPI, ":")[1])
	logf, _ := os.Create(filepath.Join(c.work, "toxiproxy.log"))
	tp.Stdout, tp.Stderr = logf, logf
	if err := tp.Start(); err != nil {
		return fmt.Errorf("start toxiproxy: %w", err)
	}
	defer func() { _ = tp.Process.Kill(); _ = tp.Wait() }()
	api := "http://" + c.proxyAPI
	if err := waitHTTP(api + "/version"); err != nil {
		return err
	}
	if err := post(api+"/proxies", map[string]any{"name": "redis", "listen": c.proxyListen, "upstream": c.redis, "enabled": true}); err != nil {
		return err
	}
	if err := post(api+"/proxies/redis/toxics", map[string]any{"name": "lat", "type": "latency", "stream": "downstream", "attributes": map[string]any{"latency": 0}}); err != nil {
		return err
	}
	setLatency := func(ms int) error {
		return post(api+"/proxies/redis/toxics/lat", map[string]any{"attributes": map[string]any{"latency": ms}})
	}
	fmt.Printf("file switch of %d files (half large: %d KiB then %d KiB just before close; half small: 4 KiB), one thread, Redis %s behind toxiproxy %s\n",
		c.files, c.bigWrite>>10, c.tailWrite>>10, c.redis, toxiproxyVersion)
	var results []result
	db := c.db
	for _, l := range c.latencies {
		for _, t := range c.targets {
			if err := setLatency(0); err != nil {
				return err
			}
			r, err := runOne(ctx, c, t, l, db, setLatency)
			db++
			if db > 15 {
				db = c.db
			}
			if err != nil {
				return fmt.Errorf("%s at %d ms: %w", t, l, err)
			}
			results = append(results, r)
			fmt.Printf("  %-18s %3d ms: close all %8s  create %d: %8s (p50 %8s, p99 %8s, %d from the pool)  switch %8s  all committed %s\n",
				r.target, r.latency, r.closeAll.Round(time.Millisecond), c.files, r.createAll.Round(time.Microsecond),
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.hits, (r.closeAll + r.createAll).Round(time.Millisecond), r.committed())
		}
	}
	fmt.Println()
	fmt.Println("| latency | target | create 200 | create p50 | create p99 | close all | whole switch | closes committed |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %d ms | %s | %s | %s | %s | %s | %s | %s |\n", r.latency, r.target, r.createAll.Round(time.Microsecond),
			r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.closeAll.Round(time.Millisecond), (r.closeAll + r.createAll).Round(time.Millisecond), r.committed())
	}
	return nil
}

// committed says when the closed files' data had landed: with async close
// the background commits' end, measured from the switch's start; otherwise
// the closes themselves.
func (r result) committed() string {
	if r.landed == 0 {
		return "at close"
	}
	return r.landed.Round(time.Millisecond).String()
}

func ensureToxiproxy(bin string) error {
	if _, err := os.Stat(bin); err == nil {
		return nil
	}
	cmd := exec.Command("go", "install", "github.com/Shopify/toxiproxy/v2/cmd/server@"+toxiproxyVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("install toxiproxy %s: %w", toxiproxyVersion, err)
	}
	return nil
}

func waitHTTP(url string) error {
	for range 100 {
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s does not answer", url)
}

func post(url string, body any) error {
	b, _ := json.Marshal(body)
	r, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer r.Body.Close()
	if r.StatusCode >= 300 {
		var msg bytes.Buffer
		_, _ = msg.ReadFrom(r.Body)
		return fmt.Errorf("POST %s: %s %s", url, r.Status, msg.String())
	}
	return nil
}

func sh(dir string, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func runOne(ctx context.Context, c config, target string, latency, db int, setLatency func(int) error) (result, error) {
	res := result{target: target, latency: latency}
	base := filepath.Join(c.work, fmt.Sprintf("%s-%d", target, latency))
	_ = os.RemoveAll(base)
	mnt := filepath.Join(base, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return res, err
	}
	rc := redis.NewClient(&redis.Options{Addr: c.redis, DB: db})
	if err := rc.FlushDB(ctx).Err(); err != nil {
		return res, fmt.Errorf("flush redis db %d: %w", db, err)
	}
	rc.Close()
	meta := fmt.Sprintf("redis://%s/%d", c.proxyListen, db)
	env := []string{"DISGRAFS_CONFIG=none"}
	metrics := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.metricsPort))
	var umount func() error
	switch target {
	case "juicefs":
		if err := sh(base, nil, c.juicefs, "format", meta, "bench", "--storage", "file", "--bucket", filepath.Join(base, "objects"), "--trash-days", "0"); err != nil {
			return res, err
		}
		if err := sh(base, nil, c.juicefs, "mount", "-d", "--no-usage-report", "--metrics", metrics, "--cache-dir", filepath.Join(base, "cache"),
			"--log", filepath.Join(base, "mount.log"), meta, mnt); err != nil {
			return res, err
		}
		umount = func() error { return sh(base, nil, c.juicefs, "umount", mnt) }
	default:
		if err := sh(base, env, c.disgrafs, "format", "--meta", meta, "--storage", "file", "--bucket", filepath.Join(base, "objects"), "bench"); err != nil {
			return res, err
		}
		args := []string{"mount", "-d", "--no-tags", "--metrics", metrics, "--cache-dir", filepath.Join(base, "cache"),
			"--data-dir", filepath.Join(base, "data"), "--log", filepath.Join(base, "mount.log"), "--meta", meta}
		if strings.HasPrefix(target, "disgrafs-prealloc") {
			args = append(args, "--prealloc", "cams", "--prealloc-pool", strconv.Itoa(c.files+c.files/4))
		}
		if strings.HasSuffix(target, "-nosync") {
			args = append(args, "--prealloc-nosync")
		}
		if strings.Contains(target, "-async") {
			args = append(args, "--prealloc-async-close")
		}
		args = append(args, c.extra...)
		if err := sh(base, env, c.disgrafs, append(args, mnt)...); err != nil {
			return res, err
		}
		umount = func() error { return sh(base, env, c.disgrafs, "umount", mnt) }
	}
	defer func() {
		_ = setLatency(0)
		if err := umount(); err != nil {
			fmt.Fprintln(os.Stderr, "umount:", err)
		}
	}()
	dir := filepath.Join(mnt, "cams")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	// The files being written before the switch.
	big := bytes.Repeat([]byte("v"), c.bigWrite)
	small := bytes.Repeat([]byte("f"), 4096)
	var old []*os.File
	for i := range c.files {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("old-%03d-%s", i/2, kind(i))))
		if err != nil {
			return res, err
		}
		data := small
		if i%2 == 0 {
			data = big
		}
		if _, err := f.Write(data); err != nil {
			return res, err
		}
		old = append(old, f)
	}
	if strings.HasPrefix(target, "disgrafs-prealloc") {
		// Steady state: the pool is full again long before the next switch.
		if err := waitPool(c.disgrafs, mnt, c.files+c.files/4); err != nil {
			return res, err
		}
	}
	var hits0 int
	if strings.HasPrefix(target, "disgrafs-prealloc") {
		hits0, _ = preallocHits(c.disgrafs, mnt)
	}
	if err := setLatency(latency); err != nil {
		return res, err
	}
	time.Sleep(1500 * time.Millisecond) // kernel caches of the setup expire
	tail := bytes.Repeat([]byte("t"), c.tailWrite)
	for i, f := range old {
		if i%2 == 0 {
			if _, err := f.Write(tail); err != nil {
				return res, err
			}
		}
	}

	// The switch, from one thread: close everything, then create as many.
	t0 := time.Now()
	for _, f := range old {
		if err := f.Close(); err != nil {
			return res, fmt.Errorf("close: %w", err)
		}
	}
	res.closeAll = time.Since(t0)
	lats := make([]time.Duration, 0, c.files)
	var news []*os.File
	t1 := time.Now()
	for i := range c.files {
		s := time.Now()
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("new-%03d-%s", i/2, kind(i))), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return res, fmt.Errorf("create: %w", err)
		}
		lats = append(lats, time.Since(s))
		news = append(news, f)
	}
	res.createAll = time.Since(t1)
	sort.Slice(lats, func(a, b int) bool { return lats[a] < lats[b] })
	res.p50 = lats[len(lats)/2]
	res.p99 = lats[(len(lats)*99+99)/100-1]
	if strings.HasPrefix(target, "disgrafs-prealloc") {
		h, _ := preallocHits(c.disgrafs, mnt)
		res.hits = h - hits0
	}
	if strings.Contains(target, "-async") {
		if err := waitCommitted(c.disgrafs, mnt); err != nil {
			return res, err
		}
		res.landed = time.Since(t0)
	}
	// Keep the mount's metrics of the run for a look afterwards.
	if r, err := http.Get("http://" + metrics + "/metrics"); err == nil {
		var b bytes.Buffer
		_, _ = b.ReadFrom(r.Body)
		r.Body.Close()
		_ = os.WriteFile(filepath.Join(base, "metrics.txt"), b.Bytes(), 0o644)
	}
	_ = setLatency(0)
	for _, f := range news {
		if err := f.Close(); err != nil {
			return res, err
		}
	}
	return res, nil
}

func kind(i int) string {
	if i%2 == 0 {
		return "video"
	}
	return "frame"
}

// status asks the daemon over its control socket, not by running the CLI:
// a fork would make the kernel flush every file the benchmark holds open.
func status(_ string, mnt string) (control.Status, error) {
	var s control.Status
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := control.Dial(control.PathsFor(mnt).Socket).Call(ctx, "GET", "status", nil, &s); err != nil {
		return s, fmt.Errorf("status: %w", err)
	}
	if s.Prealloc == nil {
		return s, errors.New("status has no prealloc section")
	}
	return s, nil
}

func waitPool(bin, mnt string, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		s, err := status(bin, mnt)
		if err != nil {
			return err
		}
		if s.Prealloc.PoolFiles >= n {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the pool did not reach %d files", n)
}

// waitCommitted polls until no async close is pending.
func waitCommitted(bin, mnt string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		s, err := status(bin, mnt)
		if err != nil {
			return err
		}
		if s.Prealloc.CloseErrors > 0 {
			return fmt.Errorf("%d async close commits failed", s.Prealloc.CloseErrors)
		}
		if s.Prealloc.ClosesPending == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("async closes still pending after 5 minutes")
}

func preallocHits(bin, mnt string) (int, error) {
	s, err := status(bin, mnt)
	if err != nil {
		return 0, err
	}
	return int(s.Prealloc.Hits), nil
}
