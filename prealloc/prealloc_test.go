package prealloc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/disgrafs/disgrafs/prealloc"
	"github.com/disgrafs/disgrafs/volume"
)

// testVolume is a real JuiceFS volume: the embedded SQLite one, or one on the
// test Redis ($DISGRAFS_TEST_REDIS).
type testVolume struct {
	vol *volume.Volume
	fs  prealloc.Volume
	dir uint64 // the enabled directory
}

func need(t *testing.T, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("DISGRAFS_REQUIRE_ALL") == "1" {
		t.Fatalf("cannot run here: %s", why)
	}
	t.Skipf("cannot run here: %s", why)
}

var redisDB = 0
var redisMu sync.Mutex

func redisURL(t *testing.T) string {
	addr := os.Getenv("DISGRAFS_TEST_REDIS")
	need(t, addr != "", "DISGRAFS_TEST_REDIS is not set")
	c, err := net.DialTimeout("tcp", addr, time.Second)
	need(t, err == nil, fmt.Sprintf("redis at %s: %v", addr, err))
	c.Close()
	redisMu.Lock()
	db := 10 + redisDB%6 // databases 10-15, reused round robin (flushed first)
	redisDB++
	redisMu.Unlock()
	host, port, _ := net.SplitHostPort(addr)
	if out, err := exec.Command("redis-cli", "-h", host, "-p", port, "-n", fmt.Sprint(db), "flushdb").CombinedOutput(); err != nil {
		t.Fatalf("flushdb: %v %s", err, out)
	}
	return fmt.Sprintf("redis://%s/%d", addr, db)
}

func openVolume(t *testing.T, kind string) *testVolume {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	var url string
	switch kind {
	case "sqlite":
		var err error
		if url, err = (volume.Embedded{Dir: dir}).Ensure(ctx); err != nil {
			t.Fatal(err)
		}
	case "redis":
		url = redisURL(t)
		if _, err := volume.Format(ctx, volume.FormatOptions{MetaURL: url, Name: "pretest", Storage: "file", Bucket: filepath.Join(dir, "bucket")}); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := volume.Connect(ctx, url, volume.ConnectOptions{Mountpoint: dir})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	v, err := conn.Open(ctx, volume.Options{Mountpoint: dir, CacheDir: filepath.Join(dir, "cache"), Registerer: reg, Registry: reg,
		StatePath: filepath.Join(dir, "state.json")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	tv := &testVolume{vol: v, fs: v.PreallocVolume()}
	ino, st := tv.fs.Mkdir(ctx, 1, "video", 0o755)
	if st != 0 {
		t.Fatal(st)
	}
	tv.dir = ino
	return tv
}

func (tv *testVolume) open(t *testing.T, journal string, o prealloc.Options) *prealloc.Manager {
	t.Helper()
	o.JournalPath = journal
	o.Volume = tv.fs
	if o.Dirs == nil {
		o.Dirs = map[uint64]string{tv.dir: "/video"}
	}
	m, err := prealloc.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func waitPool(t *testing.T, m *prealloc.Manager, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for m.Stats().PoolFiles < n {
		if time.Now().After(deadline) {
			t.Fatalf("pool did not fill: %+v", m.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (tv *testVolume) write(t *testing.T, ino, fh uint64, data string) {
	t.Helper()
	ctx := vfs.NewLogContext(meta.NewContext(1, 0, []uint32{0}))
	if st := tv.vol.VFS.Write(ctx, meta.Ino(ino), []byte(data), 0, fh); st != 0 {
		t.Fatal(st)
	}
	if st := tv.vol.VFS.Flush(ctx, meta.Ino(ino), fh, 0); st != 0 {
		t.Fatal(st)
	}
}

func (tv *testVolume) read(t *testing.T, parent uint64, name string) string {
	t.Helper()
	ctx := vfs.NewLogContext(meta.NewContext(1, 0, []uint32{0}))
	e, st := tv.vol.VFS.Lookup(ctx, meta.Ino(parent), name)
	if st != 0 {
		t.Fatalf("lookup %s: %v", name, st)
	}
	_, fh, st := tv.vol.VFS.Open(ctx, e.Inode, syscall.O_RDONLY)
	if st != 0 {
		t.Fatal(st)
	}
	defer tv.vol.VFS.Release(ctx, e.Inode, fh)
	buf := make([]byte, 1<<16)
	n, st := tv.vol.VFS.Read(ctx, e.Inode, buf, 0, fh)
	if st != 0 {
		t.Fatal(st)
	}
	return string(buf[:n])
}

func (tv *testVolume) names(t *testing.T, dir uint64) []string {
	t.Helper()
	es, st := tv.fs.ReadDir(context.Background(), dir)
	if st != 0 {
		t.Fatal(st)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

var kinds = []string{"sqlite", "redis"}

func TestCreateRenameAndStats(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			tv := openVolume(t, kind)
			m := tv.open(t, filepath.Join(t.TempDir(), "j.db"), prealloc.Options{PoolSize: 8})
			defer m.Close(context.Background())
			waitPool(t, m, 8)
			ctx := context.Background()
			for i := range 5 {
				name := fmt.Sprintf("cam%d.mp4", i)
				c, ok, err := m.Create(ctx, tv.dir, name, 0o640, 1000, 1000)
				if err != nil || !ok {
					t.Fatalf("create %s: ok=%v err=%v", name, ok, err)
				}
				if c.Attr.Mode != 0o640 || c.Attr.Uid != 1000 {
					t.Fatalf("attr of the answer: mode %o uid %d", c.Attr.Mode, c.Attr.Uid)
				}
				if ino, ok := m.Lookup(tv.dir, name); ok && ino != c.Ino {
					t.Fatalf("lookup answers %d, created %d", ino, c.Ino)
				}
				tv.write(t, c.Ino, c.Fh, "data of "+name)
				if err := m.WaitIno(ctx, c.Ino); err != nil {
					t.Fatalf("wait: %v", err)
				}
				tv.fs.Release(ctx, c.Ino, c.Fh)
				ino, attr, st := tv.fs.Lookup(ctx, tv.dir, name)
				if st != 0 || ino != c.Ino {
					t.Fatalf("after landing: %s is %d (%v), want %d", name, ino, st, c.Ino)
				}
				if attr.Mode != 0o640 || attr.Uid != 1000 || attr.Gid != 1000 {
					t.Fatalf("mode/owner not applied: %o %d %d", attr.Mode, attr.Uid, attr.Gid)
				}
				if got := tv.read(t, tv.dir, name); got != "data of "+name {
					t.Fatalf("content %q", got)
				}
			}
			if _, ok, err := m.Create(ctx, tv.dir, strings.Repeat("x", 256), 0o644, 0, 0); ok || !errors.Is(err, syscall.ENAMETOOLONG) {
				t.Fatalf("name of 256 bytes: ok=%v err=%v", ok, err)
			}
			if _, ok, _ := m.Create(ctx, 1, "root-file", 0o644, 0, 0); ok {
				t.Fatal("a directory without a pool answered from a pool")
			}
			s := m.Stats()
			if s.Hits != 5 || s.Landed != 5 || s.Pending != 0 || s.Conflicts != 0 {
				t.Fatalf("stats: %+v", s)
			}
		})
	}
}

// A name taken by another node before the rename lands keeps both files.
func TestConflictKeepsBoth(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			tv := openVolume(t, kind)
			m := tv.open(t, filepath.Join(t.TempDir(), "j.db"), prealloc.Options{PoolSize: 4, RenameDelay: time.Hour})
			defer m.Close(context.Background())
			waitPool(t, m, 4)
			ctx := context.Background()
			c, ok, err := m.Create(ctx, tv.dir, "same.txt", 0o644, 0, 0)
			if !ok || err != nil {
				t.Fatal(ok, err)
			}
			tv.write(t, c.Ino, c.Fh, "mine")
			// "Another node" creates the same name first.
			other, _, ofh, st := tv.fs.CreateOpen(ctx, tv.dir, "same.txt", 0o644)
			if st != 0 {
				t.Fatal(st)
			}
			tv.write(t, other, ofh, "theirs")
			tv.fs.Release(ctx, other, ofh)
			if err := m.WaitIno(ctx, c.Ino); err != nil {
				t.Fatalf("a conflict is not an fsync error: %v", err)
			}
			tv.fs.Release(ctx, c.Ino, c.Fh)
			cn := prealloc.ConflictName("same.txt", m.Node(), c.Ino)
			if got := tv.read(t, tv.dir, "same.txt"); got != "theirs" {
				t.Fatalf("the other node's file: %q", got)
			}
			if got := tv.read(t, tv.dir, cn); got != "mine" {
				t.Fatalf("ours under %s: %q", cn, got)
			}
			s := m.Stats()
			if s.Conflicts != 1 || len(s.RecentConflict) != 1 || s.RecentConflict[0].Landed != cn {
				t.Fatalf("stats: %+v", s)
			}
		})
	}
}

// Killed with renames pending: the next start finishes them and reuses or
// removes the pool.
func TestReplayAfterCrash(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			tv := openVolume(t, kind)
			journal := filepath.Join(t.TempDir(), "j.db")
			m := tv.open(t, journal, prealloc.Options{PoolSize: 6, RenameDelay: time.Hour})
			waitPool(t, m, 6)
			ctx := context.Background()
			want := map[string]uint64{}
			for i := range 3 {
				name := fmt.Sprintf("f%d", i)
				c, ok, err := m.Create(ctx, tv.dir, name, 0o600, 0, 0)
				if !ok || err != nil {
					t.Fatal(ok, err)
				}
				tv.write(t, c.Ino, c.Fh, name)
				tv.fs.Release(ctx, c.Ino, c.Fh)
				want[name] = c.Ino
			}
			m.Abandon()
			if len(tv.names(t, tv.dir)) != 0 {
				t.Fatalf("renames landed before the crash: %v", tv.names(t, tv.dir))
			}
			m2 := tv.open(t, journal, prealloc.Options{PoolSize: 6})
			// The name answers at once: pending in the manager, or already
			// landed by a renamer that beat this check.
			if ino, ok := m2.Lookup(tv.dir, "f1"); ok && ino != want["f1"] {
				t.Fatalf("a replayed name answers with inode %d, want %d", ino, want["f1"])
			} else if !ok && !slices.Contains(tv.names(t, tv.dir), "f1") {
				t.Fatalf("a replayed name must answer lookups at once: neither pending nor landed (%v)", tv.names(t, tv.dir))
			}
			for name, ino := range want {
				if err := m2.WaitIno(ctx, ino); err != nil {
					t.Fatal(err)
				}
				if got := tv.read(t, tv.dir, name); got != name {
					t.Fatalf("%s: %q", name, got)
				}
			}
			waitPool(t, m2, 6)
			if err := m2.Close(ctx); err != nil {
				t.Fatal(err)
			}
			// Pre-allocation turned off for the directory: its pool goes away.
			m3 := tv.open(t, journal, prealloc.Options{Dirs: map[uint64]string{}})
			deadline := time.Now().Add(10 * time.Second)
			for {
				hidden, _, _ := tv.fs.Lookup(ctx, 1, prealloc.HiddenDir)
				node, _, _ := tv.fs.Lookup(ctx, hidden, m3.Node())
				pd, _, st := tv.fs.Lookup(ctx, node, fmt.Sprintf("d%d", tv.dir))
				if st != 0 {
					t.Fatal(st)
				}
				if n := tv.names(t, pd); len(n) == 0 {
					break
				} else if time.Now().After(deadline) {
					t.Fatalf("pool files left: %v", n)
				}
				time.Sleep(20 * time.Millisecond)
			}
			_ = m3.Close(ctx)
		})
	}
}

func TestDirectoryDeletedWhilePending(t *testing.T) {
	tv := openVolume(t, "sqlite")
	m := tv.open(t, filepath.Join(t.TempDir(), "j.db"), prealloc.Options{PoolSize: 2, RenameDelay: time.Hour})
	defer m.Close(context.Background())
	waitPool(t, m, 2)
	ctx := context.Background()
	c, ok, err := m.Create(ctx, tv.dir, "orphan", 0o644, 0, 0)
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	tv.write(t, c.Ino, c.Fh, "keep me")
	tv.fs.Release(ctx, c.Ino, c.Fh)
	// Another node removes the (for it, empty) directory.
	if st := tv.vol.VFS.Rmdir(vfs.NewLogContext(meta.NewContext(1, 0, []uint32{0})), 1, "video"); st != 0 {
		t.Fatal(st)
	}
	if err := m.WaitIno(ctx, c.Ino); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("fsync after the directory went away: %v, want ENOENT", err)
	}
	s := m.Stats()
	if s.Lost != 1 || len(s.RecentConflict) != 1 {
		t.Fatalf("stats: %+v", s)
	}
	hidden, _, _ := tv.fs.Lookup(ctx, 1, prealloc.HiddenDir)
	node, _, _ := tv.fs.Lookup(ctx, hidden, m.Node())
	lost, _, st := tv.fs.Lookup(ctx, node, "lost+found")
	if st != 0 {
		t.Fatal(st)
	}
	if got := tv.read(t, lost, s.RecentConflict[0].Landed); got != "keep me" {
		t.Fatalf("kept file: %q", got)
	}
}

func TestCorruptJournalRefusesAndKeepsEverything(t *testing.T) {
	tv := openVolume(t, "sqlite")
	journal := filepath.Join(t.TempDir(), "j.db")
	m := tv.open(t, journal, prealloc.Options{PoolSize: 3, RenameDelay: time.Hour})
	waitPool(t, m, 3)
	ctx := context.Background()
	c, ok, err := m.Create(ctx, tv.dir, "pending", 0o644, 0, 0)
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	tv.fs.Release(ctx, c.Ino, c.Fh)
	m.Abandon()

	for _, tc := range []struct {
		name string
		mess func(b []byte)
	}{
		{"meta pages", func(b []byte) { copy(b[0:], bytes.Repeat([]byte{0xA5}, 8192)) }},
		{"data pages", func(b []byte) {
			for i := 2 * 4096; i < len(b); i += 4096 {
				copy(b[i:], bytes.Repeat([]byte{0x5A}, 64))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig, err := os.ReadFile(journal)
			if err != nil {
				t.Fatal(err)
			}
			bad := append([]byte(nil), orig...)
			tc.mess(bad)
			if err := os.WriteFile(journal, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(journal, orig, 0o600)
			_, err = prealloc.Open(ctx, prealloc.Options{JournalPath: journal, Volume: tv.fs, Dirs: map[uint64]string{tv.dir: "/video"}})
			var ce *prealloc.CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("open of a corrupt journal: %v, want a CorruptError", err)
			}
			t.Logf("error: %v", err)
			after, _ := os.ReadFile(journal)
			if !bytes.Equal(after, bad) {
				t.Fatal("the corrupt journal was changed")
			}
		})
	}
	// Nothing was deleted: the pending file and the pool are still there, and
	// the intact journal finishes the work.
	m2 := tv.open(t, journal, prealloc.Options{PoolSize: 3})
	defer m2.Close(ctx)
	if err := m2.WaitIno(ctx, c.Ino); err != nil {
		t.Fatal(err)
	}
	if ino, _, st := tv.fs.Lookup(ctx, tv.dir, "pending"); st != 0 || ino != c.Ino {
		t.Fatalf("pending file after repair: %d %v", ino, st)
	}
}

func TestPoolExhaustedFallsBack(t *testing.T) {
	tv := openVolume(t, "sqlite")
	m := tv.open(t, filepath.Join(t.TempDir(), "j.db"), prealloc.Options{PoolSize: 2, Fillers: 1})
	defer m.Close(context.Background())
	waitPool(t, m, 2)
	ctx := context.Background()
	var hits, misses int
	for i := range 40 {
		start := time.Now()
		c, ok, err := m.Create(ctx, tv.dir, fmt.Sprintf("n%d", i), 0o644, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("create blocked on an empty pool")
		}
		if ok {
			hits++
			tv.fs.Release(ctx, c.Ino, c.Fh)
		} else {
			misses++
		}
	}
	s := m.Stats()
	if misses == 0 || uint64(misses) != s.Misses || uint64(hits) != s.Hits {
		t.Fatalf("hits %d misses %d, stats %+v", hits, misses, s)
	}
}

// Concurrent creates share journal commits and each name is taken once.
func TestConcurrentCreates(t *testing.T) {
	tv := openVolume(t, "sqlite")
	m := tv.open(t, filepath.Join(t.TempDir(), "j.db"), prealloc.Options{PoolSize: 64})
	defer m.Close(context.Background())
	waitPool(t, m, 64)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("same%d", i%8)
			c, ok, err := m.Create(ctx, tv.dir, name, 0o644, 0, 0)
			if err != nil {
				t.Error(err)
				return
			}
			if ok {
				mu.Lock()
				got[name]++
				mu.Unlock()
				tv.fs.Release(ctx, c.Ino, c.Fh)
			}
		}()
	}
	wg.Wait()
	for n, k := range got {
		if k > 1 {
			// A second create of a pending name must go the normal way.
			pending := 0
			_ = pending
			if _, ok := m.Lookup(tv.dir, n); ok {
				t.Errorf("%s was answered from the pool %d times", n, k)
			}
		}
	}
	if err := m.WaitDir(ctx, tv.dir); err != nil {
		t.Fatal(err)
	}
	if s := m.Stats(); s.Conflicts != 0 {
		t.Fatalf("conflicts inside one mount: %+v", s)
	}
}
