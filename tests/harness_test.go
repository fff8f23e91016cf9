// Package tests holds the integration suite: every test mounts a real FUSE file
// system with the disgrafs binary ($DISGRAFS_BIN, built by 'make test') and
// drives it with real tools. It needs root and /dev/fuse; a shared Redis comes
// from $DISGRAFS_TEST_REDIS (host:port, started by scripts/test.sh).
//
// A test that cannot run here skips, unless DISGRAFS_REQUIRE_ALL=1 (set by
// .ci/run), which turns every such skip into a failure with the reason.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/daemon"
)

// need skips (or fails, under DISGRAFS_REQUIRE_ALL=1) when a prerequisite is missing.
func need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("DISGRAFS_REQUIRE_ALL") == "1" {
		t.Fatalf("cannot run here: %s (DISGRAFS_REQUIRE_ALL=1 turns this skip into a failure)", why)
	}
	t.Skipf("cannot run here: %s", why)
}

func binary(t testing.TB) string {
	t.Helper()
	b := os.Getenv("DISGRAFS_BIN")
	need(t, b != "", "DISGRAFS_BIN is not set (run 'make test')")
	_, err := os.Stat(b)
	need(t, err == nil, fmt.Sprintf("DISGRAFS_BIN=%s: %v", b, err))
	return b
}

func needRoot(t testing.TB) {
	t.Helper()
	need(t, os.Geteuid() == 0, "needs root to mount FUSE")
	_, err := os.Stat("/dev/fuse")
	need(t, err == nil, "no /dev/fuse")
}

func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	need(t, err == nil, name+" is not installed (scripts/deps.sh installs it)")
	return p
}

// redisAddr returns the test Redis server's address.
func redisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("DISGRAFS_TEST_REDIS")
	need(t, addr != "", "DISGRAFS_TEST_REDIS is not set (scripts/test.sh starts a Redis server)")
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	need(t, err == nil, fmt.Sprintf("Redis at %s: %v", addr, err))
	c.Close()
	return addr
}

var redisDB atomic.Int32

// freshRedisURL returns the URL of a Redis database no running test uses
// (databases 1-15, flushed first).
func freshRedisURL(t testing.TB) string {
	t.Helper()
	addr := redisAddr(t)
	// Tests run one after another and stop their mounts at the end, so the
	// databases are reused round robin (flushed first) once all have been used.
	db := (redisDB.Add(1)-1)%15 + 1
	out, err := exec.Command("redis-cli", "-h", strings.Split(addr, ":")[0], "-p", strings.Split(addr, ":")[1], "-n", fmt.Sprint(db), "flushdb").CombinedOutput()
	if err != nil {
		t.Fatalf("flush redis db %d: %v: %s", db, err, out)
	}
	return fmt.Sprintf("redis://%s/%d", addr, db)
}

// run executes the disgrafs binary and returns its combined output.
func run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = testEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func testEnv() []string {
	return append(os.Environ(), "DISGRAFS_CONFIG=none")
}

// formatShared formats a shared volume on a fresh Redis database with file storage.
func formatShared(t testing.TB, name string) (metaURL, bucket string) {
	t.Helper()
	metaURL = freshRedisURL(t)
	bucket = t.TempDir()
	out, err := run(t, "format", "--meta", metaURL, "--storage", "file", "--bucket", bucket, name)
	if err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	return metaURL, bucket
}

// Mount is a daemon serving a mountpoint, started by a test.
type Mount struct {
	t       testing.TB
	Dir     string
	DataDir string
	Args    []string
	Env     []string
	Wrapper []string
	cmd     *exec.Cmd
	log     *lockedBuffer
	exited  chan struct{}
	waitErr error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// MountOpts configure startMount.
type MountOpts struct {
	Dir     string   // mountpoint; a new temp dir when empty
	DataDir string   // embedded volume directory; a new temp dir when empty
	Meta    string   // shared volume URL; empty mounts the embedded volume
	Extra   []string // more flags
	Env     []string // more environment variables (secrets)
	// Wrapper runs the daemon through a command: Wrapper... DISGRAFS_BIN args...
	Wrapper []string
}

// startMount starts a foreground daemon and waits until it serves. The mount is
// unmounted (and the daemon stopped) at the end of the test.
func startMount(t testing.TB, o MountOpts) *Mount {
	t.Helper()
	m, err := tryMount(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tryMount(t testing.TB, o MountOpts) (*Mount, error) {
	t.Helper()
	needRoot(t)
	binary(t)
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.DataDir == "" && o.Meta == "" {
		o.DataDir = t.TempDir()
	}
	args := []string{"mount", "--metrics", "off"}
	if o.Meta != "" {
		args = append(args, "--meta", o.Meta, "--cache-dir", filepath.Join(t.TempDir(), "cache"))
	} else {
		args = append(args, "--data-dir", o.DataDir)
	}
	args = append(args, o.Extra...)
	args = append(args, o.Dir)
	m := &Mount{t: t, Dir: o.Dir, DataDir: o.DataDir, Args: args, Env: o.Env, Wrapper: o.Wrapper, log: &lockedBuffer{}, exited: make(chan struct{})}
	if err := m.start(); err != nil {
		return nil, err
	}
	t.Cleanup(m.Stop)
	return m, nil
}

func (m *Mount) start() error {
	m.exited = make(chan struct{})
	name, args := binary(m.t), m.Args
	if len(m.Wrapper) > 0 {
		name, args = m.Wrapper[0], append(append(append([]string{}, m.Wrapper[1:]...), name), args...)
	}
	m.cmd = exec.Command(name, args...)
	m.cmd.Env = append(testEnv(), m.Env...)
	pr, pw := io.Pipe()
	m.cmd.Stdout = m.log
	m.cmd.Stderr = io.MultiWriter(m.log, pw)
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "disgrafs: serving ") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() {
		m.waitErr = m.cmd.Wait()
		pw.Close()
		close(m.exited)
	}()
	select {
	case <-ready:
		return nil
	case <-m.exited:
		return fmt.Errorf("daemon exited before serving (%v):\n%s", m.waitErr, m.log.String())
	case <-time.After(60 * time.Second):
		_ = m.cmd.Process.Kill()
		return fmt.Errorf("daemon did not serve within 60s:\n%s", m.log.String())
	}
}

// Path joins names under the mountpoint.
func (m *Mount) Path(elem ...string) string {
	return filepath.Join(append([]string{m.Dir}, elem...)...)
}

// Log is what the daemon has printed so far.
func (m *Mount) Log() string { return m.log.String() }

// Unmount asks the daemon to unmount and waits for it to exit.
func (m *Mount) Unmount() {
	m.t.Helper()
	if m.isExited() {
		return
	}
	out, err := run(m.t, "umount", m.Dir)
	if err != nil {
		m.t.Fatalf("umount %s: %v\n%s\ndaemon log:\n%s", m.Dir, err, out, m.Log())
	}
	m.waitExit(30 * time.Second)
}

// Restart unmounts and mounts again with the same arguments.
func (m *Mount) Restart() {
	m.t.Helper()
	m.Unmount()
	if err := m.start(); err != nil {
		m.t.Fatal(err)
	}
}

// Kill9 kills the daemon with SIGKILL, leaving a dead mount behind.
func (m *Mount) Kill9() {
	m.t.Helper()
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	m.waitExit(10 * time.Second)
}

// Signal sends sig and waits for the daemon to exit.
func (m *Mount) Signal(sig os.Signal) {
	m.t.Helper()
	_ = m.cmd.Process.Signal(sig)
	m.waitExit(30 * time.Second)
}

func (m *Mount) isExited() bool {
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}

func (m *Mount) waitExit(d time.Duration) {
	m.t.Helper()
	select {
	case <-m.exited:
	case <-time.After(d):
		_ = m.cmd.Process.Kill()
		<-m.exited
		m.t.Fatalf("daemon did not exit within %s\n%s", d, m.Log())
	}
}

// Stop tears the mount down whatever state it is in.
func (m *Mount) Stop() {
	if !m.isExited() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(30 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.exited
		}
	}
	if daemon.IsMounted(m.Dir) {
		_ = syscall.Unmount(m.Dir, syscall.MNT_DETACH)
	}
}

// sh runs a shell command and fails the test on error.
func sh(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
