// Command writerwait measures what close-to-open across nodes costs a writer
// on a volume shared through Redis: node B rewrites small files (open with
// O_TRUNC, write, close) while node A holds them cached and trusted, and
// while no other node holds them. Each close of B publishes the change and
// waits until every trusting node applied it (coherence.Shared), so the close
// latency is the number to watch. Optionally the same writes with another
// disgrafs binary (-variant, e.g. main before the change channel).
//
// Redis is a private redis-server reached through toxiproxy, which adds
// -latency to every reply.
//
// Usage: writerwait [flags]  (needs root: FUSE mounts)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

type config struct {
	workDir, disgrafs, variant, toxiproxy, redis string
	latency                                      time.Duration
	files, size, rounds                          int
	redisPort, proxyPort, apiPort                int
}

func main() {
	c := config{}
	home, _ := os.UserHomeDir()
	flag.StringVar(&c.workDir, "workdir", "/var/tmp/disgrafs-writerwait", "scratch directory (wiped)")
	flag.StringVar(&c.disgrafs, "disgrafs", "bin/disgrafs", "disgrafs binary")
	flag.StringVar(&c.variant, "variant", "", "another disgrafs binary to measure the same writes with (no second node)")
	flag.StringVar(&c.toxiproxy, "toxiproxy", filepath.Join(home, ".cache/disgrafs/bin/server"), "toxiproxy v2.12.0 server")
	flag.StringVar(&c.redis, "redis-server", "redis-server", "redis-server binary")
	flag.DurationVar(&c.latency, "latency", time.Millisecond, "latency toxiproxy adds to every Redis reply")
	flag.IntVar(&c.files, "files", 200, "files rewritten per round")
	flag.IntVar(&c.size, "size", 16<<10, "bytes per file")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds per case")
	flag.IntVar(&c.redisPort, "redis-port", 26579, "port of the private redis-server")
	flag.IntVar(&c.proxyPort, "proxy-port", 26580, "port of the toxiproxy proxy (and the next one)")
	flag.IntVar(&c.apiPort, "toxiproxy-api-port", 26590, "toxiproxy's API port")
	flag.Parse()
	os.Exit(benchkit.Main("writerwait", "stopping", "waiting for the mounts to stop", func(ctx context.Context) error { return run(ctx, c) }))
}

// env is the running servers and mounts; stop undoes them.
type env struct {
	c     config
	stops []func()
}

func (e *env) stop() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
}

func (e *env) start(name string, argv ...string) error {
	log, err := os.Create(filepath.Join(e.c.workDir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	e.stops = append(e.stops, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		log.Close()
	})
	return nil
}

func (e *env) toxi(method, path, body string) error {
	api := fmt.Sprintf("http://127.0.0.1:%d", e.c.apiPort)
	var err error
	for i := 0; i < 100; i++ {
		var req *http.Request
		req, err = http.NewRequest(method, api+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		var resp *http.Response
		if resp, err = http.DefaultClient.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 300 {
				return fmt.Errorf("toxiproxy %s %s: %s %s", method, path, resp.Status, b)
			}
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("toxiproxy: %w", err)
}

// mount starts a disgrafs daemon and waits for its mount.
func (e *env) mount(bin, name, meta string) (string, error) {
	dir := filepath.Join(e.c.workDir, name)
	mp := filepath.Join(dir, "mnt")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return "", err
	}
	if err := e.start(name, bin, "mount", "--meta", meta, "--data-dir", filepath.Join(dir, "data"),
		"--cache-dir", filepath.Join(dir, "cache"), "--metrics", "off", "--auto-tag=false", "--entry-cache", "0", mp); err != nil {
		return "", err
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if m, ok, _ := benchkit.MountedAt(mp); ok && strings.HasPrefix(m.FSType, "fuse") {
			e.stops = append(e.stops, func() { _ = exec.Command("umount", mp).Run() })
			return mp, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not mount (see %s.log)", name, name)
		}
	}
}

func run(ctx context.Context, c config) error {
	if err := os.RemoveAll(c.workDir); err != nil {
		return err
	}
	if err := os.MkdirAll(c.workDir, 0o755); err != nil {
		return err
	}
	e := &env{c: c}
	defer e.stop()
	if err := e.start("redis", c.redis, "--port", fmt.Sprint(c.redisPort), "--save", "", "--appendonly", "no", "--dir", c.workDir); err != nil {
		return err
	}
	if err := e.start("toxiproxy", c.toxiproxy, "-host", "127.0.0.1", "-port", fmt.Sprint(c.apiPort)); err != nil {
		return err
	}
	for i, n := range []string{"a", "b"} {
		if err := e.toxi("POST", "/proxies", fmt.Sprintf(`{"name":%q,"listen":"127.0.0.1:%d","upstream":"127.0.0.1:%d","enabled":true}`, n, c.proxyPort+i, c.redisPort)); err != nil {
			return err
		}
		if err := e.toxi("POST", "/proxies/"+n+"/toxics", fmt.Sprintf(`{"name":"lat","type":"latency","stream":"downstream","attributes":{"latency":%d}}`, c.latency.Milliseconds())); err != nil {
			return err
		}
	}
	meta := func(i, db int) string { return fmt.Sprintf("redis://127.0.0.1:%d/%d", c.proxyPort+i, db) }
	fmt.Printf("writerwait: %d files of %d B, %d rounds per case, %v to Redis\n\n", c.files, c.size, c.rounds, c.latency)
	fmt.Println("| case | close p50 | close p99 | whole rewrite p50 | p99 | files/s |")
	fmt.Println("|---|--:|--:|--:|--:|--:|")
	cases := []struct {
		name, bin string
		holder    bool
	}{
		{"no other node holds the files", c.disgrafs, false},
		{"node A holds them cached and trusted", c.disgrafs, true},
	}
	if c.variant != "" {
		cases = append(cases, struct {
			name, bin string
			holder    bool
		}{"variant binary, no other node", c.variant, false})
	}
	for i, cs := range cases {
		db := i + 1
		out, err := exec.CommandContext(ctx, cs.bin, "format", "--meta", meta(1, db), "--storage", "file",
			"--bucket", filepath.Join(c.workDir, fmt.Sprintf("bucket%d", db)), fmt.Sprintf("wait%d", db)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("format: %v: %s", err, out)
		}
		sub := &env{c: c}
		res, err := measure(ctx, sub, cs.bin, meta(0, db), meta(1, db), cs.holder, db)
		sub.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", cs.name, err)
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %.0f |\n", cs.name, ms(res.close, 50), ms(res.close, 99), ms(res.whole, 50), ms(res.whole, 99), res.rate)
	}
	return nil
}

type result struct {
	close, whole []time.Duration
	rate         float64
}

func measure(ctx context.Context, e *env, bin, metaA, metaB string, holder bool, db int) (result, error) {
	b, err := e.mount(bin, fmt.Sprintf("b%d", db), metaB)
	if err != nil {
		return result{}, err
	}
	dir := filepath.Join(b, "ds")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	data := make([]byte, e.c.size)
	path := func(i int) string { return filepath.Join(dir, fmt.Sprintf("f%05d", i)) }
	for i := 0; i < e.c.files; i++ {
		if err := os.WriteFile(path(i), data, 0o644); err != nil {
			return result{}, err
		}
	}
	var a string
	if holder {
		if a, err = e.mount(bin, fmt.Sprintf("a%d", db), metaA); err != nil {
			return result{}, err
		}
		if out, err := exec.CommandContext(ctx, bin, "warmup", filepath.Join(a, "ds")).CombinedOutput(); err != nil {
			return result{}, fmt.Errorf("warmup: %v: %s", err, out)
		}
	}
	var res result
	for r := 0; r < e.c.rounds; r++ {
		if holder { // A opens every file: checked once, then trusted
			for i := 0; i < e.c.files; i++ {
				if _, err := os.ReadFile(filepath.Join(a, "ds", filepath.Base(path(i)))); err != nil {
					return result{}, err
				}
			}
		}
		data[0] = byte(r + 1)
		for i := 0; i < e.c.files; i++ {
			if ctx.Err() != nil {
				return result{}, ctx.Err()
			}
			t0 := time.Now()
			f, err := os.OpenFile(path(i), os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				return result{}, err
			}
			if _, err := f.Write(data); err != nil {
				return result{}, err
			}
			t1 := time.Now()
			if err := f.Close(); err != nil {
				return result{}, err
			}
			t2 := time.Now()
			res.close = append(res.close, t2.Sub(t1))
			res.whole = append(res.whole, t2.Sub(t0))
		}
	}
	var writing time.Duration
	for _, d := range res.whole {
		writing += d
	}
	res.rate = float64(len(res.whole)) / writing.Seconds()
	return res, nil
}

// ms formats the p-th percentile in milliseconds.
func ms(ds []time.Duration, p int) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return "-"
	}
	i := (len(s) - 1) * p / 100
	return fmt.Sprintf("%.2f ms", float64(s[i])/float64(time.Millisecond))
}
