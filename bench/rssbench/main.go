// Command rssbench measures the daemon's memory with many cached files
// (issue 8: under 500 MB with 100,000 cached files): it writes N small files
// into the embedded default volume, warms them all into the whole-file cache,
// reads every one back through the mount, and reports the daemon's resident
// memory (VmRSS) and its peak (VmHWM) after each stage.
//
// Usage (root): rssbench -disgrafs bin/disgrafs -workdir /var/tmp/disgrafs-rssbench -files 100000
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/disgrafs/disgrafs/control"
)

type config struct {
	disgrafs, workdir, out, extra string
	files, writers, perDir        int
}

type row struct {
	stage     string
	cached    int
	rss, hwm  int64 // bytes
	took      time.Duration
	filesPerS float64
}

func main() {
	var c config
	flag.StringVar(&c.disgrafs, "disgrafs", "bin/disgrafs", "disgrafs binary")
	flag.StringVar(&c.workdir, "workdir", "/var/tmp/disgrafs-rssbench", "work directory (wiped)")
	flag.StringVar(&c.out, "out", "", "also write the markdown table here")
	flag.StringVar(&c.extra, "mount-flags", "", "more flags for disgrafs mount")
	flag.IntVar(&c.files, "files", 100000, "small files (1-4 KiB)")
	flag.IntVar(&c.writers, "writers", 4, "parallel writers and readers")
	flag.IntVar(&c.perDir, "per-dir", 1000, "files per directory")
	flag.Parse()
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintln(os.Stderr, "rssbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	bin, err := filepath.Abs(c.disgrafs)
	if err != nil {
		return err
	}
	mnt := filepath.Join(c.workdir, "mnt")
	_ = exec.Command(bin, "umount", "--lazy", mnt).Run()
	if err := os.RemoveAll(c.workdir); err != nil {
		return err
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	args := []string{"mount", "-d", "--metrics", "off", "--data-dir", filepath.Join(c.workdir, "data"), "--log", filepath.Join(c.workdir, "mount.log")}
	args = append(args, strings.Fields(c.extra)...)
	if out, err := command(ctx, bin, append(args, mnt)...); err != nil {
		return fmt.Errorf("mount: %w\n%s", err, out)
	}
	defer func() {
		if out, err := command(context.Background(), bin, "umount", mnt); err != nil {
			fmt.Fprintf(os.Stderr, "umount: %v\n%s", err, out)
		}
	}()
	pid, err := daemonPid(mnt)
	if err != nil {
		return err
	}
	var rows []row
	measure := func(stage string, took time.Duration, n int) error {
		r := row{stage: stage, took: took}
		if took > 0 {
			r.filesPerS = float64(n) / took.Seconds()
		}
		if r.rss, err = procStatus(pid, "VmRSS"); err != nil {
			return err
		}
		if r.hwm, err = procStatus(pid, "VmHWM"); err != nil {
			return err
		}
		if r.cached, err = cachedFiles(ctx, mnt); err != nil {
			return err
		}
		rows = append(rows, r)
		fmt.Printf("%-36s %7d cached  RSS %6.1f MiB  peak %6.1f MiB  (%s, %.0f files/s)\n", stage, r.cached,
			float64(r.rss)/(1<<20), float64(r.hwm)/(1<<20), took.Round(time.Millisecond), r.filesPerS)
		return nil
	}
	if err := measure("mounted", 0, 0); err != nil {
		return err
	}
	names := make([]string, c.files)
	for i := range names {
		names[i] = filepath.Join(mnt, "data", fmt.Sprintf("d%03d", i/c.perDir), fmt.Sprintf("f%06d", i))
	}
	for d := 0; d*c.perDir < c.files; d++ {
		if err := os.MkdirAll(filepath.Join(mnt, "data", fmt.Sprintf("d%03d", d)), 0o755); err != nil {
			return err
		}
	}
	t0 := time.Now()
	if err := parallel(c.writers, names, func(i int, p string) error {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		return os.WriteFile(p, content(i, 1024+rng.IntN(3072)), 0o644)
	}); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := measure(fmt.Sprintf("wrote %d files", c.files), time.Since(t0), c.files); err != nil {
		return err
	}
	t0 = time.Now()
	if out, err := command(ctx, bin, "warmup", "--threads", "8", filepath.Join(mnt, "data")); err != nil {
		return fmt.Errorf("warmup: %w\n%s", err, tail(out))
	}
	if err := measure("warmup of every file", time.Since(t0), c.files); err != nil {
		return err
	}
	t0 = time.Now()
	if err := parallel(c.writers, names, func(i int, p string) error {
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, content(i, len(got))) || len(got) < 1024 {
			return fmt.Errorf("%s: wrong content", p)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if err := measure("read and verify every file", time.Since(t0), c.files); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| stage | cached files | daemon RSS | peak RSS (VmHWM) | time | files/s |\n|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %.1f MiB | %.1f MiB | %s | %.0f |\n", r.stage, r.cached, float64(r.rss)/(1<<20), float64(r.hwm)/(1<<20),
			r.took.Round(time.Millisecond), r.filesPerS)
	}
	fmt.Println()
	fmt.Print(b.String())
	if c.out != "" {
		return os.WriteFile(c.out, []byte(b.String()), 0o644)
	}
	return nil
}

// content is file i's deterministic bytes.
func content(i, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(i), 42))
	for j := range b {
		b[j] = byte(rng.Uint32())
	}
	return b
}

func parallel(n int, names []string, fn func(i int, p string) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(names) {
					return
				}
				if err := fn(i, names[i]); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(len(names)))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func command(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DISGRAFS_CONFIG=none")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func daemonPid(mnt string) (int, error) {
	b, err := os.ReadFile(control.PathsFor(mnt).Pid)
	if err != nil {
		return 0, fmt.Errorf("daemon pid: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// procStatus reads a "kB" field of /proc/PID/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func cachedFiles(ctx context.Context, mnt string) (int, error) {
	var s control.Status
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := control.Dial(control.PathsFor(mnt).Socket).Call(ctx, "GET", "status", nil, &s); err != nil {
		return 0, fmt.Errorf("status: %w", err)
	}
	if s.Cache == nil {
		return 0, nil
	}
	return s.Cache.Files, nil
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}
