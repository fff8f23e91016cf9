package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/prealloc"
)

func preallocStatus(t *testing.T, m *Mount) *control.PreallocInfo {
	t.Helper()
	out, err := run(t, "status", "--json", m.Dir)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var s control.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status json: %v\n%s", err, out)
	}
	if s.Prealloc == nil {
		t.Fatalf("status has no prealloc section:\n%s", out)
	}
	return s.Prealloc
}

func waitPreallocPool(t *testing.T, m *Mount, n int) *control.PreallocInfo {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p := preallocStatus(t, m)
		if p.PoolFiles >= n {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool did not fill to %d: %+v\n%s", n, p, m.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitNoPending(t *testing.T, m *Mount) *control.PreallocInfo {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p := preallocStatus(t, m)
		if p.Pending == 0 {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("renames still pending: %+v", p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeSync(path string, data []byte, flags int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|flags, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// The files a create answered from the pool behave as if created in place.
func TestPreallocSemantics(t *testing.T) {
	meta, _ := formatShared(t, "presem")
	// A long rename delay keeps names pending, so every operation below meets
	// a file whose rename has not landed.
	a := startMount(t, MountOpts{Meta: meta, Extra: []string{"--prealloc", "video", "--prealloc-pool", "16",
		"--prealloc-rename-delay", "1h", "--metrics", "127.0.0.1:9581"}})
	b := startMount(t, MountOpts{Meta: meta})
	waitPreallocPool(t, a, 16)
	dir := a.Path("video")

	// create, stat, readdir, read, with the caller's mode and umask.
	old := syscall.Umask(0o027)
	f, err := os.OpenFile(filepath.Join(dir, "cam1.mp4"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("frame data")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "cam1.mp4"))
	if err != nil || fi.Mode().Perm() != 0o640 || fi.Size() != 10 {
		t.Fatalf("stat of a pending file: %v %v", fi, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "cam1.mp4" {
		t.Fatalf("readdir: %v %v", ents, err)
	}
	if p := preallocStatus(t, a); p.Hits < 1 {
		t.Fatalf("status: %+v", p)
	}
	// Listing landed the name: another node sees it now.
	if _, err := os.Stat(b.Path("video", "cam1.mp4")); err != nil {
		t.Fatalf("other node after the listing: %v", err)
	}
	f.Close()

	// fsync of the file lands the name; the other node sees it with its data.
	if err := writeSync(filepath.Join(dir, "synced"), []byte("durable"), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(b.Path("video", "synced")); err != nil || string(got) != "durable" {
		t.Fatalf("other node after fsync: %q %v", got, err)
	}

	// fsync of the directory lands every name in it.
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("d%d", i)), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(b.Path("video", "d0")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("with a 1h rename delay the other node must not see d0 yet: %v", err)
	}
	df, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := df.Sync(); err != nil {
		t.Fatal(err)
	}
	df.Close()
	for i := range 3 {
		if _, err := os.Stat(b.Path("video", fmt.Sprintf("d%d", i))); err != nil {
			t.Fatalf("other node after the directory's fsync: %v", err)
		}
	}

	// rename, unlink, chmod of pending files.
	for _, n := range []string{"r", "u", "c"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n+n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(dir, "r"), filepath.Join(dir, "r2")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(b.Path("video", "r2")); err != nil || string(got) != "rr" {
		t.Fatalf("renamed pending file on the other node: %q %v", got, err)
	}
	if err := os.Remove(filepath.Join(dir, "u")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "u")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unlinked pending file: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, "c"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "c")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("chmod of a pending file: %v %v", fi, err)
	}

	// O_EXCL: exclusive against this mount's pending names and other nodes' files.
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.OpenFile(filepath.Join(dir, "x"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); !errors.Is(err, os.ErrExist) {
		t.Fatalf("O_EXCL on a pending name: %v", err)
	}
	if err := os.WriteFile(b.Path("video", "theirs"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.OpenFile(filepath.Join(dir, "theirs"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); !errors.Is(err, os.ErrExist) {
		t.Fatalf("O_EXCL on another node's name: %v", err)
	}
	if err := writeSync(filepath.Join(dir, "excl-new"), []byte("e"), os.O_EXCL); err != nil {
		t.Fatalf("O_EXCL of a new name: %v", err)
	}

	// Names over 255 bytes.
	long := strings.Repeat("n", 256)
	if _, err := os.Create(filepath.Join(dir, long)); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Fatalf("256-byte name: %v", err)
	}
	if err := writeSync(filepath.Join(dir, strings.Repeat("m", 255)), []byte("ok"), 0); err != nil {
		t.Fatalf("255-byte name: %v", err)
	}

	// Concurrent creates of the same name in this mount: one file, no conflict.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := writeSync(filepath.Join(dir, "same"), []byte(fmt.Sprintf("writer %d\n", i)), 0); err != nil {
				t.Errorf("concurrent create: %v", err)
			}
		}()
	}
	wg.Wait()

	// rmdir of a directory whose only file is pending: ENOTEMPTY, as in place.
	if err := os.Mkdir(a.Path("video2"), 0o755); err != nil {
		t.Fatal(err)
	}
	a.Unmount()
	a = startMount(t, MountOpts{Dir: a.Dir, Meta: meta, Extra: []string{"--prealloc", "video,video2", "--prealloc-pool", "4", "--prealloc-rename-delay", "1h"}})
	waitPreallocPool(t, a, 8)
	if err := os.WriteFile(a.Path("video2", "only"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(a.Path("video2")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of a directory with a pending file: %v", err)
	}

	p := preallocStatus(t, a)
	if p.Conflicts != 0 || p.Lost != 0 {
		t.Fatalf("status: %+v", p)
	}
	names, _ := os.ReadDir(b.Path("video"))
	var got []string
	for _, e := range names {
		got = append(got, e.Name())
	}
	if strings.Contains(strings.Join(got, " "), "conflict") {
		t.Fatalf("conflict names inside one mount: %v", got)
	}
	// Unmount drains pending renames.
	a.Unmount()
	if _, err := os.Stat(b.Path("video2", "only")); err != nil {
		t.Fatalf("unmount did not drain: %v", err)
	}
}

// kill -9 during a burst of 200 creates: every file that was fsynced (or
// closed) is there under its real name with its content after a remount, and
// the pool directory holds nothing else than empty pool files.
func TestPreallocKill9Burst(t *testing.T) {
	meta, _ := formatShared(t, "prekill")
	args := []string{"--prealloc", "cams", "--prealloc-pool", "256", "--prealloc-rename-delay", "500ms"}
	m := startMount(t, MountOpts{Meta: meta, Extra: args})
	waitPreallocPool(t, m, 256)
	dir := m.Path("cams")

	type done struct {
		name   string
		data   []byte
		synced bool
	}
	var mu sync.Mutex
	var finished []done
	stop := make(chan struct{})
	go func() {
		// Kill when about half the burst is through.
		for {
			mu.Lock()
			n := len(finished)
			mu.Unlock()
			if n >= 100 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		m.Kill9()
		close(stop)
	}()
	for i := range 200 {
		select {
		case <-stop:
		default:
		}
		name := fmt.Sprintf("cam%03d.mp4", i)
		if i%2 == 1 {
			name = fmt.Sprintf("cam%03d.frame", i)
		}
		data := bytes.Repeat([]byte(name), 100+i)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			break
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			break
		}
		synced := i%2 == 0
		if synced {
			if err := f.Sync(); err != nil {
				f.Close()
				break
			}
		}
		if err := f.Close(); err != nil {
			break
		}
		mu.Lock()
		finished = append(finished, done{name, data, synced})
		mu.Unlock()
	}
	<-stop
	mu.Lock()
	got := append([]done(nil), finished...)
	mu.Unlock()
	t.Logf("%d files finished before the kill", len(got))
	if out, err := run(t, "umount", m.Dir); err != nil {
		t.Fatalf("umount of the dead mount: %v\n%s", err, out)
	}
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	waitNoPending(t, m)
	if !strings.Contains(m.Log(), "replaying pending renames") {
		t.Errorf("no rename was pending at the kill: the test did not exercise the replay\n%s", m.Log())
	}
	for _, d := range got {
		b, err := os.ReadFile(filepath.Join(dir, d.name))
		if err != nil || !bytes.Equal(b, d.data) {
			t.Errorf("%s (fsynced %v) after the kill: %d bytes, %v", d.name, d.synced, len(b), err)
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", m.Log())
	}
	// Nothing leaks: the pool directory holds only empty pool files, at most a pool's worth.
	p := preallocStatus(t, m)
	pool, err := os.ReadDir(filepath.Join(m.Dir, prealloc.HiddenDir, p.Node))
	if err != nil {
		t.Fatal(err)
	}
	for _, pd := range pool {
		files, err := os.ReadDir(filepath.Join(m.Dir, prealloc.HiddenDir, p.Node, pd.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if pd.Name() == "lost+found" && len(files) > 0 {
			t.Errorf("lost+found after a kill: %v", files)
		}
		if len(files) > 256 {
			t.Errorf("%d files in the pool directory, pool size 256", len(files))
		}
		for _, f := range files {
			if fi, err := f.Info(); err != nil || fi.Size() != 0 {
				t.Errorf("pool file with data (leaked): %s %v", f.Name(), err)
			}
		}
	}
	if p.Conflicts != 0 || p.Lost != 0 {
		t.Fatalf("status after replay: %+v", p)
	}
}

// Two nodes create the same names before either rename lands: both files are
// kept, one under a conflict name, nothing is lost.
func TestPreallocTwoNodesSameNames(t *testing.T) {
	meta, _ := formatShared(t, "pretwo")
	args := []string{"--prealloc", "shared", "--prealloc-pool", "32", "--prealloc-rename-delay", "1h"}
	a := startMount(t, MountOpts{Meta: meta, Extra: args})
	b := startMount(t, MountOpts{Meta: meta, Extra: args})
	waitPreallocPool(t, a, 32)
	waitPreallocPool(t, b, 32)
	const n = 20
	for _, m := range []*Mount{a, b} {
		for i := range n {
			if err := os.WriteFile(m.Path("shared", fmt.Sprintf("f%02d", i)), []byte(m.Dir+fmt.Sprint(i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, m := range []*Mount{a, b} {
		d, err := os.Open(m.Path("shared"))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatalf("fsync of the directory: %v", err)
		}
		d.Close()
	}
	ents, err := os.ReadDir(a.Path("shared"))
	if err != nil {
		t.Fatal(err)
	}
	contents := map[string]bool{}
	for _, e := range ents {
		data, err := os.ReadFile(a.Path("shared", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		contents[string(data)] = true
	}
	if len(ents) != 2*n || len(contents) != 2*n {
		t.Fatalf("%d names, %d distinct contents; want %d of each", len(ents), len(contents), 2*n)
	}
	pa, pb := preallocStatus(t, a), preallocStatus(t, b)
	if pa.Conflicts+pb.Conflicts != n {
		t.Fatalf("conflicts %d + %d, want %d", pa.Conflicts, pb.Conflicts, n)
	}
	for _, c := range append(pa.Recent, pb.Recent...) {
		if !strings.Contains(c.LandedAs, ".conflict-") {
			t.Fatalf("conflict name %q", c.LandedAs)
		}
	}

	// Unlink of a pending name another node took meanwhile removes the file
	// this mount created (under its conflict name), never the other node's.
	if err := os.WriteFile(a.Path("shared", "z"), []byte("a's z"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSync(b.Path("shared", "z"), []byte("b's z"), 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- os.Remove(a.Path("shared", "z")) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("unlink of a pending name taken by another node: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("unlink of a pending name taken by another node hangs")
	}
	if got, err := os.ReadFile(b.Path("shared", "z")); err != nil || string(got) != "b's z" {
		t.Fatalf("the other node's z: %q %v", got, err)
	}
	ents, _ = os.ReadDir(b.Path("shared"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "z.conflict-") {
			t.Fatalf("our unlinked file is still there as %s", e.Name())
		}
	}
}

// A corrupt journal: the mount refuses pre-allocation with a clear error and
// deletes nothing.
func TestPreallocCorruptJournal(t *testing.T) {
	meta, _ := formatShared(t, "precorrupt")
	dataDir := t.TempDir()
	args := []string{"--data-dir", dataDir, "--prealloc", "v", "--prealloc-pool", "4", "--prealloc-rename-delay", "1h"}
	m := startMount(t, MountOpts{Meta: meta, Extra: args})
	waitPreallocPool(t, m, 4)
	if err := os.WriteFile(m.Path("v", "pending"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	journal := preallocStatus(t, m).Journal
	m.Kill9()
	if out, err := run(t, "umount", m.Dir); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	orig, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), orig...)
	copy(bad, bytes.Repeat([]byte{0xEE}, 8192))
	if err := os.WriteFile(journal, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = tryMount(t, MountOpts{Dir: m.Dir, Meta: meta, Extra: args})
	if err == nil || !strings.Contains(err.Error(), "unreadable") || !strings.Contains(err.Error(), "nothing was deleted") {
		t.Fatalf("mount with a corrupt journal: %v", err)
	}
	if after, _ := os.ReadFile(journal); !bytes.Equal(after, bad) {
		t.Fatal("the corrupt journal was changed")
	}
	// The data is still in the volume; restoring the journal finishes the create.
	if err := os.WriteFile(journal, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	m2 := startMount(t, MountOpts{Dir: m.Dir, Meta: meta, Extra: args})
	if got, err := os.ReadFile(m2.Path("v", "pending")); err != nil || string(got) != "keep" {
		t.Fatalf("file after restoring the journal: %q %v", got, err)
	}
}

// Another node deletes the directory while a create in it is pending: the
// file is kept in lost+found and fsync reports ENOENT.
func TestPreallocDirectoryDeleted(t *testing.T) {
	meta, _ := formatShared(t, "predel")
	a := startMount(t, MountOpts{Meta: meta, Extra: []string{"--prealloc", "gone", "--prealloc-pool", "4", "--prealloc-rename-delay", "1h"}})
	b := startMount(t, MountOpts{Meta: meta})
	waitPreallocPool(t, a, 4)
	f, err := os.Create(a.Path("gone", "late"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("late data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(b.Path("gone")); err != nil {
		t.Fatalf("the other node removes the directory: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("fsync after the directory was deleted: %v, want ENOENT", err)
	}
	f.Close()
	p := preallocStatus(t, a)
	if p.Lost != 1 || len(p.Recent) != 1 {
		t.Fatalf("status: %+v", p)
	}
	kept := a.Path(prealloc.HiddenDir, p.Node, "lost+found", p.Recent[0].LandedAs)
	if got, err := os.ReadFile(kept); err != nil || string(got) != "late data" {
		t.Fatalf("kept file %s: %q %v", kept, got, err)
	}
}

// An empty pool never blocks: creates fall back to the normal path.
func TestPreallocPoolExhausted(t *testing.T) {
	meta, _ := formatShared(t, "preempty")
	m := startMount(t, MountOpts{Meta: meta, Extra: []string{"--prealloc", "v", "--prealloc-pool", "1"}})
	waitPreallocPool(t, m, 1)
	// All at once: a refill (which now runs until the pool is full) keeps up
	// with creates one after another on a local Redis, never with a burst.
	errs := make(chan error, 50)
	for i := range 50 {
		go func() { errs <- os.WriteFile(m.Path("v", fmt.Sprint(i)), []byte(fmt.Sprint(i)), 0o644) }()
	}
	for range 50 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		if got, err := os.ReadFile(m.Path("v", fmt.Sprint(i))); err != nil || string(got) != fmt.Sprint(i) {
			t.Fatalf("%d: %q %v", i, got, err)
		}
	}
	p := waitNoPending(t, m)
	if p.Hits+p.Misses != 50 || p.Misses == 0 {
		t.Fatalf("hits %d misses %d for 50 creates with a pool of 1", p.Hits, p.Misses)
	}
	t.Logf("hits %d, misses %d", p.Hits, p.Misses)
}

// Lookups of missing names in a pre-allocation directory are answered from a
// background listing: names other nodes create show up within the negative
// cache time, names this mount creates (even outside the pool) at once.
func TestPreallocNegativeCache(t *testing.T) {
	meta, _ := formatShared(t, "preneg")
	a := startMount(t, MountOpts{Meta: meta, Extra: []string{"--prealloc", "v", "--prealloc-pool", "4", "--prealloc-negative-cache", "1s"}})
	b := startMount(t, MountOpts{Meta: meta})
	waitPreallocPool(t, a, 4)
	time.Sleep(600 * time.Millisecond) // a listing exists
	if err := os.WriteFile(b.Path("v", "from-b"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		if got, err := os.ReadFile(a.Path("v", "from-b")); err == nil {
			if string(got) != "b" {
				t.Fatalf("content %q", got)
			}
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("another node's file never became visible")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("another node's new file visible after %s", time.Since(start).Round(time.Millisecond))
	// Created here outside the pool (O_EXCL), looked up again after the
	// kernel's entry cache expired.
	if err := writeSync(a.Path("v", "excl"), []byte("x"), os.O_EXCL); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(a.Path("v", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		time.Sleep(700 * time.Millisecond)
		for _, n := range []string{"excl", "sub"} {
			if _, err := os.Stat(a.Path("v", n)); err != nil {
				t.Fatalf("%s made by this mount: %v", n, err)
			}
		}
	}
}

// metaProxy formats a shared volume and starts a toxiproxy in front of its
// Redis; it returns the direct and the proxied metadata URLs and a function
// that calls the proxy's API (the proxy is named "meta").
func metaProxy(t *testing.T, name string) (direct, proxied string, toxi func(method, path, body string)) {
	t.Helper()
	redisHostPort := redisAddr(t)
	proxyAddr, toxi := toxiproxy(t, "meta", redisHostPort, "")
	direct, _ = formatShared(t, name)
	return direct, strings.Replace(direct, redisHostPort, proxyAddr, 1), toxi
}

// toxiproxy starts a toxiproxy server with one proxy in front of upstream and
// returns the address it listens on and a function that calls its API. The
// server's API and proxy ports come from DISGRAFS_TEST_PROXY_PORTS (API,PROXY;
// default 16487,16482) unless listen is given.
func toxiproxy(t *testing.T, name, upstream, listen string) (string, func(method, path, body string)) {
	t.Helper()
	home, _ := os.UserHomeDir()
	tp := filepath.Join(home, ".cache/disgrafs/bin/server")
	_, err := os.Stat(tp)
	need(t, err == nil, "toxiproxy server v2.12.0 not installed at "+tp+" (go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0)")
	apiPort, proxyAddr := "16487", "127.0.0.1:16482"
	if v := os.Getenv("DISGRAFS_TEST_PROXY_PORTS"); v != "" { // API,PROXY
		apiPort, proxyAddr, _ = strings.Cut(v, ",")
		proxyAddr = "127.0.0.1:" + proxyAddr
	}
	if listen != "" {
		proxyAddr = listen
	}
	cmd := exec.Command(tp, "-host", "127.0.0.1", "-port", apiPort)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	api := "http://127.0.0.1:" + apiPort
	toxi := func(method, path, body string) {
		t.Helper()
		for i := 0; ; i++ {
			req, _ := http.NewRequest(method, api+path, strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode >= 300 {
					t.Fatalf("toxiproxy %s %s: %s", method, path, resp.Status)
				}
				return
			}
			if i > 100 {
				t.Fatalf("toxiproxy: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	toxi("POST", "/proxies", fmt.Sprintf(`{"name":%q,"listen":%q,"upstream":%q,"enabled":true}`, name, proxyAddr, upstream))
	return proxyAddr, toxi
}

// The metadata engine goes away while a rename is pending: the rename waits
// (JuiceFS's client retries inside the call; errors it gives up with are
// retried by the renamer with backoff), the open file keeps taking writes,
// and once the engine is back fsync lands the name with all the data.
func TestPreallocMetaDown(t *testing.T) {
	_, proxied, toxi := metaProxy(t, "predown")
	m := startMount(t, MountOpts{Meta: proxied, Extra: []string{"--prealloc", "v", "--prealloc-pool", "4", "--prealloc-rename-delay", "2s"}})
	waitPreallocPool(t, m, 4)
	f, err := os.Create(m.Path("v", "during-outage"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("before;")); err != nil {
		t.Fatal(err)
	}
	toxi("POST", "/proxies/meta", `{"enabled":false}`)
	time.Sleep(4 * time.Second) // the renamer tries and fails
	if _, err := f.Write([]byte("during;")); err != nil {
		t.Fatalf("write to an open pending file while the metadata engine is down: %v", err)
	}
	toxi("POST", "/proxies/meta", `{"enabled":true}`)
	if _, err := f.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Sync() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("fsync once the engine is back: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("fsync did not return within 90s of the engine coming back")
	}
	if got, err := os.ReadFile(m.Path("v", "during-outage")); err != nil || string(got) != "before;during;after" {
		t.Fatalf("content %q %v", got, err)
	}
	p := preallocStatus(t, m)
	t.Logf("status after the outage: %+v", p)
	if p.Pending != 0 || p.Conflicts != 0 || p.Lost != 0 {
		t.Fatalf("status: %+v", p)
	}
}
