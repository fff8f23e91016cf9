package tests

// Hostile input and secrets: passwords never appear in logs, status, ps or
// metrics; the metrics listener binds loopback by default; the control
// socket refuses other users.

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/disgrafs/disgrafs/control"
)

// TestSecretsNeverShown mounts a volume on a password-protected Redis with
// META_PASSWORD and looks for the password everywhere the daemon speaks.
func TestSecretsNeverShown(t *testing.T) {
	needRoot(t)
	const pw = "Hunter2-secret-9f3a"
	rs := startRedisWith(t, "--requirepass", pw)
	meta := fmt.Sprintf("redis://%s/1", rs.addr())
	env := []string{"META_PASSWORD=" + pw}
	cmd := exec.Command(binary(t), "format", "--meta", meta, "--storage", "file", "--bucket", t.TempDir(), "secrets")
	cmd.Env = append(testEnv(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	if strings.Contains(string(out), pw) {
		t.Fatalf("format printed the password:\n%s", out)
	}
	addr := freeMetricsAddr(t)
	m := startMount(t, MountOpts{Meta: meta, Env: env, Extra: []string{"-v", "--metrics", addr}})
	if err := os.WriteFile(m.Path("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A URL carrying the password (not recommended, but masked) on a
	// second mount: status and logs mask it.
	urlMeta := fmt.Sprintf("redis://:%s@%s/1", pw, rs.addr())
	m2 := startMount(t, MountOpts{Meta: urlMeta, Extra: []string{"-v", "--metrics", "off"}})
	places := map[string]string{}
	for i, mm := range []*Mount{m, m2} {
		s, err := run(t, "status", mm.Dir)
		if err != nil {
			t.Fatalf("status: %v\n%s", err, s)
		}
		places[fmt.Sprintf("status of mount %d", i+1)] = s
		js, _ := run(t, "status", "--json", mm.Dir)
		places[fmt.Sprintf("status --json of mount %d", i+1)] = js
		st, _ := run(t, "stats", "-c", "1", mm.Dir)
		places[fmt.Sprintf("stats of mount %d", i+1)] = st
	}
	// The change channel authenticates with the same password.
	for i := 1; i <= 2; i++ {
		if st := places[fmt.Sprintf("status of mount %d", i)]; !regexp.MustCompile(`Open check:\s+stream`).MatchString(st) {
			t.Errorf("mount %d has no change stream with a password-protected Redis:\n%s", i, st)
		}
	}
	text, _ := scrape(t, addr)
	places["metrics"] = text
	ps, err := exec.Command("ps", "-eo", "args").CombinedOutput()
	if err != nil {
		t.Fatalf("ps: %v", err)
	}
	// The second mount put the password on its own command line: only the
	// first mount's processes count for ps.
	var lines []string
	for _, l := range strings.Split(string(ps), "\n") {
		if !strings.Contains(l, m2.Dir) {
			lines = append(lines, l)
		}
	}
	places["ps"] = strings.Join(lines, "\n")
	m.Unmount()
	m2.Unmount()
	places["log of mount 1"] = m.Log()
	places["log of mount 2"] = m2.Log()
	for where, text := range places {
		if strings.Contains(text, pw) {
			i := strings.Index(text, pw)
			t.Errorf("the password appears in %s: ...%s...", where, text[max(0, i-80):min(len(text), i+len(pw)+20)])
		}
	}
	if !strings.Contains(places["status of mount 2"], "****") && !strings.Contains(places["status of mount 2"], "redis://") {
		t.Logf("status of a URL with a password:\n%s", places["status of mount 2"])
	}
}

// startRedisWith starts a redis-server of the test's own with more options.
func startRedisWith(t *testing.T, extra ...string) *redisProc {
	t.Helper()
	needTool(t, "redis-server")
	port := freePort(t)
	if v := os.Getenv("DISGRAFS_FAULT_REDIS_PORT"); v != "" {
		fmt.Sscan(v, &port)
	}
	r := &redisProc{t: t, port: port, dir: t.TempDir()}
	// Registered first: a server that starts but never answers is stopped too.
	t.Cleanup(func() {
		if r.cmd != nil {
			_ = r.cmd.Process.Signal(syscall.SIGCONT)
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
		}
	})
	r.start(extra...)
	return r
}

// TestListenersClosed: the metrics endpoint binds loopback by default, and
// the control socket is 0600 in a 0700 directory and refuses other users
// even when its file permissions would let them in.
func TestListenersClosed(t *testing.T) {
	needRoot(t)
	// The default address, without --metrics.
	d := startMountDefaultMetrics(t)
	s := status(t, d)
	if !strings.HasPrefix(s.MetricsAddr, "127.0.0.1:") {
		t.Errorf("the default metrics address is %q, want loopback", s.MetricsAddr)
	}
	p := control.PathsFor(d.Dir)
	for path, want := range map[string]os.FileMode{p.Socket: 0o600, p.Dir: 0o700} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", path, st.Mode().Perm(), want)
		}
	}
	if err := asOther("get-status", p.Socket); err == nil {
		t.Errorf("another user reached the control socket")
	}
	// Open the file permissions: the daemon still refuses the peer by uid.
	dirMode, _ := os.Stat(p.Dir)
	if err := os.Chmod(p.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.Socket, 0o666); err != nil {
		t.Fatal(err)
	}
	err := asOther("get-status", p.Socket)
	_ = os.Chmod(p.Socket, 0o600)
	_ = os.Chmod(p.Dir, dirMode.Mode().Perm())
	if err == nil {
		t.Errorf("another user got an answer from the control socket once its file permissions allowed the connection")
	} else if err != syscall.EACCES {
		t.Logf("another user's request: %v", err)
	}
}

// startMountDefaultMetrics mounts without --metrics (the default address,
// 127.0.0.1:9567 or one of the next ten ports).
func startMountDefaultMetrics(t *testing.T) *Mount {
	t.Helper()
	m := startMount(t, MountOpts{})
	// startMount passes --metrics off; mount again with the default.
	m.Unmount()
	args := []string{}
	for i := 0; i < len(m.Args); i++ {
		if m.Args[i] == "--metrics" {
			i++
			continue
		}
		args = append(args, m.Args[i])
	}
	m.Args = args
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	return m
}
