package tests

// The fault suite (make test-faults): kill -9 of the daemon under a mixed
// load, the metadata server going away, damaged cache and index files, and
// signals during a warmup. Every test is named TestFault* so that
// scripts/test-faults.sh (and -run) select them; each is bounded in time.
//
// DISGRAFS_FAULT_CYCLES sets the number of kill -9 cycles (20 by default);
// 50 or more is the long mode, where the metadata outages last 30 s.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// faultCycles is the number of kill -9 cycles.
func faultCycles(t testing.TB) int {
	t.Helper()
	v := os.Getenv("DISGRAFS_FAULT_CYCLES")
	if v == "" {
		return 20
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("DISGRAFS_FAULT_CYCLES=%q: want a positive number", v)
	}
	return n
}

// faultLongMode: DISGRAFS_FAULT_CYCLES of 50 or more.
func faultLongMode(t testing.TB) bool { return faultCycles(t) >= 50 }

// stream returns the first n bytes of the deterministic content named key.
func stream(key string, n int) []byte {
	seed := sha256.Sum256([]byte(key))
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

// faultReport adds up what the checks after each remount verified.
type faultReport struct {
	mu            sync.Mutex
	bytesVerified int64 // fsynced bytes read back intact
	filesVerified int
	lost          []string // fsynced data or names missing or wrong
	notes         []string
}

func (r *faultReport) verified(files int, n int64) {
	r.mu.Lock()
	r.filesVerified += files
	r.bytesVerified += n
	r.mu.Unlock()
}

func (r *faultReport) lose(format string, args ...any) {
	r.mu.Lock()
	r.lost = append(r.lost, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// faultStep is one activity of a kill -9 cycle. setup runs once on the first
// mount; run works until ctx ends (the daemon is killed meanwhile, so errors
// are expected once killed() is true, and run returns an error only for a
// failure seen while the daemon was alive); check runs on the remounted
// volume and verifies everything run recorded as durable. A new subsystem
// (e.g. preallocated creates) adds a step to faultSteps.
type faultStep interface {
	name() string
	setup(t *testing.T, m *Mount)
	run(ctx context.Context, m *Mount, cycle int, killed func() bool) error
	check(t *testing.T, m *Mount, cycle int, r *faultReport)
}

// fsyncWriter creates files and appends to them, fsyncing every chunk, and
// records the names and lengths that an fsync (of the file and its
// directory) made durable.
type fsyncWriter struct {
	dir     string
	writers int
	mu      sync.Mutex
	durable map[string]int // path relative to the mount -> fsynced length
}

func (w *fsyncWriter) name() string { return "fsync writer" }

func (w *fsyncWriter) setup(t *testing.T, m *Mount) {
	w.durable = map[string]int{}
	if err := os.MkdirAll(m.Path(w.dir), 0o755); err != nil {
		t.Fatal(err)
	}
}

func (w *fsyncWriter) record(rel string, n int) {
	w.mu.Lock()
	w.durable[rel] = n
	w.mu.Unlock()
}

func (w *fsyncWriter) run(ctx context.Context, m *Mount, cycle int, killed func() bool) error {
	var wg sync.WaitGroup
	errs := make(chan error, w.writers)
	for g := 0; g < w.writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.write(ctx, m, cycle, g); err != nil && !killed() {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (w *fsyncWriter) write(ctx context.Context, m *Mount, cycle, g int) error {
	rng := rand.New(rand.NewPCG(uint64(cycle), uint64(g)))
	dirFd, err := os.Open(m.Path(w.dir))
	if err != nil {
		return err
	}
	defer dirFd.Close()
	for n := 0; ctx.Err() == nil; n++ {
		rel := filepath.Join(w.dir, fmt.Sprintf("c%03d-%d-%03d", cycle, g, n))
		size := 64<<10 + rng.IntN(1<<20)
		want := stream(rel, size)
		f, err := os.OpenFile(m.Path(rel), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", rel, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("fsync %s: %w", rel, err)
		}
		if err := dirFd.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("fsync the directory of %s: %w", rel, err)
		}
		w.record(rel, 0)
		for off := 0; off < size && ctx.Err() == nil; {
			chunk := min(size-off, 1<<10+rng.IntN(256<<10))
			if _, err := f.Write(want[off : off+chunk]); err != nil {
				f.Close()
				return fmt.Errorf("write %s: %w", rel, err)
			}
			off += chunk
			if err := f.Sync(); err != nil {
				f.Close()
				return fmt.Errorf("fsync %s: %w", rel, err)
			}
			w.record(rel, off)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close %s: %w", rel, err)
		}
	}
	return nil
}

func (w *fsyncWriter) check(t *testing.T, m *Mount, cycle int, r *faultReport) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Files of this cycle that were created but never recorded may exist
	// too: whatever they hold must be a prefix of what was written.
	ents, err := os.ReadDir(m.Path(w.dir))
	if err != nil {
		t.Fatalf("list %s after the remount: %v", w.dir, err)
	}
	for _, e := range ents {
		rel := filepath.Join(w.dir, e.Name())
		if _, ok := w.durable[rel]; !ok && strings.HasPrefix(e.Name(), fmt.Sprintf("c%03d-", cycle)) {
			w.durable[rel] = 0
		}
	}
	var files int
	var bytesOK int64
	// Files of earlier cycles are read again every fifth cycle (and by the
	// final check, cycle -1).
	all := cycle < 0 || cycle%5 == 4
	mine := fmt.Sprintf("c%03d-", cycle)
	for rel, n := range w.durable {
		if !all && !strings.HasPrefix(filepath.Base(rel), mine) {
			continue
		}
		got, err := os.ReadFile(m.Path(rel))
		if err != nil {
			if n == 0 && errors.Is(err, os.ErrNotExist) {
				delete(w.durable, rel) // never recorded as durable
				continue
			}
			r.lose("%s: %v (fsynced %d bytes)", rel, err, n)
			continue
		}
		if len(got) < n {
			r.lose("%s: %d bytes, but %d were fsynced", rel, len(got), n)
			continue
		}
		if want := stream(rel, len(got)); !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && got[i] == want[i] {
				i++
			}
			r.lose("%s: differs from what was written at byte %d of %d (fsynced %d)", rel, i, len(got), n)
			continue
		}
		// What survived counts as durable from now on.
		w.durable[rel] = len(got)
		files++
		bytesOK += int64(n)
	}
	r.verified(files, bytesOK)
}

// hotFiles are tagged files that are warmed into the cache and overwritten
// in place while being read: after a crash the cache must never serve an
// older version than the last one fsynced.
type hotFiles struct {
	dir, tag string
	n        int
	mu       sync.Mutex
	durable  []int // last fsynced version of each file
	inflight []int // version being written, or -1
	sizes    []int
}

func (h *hotFiles) name() string { return "hot files" }

func (h *hotFiles) path(m *Mount, i int) string { return m.Path(h.dir, fmt.Sprintf("h%02d", i)) }

func (h *hotFiles) content(i, v int) []byte {
	return stream(fmt.Sprintf("%s/h%02d#%d", h.dir, i, v), h.sizes[i])
}

func (h *hotFiles) setup(t *testing.T, m *Mount) {
	if err := os.MkdirAll(m.Path(h.dir), 0o755); err != nil {
		t.Fatal(err)
	}
	h.durable, h.inflight, h.sizes = make([]int, h.n), make([]int, h.n), make([]int, h.n)
	for i := range h.n {
		h.sizes[i] = 96<<10 + i*40<<10
		h.inflight[i] = -1
		p := h.path(m, i)
		if err := os.WriteFile(p, h.content(i, 0), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.xdg.tags", []byte(h.tag), 0); err != nil {
			t.Fatal(err)
		}
	}
	warmup(t, "--tag", h.tag, m.Dir)
}

func (h *hotFiles) run(ctx context.Context, m *Mount, cycle int, killed func() bool) error {
	rng := rand.New(rand.NewPCG(uint64(cycle), 77))
	var wg sync.WaitGroup
	// A reader opens hot files (the prefetcher follows its opens).
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for ctx.Err() == nil {
			f, err := os.Open(h.path(m, rand.IntN(h.n)))
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			for {
				if _, err := f.Read(buf); err != nil {
					break
				}
			}
			f.Close()
		}
	}()
	defer wg.Wait()
	for ctx.Err() == nil {
		i := rng.IntN(h.n)
		h.mu.Lock()
		v := h.durable[i] + 1
		h.inflight[i] = v
		h.mu.Unlock()
		f, err := os.OpenFile(h.path(m, i), os.O_WRONLY, 0)
		if errors.Is(err, syscall.ETXTBSY) {
			// Open through passthrough by the reader (see README).
			h.mu.Lock()
			h.inflight[i] = -1
			h.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err != nil {
			if killed() {
				return nil
			}
			return fmt.Errorf("open hot file %d: %w", i, err)
		}
		_, err = f.WriteAt(h.content(i, v), 0)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		if err != nil {
			if killed() {
				return nil
			}
			return fmt.Errorf("overwrite hot file %d: %w", i, err)
		}
		h.mu.Lock()
		h.durable[i], h.inflight[i] = v, -1
		h.mu.Unlock()
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
	}
	return nil
}

func (h *hotFiles) check(t *testing.T, m *Mount, cycle int, r *faultReport) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// Twice: the second read may come from the page cache or a fresh copy.
	for pass := 0; pass < 2; pass++ {
		for i := range h.n {
			got, err := os.ReadFile(h.path(m, i))
			if err != nil {
				r.lose("hot file %d: %v", i, err)
				continue
			}
			old, next := h.content(i, h.durable[i]), []byte(nil)
			if h.inflight[i] >= 0 {
				next = h.content(i, h.inflight[i])
			}
			if len(got) != len(old) {
				r.lose("hot file %d: %d bytes, want %d", i, len(got), len(old))
				continue
			}
			// Each page is the fsynced version or, where the kill caught an
			// overwrite, the one being written.
			newer := false
			for off := 0; off < len(got); off += 4096 {
				end := min(off+4096, len(got))
				switch {
				case bytes.Equal(got[off:end], old[off:end]):
				case next != nil && bytes.Equal(got[off:end], next[off:end]):
					newer = true
				default:
					r.lose("hot file %d: bytes %d-%d are neither version %d (fsynced) nor %d (being written): stale or wrong bytes served", i, off, end, h.durable[i], h.inflight[i])
					off = len(got)
				}
			}
			if pass == 0 {
				r.verified(1, int64(len(got)))
			}
			if newer && pass == 1 && bytes.Equal(got, next) {
				h.durable[i] = h.inflight[i]
			}
		}
	}
	for i := range h.inflight {
		if h.inflight[i] >= 0 {
			// Make the file one known version again.
			if err := os.WriteFile(h.path(m, i), h.content(i, h.durable[i]), 0o644); err != nil {
				t.Fatalf("rewrite hot file %d: %v", i, err)
			}
			h.inflight[i] = -1
		}
	}
}

// tagger tags and untags the hot files through the tag tree (ln and rm in
// .tags) and records the tags each file must have.
type tagger struct {
	hot      *hotFiles
	tags     []string
	mu       sync.Mutex
	want     []map[string]bool
	inflight struct {
		file int
		tag  string
	}
	mismatches int // index entries that disagreed with the xattrs after a remount
}

func (g *tagger) name() string { return "tagger" }

func (g *tagger) setup(t *testing.T, m *Mount) {
	g.want = make([]map[string]bool, g.hot.n)
	for i := range g.want {
		g.want[i] = map[string]bool{}
	}
	g.inflight.file = -1
	for _, tag := range g.tags {
		if err := os.Mkdir(m.Path(".tags", tag), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatalf("mkdir .tags/%s: %v", tag, err)
		}
	}
}

func (g *tagger) run(ctx context.Context, m *Mount, cycle int, killed func() bool) error {
	rng := rand.New(rand.NewPCG(uint64(cycle), 99))
	for ctx.Err() == nil {
		i, tag := rng.IntN(g.hot.n), g.tags[rng.IntN(len(g.tags))]
		g.mu.Lock()
		has := g.want[i][tag]
		g.inflight.file, g.inflight.tag = i, tag
		g.mu.Unlock()
		entry := m.Path(".tags", tag, fmt.Sprintf("h%02d", i))
		var err error
		if has {
			err = os.Remove(entry)
		} else {
			err = os.Link(g.hot.path(m, i), entry)
			if errors.Is(err, os.ErrNotExist) {
				// A tag whose last file was untagged is gone from the
				// index (the kernel may still show its directory for
				// the entry timeout): create it again.
				// mkdir says EEXIST meanwhile: retry past the timeout.
				for try := 0; try < 30 && errors.Is(err, os.ErrNotExist) && ctx.Err() == nil; try++ {
					time.Sleep(100 * time.Millisecond)
					if err = os.Mkdir(m.Path(".tags", tag), 0o755); err == nil || errors.Is(err, os.ErrExist) {
						err = os.Link(g.hot.path(m, i), entry)
					}
				}
			}
		}
		if err != nil {
			if killed() {
				return nil
			}
			return fmt.Errorf("tag %d with %s (has=%v): %w", i, tag, has, err)
		}
		g.mu.Lock()
		g.want[i][tag] = !has
		g.inflight.file = -1
		g.mu.Unlock()
	}
	return nil
}

func (g *tagger) check(t *testing.T, m *Mount, cycle int, r *faultReport) {
	g.mu.Lock()
	defer g.mu.Unlock()
	mine := map[string]bool{}
	for _, tag := range g.tags {
		mine[tag] = true
	}
	// The xattrs hold every tag change that returned.
	have := make([]map[string]bool, g.hot.n)
	for i := range g.hot.n {
		v, err := xattrTags(g.hot.path(m, i))
		if err != nil {
			r.lose("tags of hot file %d: %v", i, err)
			continue
		}
		have[i] = map[string]bool{}
		for _, tag := range v {
			if mine[tag] {
				have[i][tag] = true
			}
		}
		for _, tag := range g.tags {
			if have[i][tag] == g.want[i][tag] {
				continue
			}
			if g.inflight.file == i && g.inflight.tag == tag {
				continue // the change the kill interrupted: either is right
			}
			r.lose("hot file %d: tag %s is %v in the xattr, want %v", i, tag, have[i][tag], g.want[i][tag])
		}
		g.want[i] = have[i]
	}
	g.inflight.file = -1
	// The index lists exactly the files whose xattr has the tag.
	for _, tag := range g.tags {
		var want []string
		for i := range g.hot.n {
			if have[i][tag] {
				want = append(want, fmt.Sprintf("h%02d", i))
			}
		}
		got, err := filesIn(m.Path(".tags", tag))
		if err != nil {
			r.lose("list .tags/%s: %v", tag, err)
			continue
		}
		if !slices.Equal(got, want) {
			g.mismatches++
			r.lose("cycle %d: .tags/%s lists %v, the xattrs say %v", cycle, tag, got, want)
		}
	}
}

// xattrTags returns the tags of a file's user.xdg.tags.
func xattrTags(path string) ([]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Getxattr(path, "user.xdg.tags", buf)
	if errors.Is(err, unix.ENODATA) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var tags []string
	for _, s := range strings.Split(string(buf[:n]), ",") {
		if s = strings.TrimSpace(s); s != "" {
			tags = append(tags, s)
		}
	}
	return tags, nil
}

// filesIn lists the regular files of a directory, sorted (a missing
// directory is empty).
func filesIn(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// warmupLoop warms the hot tag again and again (files keep changing).
type warmupLoop struct{ tag string }

func (w *warmupLoop) name() string                { return "warmup" }
func (w *warmupLoop) setup(t *testing.T, m *Mount) {}
func (w *warmupLoop) run(ctx context.Context, m *Mount, cycle int, killed func() bool) error {
	for ctx.Err() == nil {
		cmd := exec.CommandContext(ctx, binary(m.t), "warmup", "--tag", w.tag, m.Dir)
		cmd.Env = testEnv()
		cmd.WaitDelay = 5 * time.Second
		_ = cmd.Run() // files change while being copied: failures are expected
	}
	return nil
}
func (w *warmupLoop) check(t *testing.T, m *Mount, cycle int, r *faultReport) {}

// fioLoad runs fio write jobs with verification; a verification failure
// while the daemon lives fails the test.
type fioLoad struct{ dir string }

func (f *fioLoad) name() string { return "fio" }
func (f *fioLoad) setup(t *testing.T, m *Mount) {
	needTool(t, "fio")
	if err := os.MkdirAll(m.Path(f.dir), 0o755); err != nil {
		t.Fatal(err)
	}
}
func (f *fioLoad) run(ctx context.Context, m *Mount, cycle int, killed func() bool) error {
	for ctx.Err() == nil {
		cmd := exec.CommandContext(ctx, "fio", "--name=k", "--directory="+m.Path(f.dir),
			"--size=8M", "--rw=randwrite", "--bsrange=4k-128k", "--ioengine=psync",
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--fsync=8", "--numjobs=1")
		cmd.WaitDelay = 5 * time.Second // fio's job processes hold its output
		out, err := cmd.CombinedOutput()
		if err != nil && !killed() && ctx.Err() == nil {
			return fmt.Errorf("fio while the daemon was alive: %v\n%s", err, out)
		}
		if !killed() && ctx.Err() == nil && fioVerifyFailure.Match(out) {
			return fmt.Errorf("fio reported a verify failure:\n%s", out)
		}
	}
	return nil
}
func (f *fioLoad) check(t *testing.T, m *Mount, cycle int, r *faultReport) {}

// faultSteps are the activities of every kill -9 cycle.
func faultSteps() []faultStep {
	hot := &hotFiles{dir: "hot", tag: "hot", n: 12}
	return []faultStep{
		&fsyncWriter{dir: "w", writers: 2},
		hot,
		&tagger{hot: hot, tags: []string{"ka", "kb", "kc"}},
		&warmupLoop{tag: "hot"},
		&fioLoad{dir: "fio"},
	}
}

// remountAfterKill cleans up the dead mount and starts the daemon again.
func remountAfterKill(t *testing.T, m *Mount) {
	t.Helper()
	if out, err := run(t, "umount", m.Dir); err != nil {
		t.Fatalf("umount of the dead mount: %v\n%s", err, out)
	}
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
}

// TestFaultKill9 kills the daemon with SIGKILL while everything runs at
// once, remounts, and checks that nothing fsynced is lost and no stale or
// wrong byte is served.
func TestFaultKill9(t *testing.T) {
	needRoot(t)
	cycles := faultCycles(t)
	meta, _ := formatShared(t, "faultkill")
	m := startMount(t, MountOpts{Meta: meta, Extra: []string{"--cache-size", "1G",
		"--passthrough-min", "64K", "--passthrough-min-age", "0"}})
	steps := faultSteps()
	for _, s := range steps {
		s.setup(t, m)
	}
	var r faultReport
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	start := time.Now()
	for cycle := 0; cycle < cycles; cycle++ {
		ctx, cancel := context.WithCancel(context.Background())
		var killed atomic.Bool
		errs := make(chan error, len(steps))
		var wg sync.WaitGroup
		for _, s := range steps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.run(ctx, m, cycle, killed.Load); err != nil {
					errs <- fmt.Errorf("%s: %w", s.name(), err)
				}
			}()
		}
		time.Sleep(time.Duration(1500+rng.IntN(2500)) * time.Millisecond)
		killed.Store(true)
		m.Kill9()
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			buf := make([]byte, 1<<20)
			t.Fatalf("cycle %d: the load did not stop within 2 minutes of the kill:\n%s", cycle, buf[:runtime.Stack(buf, true)])
		}
		close(errs)
		for err := range errs {
			t.Errorf("cycle %d: %v", cycle, err)
		}
		if t.Failed() {
			t.FailNow()
		}
		remountAfterKill(t, m)
		for _, s := range steps {
			s.check(t, m, cycle, &r)
		}
		if len(r.lost) > 0 {
			t.Fatalf("cycle %d: lost or wrong after kill -9:\n%s\ndaemon log:\n%s", cycle, strings.Join(r.lost, "\n"), tail(m.Log(), 40))
		}
	}
	for _, s := range steps {
		s.check(t, m, -1, &r) // everything once more
	}
	if len(r.lost) > 0 {
		t.Fatalf("lost or wrong at the end:\n%s", strings.Join(r.lost, "\n"))
	}
	t.Logf("cycles survived: %d, bytes verified: %d (%d file checks), files lost: %d (%s)",
		cycles, r.bytesVerified, r.filesVerified, len(r.lost), time.Since(start).Round(time.Second))
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

