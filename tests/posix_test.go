package tests

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// asNobody runs a shell command as uid/gid 65534 and returns its output and error.
func asNobody(t *testing.T, script string) (string, error) {
	t.Helper()
	needTool(t, "setpriv")
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script).CombinedOutput()
	return string(out), err
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func wantErrno(t *testing.T, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

// TestPOSIX drives the operations of a POSIX drive through one mount of the
// embedded default volume; each case works in a directory of its own.
func TestPOSIX(t *testing.T) {
	// Automatic tags would add to user.xdg.tags, which this test checks exactly.
	m := startMount(t, MountOpts{Extra: []string{"--auto-tag=false"}})
	// t.TempDir makes 0700 directories; let other users reach the mount.
	for d := filepath.Dir(m.Dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		fn   func(t *testing.T, dir string)
	}{
		{"write read roundtrip", func(t *testing.T, dir string) {
			for _, n := range []int{0, 1, 4095, 4096, 128 << 10, 5<<20 + 7} {
				p := filepath.Join(dir, fmt.Sprintf("f%d", n))
				data := randBytes(t, n)
				mustWrite(t, p, data)
				if got := mustRead(t, p); !bytes.Equal(got, data) {
					t.Fatalf("%d bytes: read back differs", n)
				}
				st, err := os.Stat(p)
				if err != nil || st.Size() != int64(n) {
					t.Fatalf("stat %s: %v size %d", p, err, st.Size())
				}
			}
		}},
		{"O_EXCL and O_APPEND", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			mustWrite(t, p, []byte("abc"))
			_, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			wantErrno(t, err, syscall.EEXIST)
			for _, s := range []string{"def", "ghi"} {
				f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt([]byte("X"), 0); err == nil {
					t.Fatal("WriteAt on an O_APPEND file must fail")
				}
				if _, err := f.Write([]byte(s)); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			if got := string(mustRead(t, p)); got != "abcdefghi" {
				t.Fatalf("append: got %q", got)
			}
		}},
		{"truncate chmod chown utimens", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			mustWrite(t, p, []byte("0123456789"))
			if err := os.Truncate(p, 4); err != nil {
				t.Fatal(err)
			}
			if got := string(mustRead(t, p)); got != "0123" {
				t.Fatalf("shrink: %q", got)
			}
			if err := os.Truncate(p, 8); err != nil {
				t.Fatal(err)
			}
			if got := mustRead(t, p); !bytes.Equal(got, []byte("0123\x00\x00\x00\x00")) {
				t.Fatalf("grow: %q", got)
			}
			if err := os.Chmod(p, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, 1234, 5678); err != nil {
				t.Fatal(err)
			}
			mt := time.Date(2020, 2, 29, 12, 34, 56, 789000000, time.UTC)
			at := time.Date(2019, 1, 1, 0, 0, 1, 0, time.UTC)
			if err := os.Chtimes(p, at, mt); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode&0o7777 != 0o640 || st.Uid != 1234 || st.Gid != 5678 {
				t.Fatalf("mode %o uid %d gid %d", st.Mode&0o7777, st.Uid, st.Gid)
			}
			if got := time.Unix(st.Mtim.Unix()); !got.Equal(mt) {
				t.Fatalf("mtime %v, want %v", got, mt)
			}
			if got := time.Unix(st.Atim.Unix()); !got.Equal(at) {
				t.Fatalf("atime %v, want %v", got, at)
			}
		}},
		{"mkdir rmdir readdir", func(t *testing.T, dir string) {
			d := filepath.Join(dir, "d")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			wantErrno(t, os.Mkdir(d, 0o755), syscall.EEXIST)
			const n = 1500 // more than one readdir(plus) buffer
			for i := 0; i < n; i++ {
				mustWrite(t, filepath.Join(d, fmt.Sprintf("entry-%04d", i)), nil)
			}
			ents, err := os.ReadDir(d)
			if err != nil || len(ents) != n {
				t.Fatalf("readdir: %v, %d entries, want %d", err, len(ents), n)
			}
			wantErrno(t, syscall.Rmdir(d), syscall.ENOTEMPTY)
			wantErrno(t, syscall.Rmdir(filepath.Join(d, "entry-0000")), syscall.ENOTDIR)
			if err := os.RemoveAll(d); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("after rmdir: %v", err)
			}
		}},
		{"rename with flags", func(t *testing.T, dir string) {
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			mustWrite(t, a, []byte("A"))
			mustWrite(t, b, []byte("B"))
			wantErrno(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_NOREPLACE), syscall.EEXIST)
			if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
				t.Fatal(err)
			}
			if string(mustRead(t, a)) != "B" || string(mustRead(t, b)) != "A" {
				t.Fatal("RENAME_EXCHANGE did not swap")
			}
			if err := os.Rename(a, b); err != nil { // replaces b
				t.Fatal(err)
			}
			if string(mustRead(t, b)) != "B" {
				t.Fatal("rename over an existing file")
			}
			if _, err := os.Stat(a); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("old name still there: %v", err)
			}
			sub := filepath.Join(dir, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(b, filepath.Join(sub, "moved")); err != nil {
				t.Fatal(err)
			}
			full := filepath.Join(dir, "full")
			if err := os.MkdirAll(filepath.Join(full, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			// POSIX allows either error; Linux local file systems say ENOTEMPTY.
			if err := os.Rename(sub, full); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
				t.Fatalf("rename over a non-empty directory: %v", err)
			}
			wantErrno(t, os.Rename(dir, filepath.Join(sub, "loop")), syscall.EINVAL)
		}},
		{"hard and symbolic links", func(t *testing.T, dir string) {
			f, l, s := filepath.Join(dir, "f"), filepath.Join(dir, "l"), filepath.Join(dir, "s")
			mustWrite(t, f, []byte("data"))
			if err := os.Link(f, l); err != nil {
				t.Fatal(err)
			}
			var sf, sl unix.Stat_t
			_ = unix.Stat(f, &sf)
			_ = unix.Stat(l, &sl)
			if sf.Ino != sl.Ino || sl.Nlink != 2 {
				t.Fatalf("link: ino %d/%d nlink %d", sf.Ino, sl.Ino, sl.Nlink)
			}
			if err := os.Symlink("f", s); err != nil {
				t.Fatal(err)
			}
			if target, err := os.Readlink(s); err != nil || target != "f" {
				t.Fatalf("readlink: %q %v", target, err)
			}
			if string(mustRead(t, s)) != "data" {
				t.Fatal("read through symlink")
			}
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			if string(mustRead(t, l)) != "data" {
				t.Fatal("hard link lost data after unlink of the other name")
			}
			loop := filepath.Join(dir, "loop")
			_ = os.Symlink("loop", loop)
			_, err := os.ReadFile(loop)
			wantErrno(t, err, syscall.ELOOP)
			if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"xattrs", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			mustWrite(t, p, nil)
			if err := unix.Setxattr(p, "user.xdg.tags", []byte("cat,dog"), 0); err != nil {
				t.Fatal(err)
			}
			wantErrno(t, unix.Setxattr(p, "user.xdg.tags", []byte("x"), unix.XATTR_CREATE), syscall.EEXIST)
			wantErrno(t, unix.Setxattr(p, "user.none", []byte("x"), unix.XATTR_REPLACE), syscall.ENODATA)
			buf := make([]byte, 64)
			n, err := unix.Getxattr(p, "user.xdg.tags", buf)
			if err != nil || string(buf[:n]) != "cat,dog" {
				t.Fatalf("getxattr: %q %v", buf[:n], err)
			}
			_, err = unix.Getxattr(p, "user.xdg.tags", make([]byte, 2))
			wantErrno(t, err, syscall.ERANGE)
			n, err = unix.Listxattr(p, buf)
			if err != nil || !strings.Contains(string(buf[:n]), "user.xdg.tags") {
				t.Fatalf("listxattr: %q %v", buf[:n], err)
			}
			if err := unix.Removexattr(p, "user.xdg.tags"); err != nil {
				t.Fatal(err)
			}
			_, err = unix.Getxattr(p, "user.xdg.tags", buf)
			wantErrno(t, err, syscall.ENODATA)
		}},
		{"statfs", func(t *testing.T, dir string) {
			var s unix.Statfs_t
			if err := unix.Statfs(dir, &s); err != nil {
				t.Fatal(err)
			}
			if s.Blocks == 0 || s.Bsize != 4096 || s.Namelen != 255 || s.Files == 0 {
				t.Fatalf("statfs: %+v", s)
			}
		}},
		{"fallocate and punch hole", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := unix.Fallocate(int(f.Fd()), 0, 0, 1<<20); err != nil {
				t.Fatal(err)
			}
			if st, _ := f.Stat(); st.Size() != 1<<20 {
				t.Fatalf("size after fallocate: %d", st.Size())
			}
			data := bytes.Repeat([]byte{0xAB}, 1<<20)
			if _, err := f.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, 8192); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 1<<20)
			if _, err := f.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			copy(data[4096:4096+8192], make([]byte, 8192))
			if !bytes.Equal(got, data) {
				t.Fatal("punched range does not read as zeros")
			}
		}},
		{"mmap shared write and read", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "f")
			const size = 3 << 20
			f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			want := randBytes(t, size)
			copy(mem, want)
			if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
				t.Fatal(err)
			}
			if err := unix.Munmap(mem); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if got := mustRead(t, p); !bytes.Equal(got, want) {
				t.Fatal("data written through mmap differs when read back")
			}
			f, _ = os.Open(p)
			defer f.Close()
			ro, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Munmap(ro)
			if !bytes.Equal(ro, want) {
				t.Fatal("mmap read differs")
			}
		}},
		{"sparse file over 4 GiB", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "big")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			off := int64(5<<30 + 12345)
			tail := randBytes(t, 1<<20)
			if _, err := f.WriteAt(tail, off); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if st, _ := f.Stat(); st.Size() != off+int64(len(tail)) {
				t.Fatalf("size %d", st.Size())
			}
			got := make([]byte, len(tail))
			if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, tail) {
				t.Fatalf("data past 4 GiB: %v", err)
			}
			hole := make([]byte, 1<<20)
			if _, err := f.ReadAt(hole, 4<<30-512); err != nil || !bytes.Equal(hole, make([]byte, 1<<20)) {
				t.Fatalf("hole does not read as zeros: %v", err)
			}
		}},
		{"copy_file_range", func(t *testing.T, dir string) {
			src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			data := randBytes(t, 6<<20+3)
			mustWrite(t, src, data)
			in, _ := os.Open(src)
			defer in.Close()
			out, _ := os.Create(dst)
			defer out.Close()
			var done int
			for done < len(data) {
				n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, len(data)-done, 0)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				done += n
			}
			out.Close()
			if !bytes.Equal(mustRead(t, dst), data) {
				t.Fatal("copy differs")
			}
		}},
		{"name limits", func(t *testing.T, dir string) {
			long := strings.Repeat("n", 256)
			_, err := os.Create(filepath.Join(dir, long))
			wantErrno(t, err, syscall.ENAMETOOLONG)
			ok := strings.Repeat("n", 255)
			mustWrite(t, filepath.Join(dir, ok), []byte("x"))
			odd := "sp ace,comma:colon\ttab\u00e9\u4e2d"
			mustWrite(t, filepath.Join(dir, odd), []byte("y"))
			if string(mustRead(t, filepath.Join(dir, odd))) != "y" {
				t.Fatal("odd name")
			}
		}},
		{"permissions as another user", func(t *testing.T, dir string) {
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			secret := filepath.Join(dir, "secret")
			mustWrite(t, secret, []byte("s"))
			if err := os.Chmod(secret, 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := asNobody(t, "cat "+secret); err == nil || !strings.Contains(out, "Permission denied") {
				t.Fatalf("nobody read a 0600 root file: %v %s", err, out)
			}
			if out, err := asNobody(t, "touch "+filepath.Join(dir, "new")); err == nil || !strings.Contains(out, "Permission denied") {
				t.Fatalf("nobody created a file in a 0755 root directory: %v %s", err, out)
			}
			sticky := filepath.Join(dir, "sticky")
			if err := os.Mkdir(sticky, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Chmod(sticky, 0o1777); err != nil { // os.Chmod drops the sticky bit of a plain number
				t.Fatal(err)
			}
			rootFile := filepath.Join(sticky, "roots")
			mustWrite(t, rootFile, nil)
			if out, err := asNobody(t, "echo hi > "+filepath.Join(sticky, "mine")+" && rm "+filepath.Join(sticky, "mine")); err != nil {
				t.Fatalf("nobody in a sticky 1777 directory: %v %s", err, out)
			}
			if out, err := asNobody(t, "rm -f "+rootFile); err == nil {
				t.Fatalf("sticky bit: nobody removed root's file: %s", out)
			}
			if _, err := os.Stat(rootFile); err != nil {
				t.Fatalf("root's file in the sticky directory: %v", err)
			}
			wr := filepath.Join(dir, "world-writable")
			mustWrite(t, wr, nil)
			_ = os.Chmod(wr, 0o666)
			if out, err := asNobody(t, "chmod 777 "+wr); err == nil {
				t.Fatalf("nobody chmodded root's file: %s", out)
			}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := m.Path(fmt.Sprintf("case%02d", i))
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			c.fn(t, dir)
		})
	}
}
