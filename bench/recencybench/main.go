// Command recencybench measures what eBPF's read accounting buys the
// whole-file cache: a hot set of files held open and read through FUSE
// passthrough (the daemon sees only their opens) while other files churn a
// cache smaller than everything read. With eBPF the reads keep the hot files
// recent; without it the daemon last saw them at their open. The next epoch
// over the hot set reports its hit ratio, with --bpf=on and --bpf=off side by
// side.
//
// The prefetcher is off: the churn comes from warmups, and the next epoch's
// hits are only what recency kept.
//
// Usage (root): recencybench -disgrafs bin/disgrafs [-hot 16] [-hot-mib 1] [-churn 48] [-churn-kib 512] [-rounds 6]
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type config struct {
	bin, work       string
	hot, hotMiB     int
	churn, churnKiB int
	rounds          int
	budgetMiB       int
}

func main() {
	var c config
	flag.StringVar(&c.bin, "disgrafs", "bin/disgrafs", "the disgrafs binary")
	flag.StringVar(&c.work, "workdir", "/var/tmp/disgrafs-recencybench", "work directory (wiped)")
	flag.IntVar(&c.hot, "hot", 16, "hot files, held open and read through passthrough")
	flag.IntVar(&c.hotMiB, "hot-mib", 1, "size of a hot file, MiB")
	flag.IntVar(&c.churn, "churn", 48, "files read once each while the hot set is read")
	flag.IntVar(&c.churnKiB, "churn-kib", 512, "size of a churn file, KiB")
	flag.IntVar(&c.rounds, "rounds", 6, "rounds: read the hot set, wait one eBPF drain, read churn files")
	flag.IntVar(&c.budgetMiB, "budget-mib", 0, "cache budget, MiB (default: the hot set plus a quarter of it)")
	flag.Parse()
	if c.budgetMiB == 0 {
		c.budgetMiB = c.hot*c.hotMiB + max(1, c.hot*c.hotMiB/4)
	}
	fmt.Printf("recencybench: %d hot files of %d MiB held open and read through passthrough, %d churn files of %d KiB warmed, cache budget %d MiB, %d rounds\n\n",
		c.hot, c.hotMiB, c.churn, c.churnKiB, c.budgetMiB, c.rounds)
	fmt.Println("| --bpf | hot files still cached | hot-set hit ratio next epoch | evictions |")
	fmt.Println("|---|--:|--:|--:|")
	for _, mode := range []string{"on", "off"} {
		r, err := run(c, mode)
		if err != nil {
			fmt.Fprintln(os.Stderr, "recencybench:", err)
			os.Exit(1)
		}
		fmt.Printf("| %s | %d of %d | %.2f | %.0f |\n", mode, r.cached, c.hot, r.ratio, r.evictions)
	}
}

type result struct {
	cached    int
	ratio     float64
	evictions float64
}

func run(c config, mode string) (result, error) {
	var r result
	base := filepath.Join(c.work, "bpf-"+mode)
	_ = os.RemoveAll(base)
	mnt := filepath.Join(base, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return r, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return r, err
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(c.bin, "mount", "--data-dir", filepath.Join(base, "data"), "--metrics", addr, "--bpf", mode,
		"--cache-size", fmt.Sprintf("%dM", c.budgetMiB), "--passthrough-min", "0", "--passthrough-min-age", "0",
		"--prefetch=false", "--auto-tag=false", mnt)
	cmd.Env = append(os.Environ(), "DISGRAFS_CONFIG=none")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	defer func() {
		_ = exec.Command(c.bin, "umount", mnt).Run()
		_ = cmd.Wait()
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "disgrafs: serving") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(time.Minute):
		return r, fmt.Errorf("--bpf=%s: the mount did not come up", mode)
	}
	hot := make([]string, c.hot)
	for i := range hot {
		hot[i] = filepath.Join(mnt, fmt.Sprintf("hot%03d", i))
		if err := os.WriteFile(hot[i], bytes.Repeat([]byte{byte(i)}, c.hotMiB<<20), 0o644); err != nil {
			return r, err
		}
	}
	churn := make([]string, c.churn)
	for i := range churn {
		churn[i] = filepath.Join(mnt, fmt.Sprintf("churn%03d", i))
		if err := os.WriteFile(churn[i], bytes.Repeat([]byte{byte(i)}, c.churnKiB<<10), 0o644); err != nil {
			return r, err
		}
	}
	args := append([]string{"warmup"}, hot...)
	if out, err := exec.Command(c.bin, args...).CombinedOutput(); err != nil {
		return r, fmt.Errorf("warmup: %v: %s", err, out)
	}
	files := make([]*os.File, len(hot))
	for i, p := range hot {
		if files[i], err = os.Open(p); err != nil {
			return r, err
		}
		defer files[i].Close()
	}
	per := (len(churn) + c.rounds - 1) / c.rounds
	for round := 0; round < c.rounds; round++ {
		for _, f := range files {
			if _, err := io.Copy(io.Discard, io.NewSectionReader(f, 0, int64(c.hotMiB)<<20)); err != nil {
				return r, err
			}
		}
		time.Sleep(1100 * time.Millisecond) // one eBPF drain
		// Churn by warmup (the prefetcher is off, so that the next epoch's
		// hits are what recency kept, not what it fetched back).
		batch := churn[min(round*per, len(churn)):min((round+1)*per, len(churn))]
		if len(batch) > 0 {
			if out, err := exec.Command(c.bin, append([]string{"warmup"}, batch...)...).CombinedOutput(); err != nil {
				return r, fmt.Errorf("churn warmup: %v: %s", err, out)
			}
		}
	}
	for _, f := range files {
		f.Close()
	}
	args = append([]string{"warmup", "--check"}, hot...)
	out, err := exec.Command(c.bin, args...).CombinedOutput()
	if err != nil {
		return r, fmt.Errorf("warmup --check: %v: %s", err, out)
	}
	if _, err := fmt.Sscanf(string(out[bytes.Index(out, []byte("cached: ")):]), "cached: %d of", &r.cached); err != nil {
		return r, fmt.Errorf("warmup --check: %q: %v", out, err)
	}
	// The next epoch over the hot set: hits and misses of its opens.
	hits0, miss0 := metric(addr, "disgrafs_cache_hit_files_total"), metric(addr, "disgrafs_cache_miss_files_total")
	for _, p := range hot {
		if _, err := os.ReadFile(p); err != nil {
			return r, err
		}
	}
	hits, miss := metric(addr, "disgrafs_cache_hit_files_total")-hits0, metric(addr, "disgrafs_cache_miss_files_total")-miss0
	if hits+miss > 0 {
		r.ratio = hits / (hits + miss)
	}
	r.evictions = metric(addr, "disgrafs_cache_evictions_total")
	return r, nil
}

// metric sums a metric's series from the daemon's endpoint (0 when absent).
func metric(addr, name string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest != "" && rest[0] != '{' && rest[0] != ' ' {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
