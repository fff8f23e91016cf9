package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/daemon"
)

// freePort returns a loopback TCP port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestMountErrors checks that every way a mount can fail gives a clear one-line
// error and a non-zero exit, and leaves nothing mounted.
func TestMountErrors(t *testing.T) {
	needRoot(t)
	redisAddr(t)
	unformatted := freshRedisURL(t)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	nonEmpty := filepath.Join(tmp, "nonempty")
	_ = os.MkdirAll(filepath.Join(nonEmpty, "child"), 0o755)
	empty := filepath.Join(tmp, "empty")
	_ = os.Mkdir(empty, 0o755)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing mountpoint", []string{"mount", filepath.Join(tmp, "nope")}, "does not exist"},
		{"missing mountpoint in the background", []string{"mount", "-d", "--log", filepath.Join(tmp, "bg.log"), filepath.Join(tmp, "nope")}, "does not exist"},
		{"mountpoint is a file", []string{"mount", file}, "is not a directory"},
		{"mountpoint not empty", []string{"mount", nonEmpty}, "is not empty"},
		{"unreachable metadata", []string{"mount", "--meta", fmt.Sprintf("redis://127.0.0.1:%d/1", freePort(t)), empty}, "is unreachable"},
		{"unformatted metadata", []string{"mount", "--meta", unformatted, empty}, "holds no volume: run 'disgrafs format"},
		{"unsupported metadata engine", []string{"mount", "--meta", "mysql://u@tcp(h:3306)/db", empty}, `unsupported metadata engine "mysql"`},
		{"bad cache size", []string{"mount", "--cache-size", "ten", empty}, "--cache-size"},
		{"bad free space ratio", []string{"mount", "--free-space-ratio", "1.5", empty}, "--free-space-ratio"},
		{"status of nothing", []string{"status", empty}, "is not mounted by disgrafs"},
		{"umount of nothing", []string{"umount", empty}, "nothing is mounted"},
		{"format without meta", []string{"format", "vol"}, "--meta is required"},
		{"format bad name", []string{"format", "--meta", unformatted, "--bucket", tmp, "Bad_Name"}, "invalid volume name"},
		{"format bad block size", []string{"format", "--meta", unformatted, "--bucket", tmp, "--block-size", "3M", "vol"}, "--block-size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if args[0] == "mount" {
				args = append([]string{"mount", "--data-dir", filepath.Join(t.TempDir(), "data"), "--metrics", "off"}, args[1:]...)
			}
			out, err := run(t, args...)
			if err == nil {
				t.Fatalf("succeeded, want an error containing %q:\n%s", c.want, out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("output lacks %q:\n%s", c.want, out)
			}
			if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
				t.Fatalf("crashed:\n%s", out)
			}
			if daemon.IsMounted(empty) {
				t.Fatalf("%s is mounted after a failed command", empty)
			}
		})
	}
}

// TestMountErrorsEnvironment covers failures that need a changed environment:
// no /dev/fuse, no permission to mount, wrong Redis credentials, the embedded
// volume mounted twice, and formatting a formatted engine under another name.
func TestMountErrorsEnvironment(t *testing.T) {
	needRoot(t)
	bin := binary(t)

	t.Run("no /dev/fuse", func(t *testing.T) {
		needTool(t, "unshare")
		mp := t.TempDir()
		// A private mount namespace whose /dev is an empty tmpfs.
		script := fmt.Sprintf("mount -t tmpfs none /dev && exec %s mount --metrics off --data-dir %s %s", bin, t.TempDir(), mp)
		cmd := exec.Command("unshare", "-m", "sh", "-c", script)
		cmd.Env = testEnv()
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no /dev/fuse") {
			t.Fatalf("want a 'no /dev/fuse' error, got %v:\n%s", err, out)
		}
	})

	t.Run("no permission to mount", func(t *testing.T) {
		needTool(t, "setpriv")
		dir := t.TempDir()
		_ = os.Chmod(dir, 0o755)
		_ = os.Chmod(filepath.Dir(dir), 0o755)
		mp := filepath.Join(dir, "mnt")
		data := filepath.Join(dir, "data")
		_ = os.Mkdir(mp, 0o755)
		_ = os.Mkdir(data, 0o777)
		_ = os.Chmod(data, 0o777)
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			bin, "mount", "--metrics", "off", "--data-dir", data, mp)
		cmd.Env = append(testEnv(), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no permission to mount") {
			t.Fatalf("want a 'no permission to mount' error, got %v:\n%s", err, out)
		}
		if strings.Contains(string(out), "panic:") {
			t.Fatalf("crashed:\n%s", out)
		}
	})

	t.Run("wrong redis password", func(t *testing.T) {
		needTool(t, "redis-server")
		port := freePort(t)
		srv := exec.Command("redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--requirepass", "s3cret", "--dir", t.TempDir())
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("password-protected redis did not start")
			}
			time.Sleep(50 * time.Millisecond)
		}
		url := fmt.Sprintf("redis://127.0.0.1:%d/1", port)
		cmd := exec.Command(bin, "mount", "--metrics", "off", "--meta", url, t.TempDir())
		cmd.Env = append(testEnv(), "META_PASSWORD=wrong")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "refused the credentials") {
			t.Fatalf("want a credentials error, got %v:\n%s", err, out)
		}
		if strings.Contains(string(out), "wrong") {
			t.Fatalf("the password appears in the output:\n%s", out)
		}
		// The right password from the environment (never the command line) works.
		cmd = exec.Command(bin, "format", "--meta", url, "--bucket", t.TempDir(), "secured")
		cmd.Env = append(testEnv(), "META_PASSWORD=s3cret")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("format with META_PASSWORD: %v\n%s", err, out)
		}
	})

	t.Run("embedded volume mounted twice", func(t *testing.T) {
		m := startMount(t, MountOpts{})
		_, err := tryMount(t, MountOpts{DataDir: m.DataDir})
		if err == nil || !strings.Contains(err.Error(), "is already mounted") {
			t.Fatalf("want 'already mounted', got %v", err)
		}
		// The first mount keeps serving.
		if err := os.WriteFile(m.Path("still-here"), []byte("ok"), 0o644); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("mountpoint already mounted", func(t *testing.T) {
		m := startMount(t, MountOpts{})
		_, err := tryMount(t, MountOpts{Dir: m.Dir})
		if err == nil || !strings.Contains(err.Error(), "already a mount point") {
			t.Fatalf("want 'already a mount point', got %v", err)
		}
	})

	t.Run("format under another name", func(t *testing.T) {
		meta, _ := formatShared(t, "first")
		out, err := run(t, "format", "--meta", meta, "--bucket", t.TempDir(), "second")
		if err == nil || !strings.Contains(out, `already holds volume "first"`) {
			t.Fatalf("want a refusal, got %v:\n%s", err, out)
		}
		// Formatting again with the same name is a no-op.
		if out, err := run(t, "format", "--meta", meta, "--bucket", t.TempDir(), "first"); err != nil {
			t.Fatalf("re-format with the same name: %v\n%s", err, out)
		}
	})
}

// TestLifecycle covers background mode, signals, unmount with open files, and
// cleaning up after a dead daemon.
func TestLifecycle(t *testing.T) {
	needRoot(t)

	t.Run("background mount, status, umount", func(t *testing.T) {
		mp, data := t.TempDir(), t.TempDir()
		logPath := filepath.Join(t.TempDir(), "d.log")
		out, err := run(t, "mount", "-d", "--metrics", "off", "--log", logPath, "--data-dir", data, mp)
		if err != nil {
			t.Fatalf("mount -d: %v\n%s", err, out)
		}
		t.Cleanup(func() { _, _ = run(t, "umount", mp) })
		if !daemon.IsMounted(mp) {
			t.Fatalf("mount -d returned before the mount was up:\n%s", out)
		}
		if err := os.WriteFile(filepath.Join(mp, "f"), []byte("bg"), 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := run(t, "status", "--json", mp)
		if err != nil || !strings.Contains(st, `"volume": "disgrafs"`) || !strings.Contains(st, `"embedded": true`) {
			t.Fatalf("status: %v\n%s", err, st)
		}
		human, err := run(t, "status", mp)
		for _, want := range []string{"Mountpoint:", "Volume:", "Metadata:", "Storage:", "File cache:", "Block cache:", "Daemon:", "Operations:"} {
			if err != nil || !strings.Contains(human, want) {
				t.Fatalf("status lacks %q: %v\n%s", want, err, human)
			}
		}
		if out, err := run(t, "umount", mp); err != nil {
			t.Fatalf("umount: %v\n%s", err, out)
		}
		if daemon.IsMounted(mp) {
			t.Fatal("still mounted after umount")
		}
		logged, _ := os.ReadFile(logPath)
		if !strings.Contains(string(logged), "flushed and closed") {
			t.Fatalf("the log does not show a clean shutdown:\n%s", logged)
		}
	})

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run("clean unmount on "+sig.String(), func(t *testing.T) {
			m := startMount(t, MountOpts{})
			data := randBytes(t, 3<<20)
			// Written but never fsynced: the signal must flush it.
			if err := os.WriteFile(m.Path("unsynced"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			m.Signal(sig)
			if m.waitErr != nil {
				t.Fatalf("daemon exit after %s: %v\n%s", sig, m.waitErr, m.Log())
			}
			if daemon.IsMounted(m.Dir) {
				t.Fatalf("still mounted after %s", sig)
			}
			m2 := startMount(t, MountOpts{Dir: m.Dir, DataDir: m.DataDir})
			got, err := os.ReadFile(m2.Path("unsynced"))
			if err != nil || string(got) != string(data) {
				t.Fatalf("data after %s and remount: %v", sig, err)
			}
		})
	}

	t.Run("umount with open files", func(t *testing.T) {
		m := startMount(t, MountOpts{})
		f, err := os.Create(m.Path("open"))
		if err != nil {
			t.Fatal(err)
		}
		out, err := run(t, "umount", m.Dir)
		if err == nil || !strings.Contains(out, "--lazy") {
			t.Fatalf("umount of a busy mount: want an error suggesting --lazy, got %v:\n%s", err, out)
		}
		if _, err := f.Write([]byte("still writable")); err != nil {
			t.Fatal(err)
		}
		out, err = run(t, "umount", "--lazy", m.Dir)
		if err != nil {
			t.Fatalf("umount --lazy: %v\n%s", err, out)
		}
		if daemon.IsMounted(m.Dir) {
			t.Fatal("the name is still mounted after a lazy unmount")
		}
		// The open file keeps working until it is closed; then the daemon exits.
		if _, err := f.Write([]byte(" and more")); err != nil {
			t.Fatalf("write after lazy unmount: %v", err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("close after lazy unmount: %v", err)
		}
		m.waitExit(30 * time.Second)
		m2 := startMount(t, MountOpts{Dir: m.Dir, DataDir: m.DataDir})
		if got, err := os.ReadFile(m2.Path("open")); err != nil || string(got) != "still writable and more" {
			t.Fatalf("data written around a lazy unmount: %q %v", got, err)
		}
	})

	t.Run("umount cleans up after kill -9", func(t *testing.T) {
		m := startMount(t, MountOpts{})
		m.Kill9()
		var st syscall.Stat_t
		if err := syscall.Stat(m.Dir, &st); err == nil {
			t.Log("note: the dead mount still answers stat")
		}
		out, err := run(t, "mount", "--data-dir", m.DataDir, "--metrics", "off", m.Dir)
		if err == nil || !(strings.Contains(out, "dead mount") || strings.Contains(out, "already a mount point")) {
			t.Fatalf("mount over a dead mount: want a clear error, got %v:\n%s", err, out)
		}
		out, err = run(t, "status", m.Dir)
		if err == nil || !strings.Contains(out, "does not answer") {
			t.Fatalf("status of a dead mount: %v\n%s", err, out)
		}
		out, err = run(t, "umount", m.Dir)
		if err != nil || !strings.Contains(out, "daemon had died") {
			t.Fatalf("umount of a dead mount: %v\n%s", err, out)
		}
		if daemon.IsMounted(m.Dir) {
			t.Fatal("dead mount still there")
		}
		startMount(t, MountOpts{Dir: m.Dir, DataDir: m.DataDir})
	})

	t.Run("version and help", func(t *testing.T) {
		out, err := run(t, "version")
		if err != nil || !strings.Contains(out, "JuiceFS v1.4.1") {
			t.Fatalf("version: %v %s", err, out)
		}
		for _, sub := range []string{"mount", "format", "umount", "status", "version"} {
			out, err := run(t, sub, "--help")
			if err != nil || !strings.Contains(out, "Usage:") {
				t.Fatalf("%s --help: %v\n%s", sub, err, out)
			}
		}
	})
}
