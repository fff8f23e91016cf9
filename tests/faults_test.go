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
	"io"
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
	// onError, when set, makes the writer go on after errors.
	onError func(error)
	// pause between chunks (a lighter load).
	pause time.Duration
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
		err := w.writeOne(ctx, m, rng, dirFd, rel)
		if err == nil {
			continue
		}
		if w.onError == nil {
			return err
		}
		// Tolerant mode (metadata outages): count, give the file up (what
		// was fsynced stays recorded) and go on with a new one.
		w.onError(err)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func (w *fsyncWriter) writeOne(ctx context.Context, m *Mount, rng *rand.Rand, dirFd *os.File, rel string) error {
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
		time.Sleep(w.pause)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", rel, err)
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
	// The index lists exactly the files whose xattr has the tag. Known
	// deviation: index changes still queued in the killed daemon (the
	// xattr was written, the batch not yet applied) are lost; reindex
	// repairs them, and must.
	diff := func() []string {
		var out []string
		for _, tag := range g.tags {
			var want []string
			for i := range g.hot.n {
				if have[i][tag] {
					want = append(want, fmt.Sprintf("h%02d", i))
				}
			}
			got, err := filesIn(m.Path(".tags", tag))
			if err != nil {
				out = append(out, fmt.Sprintf("list .tags/%s: %v", tag, err))
			} else if !slices.Equal(got, want) {
				out = append(out, fmt.Sprintf(".tags/%s lists %v, the xattrs say %v", tag, got, want))
			}
		}
		return out
	}
	d := diff()
	if len(d) == 0 {
		return
	}
	g.mismatches += len(d)
	t.Logf("cycle %d: the index lost tag changes to kill -9 (reindex follows): %s", cycle, strings.Join(d, "; "))
	if out, err := run(t, "reindex", m.Dir); err != nil {
		t.Fatalf("reindex: %v\n%s", err, out)
	}
	for _, s := range diff() {
		r.lose("cycle %d, after reindex: %s", cycle, s)
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

func (w *warmupLoop) name() string                 { return "warmup" }
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
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--fsync=8", "--numjobs=1", "--verify_state_save=0")
		cmd.WaitDelay = 5 * time.Second // fio's job processes hold its output
		cmd.Dir = m.Path(f.dir)
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

// faultSteps are the activities of every kill -9 cycle; a subsystem adds
// its own.
func faultSteps(pre *preallocBursts) []faultStep {
	hot := &hotFiles{dir: "hot", tag: "hot", n: 12}
	return []faultStep{
		pre,
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
	pre := &preallocBursts{dir: "cams"}
	m := startMount(t, MountOpts{Meta: meta, Extra: append([]string{"--cache-size", "1G",
		"--passthrough-min", "64K", "--passthrough-min-age", "0"}, pre.args()...)})
	// why repeats the failure after the daemon's log, so that the end of
	// the output (all a CI summary shows) says what failed.
	var why []string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's last log lines:\n%s", tail(m.Log(), 120))
			t.Logf("TestFaultKill9 failed (the daemon's log is above): %s", strings.Join(why, "; "))
		}
	})
	steps := faultSteps(pre)
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
			why = append(why, fmt.Sprintf("cycle %d: %v", cycle, err))
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
			why = append(why, fmt.Sprintf("cycle %d: lost or wrong after kill -9: %s", cycle, strings.Join(r.lost, "; ")))
			t.Fatalf("cycle %d: lost or wrong after kill -9:\n%s", cycle, strings.Join(r.lost, "\n"))
		}
	}
	for _, s := range steps {
		s.check(t, m, -1, &r) // everything once more
	}
	if len(r.lost) > 0 {
		why = append(why, "lost or wrong at the end: "+strings.Join(r.lost, "; "))
		t.Fatalf("lost or wrong at the end:\n%s", strings.Join(r.lost, "\n"))
	}
	t.Logf("cycles survived: %d, bytes verified: %d (%d file checks; every fsynced byte after its cycle, again every 5 cycles and at the end), files lost: %d (%s)",
		cycles, r.bytesVerified, r.filesVerified, len(r.lost), time.Since(start).Round(time.Second))
	t.Logf("pre-allocated creates during the cycles: %d (%d fsynced and verified under their real names)", pre.created, len(pre.durable))
	for _, s := range steps {
		if g, ok := s.(*tagger); ok {
			t.Logf("tag directories that disagreed with the xattrs after a kill -9 (repaired by reindex): %d", g.mismatches)
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// redisProc is a redis-server of a test's own, which it may stop, pause and
// restart. Its data survives restarts (append-only file, fsynced always).
type redisProc struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

// (DISGRAFS_FAULT_REDIS_PORT sets its port, a free one by default.)
func startRedis(t *testing.T) *redisProc {
	t.Helper()
	return startRedisWith(t)
}

func (r *redisProc) addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *redisProc) start(extra ...string) {
	r.t.Helper()
	args := append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always"}, extra...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("redis-cli", "-p", strconv.Itoa(r.port), "ping").CombinedOutput()
		if err == nil && (strings.Contains(string(out), "PONG") || strings.Contains(string(out), "NOAUTH")) {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on port %d did not start: %v %s", r.port, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop shuts the server down cleanly (it writes its append-only file).
func (r *redisProc) stop() {
	r.t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	_ = r.cmd.Wait()
	r.cmd = nil
}

// outageProbe stats the mount and writes a small file every half second,
// and counts what each attempt met.
type outageProbe struct {
	mu      sync.Mutex
	results map[string]int
	longest time.Duration
}

func (p *outageProbe) run(ctx context.Context, m *Mount) {
	p.results = map[string]int{}
	for i := 0; ctx.Err() == nil; i++ {
		start := time.Now()
		err := os.WriteFile(m.Path("probe", fmt.Sprint(i%20)), []byte("probe"), 0o644)
		if err == nil {
			_, err = os.Stat(m.Path("probe"))
		}
		d := time.Since(start)
		key := "ok"
		var errno syscall.Errno
		if errors.As(err, &errno) {
			key = errno.Error()
		} else if err != nil {
			key = err.Error()
		}
		p.mu.Lock()
		p.results[key]++
		p.longest = max(p.longest, d)
		p.mu.Unlock()
		time.Sleep(500 * time.Millisecond)
	}
}

// TestFaultMetadataOutage: the metadata server (Redis) restarted, or
// unreachable (paused), for a while under a load of fsyncing writers. The
// mount blocks or fails with EIO meanwhile, recovers by itself, and nothing
// fsynced (or written and closed) before the outage is lost.
func TestFaultMetadataOutage(t *testing.T) {
	needRoot(t)
	outage := 10 * time.Second
	if faultLongMode(t) {
		outage = 30 * time.Second
	}
	for _, kind := range []string{"restart", "unreachable"} {
		t.Run(kind, func(t *testing.T) {
			rs := startRedis(t)
			meta := fmt.Sprintf("redis://%s/1", rs.addr())
			if out, err := run(t, "format", "--meta", meta, "--storage", "file", "--bucket", t.TempDir(), "outage"); err != nil {
				t.Fatalf("format: %v\n%s", err, out)
			}
			m := startMount(t, MountOpts{Meta: meta, Extra: []string{"--cache-size", "256M"}})
			if err := os.Mkdir(m.Path("probe"), 0o755); err != nil {
				t.Fatal(err)
			}
			// Written and closed (not fsynced) before the outage.
			before := stream("before", 3<<20+17)
			if err := os.WriteFile(m.Path("before"), before, 0o644); err != nil {
				t.Fatal(err)
			}
			var errMu sync.Mutex
			errCount := map[string]int{}
			w := &fsyncWriter{dir: "w", writers: 2, pause: 50 * time.Millisecond, onError: func(err error) {
				var errno syscall.Errno
				key := err.Error()
				if errors.As(err, &errno) {
					key = errno.Error()
				}
				errMu.Lock()
				errCount[key]++
				errMu.Unlock()
			}}
			w.setup(t, m)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); _ = w.run(ctx, m, 0, func() bool { return true }) }()
			time.Sleep(3 * time.Second)
			w.mu.Lock()
			durableBefore := len(w.durable)
			w.mu.Unlock()

			pctx, pcancel := context.WithCancel(context.Background())
			var probe outageProbe
			var pwg sync.WaitGroup
			pwg.Add(1)
			go func() { defer pwg.Done(); probe.run(pctx, m) }()
			t.Logf("%s: metadata server away for %s under load", kind, outage)
			switch kind {
			case "restart":
				rs.stop()
				time.Sleep(outage)
				rs.start()
			case "unreachable":
				_ = rs.cmd.Process.Signal(syscall.SIGSTOP)
				time.Sleep(outage)
				_ = rs.cmd.Process.Signal(syscall.SIGCONT)
			}
			back := time.Now()
			// The mount recovers by itself: a new file is written and fsynced.
			var recovered time.Duration
			deadline := back.Add(2 * time.Minute)
			for i := 0; ; i++ {
				done := make(chan error, 1)
				go func() {
					f, err := os.Create(m.Path(fmt.Sprintf("after-%d", i)))
					if err == nil {
						_, err = f.Write([]byte("after"))
						if err == nil {
							err = f.Sync()
						}
						f.Close()
					}
					done <- err
				}()
				var err error
				select {
				case err = <-done:
				case <-time.After(time.Until(deadline)):
					err = errors.New("blocked")
				}
				if err == nil {
					recovered = time.Since(back)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the mount did not recover within 2 minutes of the metadata server's return: %v\ndaemon log:\n%s", err, tail(m.Log(), 40))
				}
				time.Sleep(200 * time.Millisecond)
			}
			time.Sleep(3 * time.Second) // the writers go on after the outage
			pcancel()
			cancel()
			waitOr(t, &wg, 2*time.Minute, "the writers did not stop after the outage")
			waitOr(t, &pwg, 2*time.Minute, "the probe did not stop after the outage")
			w.mu.Lock()
			durableAfter := len(w.durable)
			w.mu.Unlock()
			errMu.Lock()
			t.Logf("%s: recovered %s after the server came back; probe results %v (slowest attempt %s); writer errors %v; files recorded before the outage %d, at the end %d",
				kind, recovered.Round(time.Millisecond), probe.results, probe.longest.Round(time.Millisecond), errCount, durableBefore, durableAfter)
			errMu.Unlock()
			if durableAfter <= durableBefore {
				t.Errorf("the writers made no progress after the outage")
			}
			var r faultReport
			w.check(t, m, -1, &r)
			if got, err := os.ReadFile(m.Path("before")); err != nil || !bytes.Equal(got, before) {
				r.lose("a file written and closed before the outage: %v (%d bytes)", err, len(got))
			}
			// And from a daemon that starts afresh.
			m.Restart()
			w.check(t, m, -1, &r)
			if len(r.lost) > 0 {
				t.Fatalf("lost after the outage:\n%s", strings.Join(r.lost, "\n"))
			}
			t.Logf("%s: bytes verified %d (%d file checks), files lost: 0", kind, r.bytesVerified, r.filesVerified)
		})
	}
}

// waitOr waits for wg or fails the test after d with a goroutine dump.
func waitOr(t *testing.T, wg *sync.WaitGroup, d time.Duration, why string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		t.Fatalf("%s within %s:\n%s", why, d, buf[:runtime.Stack(buf, true)])
	}
}

// dropPageCache makes the next reads reach the file system.
func dropPageCache(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatal(err)
	}
}

// scramblePages overwrites every page of a bbolt file after its two meta
// pages with random bytes: the file still opens, its tree is garbage.
func scramblePages(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() <= 2*4096 {
		t.Fatalf("%s: %d bytes, nothing past the meta pages", path, st.Size())
	}
	junk := stream("junk", int(st.Size()-2*4096))
	if _, err := f.WriteAt(junk, 2*4096); err != nil {
		t.Fatal(err)
	}
}

// TestFaultCacheDamage: cache files deleted or corrupted behind the daemon's
// back, and the cache's bbolt index scrambled, are detected and reported and
// the files are read from the volume; never are wrong bytes served.
func TestFaultCacheDamage(t *testing.T) {
	needRoot(t)
	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Extra: []string{"--metrics", addr, "--prefetch=false", "--auto-tag=false",
		"--passthrough-min", "64K", "--passthrough-min-age", "0"}})
	files := dataset(t, m.Path("ds"), "train", 24, 512<<10, 11)
	warmup(t, "--tag", "train", m.Dir)
	verify(t, files)
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, p)
	}
	sort.Strings(names)
	cacheDir := status(t, m).Cache.Dir

	t.Run("deleted while serving", func(t *testing.T) {
		before := metric(t, addr, "disgrafs_cache_corrupt_files_total")
		for _, p := range names[:4] {
			if err := os.Remove(cacheFileOf(t, m, p)); err != nil {
				t.Fatal(err)
			}
		}
		dropPageCache(t)
		verify(t, files)
		if after := metric(t, addr, "disgrafs_cache_corrupt_files_total"); after < before+4 {
			t.Errorf("4 deleted cache files: corrupt counter went from %v to %v", before, after)
		}
		if !strings.Contains(m.Log(), "cache file unreadable") {
			t.Errorf("the log does not report the missing cache files:\n%s", tail(m.Log(), 20))
		}
		out := warmup(t, "--check", "--tag", "train", m.Dir)
		t.Logf("after deleting 4 copies and reading everything: %s", strings.TrimSpace(out))
	})

	t.Run("corrupted while stopped, times restored", func(t *testing.T) {
		warmup(t, "--tag", "train", m.Dir)
		copies := map[string]string{}
		for _, p := range names[4:8] {
			copies[p] = cacheFileOf(t, m, p)
		}
		m.Unmount()
		for p, cf := range copies {
			st, err := os.Stat(cf)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(cf, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Same length, one flipped byte in the middle, mtime put back.
			want := files[p]
			if _, err := f.WriteAt([]byte{want[len(want)/2] ^ 0x5a}, int64(len(want)/2)); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := os.Chtimes(cf, st.ModTime(), st.ModTime()); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		dropPageCache(t)
		verify(t, files)
		// A copy the index had not saved yet is removed at start as an
		// unknown file instead; the others fail their checksum.
		n := strings.Count(m.Log(), "does not match its checksum")
		if n < 1 {
			t.Errorf("no corrupt copy reported:\n%s", tail(m.Log(), 20))
		}
		t.Logf("%d of 4 corrupted copies reported by their checksum", n)
	})

	t.Run("index scrambled while stopped", func(t *testing.T) {
		warmup(t, "--tag", "train", m.Dir)
		m.Unmount()
		scramblePages(t, filepath.Join(cacheDir, "index.db"))
		if err := m.start(); err != nil {
			t.Fatalf("a damaged cache index must not stop the mount: %v", err)
		}
		dropPageCache(t)
		verify(t, files)
		if !strings.Contains(m.Log(), "cache index is unreadable") && !strings.Contains(m.Log(), "dropping a bad cache index record") {
			t.Logf("note: the scrambled index was not reported; the log:\n%s", tail(m.Log(), 20))
		}
		// It works as a cache again.
		out := warmup(t, "--tag", "train", m.Dir)
		verify(t, files)
		t.Logf("warmup after a scrambled index: %s", strings.TrimSpace(out))
	})
}

// TestFaultGraphIndexDamage: the graph index's bbolt file scrambled while
// the daemon is stopped is refused with a message naming the way out, or
// served correctly; the way out (move it aside, reindex) restores the tags.
func TestFaultGraphIndexDamage(t *testing.T) {
	needRoot(t)
	m := startMount(t, MountOpts{Extra: []string{"--auto-tag=false"}})
	files := dataset(t, m.Path("ds"), "train", 30, 4<<10, 12)
	want := make([]string, 0, len(files))
	for p := range files {
		want = append(want, filepath.Base(p))
	}
	sort.Strings(want)
	if got, _ := filesIn(m.Path(".tags", "train")); !slices.Equal(got, want) {
		t.Fatalf(".tags/train before: %v", got)
	}
	m.Unmount()
	db := filepath.Join(m.DataDir, "graph.db")
	scramblePages(t, db)
	damaged, _ := os.ReadFile(db)
	m2, err := tryMount(t, MountOpts{Dir: m.Dir, DataDir: m.DataDir, Extra: []string{"--auto-tag=false"}})
	if err != nil {
		if !strings.Contains(err.Error(), "reindex") {
			t.Fatalf("a scrambled graph index: want a refusal naming reindex, got %v", err)
		}
		if got, _ := os.ReadFile(db); !bytes.Equal(got, damaged) {
			t.Fatal("the refused index file was modified")
		}
		t.Logf("refused clearly: %s", lastLine(err.Error()))
		if err := os.Rename(db, db+".bad"); err != nil {
			t.Fatal(err)
		}
		m2 = startMount(t, MountOpts{Dir: m.Dir, DataDir: m.DataDir, Extra: []string{"--auto-tag=false"}})
		if out, err := run(t, "reindex", m2.Dir); err != nil {
			t.Fatalf("reindex: %v\n%s", err, out)
		}
	}
	got, err := filesIn(m2.Path(".tags", "train"))
	if err != nil {
		t.Logf("listing refused clearly: %v", err)
	} else if !slices.Equal(got, want) {
		t.Fatalf(".tags/train after the damage: %v, want %v", got, want)
	}
	verify(t, remap(files, m.Dir, m2.Dir))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "reindex") {
			return lines[i]
		}
	}
	return lines[len(lines)-1]
}

// remap moves the keys of files from one mountpoint to another.
func remap(files map[string][]byte, from, to string) map[string][]byte {
	out := make(map[string][]byte, len(files))
	for p, b := range files {
		out[to+strings.TrimPrefix(p, from)] = b
	}
	return out
}

// TestFaultSignalsDuringWarmup: SIGTERM while warmups copy files (one from
// the CLI, one in the daemon's background) stops the daemon cleanly and
// promptly; the cache is consistent after a remount. A lazy unmount while a
// cached file is read through passthrough and a warmup runs keeps the open
// file readable. (Plain unmount with open files and lazy unmount of written
// files are in TestLifecycle.)
func TestFaultSignalsDuringWarmup(t *testing.T) {
	needRoot(t)
	opts := MountOpts{Extra: []string{"--prefetch=false", "--auto-tag=false", "--passthrough-min", "64K", "--passthrough-min-age", "0"}}
	m := startMount(t, opts)
	files := dataset(t, m.Path("ds"), "train", 40, 2<<20, 13)
	other := dataset(t, m.Path("other"), "other", 20, 2<<20, 14)

	t.Run("SIGTERM", func(t *testing.T) {
		cli := exec.Command(binary(t), "warmup", "--threads", "1", "--tag", "train", m.Dir)
		cli.Env = testEnv()
		var cliOut lockedBuffer
		cli.Stdout, cli.Stderr = &cliOut, &cliOut
		if err := cli.Start(); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, "warmup", "--background", "--tag", "other", m.Dir); err != nil {
			t.Fatalf("background warmup: %v\n%s", err, out)
		}
		// Stop it as soon as the CLI's warmup has started.
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(cliOut.String(), "warmup:"); {
			if time.Now().After(deadline) {
				t.Fatalf("the warmup did not start:\n%s", cliOut.String())
			}
			time.Sleep(time.Millisecond)
		}
		start := time.Now()
		m.Signal(syscall.SIGTERM)
		t.Logf("the daemon stopped %s after SIGTERM during two warmups", time.Since(start).Round(time.Millisecond))
		if m.waitErr != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", m.waitErr, tail(m.Log(), 30))
		}
		if !strings.Contains(m.Log(), "flushed and closed") {
			t.Errorf("no clean shutdown in the log:\n%s", tail(m.Log(), 30))
		}
		cliDone := make(chan error, 1)
		go func() { cliDone <- cli.Wait() }()
		select {
		case err := <-cliDone:
			t.Logf("the CLI warmup ended with %v: %s", err, lastLine(cliOut.String()))
		case <-time.After(30 * time.Second):
			_ = cli.Process.Kill()
			t.Fatalf("the CLI warmup hangs after its daemon stopped:\n%s", cliOut.String())
		}
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		t.Logf("after the remount: %s", strings.TrimSpace(warmup(t, "--check", "--tag", "train", m.Dir)))
		verify(t, files)
		warmup(t, "--tag", "train", m.Dir)
		if out := warmup(t, "--check", "--tag", "train", m.Dir); !strings.Contains(out, "(100.0%)") {
			t.Fatalf("an interrupted warmup does not complete when run again: %s", out)
		}
		verify(t, files)
		verify(t, other)
	})

	t.Run("lazy unmount while reading through passthrough", func(t *testing.T) {
		var p string
		for p = range files {
			if len(files[p]) >= 256<<10 {
				break
			}
		}
		warmup(t, p)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		half := len(files[p]) / 2
		buf := make([]byte, len(files[p]))
		if _, err := io.ReadFull(f, buf[:half]); err != nil {
			t.Fatal(err)
		}
		evict := exec.Command(binary(t), "warmup", "--tag", "other", m.Dir)
		evict.Env = testEnv()
		if err := evict.Start(); err != nil {
			t.Fatal(err)
		}
		if out, err := run(t, "umount", "--lazy", m.Dir); err != nil {
			t.Fatalf("umount --lazy: %v\n%s", err, out)
		}
		_ = evict.Wait()
		if _, err := io.ReadFull(f, buf[half:]); err != nil {
			t.Fatalf("read the rest after a lazy unmount: %v", err)
		}
		if !bytes.Equal(buf, files[p]) {
			t.Fatal("a file read across a lazy unmount differs from what was written")
		}
		f.Close()
		m.waitExit(30 * time.Second)
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		verify(t, files)
	})
}
