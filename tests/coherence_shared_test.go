package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"

	"github.com/disgrafs/disgrafs/volume"
)

// twoNodes mounts one Redis volume twice, each node through its own
// toxiproxy proxy with latency ms added to every reply, so that a test can
// break one node's connection. It returns the nodes, their metrics
// addresses and the proxies' control.
type sharedNode struct {
	m     *Mount
	addr  string // metrics
	proxy string // toxiproxy proxy name
	meta  string // the metadata URL it mounted
}

func twoNodes(t *testing.T, name string, latencyMs int, extra ...string) (a, b sharedNode, toxi func(method, path, body string)) {
	t.Helper()
	redisHostPort := redisAddr(t)
	direct, _ := formatShared(t, name)
	return twoNodesAt(t, redisHostPort, direct, latencyMs, extra...)
}

// twoNodesAt is twoNodes on a volume already formatted at direct, whose
// Redis server is redisHostPort.
func twoNodesAt(t *testing.T, redisHostPort, direct string, latencyMs int, extra ...string) (a, b sharedNode, toxi func(method, path, body string)) {
	t.Helper()
	proxyA, toxi := toxiproxy(t, "node-a", redisHostPort, "")
	host, port, _ := strings.Cut(proxyA, ":")
	p, _ := strconv.Atoi(port)
	proxyB := fmt.Sprintf("%s:%d", host, p+1)
	toxi("POST", "/proxies", fmt.Sprintf(`{"name":"node-b","listen":%q,"upstream":%q,"enabled":true}`, proxyB, redisHostPort))
	for _, n := range []string{"node-a", "node-b"} {
		if latencyMs > 0 {
			toxi("POST", "/proxies/"+n+"/toxics", fmt.Sprintf(`{"name":"lat","type":"latency","stream":"downstream","attributes":{"latency":%d}}`, latencyMs))
		}
	}
	mount := func(proxy, pname string) sharedNode {
		addr := freeMetricsAddr(t)
		meta := strings.Replace(direct, redisHostPort, proxy, 1)
		m := startMount(t, MountOpts{Meta: meta, Extra: append([]string{"--metrics", addr, "--auto-tag=false"}, extra...)})
		return sharedNode{m: m, addr: addr, proxy: pname, meta: meta}
	}
	a, b = mount(proxyA, "node-a"), mount(proxyB, "node-b")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node A's log, last lines:\n%s\nnode B's log, last lines:\n%s", tail(a.m.Log(), 40), tail(b.m.Log(), 400))
		}
	})
	return a, b, toxi
}

// waitTrusted waits until the node's change channel is current.
func waitTrusted(t *testing.T, n sharedNode) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if v := metric(t, n.addr, "disgrafs_coherence_trusted"); v != 1 {
			return fmt.Errorf("%s: the change channel is not current", n.proxy)
		}
		return nil
	})
}

// coherenceRounds is the number of change rounds (DISGRAFS_COHERENCE_ROUNDS,
// 200 by default; 1,000 in the long mode).
func coherenceRounds(t *testing.T) int {
	if v := os.Getenv("DISGRAFS_COHERENCE_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DISGRAFS_COHERENCE_ROUNDS=%q: want a positive count", v)
		}
		return n
	}
	return 200
}

// sharedChange is one way a writer on another node changes a file: it
// returns the file's new content.
type sharedChange struct {
	name   string
	change func(t *testing.T, path string, old []byte, round int) []byte
}

var sharedChanges = []sharedChange{
	{"overwrite, same length and mtime", func(t *testing.T, path string, old []byte, round int) []byte {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte{byte('a' + round%26)}, len(old))
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		return data
	}},
	{"truncate and write", func(t *testing.T, path string, old []byte, round int) []byte {
		data := []byte(fmt.Sprintf("round %d truncated", round))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return data
	}},
	{"rename over", func(t *testing.T, path string, old []byte, round int) []byte {
		data := bytes.Repeat([]byte(fmt.Sprintf("renamed %d;", round)), 100)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		return data
	}},
	{"unlink and recreate", func(t *testing.T, path string, old []byte, round int) []byte {
		data := bytes.Repeat([]byte(fmt.Sprintf("recreated %d;", round)), 50)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return data
	}},
}

// TestCoherenceSharedCloseToOpen: two nodes on one Redis volume, 10 ms to
// Redis. Node A holds a warm data set and opens it without asking the
// metadata engine; node B changes a file (overwrite of the same length and
// mtime, truncate, rename over, unlink and recreate) and, once its close or
// rename returned, the test (the signal) has A open and read the file: A
// never reads the old bytes.
func TestCoherenceSharedCloseToOpen(t *testing.T) {
	needRoot(t)
	a, b, _ := twoNodes(t, "c2o", 10, "--entry-cache", "0")
	rounds := coherenceRounds(t)
	files := dataset(t, b.m.Path("ds"), "c2o", rounds, 16<<10, 31)
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, filepath.Base(p))
	}
	warmup(t, a.m.Path("ds"))
	waitTrusted(t, a)
	waitTrusted(t, b)
	onA := func(name string) string { return a.m.Path("ds", name) }
	for _, n := range names { // checked opens: A trusts its copies from here
		if got, err := os.ReadFile(onA(n)); err != nil || !bytes.Equal(got, files[b.m.Path("ds", n)]) {
			t.Fatalf("%s on A before any change: %v", n, err)
		}
	}
	local0, _ := coherenceOpens(t, a.addr)
	start := time.Now()
	for i, n := range names[:rounds] {
		pb := b.m.Path("ds", n)
		// A opens the file from its trusted copy...
		if got, err := os.ReadFile(onA(n)); err != nil || !bytes.Equal(got, files[pb]) {
			t.Fatalf("round %d: %s on A before the change: %v", i, n, err)
		}
		// ...B changes it, and then A opens it again.
		c := sharedChanges[i%len(sharedChanges)]
		want := c.change(t, pb, files[pb], i)
		got, err := os.ReadFile(onA(n))
		if err != nil {
			t.Fatalf("round %d (%s): A reading %s after B's change: %v", i, c.name, n, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round %d (%s): A read %d stale bytes %q..., want %q...\nA's log:\n%s", i, c.name, len(got), head(got), head(want), tail(a.m.Log(), 60))
		}
	}
	local1, _ := coherenceOpens(t, a.addr)
	// A lapse of trust on a loaded machine (a renewal late by 1.5 s) makes
	// some opens ask the engine: correct, but it must stay the exception.
	if d := local1 - local0; d < float64(rounds)/2 {
		t.Errorf("A answered only %v of the %d opens of its trusted copies without the metadata engine", d, rounds)
	}
	waits := metric(t, b.addr, "disgrafs_coherence_writer_waits_total")
	t.Logf("%d rounds in %v; A answered %v opens locally; B's changes waited for A %v times; A's trust lapsed %v times", rounds, time.Since(start).Round(time.Millisecond), local1-local0, waits,
		metric(t, a.addr, "disgrafs_coherence_fallbacks_total"))
	if waits < float64(rounds)/2 {
		t.Errorf("B waited for A %v times in %d rounds: its changes did not wait for the node holding the file", waits, rounds)
	}
	if st := status(t, a.m); st.Cache == nil || st.Cache.Coherence.Mode != "stream" || !st.Cache.Coherence.Trusted {
		t.Errorf("status of A says %+v, want the stream, trusted", st.Cache)
	}
	// The dashboard's change-stream panels name metrics a node of a Redis
	// volume exports (TestObservability, on the embedded volume, skips them).
	exported := sampleNames(families(t, b.addr))
	panels, _ := dashboardQueries(t, filepath.Join("..", "deploy", "grafana", "disgrafs.json"))
	stream := regexp.MustCompile(streamMetrics)
	checked := 0
	for title, qs := range panels {
		for _, q := range qs {
			if !stream.MatchString(q) {
				continue
			}
			checked++
			for _, r := range metricRef.FindAllString(q, -1) {
				if !exported[r] {
					t.Errorf("panel %q: %s is not exported by a node of a Redis volume", title, r)
				}
			}
		}
	}
	if checked == 0 {
		t.Error("the dashboard has no change-stream panel")
	}
}

// streamMetrics matches the metrics only a volume with a change stream has.
const streamMetrics = `disgrafs_coherence_(invalidations_sent|invalidations_received|tracked_changes|fallbacks|writer_wait|writer_waits|stream_last)`

// TestCoherenceSharedChannelBroken: A's connection to Redis stalls without
// closing (toxiproxy holds every byte) or is cut, or Redis restarts, while B
// changes files A holds: B's change waits for A's lease to end (or for
// nothing, when Redis forgot the leases), A's trust lapses (counted), and
// A's next open after recovery sees the change; trust comes back.
func TestCoherenceSharedChannelBroken(t *testing.T) {
	needRoot(t)
	r := startRedis(t) // its own server, to restart; data kept in an append-only file
	direct := "redis://" + r.addr() + "/1"
	if out, err := run(t, "format", "--meta", direct, "--storage", "file", "--bucket", t.TempDir(), "broken"); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	a, b, toxi := twoNodesAt(t, r.addr(), direct, 1)
	files := dataset(t, b.m.Path("ds"), "broken", 12, 8<<10, 41)
	warmup(t, a.m.Path("ds"))
	waitTrusted(t, a)
	verify(t, remap(files, b.m.Dir, a.m.Dir))
	names := sortedKeys(files)
	breaks := []struct {
		name        string
		break_, fix func()
	}{
		{"stall", func() {
			toxi("POST", "/proxies/node-a/toxics", `{"name":"stall","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
		}, func() { toxi("DELETE", "/proxies/node-a/toxics/stall", "") }},
		{"cut", func() { toxi("POST", "/proxies/node-a", `{"enabled":false}`) },
			func() { toxi("POST", "/proxies/node-a", `{"enabled":true}`) }},
		{"Redis restarted", func() { r.stop(); r.start() }, func() {}},
	}
	for i, br := range breaks {
		fallbacks0 := metric(t, a.addr, "disgrafs_coherence_fallbacks_total")
		pb := names[i]
		pa := filepath.Join(a.m.Dir, strings.TrimPrefix(pb, b.m.Dir))
		if got, err := os.ReadFile(pa); err != nil || !bytes.Equal(got, files[pb]) {
			t.Fatalf("%s: A before: %v", br.name, err)
		}
		br.break_()
		began := time.Now()
		want := []byte("changed while A was cut off: " + br.name)
		if err := os.WriteFile(pb, want, 0o644); err != nil {
			t.Fatalf("%s: B writing: %v", br.name, err)
		}
		t.Logf("%s: B's write and close took %v", br.name, time.Since(began).Round(time.Millisecond))
		br.fix()
		got, err := os.ReadFile(pa)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: A after recovery read %q, %v; want %q\n%s", br.name, head(got), err, want, tail(a.m.Log(), 60))
		}
		if n := metric(t, a.addr, "disgrafs_coherence_fallbacks_total"); n <= fallbacks0 {
			t.Errorf("%s: A's fallbacks %v, want more than %v", br.name, n, fallbacks0)
		}
		waitTrusted(t, a)
	}
}

func head(b []byte) []byte {
	if len(b) > 24 {
		return b[:24]
	}
	return b
}

func sortedKeys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// plainWriter is a JuiceFS client that is not DisGraFS (as the juicefs CLI
// is): JuiceFS's VFS as a library, in the test process, which publishes
// nothing on the change stream.
type plainWriter struct {
	t   *testing.T
	vol *volume.Volume
	ctx vfs.Context
}

func newPlainWriter(t *testing.T, metaURL string) *plainWriter {
	t.Helper()
	ctx := context.Background()
	conn, err := volume.Connect(ctx, metaURL, volume.ConnectOptions{Mountpoint: "plain-writer"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := conn.Open(ctx, volume.Options{Mountpoint: "plain-writer", CacheDir: t.TempDir(), BufferSize: 32 << 20,
		StatePath: filepath.Join(t.TempDir(), "state.json")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return &plainWriter{t: t, vol: v, ctx: vfs.NewLogContext(meta.NewContext(1, 0, []uint32{0}))}
}

// lookup resolves a path relative to the volume's root.
func (w *plainWriter) lookup(rel string) (parent meta.Ino, name string, ino meta.Ino) {
	w.t.Helper()
	parent = meta.RootInode
	parts := strings.Split(strings.Trim(rel, "/"), "/")
	for _, p := range parts[:len(parts)-1] {
		e, errno := w.vol.VFS.Lookup(w.ctx, parent, p)
		if errno != 0 {
			w.t.Fatalf("plain writer: lookup %s: %v", p, errno)
		}
		parent = e.Inode
	}
	name = parts[len(parts)-1]
	if e, errno := w.vol.VFS.Lookup(w.ctx, parent, name); errno == 0 {
		ino = e.Inode
	}
	return parent, name, ino
}

// write replaces a file's content (O_TRUNC), creating it if needed.
func (w *plainWriter) write(rel string, data []byte) {
	w.t.Helper()
	parent, name, ino := w.lookup(rel)
	var fh uint64
	var errno syscall.Errno
	if ino == 0 {
		var e *meta.Entry
		e, fh, errno = w.vol.VFS.Create(w.ctx, parent, name, 0o644, 0, syscall.O_WRONLY)
		if errno == 0 {
			ino = e.Inode
		}
	} else {
		_, fh, errno = w.vol.VFS.Open(w.ctx, ino, syscall.O_WRONLY|syscall.O_TRUNC)
	}
	if errno != 0 {
		w.t.Fatalf("plain writer: open %s: %v", rel, errno)
	}
	// JuiceFS's open leaves O_TRUNC to the caller (the kernel sends a
	// truncate).
	var attr meta.Attr
	if errno = w.vol.VFS.Truncate(w.ctx, ino, 0, fh, &attr); errno == 0 {
		errno = w.vol.VFS.Write(w.ctx, ino, data, 0, fh)
	}
	if errno == 0 {
		errno = w.vol.VFS.Flush(w.ctx, ino, fh, 0)
	}
	w.vol.VFS.Release(w.ctx, ino, fh)
	if errno != 0 {
		w.t.Fatalf("plain writer: write %s: %v", rel, errno)
	}
}

// remove unlinks a file.
func (w *plainWriter) remove(rel string) {
	w.t.Helper()
	parent, name, _ := w.lookup(rel)
	if errno := w.vol.VFS.Unlink(w.ctx, parent, name); errno != 0 {
		w.t.Fatalf("plain writer: unlink %s: %v", rel, errno)
	}
}

// TestCoherenceSharedPlainWriter: a writer that publishes nothing (a JuiceFS
// client that is not DisGraFS) truncates and rewrites files node A holds
// trusted, or unlinks and recreates them: Redis key tracking reports the changed keys, and A sees
// each change after a bounded delay, measured here.
func TestCoherenceSharedPlainWriter(t *testing.T) {
	needRoot(t)
	a, b, _ := twoNodes(t, "plain", 1, "--entry-cache", "0")
	files := dataset(t, b.m.Path("ds"), "plain", 20, 8<<10, 51)
	warmup(t, a.m.Path("ds"))
	waitTrusted(t, a)
	verify(t, remap(files, b.m.Dir, a.m.Dir))
	verify(t, remap(files, b.m.Dir, a.m.Dir)) // trusted from here
	w := newPlainWriter(t, b.meta)
	var delays []time.Duration
	for i, p := range sortedKeys(files) {
		rel := strings.TrimPrefix(p, b.m.Dir)
		pa := a.m.Path(strings.TrimPrefix(rel, "/"))
		want := []byte(fmt.Sprintf("plain writer, round %d", i))
		if i%2 == 1 { // a new inode under the old name
			w.remove(rel)
		}
		w.write(rel, want)
		written := time.Now()
		for {
			got, err := os.ReadFile(pa)
			if err == nil && bytes.Equal(got, want) {
				break
			}
			if time.Since(written) > 10*time.Second {
				t.Fatalf("round %d: A still reads %q (%v) 10 s after a plain writer's change", i, head(got), err)
			}
			time.Sleep(time.Millisecond)
		}
		delays = append(delays, time.Since(written))
	}
	slices.Sort(delays)
	t.Logf("a plain writer's change seen by A after: p50 %v, max %v (%d changes); changes Redis key tracking reported to A: %v",
		delays[len(delays)/2], delays[len(delays)-1], len(delays), metric(t, a.addr, "disgrafs_coherence_tracked_changes_total"))
}
