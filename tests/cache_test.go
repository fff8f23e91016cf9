package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/control"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// status returns the daemon's status.
func status(t testing.TB, m *Mount) control.Status {
	t.Helper()
	out, err := run(t, "status", "--json", m.Dir)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var s control.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return s
}

// freeMetricsAddr returns a free loopback address for a daemon's metrics.
func freeMetricsAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// metric returns the sum of a metric's series scraped from addr.
// families parses a daemon's metrics (fetched by scrape).
func families(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	text, _ := scrape(t, addr)
	var p expfmt.TextParser
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return mfs
}

func metric(t testing.TB, addr, name string) float64 {
	t.Helper()
	mf := families(t, addr)[name]
	if mf == nil {
		t.Fatalf("no metric %s", name)
	}
	var sum float64
	for _, m := range mf.GetMetric() {
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum
}

// dataset writes n files of random sizes up to max under dir, tags them with
// tag, and returns their contents by path.
func dataset(t testing.TB, dir, tag string, n, maxSize int, seed uint64) map[string][]byte {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	files := map[string][]byte{}
	for i := 0; i < n; i++ {
		b := make([]byte, rng.IntN(maxSize)+1)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, fmt.Sprintf("f%04d", i))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if tag != "" {
			if err := syscall.Setxattr(p, "user.xdg.tags", []byte(tag), 0); err != nil {
				t.Fatal(err)
			}
		}
		files[p] = b
	}
	return files
}

// warmup runs disgrafs warmup and returns its output.
func warmup(t testing.TB, args ...string) string {
	t.Helper()
	out, err := run(t, append([]string{"warmup"}, args...)...)
	if err != nil {
		t.Fatalf("warmup %v: %v\n%s", args, err, out)
	}
	return out
}

// verify reads every file (read and mmap) and compares it with want.
func verify(t testing.TB, files map[string][]byte) {
	t.Helper()
	for p, want := range files {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes that differ from the %d written", p, len(got), len(want))
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		m, err := syscall.Mmap(int(f.Fd()), 0, len(want), syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			f.Close()
			t.Fatalf("mmap %s: %v", p, err)
		}
		same := bytes.Equal(m, want)
		_ = syscall.Munmap(m)
		f.Close()
		if !same {
			t.Fatalf("%s: mmap shows bytes that differ from those written", p)
		}
	}
}

func cacheFileOf(t testing.TB, m *Mount, p string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	// A copy's file is named by the inode in hex and, since copies got
	// their own names, a sequence number after a dot.
	dir := filepath.Join(status(t, m).Cache.Dir, "files")
	hex := strconv.FormatUint(st.Ino, 16)
	matches, _ := filepath.Glob(filepath.Join(dir, hex+".*"))
	if len(matches) == 1 {
		return matches[0]
	}
	return filepath.Join(dir, hex)
}

func TestCacheServesExactBytes(t *testing.T) {
	needRoot(t)
	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Extra: []string{"--metrics", addr, "--prefetch=false", "--passthrough-min", "64K", "--passthrough-min-age", "0"}})
	files := dataset(t, m.Path("ds"), "train", 40, 256<<10, 1)
	// Large files too: several chunks of JuiceFS (64 MiB) are not needed for
	// correctness, but sizes around block and page boundaries are.
	for i, size := range []int{4 << 20, 4<<20 + 1, 65536, 4095} {
		b := make([]byte, size)
		rng := rand.New(rand.NewPCG(uint64(i), 9))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p := m.Path("ds", fmt.Sprintf("big%d", i))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Setxattr(p, "user.xdg.tags", []byte("train"), 0); err != nil {
			t.Fatal(err)
		}
		files[p] = b
	}
	out := warmup(t, "--tag", "train", m.Dir)
	if !strings.Contains(out, fmt.Sprintf("warmed: %d files copied", len(files))) {
		t.Fatalf("warmup: %s", out)
	}
	out = warmup(t, "--check", "--tag", "train", m.Dir)
	if !strings.Contains(out, "(100.0%)") {
		t.Fatalf("warmup --check after warmup: %s", out)
	}
	verify(t, files)
	verify(t, files) // again: now from the page cache
	if hits := metric(t, addr, "disgrafs_cache_hit_files_total"); hits < float64(2*len(files)) {
		t.Errorf("cache hits %v, want at least %d", hits, 2*len(files))
	}
	if pt := metric(t, addr, "disgrafs_cache_passthrough_opens_total"); pt == 0 {
		t.Errorf("no open went through passthrough: %s", status(t, m).Cache.PassthroughNote)
	}
	if miss := metric(t, addr, "disgrafs_cache_miss_files_total"); miss != 0 {
		t.Errorf("%v misses after a full warmup", miss)
	}

	t.Run("writes invalidate", func(t *testing.T) {
		p := m.Path("ds", "big0")
		// A reader holds the file open through passthrough while it is
		// written: the write must not fail (the kernel refuses mixed modes).
		r, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// The kernel needs every open of a file with a backing file to use
		// it, and writes must reach JuiceFS: the file is busy meanwhile.
		if _, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0); !errors.Is(err, syscall.ETXTBSY) {
			t.Fatalf("open for writing a file open through passthrough: want ETXTBSY, got %v", err)
		}
		r.Close()
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatalf("open for writing once the passthrough reader closed: %v", err)
		}
		if _, err := f.Write([]byte("appended")); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		files[p] = append(files[p], "appended"...)
		small := m.Path("ds", "f0001")
		if err := os.WriteFile(small, []byte("rewritten"), 0o644); err != nil {
			t.Fatal(err)
		}
		files[small] = []byte("rewritten")
		verify(t, map[string][]byte{p: files[p], small: files[small]})
	})

	t.Run("corrupt and truncated copies are refetched", func(t *testing.T) {
		warmup(t, "--tag", "train", m.Dir)
		before := metric(t, addr, "disgrafs_cache_corrupt_files_total")
		a, b := m.Path("ds", "big1"), m.Path("ds", "f0002")
		if err := os.Truncate(cacheFileOf(t, m, a), 100); err != nil {
			t.Fatal(err)
		}
		cf := cacheFileOf(t, m, b)
		f, err := os.OpenFile(cf, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("XXXX"), 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
		// Drop the kernel's pages so the reads reach the file system.
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			t.Fatal(err)
		}
		verify(t, map[string][]byte{a: files[a], b: files[b]})
		if after := metric(t, addr, "disgrafs_cache_corrupt_files_total"); after < before+2 {
			t.Errorf("corrupt copies counted %v, want %v", after, before+2)
		}
	})

	t.Run("restart keeps the cache", func(t *testing.T) {
		warmup(t, "--tag", "train", m.Dir)
		m.Restart()
		out := warmup(t, "--check", "--tag", "train", m.Dir)
		if !strings.Contains(out, "(100.0%)") {
			t.Fatalf("after a restart: %s", out)
		}
		verify(t, files)
		if miss := metric(t, addr, "disgrafs_cache_miss_files_total"); miss != 0 {
			t.Errorf("%v misses after a restart", miss)
		}
	})

	t.Run("evict", func(t *testing.T) {
		out := warmup(t, "--evict", "--tag", "train", m.Dir)
		if !strings.Contains(out, fmt.Sprintf("evicted: %d files", len(files))) {
			t.Fatalf("evict: %s", out)
		}
		if s := status(t, m); s.Cache.Files != 0 {
			t.Fatalf("after evict the cache holds %d files", s.Cache.Files)
		}
		verify(t, files)
	})
}

func TestCacheBudget(t *testing.T) {
	needRoot(t)
	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Extra: []string{"--metrics", addr, "--cache-size", "1M", "--prefetch-width", "64"}})
	files := dataset(t, m.Path("ds"), "train", 40, 100<<10, 2)
	out, err := run(t, "warmup", "--tag", "train", m.Dir)
	if err == nil || !strings.Contains(out, "needs more than the cache budget of 1.0 MiB") {
		t.Fatalf("warming more than the budget: want a clear refusal, got %v\n%s", err, out)
	}
	// Reads (and the prefetcher they trigger) churn the cache through a
	// budget smaller than the dataset; it never holds more than the budget.
	for round := 0; round < 3; round++ {
		verify(t, files)
		if b := metric(t, addr, "disgrafs_cache_bytes"); b > 1<<20 {
			t.Fatalf("the cache holds %v bytes, over its 1 MiB budget", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, addr, "disgrafs_cache_evictions_total") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("nothing was evicted while reading %d files through a 1 MiB cache", len(files))
		}
		verify(t, files)
	}
	if b := metric(t, addr, "disgrafs_cache_bytes"); b > 1<<20 {
		t.Fatalf("the cache holds %v bytes, over its 1 MiB budget", b)
	}
}

func TestCacheDiskFull(t *testing.T) {
	needRoot(t)
	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", small).Run() })
	m := startMount(t, MountOpts{Extra: []string{"--cache-dir", small, "--cache-size", "1G", "--free-space-ratio", "0.01"}})
	files := dataset(t, m.Path("ds"), "train", 12, 1<<20, 3)
	out, _ := run(t, "warmup", "--tag", "train", m.Dir)
	if !strings.Contains(out, "failed") {
		t.Logf("warmup on a full cache disk: %s", out)
	}
	verify(t, files) // never a failed read
	verify(t, files)
}

func TestCacheSharedVolumeNeverStale(t *testing.T) {
	needRoot(t)
	metaURL, _ := formatShared(t, "cachestale")
	addr := freeMetricsAddr(t)
	a := startMount(t, MountOpts{Meta: metaURL, Extra: []string{"--cache-size", "1G", "--passthrough-min", "64K", "--passthrough-min-age", "0", "--metrics", addr}})
	b := startMount(t, MountOpts{Meta: metaURL})
	files := dataset(t, a.Path("ds"), "train", 6, 200<<10, 4)
	warmup(t, "--tag", "train", a.Dir)
	verify(t, files)
	// Node A's kernel keeps the names of cached files (--cache-ttl), so its
	// opens ask the metadata engine themselves; once it has forgotten them
	// (dropDentries), each open's own lookup reads the attributes and the
	// open uses those (--open-check-window). Both must see B's close.
	cases := []struct {
		name         string
		content      []byte
		dropDentries bool
	}{
		{"same length", bytes.Repeat([]byte("s"), len(files[a.Path("ds", "f0000")])), false},
		{"longer", bytes.Repeat([]byte("L"), 300<<10), false},
		{"shorter", []byte("short"), false},
		{"same length, open after lookup", bytes.Repeat([]byte("t"), len(files[a.Path("ds", "f0003")])), true},
		{"longer, open after lookup", bytes.Repeat([]byte("M"), 300<<10), true},
		{"shorter, open after lookup", []byte("tiny"), true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("f%04d", i)
			before := metric(t, addr, "disgrafs_fuse_opens_after_lookup_total")
			if err := os.WriteFile(b.Path("ds", name), c.content, 0o644); err != nil {
				t.Fatal(err)
			}
			if c.dropDentries {
				// Drops the kernel's unused dentries and inodes: node A's
				// next path walk looks the file up again.
				if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
					t.Fatalf("drop the kernel's dentries: %v", err)
				}
			}
			got, err := os.ReadFile(a.Path("ds", name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.content) {
				t.Fatalf("node A served %d stale bytes after node B wrote %d and closed", len(got), len(c.content))
			}
			after := metric(t, addr, "disgrafs_fuse_opens_after_lookup_total")
			if c.dropDentries && after <= before {
				t.Fatalf("node A's open did not use its own lookup's attributes (opens_after_lookup_total %v -> %v): the case did not test that path", before, after)
			}
		})
	}
}

// Directories holding cached files keep their kernel entries as long as the
// cached files do (--cache-ttl), not the one second of --dir-entry-cache: a
// second pass over a warmed data set after that second looks nothing up.
func TestCacheWarmDirectoriesStayCached(t *testing.T) {
	needRoot(t)
	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Extra: []string{"--metrics", addr, "--dir-entry-cache", "1s", "--cache-ttl", "1m"}})
	files := dataset(t, m.Path("set", "a", "b"), "warmdirs", 8, 16<<10, 9)
	warmup(t, "--tag", "warmdirs", m.Dir)
	// The kernel keeps what the creates told it for a second. The first
	// pass after that looks everything up: the files get the long timeout
	// and mark their directories warm; the next lookup of each directory
	// (after its second) gives it the long timeout too.
	for range 2 {
		time.Sleep(1500 * time.Millisecond)
		verify(t, files)
	}
	time.Sleep(1500 * time.Millisecond) // past --dir-entry-cache
	lookupsBefore := opCount(t, addr, "lookup")
	verify(t, files)
	if n := opCount(t, addr, "lookup") - lookupsBefore; n != 0 {
		t.Fatalf("the second pass over a warmed data set made %v lookups: its directories' entries expired", n)
	}
}

// A file's bytes are held once on local disk: warming a file into the
// whole-file cache drops the blocks the copy left in JuiceFS's block cache,
// also for files of several blocks and of several chunks.
func TestCacheHoldsBytesOnce(t *testing.T) {
	needRoot(t)
	metaURL, _ := formatShared(t, "cacheonce")
	addr := freeMetricsAddr(t)
	// No prefetcher: an uncached read must leave its blocks, for the check
	// that the block cache is in use.
	a := startMount(t, MountOpts{Meta: metaURL, Extra: []string{"--cache-size", "1G", "--block-cache-size", "1G", "--prefetch=false", "--metrics", addr}})
	// Node B writes, so node A's block cache starts empty.
	b := startMount(t, MountOpts{Meta: metaURL})
	files := dataset(t, b.Path("ds"), "once", 12, 300<<10, 11)
	big := make([]byte, 66<<20+12345) // two chunks, 17 blocks
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	if err := os.WriteFile(b.Path("ds", "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setxattr(b.Path("ds", "big"), "user.xdg.tags", []byte("once"), 0); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "reindex", a.Dir); err != nil {
		t.Fatalf("reindex: %v\n%s", err, out)
	}
	blocks := func() float64 { return metric(t, addr, "juicefs_blockcache_blocks") }
	// An uncached read through JuiceFS does fill the block cache: the
	// check below would pass vacuously otherwise.
	if _, err := os.ReadFile(a.Path("ds", "f0000")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for blocks() == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if blocks() == 0 {
		t.Fatal("a read through JuiceFS left no block in its block cache: the test cannot see double caching")
	}
	warmup(t, "--tag", "once", a.Dir)
	// JuiceFS writes blocks to its cache in the background; a block dropped
	// before its write lands is removed right after it.
	deadline = time.Now().Add(10 * time.Second)
	for blocks() != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := blocks(); n != 0 {
		t.Fatalf("after warming, JuiceFS's block cache still holds %v blocks of files cached whole", n)
	}
	onA := map[string][]byte{a.Path("ds", "big"): big}
	for p, want := range files {
		onA[a.Path("ds", filepath.Base(p))] = want
	}
	verify(t, onA)
	if n := blocks(); n != 0 {
		t.Fatalf("reading the cached files put %v blocks back into JuiceFS's block cache", n)
	}
}

// opCount reads disgrafs_fuse_ops_total for one operation.
func opCount(t testing.TB, addr, op string) float64 {
	t.Helper()
	for _, m := range families(t, addr)["disgrafs_fuse_ops_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "op" && l.GetValue() == op {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no disgrafs_fuse_ops_total{op=%q}", op)
	return 0
}

func TestCacheBadInput(t *testing.T) {
	needRoot(t)
	m := startMount(t, MountOpts{})
	off := startMount(t, MountOpts{Extra: []string{"--cache-size", "0"}})
	for _, p := range []string{m.Path("x"), off.Path("x")} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside := t.TempDir()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"bad tag", []string{"warmup", "--tag", "a,b", m.Dir}, "invalid tag"},
		{"bad query", []string{"warmup", "--query", "cat and (", m.Dir}, "end of expression"},
		{"unknown tag", []string{"warmup", "--tag", "nosuchtag", m.Dir}, "no such tag"},
		{"check and evict", []string{"warmup", "--check", "--evict", "--tag", "t", m.Dir}, "exclude each other"},
		{"tag and query", []string{"warmup", "--tag", "t", "--query", "t", m.Dir}, "not both"},
		{"outside a mount", []string{"warmup", outside}, "not inside a disgrafs mount"},
		{"cache off", []string{"warmup", off.Dir}, "whole-file cache is off"},
		{"bad threads", []string{"warmup", "--threads", "-1", m.Dir}, "--threads"},
		{"bad passthrough-min", []string{"mount", "--passthrough-min", "lots", t.TempDir()}, "--passthrough-min"},
		{"bad prefetch width", []string{"mount", "--prefetch-width", "0", t.TempDir()}, "--prefetch-width"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := run(t, c.args...)
			if err == nil || !strings.Contains(out, c.want) {
				t.Fatalf("%v: want an error with %q, got %v\n%s", c.args, c.want, err, out)
			}
		})
	}
}

func TestCachePassthroughOff(t *testing.T) {
	needRoot(t)
	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Extra: []string{"--metrics", addr, "--passthrough=false"}})
	files := dataset(t, m.Path("ds"), "train", 5, 2<<20, 5)
	warmup(t, "--tag", "train", m.Dir)
	verify(t, files)
	if pt := metric(t, addr, "disgrafs_cache_passthrough_opens_total"); pt != 0 {
		t.Fatalf("%v passthrough opens with --passthrough=false", pt)
	}
	if s := status(t, m); !strings.Contains(s.Cache.PassthroughNote, "off") {
		t.Fatalf("status does not say passthrough is off: %q", s.Cache.PassthroughNote)
	}
	if hits := metric(t, addr, "disgrafs_cache_hit_files_total"); hits < 5 {
		t.Fatalf("cache hits %v", hits)
	}
}

func TestPrefetchRelated(t *testing.T) {
	needRoot(t)
	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Extra: []string{"--metrics", addr, "--prefetch-width", "32"}})
	files := dataset(t, m.Path("ds"), "train", 30, 64<<10, 6)
	// Opening one file queues the files sharing its tag and the next ones
	// of its directory; they land in the cache without being read.
	if _, err := os.ReadFile(m.Path("ds", "f0000")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, addr, "disgrafs_prefetch_done_total") < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("prefetched %v files after opening one of 30 related files", metric(t, addr, "disgrafs_prefetch_done_total"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	verify(t, files)
	if used := metric(t, addr, "disgrafs_prefetch_used_total"); used < 20 {
		t.Errorf("prefetched files used: %v", used)
	}
}

// TestCachePassthroughUnavailable runs a daemon without CAP_SYS_ADMIN (as an
// ordinary user through fusermount3): the kernel refuses backing files, the
// cache falls back to the page cache, and status says so.
func TestCachePassthroughUnavailable(t *testing.T) {
	needRoot(t)
	needTool(t, "fusermount3")
	needTool(t, "setpriv")
	// /dev/fuse is root-only on these machines; open it to others for the
	// test only.
	var st syscall.Stat_t
	if err := syscall.Stat("/dev/fuse", &st); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod("/dev/fuse", 0o666); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod("/dev/fuse", os.FileMode(st.Mode&0o777)) })
	home := filepath.Join("/var/tmp", fmt.Sprintf("disgrafs-nocap-%d", os.Getpid()))
	mnt := filepath.Join(home, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mnt, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	asUser := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command("setpriv", append([]string{"--reuid", "65534", "--regid", "65534", "--clear-groups", name}, args...)...)
		cmd.Env = append(testEnv(), "HOME="+home, "XDG_RUNTIME_DIR="+home)
		return cmd
	}
	as := func(args ...string) *exec.Cmd { return asUser(binary(t), args...) }
	daemon := as("mount", "--data-dir", filepath.Join(home, "data"), "--metrics", "off", "--allow-other=false",
		"--passthrough-min", "0", "--passthrough-min-age", "0", mnt)
	var log lockedBuffer
	daemon.Stdout, daemon.Stderr = &log, &log
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = as("umount", mnt).Run()
		_ = daemon.Process.Kill()
		_, _ = daemon.Process.Wait()
		_ = exec.Command("umount", "-l", mnt).Run()
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(log.String(), "serving") {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not mount as an ordinary user:\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The mount is the user's own (no allow_other): read and write as them.
	src := filepath.Join(home, "a")
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := asUser("cp", src, filepath.Join(mnt, "a")).CombinedOutput(); err != nil {
		t.Fatalf("cp into the mount: %v\n%s", err, out)
	}
	if out, err := as("warmup", mnt).CombinedOutput(); err != nil {
		t.Fatalf("warmup: %v\n%s", err, out)
	}
	for i := 0; i < 2; i++ {
		if out, err := asUser("cmp", src, filepath.Join(mnt, "a")).CombinedOutput(); err != nil {
			t.Fatalf("the cached file differs: %v\n%s", err, out)
		}
	}
	out, err := as("status", mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Passthrough:  unavailable") {
		t.Fatalf("status does not say passthrough is unavailable:\n%s", out)
	}
}

// TestBPFKeepsHotFilesCached: a cached file read through one long-lived
// passthrough open is never seen by the daemon after its open; eBPF's read
// accounting keeps it recent while other files churn the cache, and without
// eBPF the churn evicts it. The hot file shares its tag with the churn and
// sorts after it, so the prefetcher proposes it again after the last churn
// file is opened: with eBPF off that proposal must be refused (the file was
// evicted for lack of room and not used since), not bring it back.
func TestBPFKeepsHotFilesCached(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		bpf      string
		survives bool
	}{{"on", true}, {"off", false}} {
		t.Run("bpf="+c.bpf, func(t *testing.T) {
			addr := freeMetricsAddr(t)
			m := startMount(t, MountOpts{Extra: []string{"-v", "--bpf", c.bpf, "--cache-size", "3M", "--metrics", addr,
				"--auto-tag=false", "--passthrough-min", "512K", "--passthrough-min-age", "0", "--prefetch-width", "1"}})
			hot := m.Path("hot")
			want := bytes.Repeat([]byte("hot!"), 256<<10) // 1 MiB
			if err := os.WriteFile(hot, want, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Setxattr(hot, "user.xdg.tags", []byte("churn"), 0); err != nil {
				t.Fatal(err)
			}
			warmup(t, hot)
			// 24 files of 400 KiB named f0000..f0023 (before "hot"), 9.6 MiB
			// through a 3 MiB cache; below --passthrough-min, so that only
			// the hot file's reads count as passthrough bytes.
			others := dataset(t, m.Path("others"), "churn", 24, 1, 7)
			names := make([]string, 0, len(others))
			for p := range others {
				names = append(names, p)
			}
			slices.Sort(names)
			for i, p := range names {
				if err := os.WriteFile(p, bytes.Repeat([]byte{byte(i)}, 400<<10), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// The prefetcher reads the tag from the index, which is written
			// in the background: start once it lists every file.
			indexed := []string{"hot"}
			for _, p := range names {
				indexed = append(indexed, filepath.Base(p))
			}
			wantNames(t, m.Path(".tags", "churn"), indexed...)
			// The first open for reading: the prefetcher looks at the tag's
			// files (and remembers the listing for seconds) from here on.
			f, err := os.Open(hot)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			passthroughRead := func() float64 {
				text, _ := scrape(t, addr)
				v, _ := textMetricSum(text, "disgrafs_read_bytes_total", `source="passthrough"`)
				return v
			}
			buf := make([]byte, len(want))
			for round := 0; round < 12; round++ {
				seen := passthroughRead()
				if _, err := f.ReadAt(buf, 0); err != nil {
					t.Fatal(err)
				}
				if c.bpf == "on" {
					// The drain that counts this read has also told the
					// cache the file was used (sinks run before counters).
					eventually(t, 10*time.Second, func() error {
						if got := passthroughRead(); got < seen+float64(len(want)) {
							return fmt.Errorf("round %d: eBPF has counted %.0f of the %d bytes read through passthrough", round, got-seen, len(want))
						}
						return nil
					})
				}
				for _, p := range names[2*round : 2*round+2] {
					if _, err := os.ReadFile(p); err != nil {
						t.Fatal(err)
					}
				}
			}
			if c.bpf == "off" {
				// The last churn file's open proposes hot (the next file of
				// its tag); the cache refuses to bring it back.
				eventually(t, 20*time.Second, func() error {
					if n := metric(t, addr, "disgrafs_prefetch_refused_total"); n < 1 {
						text, _ := scrape(t, addr)
						return fmt.Errorf("no prefetch was refused (the prefetcher never proposed the evicted hot file)\n%s", grepLines(text, "disgrafs_prefetch_"))
					}
					return nil
				})
			}
			waitPrefetchIdle(t, addr)
			if n := metric(t, addr, "disgrafs_cache_evictions_total"); n < 1 {
				t.Fatalf("the churn evicted nothing: it does not exercise the budget")
			}
			out := warmup(t, "--check", hot)
			cached := strings.Contains(out, "cached: 1 of 1 files")
			if cached != c.survives {
				t.Fatalf("--bpf=%s: hot file still cached = %v, want %v (%s)\n%s", c.bpf, cached, c.survives, strings.TrimSpace(out), m.Log())
			}
		})
	}
}

// waitPrefetchIdle waits until the prefetcher has nothing queued and nothing
// under way (two scrapes in a row, since a file's RELEASE, which may queue
// it, reaches the daemon after its close returned).
func waitPrefetchIdle(t *testing.T, addr string) {
	t.Helper()
	idle := 0
	eventually(t, 30*time.Second, func() error {
		q, f := metric(t, addr, "disgrafs_prefetch_queue_length"), metric(t, addr, "disgrafs_prefetch_in_flight")
		if q != 0 || f != 0 {
			idle = 0
			return fmt.Errorf("prefetcher busy: %.0f queued, %.0f in flight", q, f)
		}
		if idle++; idle < 2 {
			return errors.New("prefetcher idle once")
		}
		return nil
	})
}
