package tests

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// coherenceOpens reads disgrafs_coherence_opens_total{check}.
func coherenceOpens(t testing.TB, addr string) (local, engine float64) {
	t.Helper()
	for _, m := range families(t, addr)["disgrafs_coherence_opens_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() != "check" {
				continue
			}
			switch l.GetValue() {
			case "local":
				local = m.GetCounter().GetValue()
			case "engine":
				engine = m.GetCounter().GetValue()
			}
		}
	}
	return local, engine
}

// TestCoherenceEmbeddedOpensLocal: on the embedded volume, which only its
// daemon can change, an open of a warm file whose copy an earlier open found
// current asks the metadata engine nothing and the close sends no FLUSH;
// every change made through the mount is seen by the next open.
func TestCoherenceEmbeddedOpensLocal(t *testing.T) {
	needRoot(t)
	addr := freeMetricsAddr(t)
	dataDir := t.TempDir()
	// --entry-cache 0: the entries the creates leave carry no timeout, so
	// the first epoch looks every file up and gets the cached files' long
	// one, however long the warmup took (with the default second, entries
	// left by fast creates expired during the second epoch instead).
	m := startMount(t, MountOpts{DataDir: dataDir, Extra: []string{"--metrics", addr, "--entry-cache", "0"}})
	// Nothing else may change the volume: naming its database by URL takes
	// the same lock.
	if _, err := tryMount(t, MountOpts{Meta: "sqlite3://" + filepath.Join(dataDir, "meta.db")}); err == nil || !strings.Contains(err.Error(), "already mounted") {
		t.Errorf("a second daemon mounting the embedded volume by URL: %v, want it refused as already mounted", err)
	}
	files := dataset(t, m.Path("ds"), "epoch", 40, 32<<10, 21)
	warmup(t, "--tag", "epoch", m.Dir)
	verify(t, files) // the first opens ask the engine, and trust the copies
	local0, engine0 := coherenceOpens(t, addr)
	flush0 := opCount(t, addr, "flush")
	verify(t, files)
	local1, engine1 := coherenceOpens(t, addr)
	// verify opens every file twice (read, then mmap).
	if d := local1 - local0; d != 2*float64(len(files)) {
		t.Errorf("a second epoch answered %v opens locally, want %d", d, 2*len(files))
	}
	if d := engine1 - engine0; d != 0 {
		t.Errorf("a second epoch asked the metadata engine %v times, want 0", d)
	}
	if d := opCount(t, addr, "flush") - flush0; d != 0 {
		t.Errorf("read-only closes of cached files sent %v FLUSH requests, want 0 (FOPEN_NOFLUSH)", d)
	}
	// The kernel drops its entries (and the pages): every path walk looks
	// the files up again, and the daemon answers those lookups itself.
	lookups0 := metric(t, addr, "disgrafs_coherence_local_lookups_total")
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatal(err)
	}
	_, engine2 := coherenceOpens(t, addr)
	verify(t, files)
	if d := metric(t, addr, "disgrafs_coherence_local_lookups_total") - lookups0; d < float64(len(files)) {
		t.Errorf("after drop_caches, %v lookups of the %d files were answered without the metadata engine, want all", d, len(files))
	}
	if _, engine3 := coherenceOpens(t, addr); engine3 != engine2 {
		t.Errorf("after drop_caches, %v opens asked the metadata engine, want 0", engine3-engine2)
	}
	if st := status(t, m); st.Cache == nil || st.Cache.Coherence.Mode != "exclusive" || !st.Cache.Coherence.Trusted {
		t.Errorf("status says the open check is %+v, want exclusive and trusted", st.Cache)
	}

	// Every kind of change through the mount, each followed by an open
	// that must see it.
	p := func(i int) string { return m.Path("ds", "f00"+string(rune('0'+i/10))+string(rune('0'+i%10))) }
	changes := []struct {
		name   string
		change func(path string) error
		want   func(old []byte) []byte
	}{
		{"overwrite, same length and mtime", func(path string) error {
			fi, err := os.Stat(path)
			if err != nil {
				return err
			}
			b := bytes.Repeat([]byte{'x'}, int(fi.Size()))
			if err := os.WriteFile(path, b, 0o644); err != nil {
				return err
			}
			return os.Chtimes(path, fi.ModTime(), fi.ModTime())
		}, func(old []byte) []byte { return bytes.Repeat([]byte{'x'}, len(old)) }},
		{"truncate", func(path string) error { return os.Truncate(path, 100) },
			func(old []byte) []byte { return old[:100] }},
		{"append", func(path string) error {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.Write([]byte("tail"))
			return errors.Join(err, f.Close())
		}, func(old []byte) []byte { return append(bytes.Clone(old), "tail"...) }},
		{"renamed over", func(path string) error {
			tmp := m.Path("ds", "new")
			if err := os.WriteFile(tmp, []byte("replacement"), 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, path)
		}, func([]byte) []byte { return []byte("replacement") }},
		{"unlinked and created again", func(path string) error {
			if err := os.Remove(path); err != nil {
				return err
			}
			return os.WriteFile(path, []byte("recreated"), 0o644)
		}, func([]byte) []byte { return []byte("recreated") }},
	}
	for i, c := range changes {
		path := p(i)
		old := files[path]
		if old == nil {
			t.Fatalf("no file %s in the data set", path)
		}
		if err := c.change(path); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: read: %v", c.name, err)
		}
		if want := c.want(old); !bytes.Equal(got, want) {
			t.Errorf("%s: the next open read %d bytes that are not the new content (%d bytes)", c.name, len(got), len(want))
		}
		delete(files, path)
	}

	// Permissions changed through the mount hold at the next open. Let uid
	// 65534 reach the mount.
	for d := m.Dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := p(20)
	if err := asOther("open-r", path); err != nil {
		t.Fatalf("another user reading a 0644 file: %v", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := asOther("open-r", path); !errors.Is(err, syscall.EACCES) {
		t.Errorf("another user opened a file just made 0600: %v, want EACCES", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	delete(files, path)

	// A POSIX read lock taken through a read-only descriptor of a cached
	// file (opened with FOPEN_NOFLUSH, so no FLUSH at its close) is
	// released when the descriptor is closed.
	verify(t, map[string][]byte{p(21): files[p(21)]})
	if err := os.Chmod(p(21), 0o666); err != nil {
		t.Fatal(err)
	}
	verify(t, map[string][]byte{p(21): files[p(21)]}) // trusted again
	f, err := os.Open(p(21))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_RDLCK}); err != nil {
		t.Fatalf("read lock on a read-only descriptor: %v", err)
	}
	if err := asOther("wrlock", p(21)); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("another process took a write lock while a read lock was held: %v", err)
	}
	f.Close()
	// The kernel sends RELEASE asynchronously after the close.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := asOther("wrlock", p(21))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the read lock outlived its descriptor's close by 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	verify(t, files) // the rest unchanged
}

// TestCoherenceOpenCheckAlways: --open-check always asks the engine at
// every open, and bad values are refused.
func TestCoherenceOpenCheckAlways(t *testing.T) {
	needRoot(t)
	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Extra: []string{"--metrics", addr, "--open-check", "always"}})
	files := dataset(t, m.Path("ds"), "always", 10, 8<<10, 22)
	warmup(t, "--tag", "always", m.Dir)
	verify(t, files)
	verify(t, files)
	if local, engine := coherenceOpens(t, addr); local != 0 || engine != 4*float64(len(files)) {
		t.Errorf("opens answered locally %v, asked the engine %v; want 0 and %d", local, engine, 4*len(files))
	}
	if st := status(t, m); st.Cache.Coherence.Mode != "check" {
		t.Errorf("status says %+v, want check", st.Cache.Coherence)
	}
	if _, err := tryMount(t, MountOpts{Extra: []string{"--open-check", "sometimes"}}); err == nil {
		t.Error("--open-check sometimes was accepted")
	}
}

// fuseOpsTotal sums disgrafs_fuse_ops_total over every operation.
func fuseOpsTotal(t testing.TB, addr string) float64 {
	t.Helper()
	var sum float64
	for _, m := range families(t, addr)["disgrafs_fuse_ops_total"].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// TestCoherenceReadOnlyNoOpen: a --read-only mount of the embedded volume
// serves a warm epoch with no FUSE request at all (no OPEN, FLUSH or
// RELEASE; entries, attributes and pages kept by the kernel), reads files
// that are not cached by inode, refuses every write with EROFS, and leaves
// locks to the kernel.
func TestCoherenceReadOnlyNoOpen(t *testing.T) {
	needRoot(t)
	dataDir := t.TempDir()
	rw := startMount(t, MountOpts{DataDir: dataDir})
	files := dataset(t, rw.Path("ds"), "ro", 30, 32<<10, 31)
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16+7) // 3 MiB: passthrough size on a normal mount
	bigPath := rw.Path("ds", "big")
	if err := os.WriteFile(bigPath, big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(bigPath, "user.xdg.tags", []byte("ro"), 0); err != nil {
		t.Fatal(err)
	}
	warmup(t, "--tag", "ro", rw.Dir)
	// Not cached: read through JuiceFS by inode.
	if err := os.WriteFile(rw.Path("ds", "uncached"), []byte("never warmed"), 0o644); err != nil {
		t.Fatal(err)
	}
	rw.Unmount()

	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Dir: rw.Dir, DataDir: dataDir, Extra: []string{"--read-only", "--metrics", addr}})
	want := map[string][]byte{m.Path("ds", "big"): big, m.Path("ds", "uncached"): []byte("never warmed")}
	for p, b := range files {
		want[p] = b
	}
	verify(t, want)
	before := fuseOpsTotal(t, addr)
	verify(t, want)
	if d := fuseOpsTotal(t, addr) - before; d != 0 {
		t.Errorf("a second epoch over a warm data set made %v FUSE requests, want 0", d)
	}

	refused := []struct {
		name string
		do   func() error
	}{
		{"create", func() error { return os.WriteFile(m.Path("ds", "new"), nil, 0o644) }},
		{"open for writing", func() error {
			f, err := os.OpenFile(m.Path("ds", "big"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(m.Path("ds", "big"), 0) }},
		{"unlink", func() error { return os.Remove(m.Path("ds", "uncached")) }},
		{"setxattr", func() error { return unix.Setxattr(m.Path("ds", "big"), "user.xdg.tags", []byte("x"), 0) }},
		{"tag by ln", func() error { return os.Link(m.Path("ds", "big"), m.Path(".tags", "ro", "big2")) }},
		{"mkdir", func() error { return os.Mkdir(m.Path("d"), 0o755) }},
	}
	for _, r := range refused {
		if err := r.do(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a --read-only mount: %v, want EROFS", r.name, err)
		}
	}
	verify(t, want) // nothing changed

	// Locks are the kernel's: a read lock held here blocks another
	// process's write lock until it is released.
	p := m.Path("ds", "big")
	for d := filepath.Dir(m.Dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_RDLCK}); err != nil {
		t.Fatalf("read lock: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync of a read-only descriptor: %v", err)
	}
	if err := asOther("rdlock-conflict", p); !errors.Is(err, syscall.EAGAIN) {
		t.Errorf("another process's write-lock test while a read lock is held: %v, want EAGAIN", err)
	}
	f.Close()
	if err := asOther("rdlock-conflict", p); err != nil {
		t.Errorf("the read lock outlived its descriptor's close: %v", err)
	}

	// Flags that cannot go together.
	if _, err := tryMount(t, MountOpts{Extra: []string{"--read-only", "--prealloc", "x"}}); err == nil {
		t.Error("--read-only with --prealloc was accepted")
	}
}
