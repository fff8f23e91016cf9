package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const boltPassword = "disgrafs-test"

// boltServer is a Bolt/Cypher server (NornicDB) of one test, so that the test
// may stop and restart it.
type boltServer struct {
	URL    string
	dir    string
	bolt   int
	http   int
	script string
}

func startBolt(t *testing.T) *boltServer {
	t.Helper()
	needTool(t, "curl")
	script, _ := filepath.Abs(filepath.Join("..", "scripts", "nornicdb.sh"))
	out, err := exec.Command(script, "path").CombinedOutput()
	bin := strings.TrimSpace(string(out))
	_, statErr := os.Stat(bin)
	need(t, err == nil && statErr == nil, "NornicDB is not built (scripts/nornicdb.sh build; scripts/test.sh does it)")
	b := &boltServer{dir: t.TempDir(), bolt: freePort(t), http: freePort(t), script: script}
	b.URL = fmt.Sprintf("bolt://127.0.0.1:%d", b.bolt)
	b.start(t)
	t.Cleanup(func() { _ = exec.Command(script, "stop", b.dir).Run() })
	return b
}

func (b *boltServer) start(t *testing.T) {
	t.Helper()
	out, err := exec.Command(b.script, "start", b.dir, fmt.Sprint(b.bolt), fmt.Sprint(b.http), boltPassword).CombinedOutput()
	if err != nil {
		t.Fatalf("start NornicDB: %v\n%s", err, out)
	}
}

func (b *boltServer) stop(t *testing.T) {
	t.Helper()
	if out, err := exec.Command(b.script, "stop", b.dir).CombinedOutput(); err != nil {
		t.Fatalf("stop NornicDB: %v\n%s", err, out)
	}
}

func graphMount(t *testing.T, b *boltServer, meta string) *Mount {
	t.Helper()
	return startMount(t, MountOpts{Meta: meta,
		Extra: []string{"--graph", b.URL, "--graph-user", "admin", "--auto-tag=false"},
		Env:   []string{"DISGRAFS_GRAPH_PASSWORD=" + boltPassword}})
}

// eventually retries fn until it returns nil or the time is up.
func eventually(t *testing.T, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func hasEntry(dir, name string) error {
	out, err := exec.Command("ls", "-1A", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ls %s: %v: %s", dir, err, out)
	}
	for _, n := range strings.Fields(string(out)) {
		if n == name {
			return nil
		}
	}
	return fmt.Errorf("ls %s = %q, want %s in it", dir, out, name)
}

// TestSharedGraphTwoNodes: two daemons mount one shared Redis volume and share
// one Bolt graph: each sees the other's tags in its tag directories.
func TestSharedGraphTwoNodes(t *testing.T) {
	b := startBolt(t)
	meta, _ := formatShared(t, "sharedtags")
	a := graphMount(t, b, meta)
	c := graphMount(t, b, meta)
	if err := os.WriteFile(a.Path("from-a.txt"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, 10*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "cat,shared", a.Path("from-a.txt"))
	eventually(t, 10*time.Second, func() error { return hasEntry(c.Path(".tags", "cat"), "from-a.txt") })
	if got := getTags(t, c.Path("from-a.txt")); got != "cat,shared" {
		t.Fatalf("the xattr on the other node: %q", got)
	}
	if err := os.WriteFile(c.Path("from-c.txt"), []byte("c"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error { return hasEntry(c.Path(".tags"), "shared") })
	sh(t, 10*time.Second, "ln", c.Path("from-c.txt"), c.Path(".tags", "shared")+"/")
	eventually(t, 10*time.Second, func() error { return hasEntry(a.Path(".tags", "shared"), "from-c.txt") })
	out, err := run(t, "find", "--mount", a.Dir, "shared and not cat")
	if err != nil || !strings.Contains(out, "from-c.txt") || strings.Contains(out, "from-a.txt") {
		t.Fatalf("find on node a: %v\n%s", err, out)
	}
}

// TestGraphDown: with the graph server gone, tag directories fail fast instead
// of hanging, tagging still writes the xattr, the mount keeps serving, and
// after the server is back reindex restores the index.
func TestGraphDown(t *testing.T) {
	b := startBolt(t)
	meta, _ := formatShared(t, "graphdown")
	m := graphMount(t, b, meta)
	for _, n := range []string{"one", "two"} {
		if err := os.WriteFile(m.Path(n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, 10*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "before", m.Path("one"))
	eventually(t, 10*time.Second, func() error { return hasEntry(m.Path(".tags", "before"), "one") })

	b.stop(t)
	start := time.Now()
	out, err := exec.Command("ls", m.Path(".tags", "before")).CombinedOutput()
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("ls of a tag directory with the graph down took %s", took)
	} else {
		t.Logf("ls of a tag directory with the graph down: %s, %v %s", took, err, strings.TrimSpace(string(out)))
	}
	if err == nil && !strings.Contains(string(out), "one") {
		t.Fatalf("ls with the graph down: %s", out)
	}
	// Tagging writes the truth anyway.
	start = time.Now()
	sh(t, 30*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "during", m.Path("two"))
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("setfattr with the graph down took %s", took)
	} else {
		t.Logf("setfattr with the graph down: %s", took)
	}
	if got := getTags(t, m.Path("two")); got != "during" {
		t.Fatalf("xattr written while the graph was down: %q", got)
	}
	// Plain file work is unaffected.
	if err := os.WriteFile(m.Path("three"), []byte("3"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := run(t, "status", m.Dir)
	if !strings.Contains(st, "UNAVAILABLE") {
		t.Fatalf("status does not say the graph is unavailable:\n%s", st)
	}

	b.start(t) // a fresh, empty graph
	out2, err := run(t, "reindex", m.Dir)
	if err != nil {
		t.Fatalf("reindex after the graph came back: %v\n%s", err, out2)
	}
	eventually(t, 10*time.Second, func() error { return hasEntry(m.Path(".tags", "during"), "two") })
	eventually(t, 10*time.Second, func() error { return hasEntry(m.Path(".tags", "before"), "one") })
}

// TestGraphSlow: the Bolt server answers slower than the index timeout (a
// toxiproxy in front of it delays every reply by 8 s): tag directories and
// tagging degrade within bounded time, plain file work is unaffected, and
// once the server is fast again the index catches up (reindex).
func TestGraphSlow(t *testing.T) {
	b := startBolt(t)
	addr, toxi := toxiproxy(t, "bolt", fmt.Sprintf("127.0.0.1:%d", b.bolt), fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	meta, _ := formatShared(t, "graphslow")
	m := startMount(t, MountOpts{Meta: meta,
		Extra: []string{"--graph", "bolt://" + addr, "--graph-user", "admin", "--auto-tag=false"},
		Env:   []string{"DISGRAFS_GRAPH_PASSWORD=" + boltPassword}})
	for _, n := range []string{"one", "two"} {
		if err := os.WriteFile(m.Path(n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, 10*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "before", m.Path("one"))
	eventually(t, 10*time.Second, func() error { return hasEntry(m.Path(".tags", "before"), "one") })

	toxi("POST", "/proxies/bolt/toxics", `{"name":"slow","type":"latency","stream":"downstream","attributes":{"latency":8000}}`)
	timed := func(what string, limit time.Duration, fn func() error) {
		t.Helper()
		start := time.Now()
		err := fn()
		took := time.Since(start)
		t.Logf("%s with the graph slow: %s (%v)", what, took.Round(time.Millisecond), err)
		if took > limit {
			t.Fatalf("%s with the graph slow took %s (limit %s)", what, took, limit)
		}
	}
	timed("ls of a tag directory", 25*time.Second, func() error {
		out, err := exec.Command("ls", m.Path(".tags", "before")).CombinedOutput()
		if err == nil && !strings.Contains(string(out), "one") {
			return fmt.Errorf("listed %q without the tagged file", out)
		}
		return err
	})
	timed("setfattr", 25*time.Second, func() error {
		return exec.Command("setfattr", "-n", "user.xdg.tags", "-v", "during", m.Path("two")).Run()
	})
	if got := getTags(t, m.Path("two")); got != "during" {
		t.Fatalf("xattr written while the graph was slow: %q", got)
	}
	// The first change waited for the index until its timeout; the service
	// then knows the graph is unavailable and the next ones do not wait.
	timed("a second setfattr", 2*time.Second, func() error {
		return exec.Command("setfattr", "-n", "user.xdg.tags", "-v", "during,again", m.Path("two")).Run()
	})
	timed("a plain write and read", 3*time.Second, func() error {
		if err := os.WriteFile(m.Path("three"), []byte("3"), 0o644); err != nil {
			return err
		}
		_, err := os.ReadFile(m.Path("one"))
		return err
	})

	toxi("DELETE", "/proxies/bolt/toxics/slow", "")
	eventually(t, 60*time.Second, func() error {
		if out, err := run(t, "reindex", m.Dir); err != nil {
			return fmt.Errorf("reindex once the graph is fast again: %v\n%s", err, out)
		}
		return hasEntry(m.Path(".tags", "during"), "two")
	})
}

// TestGraphBadCredentials: a wrong graph password stops the mount with a clear
// message that does not show the password.
func TestGraphBadCredentials(t *testing.T) {
	b := startBolt(t)
	meta, _ := formatShared(t, "badcreds")
	_, err := tryMount(t, MountOpts{Meta: meta, Extra: []string{"--graph", b.URL, "--graph-user", "admin"},
		Env: []string{"DISGRAFS_GRAPH_PASSWORD=wrong-password-123"}})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "auth") {
		t.Fatalf("want an authentication error, got %v", err)
	}
	if strings.Contains(err.Error(), "wrong-password-123") {
		t.Fatal("the password appears in the output")
	}
}
