package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// twoNodes mounts one Redis volume twice, each node through its own
// toxiproxy proxy with latency ms added to every reply, so that a test can
// break one node's connection. It returns the nodes, their metrics
// addresses and the proxies' control.
type sharedNode struct {
	m     *Mount
	addr  string // metrics
	proxy string // toxiproxy proxy name
}

func twoNodes(t *testing.T, name string, latencyMs int, extra ...string) (a, b sharedNode, toxi func(method, path, body string)) {
	t.Helper()
	redisHostPort := redisAddr(t)
	direct, _ := formatShared(t, name)
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
		m := startMount(t, MountOpts{Meta: strings.Replace(direct, redisHostPort, proxy, 1),
			Extra: append([]string{"--metrics", addr, "--auto-tag=false"}, extra...)})
		return sharedNode{m: m, addr: addr, proxy: pname}
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
	if d := local1 - local0; d < float64(rounds)*0.9 {
		t.Errorf("A answered only %v of the %d opens of its trusted copies without the metadata engine", d, rounds)
	}
	waits := metric(t, b.addr, "disgrafs_coherence_writer_waits_total")
	t.Logf("%d rounds in %v; A answered %v opens locally; B's changes waited for A %v times; A's trust lapsed %v times", rounds, time.Since(start).Round(time.Millisecond), local1-local0, waits,
		metric(t, a.addr, "disgrafs_coherence_fallbacks_total"))
	if waits < float64(rounds) {
		t.Errorf("B waited for A %v times in %d rounds: its changes did not wait for the node holding the file", waits, rounds)
	}
	if st := status(t, a.m); st.Cache == nil || st.Cache.Coherence.Mode != "stream" || !st.Cache.Coherence.Trusted {
		t.Errorf("status of A says %+v, want the stream, trusted", st.Cache)
	}
}

// TestCoherenceSharedChannelBroken: A's connection to Redis stalls without
// closing (toxiproxy holds every byte) or is cut, while B changes files A
// holds: B's change waits for A's lease to end, A's trust lapses (counted),
// and A's next open after recovery sees the change; trust comes back.
func TestCoherenceSharedChannelBroken(t *testing.T) {
	needRoot(t)
	a, b, toxi := twoNodes(t, "broken", 1)
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
