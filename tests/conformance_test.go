package tests

// POSIX conformance of edge cases (the categories pjdfstest covers), run on
// the real mount and on tmpfs: every expectation is Linux's, checked on
// tmpfs first; where the mount differs the case must be listed in
// mountDeviations with its reason (and in README.md, "Known deviations").

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// asOtherEnv makes this test binary, started with it set, become uid/gid
// 65534 with no groups, run one operation (os.Args[1:]) and print its errno.
const asOtherEnv = "DISGRAFS_TEST_AS_OTHER"

func init() {
	if os.Getenv(asOtherEnv) != "1" {
		return
	}
	code := 0
	if err := becomeOther(); err != nil {
		fmt.Fprintln(os.Stderr, "become uid 65534:", err)
		os.Exit(111)
	}
	if err := otherOp(os.Args[1:]); err != nil {
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(112)
		}
		code = int(errno)
	}
	fmt.Print(code)
	os.Exit(0)
}

func becomeOther() error {
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setgid(65534); err != nil {
		return err
	}
	return syscall.Setuid(65534)
}

func otherOp(a []string) error {
	switch a[0] {
	case "open-r", "open-w", "creat":
		flag := map[string]int{"open-r": os.O_RDONLY, "open-w": os.O_WRONLY, "creat": os.O_CREATE | os.O_WRONLY}[a[0]]
		f, err := os.OpenFile(a[1], flag, 0o644)
		if err == nil {
			f.Close()
		}
		return err
	case "unlink":
		return syscall.Unlink(a[1])
	case "rmdir":
		return syscall.Rmdir(a[1])
	case "rename":
		return syscall.Rename(a[1], a[2])
	case "link":
		return syscall.Link(a[1], a[2])
	case "chmod":
		return syscall.Chmod(a[1], 0o777)
	case "chown":
		return syscall.Chown(a[1], 0, 0)
	case "truncate":
		return syscall.Truncate(a[1], 0)
	case "stat":
		var st syscall.Stat_t
		return syscall.Stat(a[1], &st)
	case "get-status":
		// A request on the control socket: EACCES unless answered 200.
		c, err := net.Dial("unix", a[1])
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("GET /v1/status HTTP/1.0\r\nHost: d\r\n\r\n")); err != nil {
			return syscall.EACCES
		}
		b, _ := io.ReadAll(c)
		if !strings.HasPrefix(string(b), "HTTP/1.0 200") && !strings.HasPrefix(string(b), "HTTP/1.1 200") {
			return syscall.EACCES
		}
		return nil
	case "setxattr":
		return unix.Setxattr(a[1], "user.xdg.tags", []byte(a[2]), 0)
	case "wrlock":
		// A POSIX write lock, without waiting: EAGAIN while another
		// process holds a lock on the file.
		f, err := os.OpenFile(a[1], os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.FcntlFlock(f.Fd(), unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Whence: 0})
	case "rdlock-conflict":
		// Whether a POSIX write lock could be taken (F_GETLK through a
		// read-only descriptor): EAGAIN when another process holds a lock.
		f, err := os.Open(a[1])
		if err != nil {
			return err
		}
		defer f.Close()
		lk := unix.Flock_t{Type: unix.F_WRLCK}
		if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
			return err
		}
		if lk.Type != unix.F_UNLCK {
			return syscall.EAGAIN
		}
		return nil
	}
	return fmt.Errorf("unknown operation %q", a[0])
}

// asOther runs one operation as uid 65534 and returns its error.
func asOther(args ...string) error {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asOtherEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("helper %v: %v %s", args, err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return fmt.Errorf("helper %v said %q", args, out)
	}
	if n == 0 {
		return nil
	}
	return syscall.Errno(n)
}

// errnoOf reduces an error to its errno (0 for success, -1 for another error).
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return ^syscall.Errno(0)
}

func errnoName(e syscall.Errno) string {
	switch e {
	case 0:
		return "success"
	case ^syscall.Errno(0):
		return "a non-errno error"
	}
	return unix.ErrnoName(e)
}

// confCase sets up in d (a fresh 0755 directory of the file system under
// test; elsewhere is a directory on another file system) and returns the
// result of the operation under test.
type confCase struct {
	name string
	want syscall.Errno
	fn   func(t *testing.T, d, elsewhere string) error
}

func mk(t *testing.T, p string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.WriteFile(p, []byte("data"), mode); err != nil {
		t.Fatal(err)
	}
	// The raw mode: os.Chmod maps only os.ModeSticky and friends.
	if err := syscall.Chmod(p, uint32(mode)); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func mkd(t *testing.T, p string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	// The raw mode: os.Chmod maps only os.ModeSticky and friends.
	if err := syscall.Chmod(p, uint32(mode)); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
}

var confCases = []confCase{
	// chmod, chown
	{"chmod by a non-owner", syscall.EPERM, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		return asOther("chmod", d+"/f")
	}},
	{"chmod by the owner", 0, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 65534)
		return asOther("chmod", d+"/f")
	}},
	{"chown to root by a non-root owner", syscall.EPERM, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 65534)
		return asOther("chown", d+"/f")
	}},
	{"chown by root clears setuid", 0, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o4755, 0)
		if err := os.Chown(d+"/f", 65534, 65534); err != nil {
			return err
		}
		if st, _ := os.Stat(d + "/f"); st.Mode()&os.ModeSetuid != 0 {
			return errors.New("setuid kept after chown")
		}
		return nil
	}},
	// open and truncate permissions
	{"open for writing without permission", syscall.EACCES, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		return asOther("open-w", d+"/f")
	}},
	{"open for reading a 0600 file of another user", syscall.EACCES, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o600, 0)
		return asOther("open-r", d+"/f")
	}},
	{"create in a directory without write permission", syscall.EACCES, func(t *testing.T, d, _ string) error {
		return asOther("creat", d+"/new")
	}},
	{"stat through a directory without search permission", syscall.EACCES, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/s", 0o700, 0)
		mk(t, d+"/s/f", 0o644, 0)
		return asOther("stat", d+"/s/f")
	}},
	{"truncate without write permission", syscall.EACCES, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		return asOther("truncate", d+"/f")
	}},
	{"truncate a directory", syscall.EISDIR, func(t *testing.T, d, _ string) error {
		return syscall.Truncate(d, 0)
	}},
	{"truncate to a negative length", syscall.EINVAL, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		return syscall.Truncate(d+"/f", -1)
	}},
	{"O_CREAT|O_EXCL of an existing file", syscall.EEXIST, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		_, err := os.OpenFile(d+"/f", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		return err
	}},
	{"O_DIRECTORY of a file", syscall.ENOTDIR, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		_, err := unix.Open(d+"/f", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		return err
	}},
	{"open a directory for writing", syscall.EISDIR, func(t *testing.T, d, _ string) error {
		_, err := unix.Open(d, unix.O_WRONLY, 0)
		return err
	}},
	// sticky directories
	{"unlink another user's file in a sticky directory", syscall.EPERM, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/s", 0o1777, 0)
		mk(t, d+"/s/f", 0o666, 0)
		return asOther("unlink", d+"/s/f")
	}},
	{"rename another user's file in a sticky directory", syscall.EPERM, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/s", 0o1777, 0)
		mk(t, d+"/s/f", 0o666, 0)
		return asOther("rename", d+"/s/f", d+"/s/g")
	}},
	{"unlink one's own file in a sticky directory", 0, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/s", 0o1777, 0)
		mk(t, d+"/s/f", 0o644, 65534)
		return asOther("unlink", d+"/s/f")
	}},
	{"unlink in a directory without write permission", syscall.EACCES, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o666, 65534)
		return asOther("unlink", d+"/f")
	}},
	// names
	{"create a 255-byte name", 0, func(t *testing.T, d, _ string) error {
		return os.WriteFile(d+"/"+strings.Repeat("n", 255), nil, 0o644)
	}},
	{"create a 256-byte name", syscall.ENAMETOOLONG, func(t *testing.T, d, _ string) error {
		return os.WriteFile(d+"/"+strings.Repeat("n", 256), nil, 0o644)
	}},
	{"mkdir a 256-byte name", syscall.ENAMETOOLONG, func(t *testing.T, d, _ string) error {
		return syscall.Mkdir(d+"/"+strings.Repeat("n", 256), 0o755)
	}},
	{"rename to a 256-byte name", syscall.ENAMETOOLONG, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		return syscall.Rename(d+"/f", d+"/"+strings.Repeat("n", 256))
	}},
	{"symlink with a 4096-byte target", syscall.ENAMETOOLONG, func(t *testing.T, d, _ string) error {
		return syscall.Symlink(strings.Repeat("t", 4096), d+"/l")
	}},
	{"symlink with a 4095-byte target", 0, func(t *testing.T, d, _ string) error {
		return syscall.Symlink(strings.Repeat("t", 4095), d+"/l")
	}},
	// EXDEV
	{"rename to another file system", syscall.EXDEV, func(t *testing.T, d, elsewhere string) error {
		mk(t, d+"/f", 0o644, 0)
		return syscall.Rename(d+"/f", elsewhere+"/f")
	}},
	{"link to another file system", syscall.EXDEV, func(t *testing.T, d, elsewhere string) error {
		mk(t, d+"/f", 0o644, 0)
		return syscall.Link(d+"/f", elsewhere+"/f")
	}},
	// ELOOP
	{"open a symlink loop", syscall.ELOOP, func(t *testing.T, d, _ string) error {
		_ = syscall.Symlink("b", d+"/a")
		_ = syscall.Symlink("a", d+"/b")
		_, err := os.Open(d + "/a")
		return err
	}},
	{"open a symlink with O_NOFOLLOW", syscall.ELOOP, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		_ = syscall.Symlink("f", d+"/l")
		_, err := unix.Open(d+"/l", unix.O_RDONLY|unix.O_NOFOLLOW, 0)
		return err
	}},
	{"a path through 41 symlinks", syscall.ELOOP, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		prev := "f"
		for i := 0; i < 41; i++ {
			name := fmt.Sprintf("l%d", i)
			_ = syscall.Symlink(prev, d+"/"+name)
			prev = name
		}
		_, err := os.Open(d + "/" + prev)
		return err
	}},
	// rename
	{"rename a directory over a non-empty directory", syscall.ENOTEMPTY, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/a", 0o755, 0)
		mkd(t, d+"/b", 0o755, 0)
		mk(t, d+"/b/f", 0o644, 0)
		return syscall.Rename(d+"/a", d+"/b")
	}},
	{"rename a directory over an empty directory", 0, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/a", 0o755, 0)
		mkd(t, d+"/b", 0o755, 0)
		return syscall.Rename(d+"/a", d+"/b")
	}},
	{"rename a file over a directory", syscall.EISDIR, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		mkd(t, d+"/b", 0o755, 0)
		return syscall.Rename(d+"/f", d+"/b")
	}},
	{"rename a directory over a file", syscall.ENOTDIR, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/a", 0o755, 0)
		mk(t, d+"/f", 0o644, 0)
		return syscall.Rename(d+"/a", d+"/f")
	}},
	{"rename a directory into itself", syscall.EINVAL, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/a", 0o755, 0)
		mkd(t, d+"/a/b", 0o755, 0)
		return syscall.Rename(d+"/a", d+"/a/b/c")
	}},
	{"rename a file over its own hard link", 0, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		_ = syscall.Link(d+"/f", d+"/g")
		if err := syscall.Rename(d+"/f", d+"/g"); err != nil {
			return err
		}
		_, err := os.Stat(d + "/f") // POSIX: both names stay
		return err
	}},
	// mkdir, rmdir, unlink, link
	{"mkdir an existing name", syscall.EEXIST, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		return syscall.Mkdir(d+"/f", 0o755)
	}},
	{"rmdir a non-empty directory", syscall.ENOTEMPTY, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/a", 0o755, 0)
		mk(t, d+"/a/f", 0o644, 0)
		return syscall.Rmdir(d + "/a")
	}},
	{"rmdir a file", syscall.ENOTDIR, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		return syscall.Rmdir(d + "/f")
	}},
	{"rmdir .", syscall.EINVAL, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/a", 0o755, 0)
		return syscall.Rmdir(d + "/a/.")
	}},
	{"unlink a directory", syscall.EISDIR, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/a", 0o755, 0)
		return syscall.Unlink(d + "/a")
	}},
	{"link a directory", syscall.EPERM, func(t *testing.T, d, _ string) error {
		mkd(t, d+"/a", 0o755, 0)
		return syscall.Link(d+"/a", d+"/b")
	}},
	{"link over an existing name", syscall.EEXIST, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		mk(t, d+"/g", 0o644, 0)
		return syscall.Link(d+"/f", d+"/g")
	}},
	{"link counts", 0, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		for i := 0; i < 3; i++ {
			if err := syscall.Link(d+"/f", fmt.Sprintf("%s/g%d", d, i)); err != nil {
				return err
			}
		}
		_ = syscall.Unlink(d + "/g1")
		var st syscall.Stat_t
		_ = syscall.Stat(d+"/f", &st)
		if st.Nlink != 3 {
			return fmt.Errorf("nlink %d, want 3", st.Nlink)
		}
		return nil
	}},
	{"unlink of an open file keeps it readable", 0, func(t *testing.T, d, _ string) error {
		mk(t, d+"/f", 0o644, 0)
		f, err := os.Open(d + "/f")
		if err != nil {
			return err
		}
		defer f.Close()
		if err := syscall.Unlink(d + "/f"); err != nil {
			return err
		}
		b := make([]byte, 4)
		if _, err := f.ReadAt(b, 0); err != nil || string(b) != "data" {
			return fmt.Errorf("read after unlink: %q %v", b, err)
		}
		return nil
	}},
}

// mountDeviations are the cases where the mount knowingly differs from
// Linux's local file systems, with the reason (README.md lists them too).
var mountDeviations = map[string]struct {
	got    syscall.Errno
	reason string
}{
	// None today. (JuiceFS answers EEXIST for a directory renamed over a
	// non-empty one; through this mount the kernel sees ENOTEMPTY, as on
	// tmpfs, so that case passes.)
}

// TestConformance runs confCases on the mount and on tmpfs.
func TestConformance(t *testing.T) {
	needRoot(t)
	m := startMount(t, MountOpts{Extra: []string{"--auto-tag=false"}})
	tmpfs := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", tmpfs).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", tmpfs).Run() })
	// Let uid 65534 reach both.
	for _, dir := range []string{m.Dir, tmpfs} {
		for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	var diffs []string
	for i, c := range confCases {
		t.Run(c.name, func(t *testing.T) {
			results := map[string]syscall.Errno{}
			for _, fs := range []struct{ name, root, elsewhere string }{{"tmpfs", tmpfs, m.Dir}, {"mount", m.Dir, tmpfs}} {
				d := filepath.Join(fs.root, fmt.Sprintf("c%02d", i))
				mkd(t, d, 0o755, 0)
				other := filepath.Join(fs.elsewhere, fmt.Sprintf("x%02d", i))
				mkd(t, other, 0o777, 0)
				err := c.fn(t, d, other)
				results[fs.name] = errnoOf(err)
				if errnoOf(err) == ^syscall.Errno(0) {
					t.Errorf("%s: %v", fs.name, err)
				}
			}
			if results["tmpfs"] != c.want {
				t.Errorf("the expectation is wrong: tmpfs says %s, the case wants %s", errnoName(results["tmpfs"]), errnoName(c.want))
			}
			got := results["mount"]
			if got == results["tmpfs"] {
				return
			}
			diffs = append(diffs, fmt.Sprintf("%s: mount %s, tmpfs %s", c.name, errnoName(got), errnoName(results["tmpfs"])))
			if dev, ok := mountDeviations[c.name]; ok && dev.got == got {
				t.Logf("known deviation: %s", dev.reason)
				return
			}
			t.Errorf("the mount says %s, Linux (tmpfs) %s: a deviation not listed in mountDeviations", errnoName(got), errnoName(results["tmpfs"]))
		})
	}
	t.Logf("differences between the mount and tmpfs (%d of %d cases):\n%s", len(diffs), len(confCases), strings.Join(diffs, "\n"))
}

// TestConformanceTagTree: hard links and renames across the tag tree, and
// its permission checks for another user.
func TestConformanceTagTree(t *testing.T) {
	needRoot(t)
	m := startMount(t, MountOpts{Extra: []string{"--auto-tag=false"}})
	for d := m.Dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mkd(t, m.Path("real"), 0o755, 0)
	mk(t, m.Path("real", "mine"), 0o644, 0)
	mk(t, m.Path("real", "theirs"), 0o644, 65534)
	mk(t, m.Path("real", "secret"), 0o600, 0)
	for _, f := range []string{"mine", "theirs", "secret"} {
		if err := unix.Setxattr(m.Path("real", f), "user.xdg.tags", []byte("t"), 0); err != nil {
			t.Fatal(err)
		}
	}
	mkd(t, m.Path("real", "sub"), 0o755, 0)
	cases := []struct {
		name string
		want syscall.Errno
		fn   func() error
	}{
		{"link a file into a tag directory", 0, func() error { return syscall.Link(m.Path("real", "mine"), m.Path(".tags", "t", "x")) }},
		{"link a directory into a tag directory", syscall.EPERM, func() error { return syscall.Link(m.Path("real", "sub"), m.Path(".tags", "t", "sub")) }},
		{"link from a tag directory into a real directory", 0, func() error {
			return syscall.Link(m.Path(".tags", "t", "mine"), m.Path("real", "mine-link"))
		}},
		{"rename from a tag directory into a real directory", syscall.EXDEV, func() error {
			return syscall.Rename(m.Path(".tags", "t", "mine"), m.Path("real", "moved"))
		}},
		{"rename from a real directory into a tag directory", syscall.EXDEV, func() error {
			return syscall.Rename(m.Path("real", "mine"), m.Path(".tags", "t", "moved"))
		}},
		// The kernel refuses first: fs.protected_hardlinks forbids links
		// to files one neither owns nor may write.
		{"another user tags a file they cannot write", syscall.EPERM, func() error {
			return asOther("link", m.Path("real", "mine"), m.Path(".tags", "t", "y"))
		}},
		{"another user untags a file they cannot write", syscall.EACCES, func() error { return asOther("unlink", m.Path(".tags", "t", "mine")) }},
		{"another user sets tags on a file they cannot write", syscall.EACCES, func() error { return asOther("setxattr", m.Path("real", "mine"), "u") }},
		{"another user tags their own file", 0, func() error {
			return asOther("link", m.Path("real", "theirs"), m.Path(".tags", "t", "z"))
		}},
		{"another user reads a 0600 file through a tag directory", syscall.EACCES, func() error { return asOther("open-r", m.Path(".tags", "t", "secret")) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := errnoOf(c.fn()); got != c.want {
				t.Errorf("got %s, want %s", errnoName(got), errnoName(c.want))
			}
		})
	}
	// The files are all still there.
	for _, f := range []string{"mine", "theirs", "secret"} {
		if _, err := os.Stat(m.Path("real", f)); err != nil {
			t.Errorf("%s after the tag tree cases: %v", f, err)
		}
	}
}
