package tests

// The bounded load test (run by make test-faults): many readers and writers
// at once on one mount, no errors, no FUSE request over 30 s, the daemon's
// memory reported.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// loadDuration is DISGRAFS_LOAD_SECONDS (60 by default).
func loadDuration(t testing.TB) time.Duration {
	t.Helper()
	if v := os.Getenv("DISGRAFS_LOAD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DISGRAFS_LOAD_SECONDS=%q: want a positive number", v)
		}
		return time.Duration(n) * time.Second
	}
	return 60 * time.Second
}

// slowest keeps the longest single operation a client saw.
type slowest struct {
	mu   sync.Mutex
	d    time.Duration
	what string
}

func (s *slowest) time(what string, fn func() error) error {
	start := time.Now()
	err := fn()
	d := time.Since(start)
	s.mu.Lock()
	if d > s.d {
		s.d, s.what = d, what
	}
	s.mu.Unlock()
	return err
}

// procStatus returns a field of /proc/PID/status in KiB.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// histogramAbove sums, over every series of a histogram, the observations
// above the largest bucket bound not over limit; it returns that bound too.
func histogramAbove(mf *dto.MetricFamily, limit float64) (count uint64, bound float64) {
	for _, m := range mf.GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		below, b := uint64(0), 0.0
		for _, bk := range h.GetBucket() {
			if bk.GetUpperBound() <= limit && bk.GetUpperBound() >= b {
				below, b = bk.GetCumulativeCount(), bk.GetUpperBound()
			}
		}
		count += h.GetSampleCount() - below
		bound = b
	}
	return count, bound
}

// TestLoad runs, for DISGRAFS_LOAD_SECONDS: fio with 16 mixed jobs (8
// writers with verification, 8 readers), 4 warmup and 4 tagging clients, a
// reader checking a tagged dataset, and ls -R of .tags in a loop. Nothing may
// fail, no FUSE request may take over 30 s, and the daemon's memory is
// reported.
func TestLoad(t *testing.T) {
	needRoot(t)
	needTool(t, "fio")
	dur := loadDuration(t)
	meta, _ := formatShared(t, "load")
	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Meta: meta, Extra: []string{"--metrics", addr, "--cache-size", "2G",
		"--passthrough-min", "64K", "--passthrough-min-age", "0"}})
	const ntags = 4
	files := map[string][]byte{}
	for k := 0; k < ntags; k++ {
		for p, b := range dataset(t, m.Path("ds", fmt.Sprintf("t%d", k)), fmt.Sprintf("t%d", k), 25, 256<<10, uint64(20+k)) {
			files[p] = b
		}
	}
	// Anchors keep the tagging clients' tags alive (a tag whose last file is
	// untagged disappears).
	if err := os.WriteFile(m.Path("anchor"), []byte("anchor"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setxattr(m.Path("anchor"), "user.xdg.tags", []byte("l0,l1,l2,l3"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(m.Path("fio"), 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var (
		wg      sync.WaitGroup
		errMu   sync.Mutex
		errs    []string
		slow    slowest
		counts  = map[string]*atomic.Int64{}
		countMu sync.Mutex
	)
	fail := func(format string, args ...any) {
		errMu.Lock()
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
		errMu.Unlock()
	}
	count := func(what string) {
		countMu.Lock()
		c := counts[what]
		if c == nil {
			c = &atomic.Int64{}
			counts[what] = c
		}
		countMu.Unlock()
		c.Add(1)
	}
	client := func(name string, fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				fn()
				count(name)
			}
		}()
	}

	// fio: 16 jobs, 8 verified random writers and 8 random readers.
	client("fio runs", func() {
		cmd := exec.CommandContext(ctx, "fio", "--directory="+m.Path("fio"), "--ioengine=psync", "--size=4M", "--bsrange=4k-128k",
			"--name=w", "--rw=randwrite", "--numjobs=8", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
			"--name=r", "--rw=randread", "--numjobs=8", "--verify_state_save=0")
		cmd.WaitDelay = 5 * time.Second
		cmd.Dir = m.Path("fio")
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			return // stopped at the end of the run
		}
		if err != nil || fioVerifyFailure.Match(out) {
			fail("fio: %v\n%s", err, out)
		}
	})
	for k := 0; k < 4; k++ {
		tag := fmt.Sprintf("t%d", k)
		client("warmups", func() {
			cmd := exec.CommandContext(ctx, binary(t), "warmup", "--tag", tag, m.Dir)
			cmd.Env = testEnv()
			cmd.WaitDelay = 5 * time.Second
			var out []byte
			err := slow.time("warmup --tag "+tag, func() error { var err error; out, err = cmd.CombinedOutput(); return err })
			if err != nil && ctx.Err() == nil {
				fail("warmup --tag %s: %v\n%s", tag, err, out)
			}
		})
	}
	for k := 0; k < 4; k++ {
		// Each tagging client owns the files of one dataset directory.
		rng := rand.New(rand.NewPCG(uint64(k), 5))
		tagged := map[string]bool{}
		n := 0
		client("tag changes", func() {
			p := m.Path("ds", fmt.Sprintf("t%d", k), fmt.Sprintf("f%04d", rng.IntN(25)))
			tag := fmt.Sprintf("l%d", rng.IntN(4))
			key := p + "\x00" + tag
			var err error
			if tagged[key] {
				// Untag with the CLI (through the xattr): rm in a tag
				// directory leaves the kernel with a stale link count of
				// the file, and link then refuses it until the attribute
				// timeout (1 m for cached files) passes; see README,
				// "Known deviations".
				err = slow.time("untag", func() error {
					cmd := exec.CommandContext(ctx, binary(t), "tag", "rm", p, tag)
					cmd.Env = testEnv()
					if out, err := cmd.CombinedOutput(); err != nil {
						return fmt.Errorf("%v: %s", err, out)
					}
					return nil
				})
			} else {
				// The name of a link into a tag directory is not kept; a
				// new one each time keeps clear of the kernel's cached
				// names.
				n++
				err = slow.time("tag", func() error { return os.Link(p, m.Path(".tags", tag, fmt.Sprintf("c%d-%d", k, n))) })
			}
			if err != nil && ctx.Err() == nil {
				fail("tag %s %s (tagged=%v): %v", p, tag, tagged[key], err)
				return
			}
			tagged[key] = !tagged[key]
		})
	}
	client("dataset checks", func() {
		for p, want := range files {
			if ctx.Err() != nil {
				return
			}
			var got []byte
			err := slow.time("read", func() error { var err error; got, err = os.ReadFile(p); return err })
			if err != nil || !bytes.Equal(got, want) {
				fail("read %s: %v (%d bytes, want %d, equal %v)", p, err, len(got), len(want), bytes.Equal(got, want))
				return
			}
		}
	})
	client("ls -R .tags", func() {
		cmd := exec.CommandContext(ctx, "ls", "-R", m.Path(".tags"))
		cmd.WaitDelay = 5 * time.Second
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = nil, &stderr
		err := slow.time("ls -R .tags", cmd.Run)
		if err != nil && ctx.Err() == nil {
			// A tag directory may vanish between listing and entering it.
			for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				if line != "" && !strings.Contains(line, "No such file or directory") {
					fail("ls -R .tags: %v: %s", err, line)
					return
				}
			}
		}
	})
	start := time.Now()
	waitOr(t, &wg, dur+3*time.Minute, "the load did not stop")
	elapsed := time.Since(start)

	pid := m.cmd.Process.Pid
	rss, _ := procStatus(pid, "VmRSS")
	hwm, _ := procStatus(pid, "VmHWM")
	text, _ := scrape(t, addr)
	mfs := parseMetrics(t, text)
	summary := []string{}
	countMu.Lock()
	for what, c := range counts {
		summary = append(summary, fmt.Sprintf("%s %d", what, c.Load()))
	}
	countMu.Unlock()
	t.Logf("load for %s: %s; slowest client operation %s (%s)", elapsed.Round(time.Second), strings.Join(summary, ", "), slow.d.Round(time.Millisecond), slow.what)
	t.Logf("daemon memory at the end: RSS %d MiB, peak RSS %d MiB (%d files cached)", rss>>10, hwm>>10, status(t, m).Cache.Files)
	if mf := mfs["disgrafs_fuse_op_duration_seconds"]; mf != nil {
		n, b := histogramAbove(mf, 30)
		t.Logf("daemon FUSE answers over %gs: %d", b, n)
	}
	if mf := mfs["disgrafs_fuse_request_duration_seconds"]; mf != nil {
		// The kernel-measured latency (eBPF): its bounds are powers of two
		// nanoseconds, 2^35 ns (34.4 s) is the nearest to 30 s.
		n, b := histogramAbove(mf, 35)
		n17, b17 := histogramAbove(mf, 17.5)
		t.Logf("FUSE requests (kernel-measured) over %.1fs: %d, over %.1fs: %d", b, n, b17, n17)
		if n > 0 {
			t.Errorf("%d FUSE requests took over %.1fs", n, b)
		}
	} else {
		why := "no status"
		if b := status(t, m).BPF; b != nil {
			why = b.Reason
		}
		t.Logf("eBPF is off (%s): FUSE request latency from the daemon's histogram only", why)
	}
	if slow.d > 30*time.Second {
		t.Errorf("a client operation took %s (%s), over 30 s", slow.d, slow.what)
	}
	errMu.Lock()
	defer errMu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("errors under load:\n%s\ndaemon warnings:\n%s", strings.Join(errs, "\n"), tail(grepLines(m.Log(), "level=WARN")+grepLines(m.Log(), "level=ERROR"), 30))
	}
}
