package tests

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func waitClosesLanded(t *testing.T, m *Mount) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		p := preallocStatus(t, m)
		if p.ClosesPending == 0 && p.Pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("async closes still pending: %+v\n%s", p, m.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeClose(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// --prealloc-async-close: closes answered early keep every promise that
// this mount can see (length, content on reopen, fsync), other nodes see
// the data once the commits land, and unmount drains them.
func TestPreallocAsyncClose(t *testing.T) {
	meta, _ := formatShared(t, "preasync")
	args := []string{"--prealloc", "cams", "--prealloc-pool", "64", "--prealloc-async-close", "--metrics", "127.0.0.1:9586"}
	a := startMount(t, MountOpts{Meta: meta, Extra: args})
	b := startMount(t, MountOpts{Meta: meta})
	waitPreallocPool(t, a, 64)
	content := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("frame %03d;", i)), 400+i) }

	for i := range 40 {
		if err := writeClose(a.Path("cams", fmt.Sprintf("f%03d", i)), content(i)); err != nil {
			t.Fatal(err)
		}
	}
	// This mount: the length at once, the content on reopen.
	for i := range 40 {
		p := a.Path("cams", fmt.Sprintf("f%03d", i))
		fi, err := os.Stat(p)
		if err != nil || fi.Size() != int64(len(content(i))) {
			t.Fatalf("stat %s right after an async close: %v %v", p, fi, err)
		}
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, content(i)) {
			t.Fatalf("reopen %s after an async close: %d bytes, %v", p, len(got), err)
		}
	}
	// dup'd descriptors: the close of the first copy is answered early, the
	// second keeps writing, and the data of both lands.
	f, err := os.Create(a.Path("cams", "dup"))
	if err != nil {
		t.Fatal(err)
	}
	fd2, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("one;")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("first close of a dup'd handle: %v", err)
	}
	if _, err := syscall.Write(fd2, []byte("two")); err != nil {
		t.Fatalf("write through the dup after the first close: %v", err)
	}
	if err := syscall.Close(fd2); err != nil {
		t.Fatal(err)
	}
	// A locked handle closes synchronously (the close releases the lock).
	lf, err := os.Create(a.Path("cams", "locked"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := lf.Write([]byte("locked")); err != nil {
		t.Fatal(err)
	}
	if err := lf.Close(); err != nil {
		t.Fatal(err)
	}
	// fsync through a new descriptor waits for the commit and the rename:
	// the other node sees the file right after.
	if err := writeClose(a.Path("cams", "synced"), []byte("durable")); err != nil {
		t.Fatal(err)
	}
	sf, err := os.Open(a.Path("cams", "synced"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sf.Sync(); err != nil {
		t.Fatalf("fsync after an async close: %v", err)
	}
	sf.Close()
	if got, err := os.ReadFile(b.Path("cams", "synced")); err != nil || string(got) != "durable" {
		t.Fatalf("the other node after fsync: %q %v", got, err)
	}

	waitClosesLanded(t, a)
	p := preallocStatus(t, a)
	if !p.AsyncClose || p.ClosesLanded < 42 || p.CloseErrors != 0 || p.ClosesLost != 0 {
		t.Fatalf("status after the commits landed: %+v", p)
	}
	for i := range 40 {
		if got, err := os.ReadFile(b.Path("cams", fmt.Sprintf("f%03d", i))); err != nil || !bytes.Equal(got, content(i)) {
			t.Fatalf("the other node reads f%03d: %d bytes, %v", i, len(got), err)
		}
	}
	for name, want := range map[string]string{"dup": "one;two", "locked": "locked"} {
		if got, err := os.ReadFile(b.Path("cams", name)); err != nil || string(got) != want {
			t.Fatalf("the other node reads %s: %q %v", name, got, err)
		}
	}
	metrics := scrapePort(t, 9586)
	for _, name := range []string{"disgrafs_prealloc_async_closes_total", "disgrafs_prealloc_async_close_pending", "disgrafs_prealloc_async_close_lag_seconds_count"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("metric %s missing", name)
		}
	}

	// Unmount drains: closes answered just before the unmount land.
	for i := range 30 {
		if err := writeClose(a.Path("cams", fmt.Sprintf("last%03d", i)), content(i)); err != nil {
			t.Fatal(err)
		}
	}
	a.Unmount()
	for i := range 30 {
		if got, err := os.ReadFile(b.Path("cams", fmt.Sprintf("last%03d", i))); err != nil || !bytes.Equal(got, content(i)) {
			t.Fatalf("after unmount, the other node reads last%03d: %d bytes, %v", i, len(got), err)
		}
	}
}

// kill -9 while async closes are still committing (metadata behind 30 ms of
// latency): every fsynced file is whole after a remount, and every file
// whose unsynced data was lost is reported by the next mount (log, status);
// none comes up short silently.
func TestPreallocAsyncCloseKill9(t *testing.T) {
	direct, proxied, toxi := metaProxy(t, "preasynckill")
	toxi("POST", "/proxies/meta/toxics", `{"name":"lat","type":"latency","stream":"downstream","attributes":{"latency":30}}`)
	args := []string{"--prealloc", "cams", "--prealloc-pool", "128", "--prealloc-async-close"}
	m := startMount(t, MountOpts{Meta: proxied, Extra: args})
	waitPreallocPool(t, m, 128)
	type written struct {
		name   string
		data   []byte
		synced bool
	}
	var files []written
	for i := range 60 {
		name := fmt.Sprintf("cam%03d", i)
		data := bytes.Repeat([]byte(name), 1000+i)
		f, err := os.Create(m.Path("cams", name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		synced := i%3 == 0
		if synced {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		files = append(files, written{name, data, synced})
	}
	before := preallocStatus(t, m)
	m.Kill9()
	if before.ClosesPending == 0 {
		t.Fatalf("no async close was pending at the kill: the test did not exercise the report: %+v", before)
	}
	t.Logf("at the kill: %d async closes pending, %d landed", before.ClosesPending, before.ClosesLanded)
	if out, err := run(t, "umount", m.Dir); err != nil {
		t.Fatalf("umount of the dead mount: %v\n%s", err, out)
	}
	for i, arg := range m.Args {
		m.Args[i] = strings.Replace(arg, proxied, direct, 1)
	}
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	waitClosesLanded(t, m)
	p := preallocStatus(t, m)
	short := 0
	for _, w := range files {
		got, err := os.ReadFile(m.Path("cams", w.name))
		switch {
		case err == nil && bytes.Equal(got, w.data):
		case w.synced:
			t.Errorf("%s was fsynced before the kill: %d bytes, %v", w.name, len(got), err)
		case err != nil:
			t.Errorf("%s: %v (a closed file's name must survive: its create was journaled)", w.name, err)
		default:
			short++
			if !strings.Contains(m.Log(), "name="+w.name+" ") {
				t.Errorf("%s came up short (%d of %d bytes) without a report in the log", w.name, len(got), len(w.data))
			}
		}
	}
	t.Logf("after the remount: %d files short and reported, status %+v", short, p)
	if uint64(short) != p.ClosesLost {
		t.Errorf("%d files short, status reports %d lost\n%s", short, p.ClosesLost, m.Log())
	}
}
