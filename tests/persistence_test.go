package tests

// Data and extended attributes of the embedded volume survive the end of the
// daemon: a clean unmount, SIGTERM, and kill -9 after fsync.

import (
	"bytes"
	"crypto/sha256"
	encbin "encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/daemon"
)

// persistEntry is what a name in the test tree must look like after an event.
type persistEntry struct {
	rel    string
	mode   fs.FileMode // type bits and permissions
	size   int64       // regular files
	sha    string      // hex SHA-256 of a regular file's bytes
	target string      // symlinks
	linkOf string      // a hard link: the other name of the same inode
	xattrs map[string][]byte
}

// persistSet is a test tree and the random source that made it.
type persistSet struct {
	root    string
	entries []persistEntry
	// open is a file that was written and fsynced but is still open.
	open *os.File
}

// persistRand returns a seeded random source; the seed is logged so that a
// failure can be reproduced with DISGRAFS_TEST_SEED.
func persistRand(t *testing.T) (*rand.Rand, *rand.ChaCha8) {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DISGRAFS_TEST_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("DISGRAFS_TEST_SEED=%q: %v", s, err)
		}
	}
	t.Logf("random seed %d (set DISGRAFS_TEST_SEED to repeat)", seed)
	var key [32]byte
	encbin.LittleEndian.PutUint64(key[:], seed)
	return rand.New(rand.NewPCG(seed, seed>>1|1)), rand.NewChaCha8(key)
}

// persistWriteFile writes size random bytes to path in randomly sized pieces,
// fsyncs it and returns the open file and the SHA-256 of what was written.
func persistWriteFile(path string, size int64, r *rand.Rand, src io.Reader) (*os.File, string, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, "", fmt.Errorf("create %s: %w", path, err)
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, 1+r.Int64N(int64(len(buf))))
		if _, err := io.ReadFull(src, buf[:n]); err != nil {
			f.Close()
			return nil, "", err
		}
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return nil, "", fmt.Errorf("write %s: %w", path, err)
		}
		left -= n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("fsync %s: %w", path, err)
	}
	return f, hex.EncodeToString(h.Sum(nil)), nil
}

// persistHashZeros feeds n zero bytes to h.
func persistHashZeros(h hash.Hash, n int64) {
	zeros := make([]byte, 1<<20)
	for ; n > 0; n -= int64(len(zeros)) {
		h.Write(zeros[:min(n, int64(len(zeros)))])
	}
}

// persistSparse writes a file with data at its start, a hole up to past 4 GiB,
// data spanning a block boundary there, and a trailing hole made by extending
// truncate. It returns the file's size and SHA-256.
func persistSparse(path string, src io.Reader) (int64, string, error) {
	const (
		headLen  = 1<<20 + 333
		tailOff  = 4<<30 + 4<<20 - 12345 // straddles the 4 MiB block boundary after 4 GiB
		tailLen  = 2<<20 + 77
		fileSize = 4<<30 + 16<<20
	)
	head := make([]byte, headLen)
	tail := make([]byte, tailLen)
	if _, err := io.ReadFull(src, head); err != nil {
		return 0, "", err
	}
	if _, err := io.ReadFull(src, tail); err != nil {
		return 0, "", err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, "", fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(tail, tailOff); err != nil {
		return 0, "", fmt.Errorf("write past 4 GiB in %s: %w", path, err)
	}
	if _, err := f.WriteAt(head, 0); err != nil {
		return 0, "", fmt.Errorf("write the head of %s: %w", path, err)
	}
	if err := f.Truncate(fileSize); err != nil {
		return 0, "", fmt.Errorf("extend %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return 0, "", fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return 0, "", fmt.Errorf("close %s: %w", path, err)
	}
	h := sha256.New()
	h.Write(head)
	persistHashZeros(h, tailOff-headLen)
	h.Write(tail)
	persistHashZeros(h, fileSize-tailOff-tailLen)
	return fileSize, hex.EncodeToString(h.Sum(nil)), nil
}

// persistOverwritten writes a file over several blocks, overwrites a range
// across a block boundary through a second descriptor and shrinks it to a
// length inside a block, so that its content is made of layered slices.
func persistOverwritten(path string, r *rand.Rand, src io.Reader) ([]byte, error) {
	data := make([]byte, 9<<20+4321)
	if _, err := io.ReadFull(src, data); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %s: %w", path, err)
	}
	defer f.Close()
	off := int64(3<<20 + r.IntN(1<<20))
	patch := make([]byte, 2<<20+r.IntN(4096))
	if _, err := io.ReadFull(src, patch); err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(patch, off); err != nil {
		return nil, fmt.Errorf("overwrite %s: %w", path, err)
	}
	copy(data[off:], patch)
	newLen := int64(8<<20 + 100)
	if err := f.Truncate(newLen); err != nil {
		return nil, fmt.Errorf("truncate %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("fsync %s: %w", path, err)
	}
	return data[:newLen], f.Close()
}

// persistSetXattrs sets the attributes of e on its path, and sets and removes
// one more so that a removal must persist too.
func persistSetXattrs(root string, e *persistEntry) error {
	p := filepath.Join(root, e.rel)
	for _, name := range slices.Sorted(maps.Keys(e.xattrs)) {
		if err := syscall.Setxattr(p, name, e.xattrs[name], 0); err != nil {
			return fmt.Errorf("setxattr %s %s: %w", p, name, err)
		}
	}
	if err := syscall.Setxattr(p, "user.removed", []byte("gone after removexattr"), 0); err != nil {
		return fmt.Errorf("setxattr %s user.removed: %w", p, err)
	}
	if err := syscall.Removexattr(p, "user.removed"); err != nil {
		return fmt.Errorf("removexattr %s user.removed: %w", p, err)
	}
	return nil
}

// persistPopulate writes the test tree under root. With keepOpen, one more
// file is written and fsynced but left open (set.open).
func persistPopulate(t *testing.T, root string, keepOpen bool) *persistSet {
	t.Helper()
	r, src := persistRand(t)
	set := &persistSet{root: root}
	// Plain user attributes, for files and directories.
	attrs := func(name string) map[string][]byte {
		bin := make([]byte, 64)
		_, _ = src.Read(bin)
		bin[0], bin[17] = 0, 0 // values are bytes, not C strings
		return map[string][]byte{
			"user.xdg.comment": []byte("ünïcode comment for " + name),
			"user.binary":      bin,
		}
	}
	// Files also get tags: user.xdg.tags goes through the tagging layer
	// (validated, normalised, indexed), so the value is a normalised tag list.
	tags := func(name string) map[string][]byte {
		a := attrs(name)
		a["user.xdg.tags"] = []byte("disgrafs,persistence,crème brûlée," + strings.ReplaceAll(name, "/", "-"))
		return a
	}
	for _, d := range []string{"nested", "nested/a", "nested/a/b", "empty-dir"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o750); err != nil {
			t.Fatalf("mkdir %s: %v", d, err)
		}
		e := persistEntry{rel: d, mode: fs.ModeDir | 0o750, xattrs: attrs(d)}
		if err := persistSetXattrs(root, &e); err != nil {
			t.Fatal(err)
		}
		set.entries = append(set.entries, e)
	}
	files := []struct {
		rel  string
		size int64
	}{
		{"empty", 0},
		{"one-byte", 1},
		{"page-minus-one", 4095},
		{"small", 4096 + r.Int64N(60<<10)},
		{"block", 4 << 20},
		{"block-plus-one", 4<<20 + 1},
		{"multi-block", 5<<20 + r.Int64N(15<<20)},
		{"nested/a/b/deep", 1 + r.Int64N(2<<20)},
		{"nested/mid", 4<<20 + r.Int64N(4<<20)},
	}
	if keepOpen {
		files = append(files, struct {
			rel  string
			size int64
		}{"open-at-event", 6<<20 + 3})
	}
	for _, f := range files {
		fh, sum, err := persistWriteFile(filepath.Join(root, f.rel), f.size, r, src)
		if err != nil {
			t.Fatal(err)
		}
		e := persistEntry{rel: f.rel, mode: 0o640, size: f.size, sha: sum, xattrs: tags(f.rel)}
		if err := persistSetXattrs(root, &e); err != nil {
			t.Fatal(err)
		}
		if err := fh.Sync(); err != nil {
			t.Fatalf("fsync %s: %v", f.rel, err)
		}
		if f.rel == "open-at-event" {
			set.open = fh
		} else if err := fh.Close(); err != nil {
			t.Fatalf("close %s: %v", f.rel, err)
		}
		set.entries = append(set.entries, e)
	}
	// Attributes with unusual values on particular files.
	for i := range set.entries {
		e := &set.entries[i]
		switch e.rel {
		case "empty":
			e.xattrs["user.empty-value"] = []byte{}
		case "multi-block":
			big := make([]byte, 16<<10)
			_, _ = src.Read(big)
			e.xattrs["user.big"] = big
		default:
			continue
		}
		if err := persistSetXattrs(root, e); err != nil {
			t.Fatal(err)
		}
	}

	data, err := persistOverwritten(filepath.Join(root, "overwritten"), r, src)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	ow := persistEntry{rel: "overwritten", mode: 0o644, size: int64(len(data)), sha: hex.EncodeToString(sum[:]), xattrs: tags("overwritten")}
	if err := persistSetXattrs(root, &ow); err != nil {
		t.Fatal(err)
	}
	set.entries = append(set.entries, ow)

	size, sparseSum, err := persistSparse(filepath.Join(root, "sparse"), src)
	if err != nil {
		t.Fatal(err)
	}
	sp := persistEntry{rel: "sparse", mode: 0o600, size: size, sha: sparseSum, xattrs: tags("sparse")}
	if err := persistSetXattrs(root, &sp); err != nil {
		t.Fatal(err)
	}
	set.entries = append(set.entries, sp)

	// A hard link, a relative symlink and a dangling absolute one.
	if err := os.Link(filepath.Join(root, "block-plus-one"), filepath.Join(root, "nested/hardlink")); err != nil {
		t.Fatalf("link: %v", err)
	}
	for _, e := range set.entries {
		if e.rel == "block-plus-one" {
			l := e
			l.rel, l.linkOf = "nested/hardlink", "block-plus-one"
			set.entries = append(set.entries, l)
			break
		}
	}
	for _, s := range []struct{ rel, target string }{
		{"nested/a/to-multi", "../../multi-block"},
		{"dangling", "/nonexistent/disgrafs/target"},
	} {
		if err := os.Symlink(s.target, filepath.Join(root, s.rel)); err != nil {
			t.Fatalf("symlink %s: %v", s.rel, err)
		}
		set.entries = append(set.entries, persistEntry{rel: s.rel, mode: fs.ModeSymlink | 0o777, target: s.target})
	}

	// fsync every directory, deepest first.
	dirs := []string{"nested/a/b", "nested/a", "nested", "empty-dir", "."}
	for _, d := range dirs {
		if err := persistFsyncDir(filepath.Join(root, d)); err != nil {
			t.Fatal(err)
		}
	}
	return set
}

func persistFsyncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", path, err)
	}
	return nil
}

// persistSHA256File hashes a file's content.
func persistSHA256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// persistXattrs reads every extended attribute of path (not following symlinks).
func persistXattrs(path string) (map[string][]byte, error) {
	n, err := syscall.Listxattr(path, nil)
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", path, err)
	}
	buf := make([]byte, n)
	if n > 0 {
		if n, err = syscall.Listxattr(path, buf); err != nil {
			return nil, fmt.Errorf("listxattr %s: %w", path, err)
		}
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		sz, err := syscall.Getxattr(path, name, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", path, name, err)
		}
		v := make([]byte, sz)
		if sz > 0 {
			if sz, err = syscall.Getxattr(path, name, v); err != nil {
				return nil, fmt.Errorf("getxattr %s %s: %w", path, name, err)
			}
		}
		out[name] = v[:sz]
	}
	return out, nil
}

// persistCompareXattrs describes how got differs from want, or returns nil.
func persistCompareXattrs(path string, got, want map[string][]byte) error {
	var problems []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			problems = append(problems, "missing "+k)
		case !bytes.Equal(g, w):
			problems = append(problems, fmt.Sprintf("%s = %q (%d bytes), want %q (%d bytes)", k, persistTrunc(g), len(g), persistTrunc(w), len(w)))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			problems = append(problems, "unexpected "+k)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	return fmt.Errorf("xattrs of %s: %s", path, strings.Join(problems, "; "))
}

func persistTrunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// persistVerify checks every entry of the set under root, and that root holds
// no other names.
func persistVerify(root string, entries []persistEntry) error {
	var errs []error
	want := map[string]bool{}
	for _, e := range entries {
		want[e.rel] = true
		p := filepath.Join(root, e.rel)
		fi, err := os.Lstat(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("lstat: %w", err))
			continue
		}
		if fi.Mode() != e.mode {
			errs = append(errs, fmt.Errorf("%s: mode %v, want %v", e.rel, fi.Mode(), e.mode))
			continue
		}
		switch {
		case e.mode.IsRegular():
			if fi.Size() != e.size {
				errs = append(errs, fmt.Errorf("%s: size %d, want %d", e.rel, fi.Size(), e.size))
				continue
			}
			sum, err := persistSHA256File(p)
			if err != nil {
				errs = append(errs, err)
			} else if sum != e.sha {
				errs = append(errs, fmt.Errorf("%s: SHA-256 %s, want %s", e.rel, sum, e.sha))
			}
			if e.linkOf != "" {
				other, err := os.Stat(filepath.Join(root, e.linkOf))
				if err != nil {
					errs = append(errs, err)
				} else if !os.SameFile(fi, other) || fi.Sys().(*syscall.Stat_t).Nlink != 2 {
					errs = append(errs, fmt.Errorf("%s is no longer a hard link of %s (nlink %d)", e.rel, e.linkOf, fi.Sys().(*syscall.Stat_t).Nlink))
				}
			}
		case e.mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("readlink: %w", err))
			} else if target != e.target {
				errs = append(errs, fmt.Errorf("%s -> %q, want %q", e.rel, target, e.target))
			}
		}
		if e.xattrs != nil {
			got, err := persistXattrs(p)
			if err != nil {
				errs = append(errs, err)
			} else if err := persistCompareXattrs(e.rel, got, e.xattrs); err != nil {
				errs = append(errs, err)
			}
		}
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel != "." && !want[rel] {
			errs = append(errs, fmt.Errorf("unexpected entry %s", rel))
		}
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("walk %s: %w", root, err))
	}
	return errors.Join(errs...)
}

// persistObjectBytes sums the sizes of the embedded volume's objects.
func persistObjectBytes(dataDir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(filepath.Join(dataDir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		total += fi.Size()
		return nil
	})
	return total, err
}

// TestPersistence writes a tree of files (block-spanning, overwritten, sparse
// past 4 GiB, hard and symbolic links) with user xattrs on the embedded
// volume, fsyncs it, ends the daemon in one of three ways, mounts the same
// data directory on the same mountpoint again and checks every byte (SHA-256),
// every xattr and every name.
func TestPersistence(t *testing.T) {
	events := []struct {
		name string
		// keepOpen leaves one fsynced file open while the daemon ends.
		keepOpen bool
		end      func(t *testing.T, m *Mount)
	}{
		{
			name: "unmount",
			end: func(t *testing.T, m *Mount) {
				m.Unmount()
			},
		},
		{
			name: "sigterm",
			end: func(t *testing.T, m *Mount) {
				m.Signal(syscall.SIGTERM)
				if m.waitErr != nil {
					t.Fatalf("daemon exited with %v after SIGTERM, want a clean exit\n%s", m.waitErr, m.Log())
				}
			},
		},
		{
			name:     "kill9",
			keepOpen: true,
			end: func(t *testing.T, m *Mount) {
				m.Kill9()
				var sfs syscall.Statfs_t
				if err := syscall.Statfs(m.Dir, &sfs); !errors.Is(err, syscall.ENOTCONN) {
					t.Fatalf("statfs of the mount of a killed daemon: %v, want ENOTCONN", err)
				}
				// A file is still open on the dead mount: umount must clean it up anyway.
				out, err := run(t, "umount", m.Dir)
				if err != nil {
					t.Fatalf("disgrafs umount of a dead mount: %v\n%s", err, out)
				}
				t.Logf("disgrafs umount: %s", strings.TrimSpace(out))
			},
		},
	}
	for _, ev := range events {
		t.Run(ev.name, func(t *testing.T) {
			dataDir, dir := t.TempDir(), t.TempDir()
			// Without the auto-tagger, which would add tags to the files in
			// the background after they are written and race with the
			// expected values.
			opts := MountOpts{Dir: dir, DataDir: dataDir, Extra: []string{"--auto-tag=false"}}
			m := startMount(t, opts)
			root := m.Path("tree")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatalf("mkdir: %v", err)
			}
			start := time.Now()
			set := persistPopulate(t, root, ev.keepOpen)
			t.Logf("wrote %d entries in %s", len(set.entries), time.Since(start).Round(time.Millisecond))

			ev.end(t, m)
			if set.open != nil {
				_ = set.open.Close() // its mount is gone; the error says so
			}
			if daemon.IsMounted(dir) {
				t.Fatalf("%s is still mounted after %s", dir, ev.name)
			}

			m2 := startMount(t, opts)
			start = time.Now()
			if err := persistVerify(m2.Path("tree"), set.entries); err != nil {
				t.Fatalf("after %s and a new mount:\n%v\ndaemon log:\n%s", ev.name, err, m2.Log())
			}
			t.Logf("verified in %s", time.Since(start).Round(time.Millisecond))

			// Holes stay holes: the sparse file must not have been stored as zeros.
			objBytes, err := persistObjectBytes(dataDir)
			if err != nil {
				t.Fatalf("size of the object directory: %v", err)
			}
			if objBytes > 256<<20 {
				t.Errorf("the volume stores %d MiB of objects for about 70 MiB of data: holes were written out", objBytes>>20)
			}

			// The recovered volume takes new writes.
			p := m2.Path("tree", "after-"+ev.name)
			if err := os.WriteFile(p, []byte("written after "+ev.name), 0o644); err != nil {
				t.Fatalf("write after recovery: %v", err)
			}
			if got, err := os.ReadFile(p); err != nil || string(got) != "written after "+ev.name {
				t.Fatalf("read after recovery: %q, %v", got, err)
			}
		})
	}
}
