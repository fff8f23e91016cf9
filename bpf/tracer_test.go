//go:build linux && amd64

package bpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// need skips, or fails under DISGRAFS_REQUIRE_ALL=1, when a prerequisite is missing.
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

// classNode is a loopback node whose files are opened by name prefix:
// "pt-" through passthrough, "direct-" with FOPEN_DIRECT_IO, others through
// the page cache (the daemon serves misses).
type classNode struct{ *fs.LoopbackNode }

// WrapChild makes every node of the tree a classNode.
func (n *classNode) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &classNode{ops.(*fs.LoopbackNode)}
}

// noPassthrough hides LoopbackFile's PassthroughFd, so go-fuse serves reads itself.
type noPassthrough struct {
	fs.FileReader
	fs.FileReleaser
	fs.FileGetattrer
	fs.FileFlusher
	fs.FileLseeker
}

func (n *classNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return fh, fl, errno
	}
	name := n.EmbeddedInode().Path(nil)
	if strings.HasPrefix(filepath.Base(name), "pt-") {
		return fh, fl, 0
	}
	lf := fh.(*fs.LoopbackFile)
	w := &noPassthrough{lf, lf, lf, lf, lf}
	if strings.HasPrefix(filepath.Base(name), "direct-") {
		fl |= fuse.FOPEN_DIRECT_IO
	}
	return w, fl, 0
}

// mountLoopback serves dir at a new mountpoint with classNode files.
func mountLoopback(t testing.TB, dir string) string {
	t.Helper()
	need(t, os.Geteuid() == 0, "needs root to mount FUSE and load BPF")
	_, err := os.Stat("/dev/fuse")
	need(t, err == nil, "no /dev/fuse")
	mnt := t.TempDir()
	rootOps, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	root := &classNode{rootOps.(*fs.LoopbackNode)}
	hour := time.Hour
	srv, err := fs.Mount(mnt, root, &fs.Options{
		MountOptions: fuse.MountOptions{DirectMount: true, FsName: "bpftest"},
		AttrTimeout:  &hour, EntryTimeout: &hour,
	})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	return mnt
}

func devOf(t testing.TB, path string) (dev, ino uint64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev, st.Ino
}

// bpfFds counts this process's open BPF objects (programs, maps, links).
func bpfFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if strings.HasPrefix(target, "anon_inode:bpf") {
			n++
		}
	}
	return n
}

type readOp struct {
	kind string // read, pread, readv
	size int
}

// TestExactCounts runs a known workload through a real FUSE mount and checks
// the per-inode counts, bytes and classes, the per-process counts, the open
// events, the FUSE statistics, that a file outside the mount is not counted,
// and that Close leaves no BPF object behind.
func TestExactCounts(t *testing.T) {
	backing := t.TempDir()
	files := map[string]int{"pt-a": 64 << 10, "cached-b": 48 << 10, "direct-c": 32 << 10}
	for name, size := range files {
		if err := os.WriteFile(filepath.Join(backing, name), bytes.Repeat([]byte{'x'}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := mountLoopback(t, backing)
	dev, _ := devOf(t, mnt)

	before := bpfFds(t)
	tr, err := Load(context.Background(), Options{Dev: dev, OpenEventsBuffer: 100000})
	if err != nil {
		var le *LoadError
		if errors.As(err, &le) && os.Getenv("DISGRAFS_REQUIRE_ALL") != "1" {
			t.Skipf("cannot run here: %v", err)
		}
		t.Fatal(err)
	}
	ids := tr.ProgramIDs()
	if len(ids) != 4 {
		t.Fatalf("want 4 programs loaded, got %v", ids)
	}
	// Start from a clean slate: the mount's own setup may have been counted.
	if _, err := tr.Drain(); err != nil {
		t.Fatal(err)
	}

	work := map[string][]readOp{
		"pt-a":     {{"pread", 4096}, {"pread", 4096}, {"read", 1000}, {"readv", 3000}, {"pread", 65536}}, // the last one is short: 64 KiB - 8192... see below
		"cached-b": {{"read", 3000}, {"read", 3000}, {"read", 3000}, {"pread", 100}, {"readv", 5000}, {"read", 7}},
		"direct-c": {{"pread", 8192}, {"pread", 8192}, {"read", 512}},
	}
	type want struct{ calls, bytes uint64 }
	wants := map[string]want{}
	for name, ops := range work {
		f, err := os.Open(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		fd := int(f.Fd())
		var w want
		var off int64
		for i, op := range ops {
			buf := make([]byte, op.size)
			var n int
			switch op.kind {
			case "read":
				n, err = unix.Read(fd, buf)
			case "pread":
				// Distinct offsets; the last pread of pt-a starts past 60 KiB so it is short.
				n, err = unix.Pread(fd, buf, off+int64(i)*4096)
			case "readv":
				half := op.size / 2
				n, err = unix.Readv(fd, [][]byte{buf[:half], buf[half:]})
			}
			if err != nil {
				t.Fatalf("%s %s: %v", op.kind, name, err)
			}
			w.calls++
			w.bytes += uint64(n)
		}
		f.Close()
		wants[name] = w
	}
	// Reads outside the mount are not counted.
	for range 10 {
		if _, err := os.ReadFile(outside); err != nil {
			t.Fatal(err)
		}
	}

	d, err := tr.Drain()
	if err != nil {
		t.Fatal(err)
	}
	byIno := map[uint64]InodeCounts{}
	for _, in := range d.Inodes {
		byIno[in.Ino] = in.InodeCounts
	}
	_, outIno := devOf(t, outside)
	classOf := map[string]Class{"pt-a": Passthrough, "cached-b": Cached, "direct-c": Direct}
	seenInos := map[uint64]bool{}
	for name, w := range wants {
		_, ino := devOf(t, filepath.Join(mnt, name))
		seenInos[ino] = true
		got, ok := byIno[ino]
		if !ok {
			t.Errorf("%s (ino %d): not counted; got %+v", name, ino, d.Inodes)
			continue
		}
		c := classOf[name]
		if got.Calls[c] != w.calls || got.Bytes[c] != w.bytes || got.ReadCalls() != w.calls || got.ReadBytes() != w.bytes {
			t.Errorf("%s: want %d calls, %d bytes as %s; got calls %v bytes %v", name, w.calls, w.bytes, c, got.Calls, got.Bytes)
		}
		s := got.Split()
		if s.Passthrough+s.PageCache+s.Daemon != w.bytes {
			t.Errorf("%s: split %+v does not add up to %d", name, s, w.bytes)
		}
		switch c {
		case Passthrough:
			if got.FuseReads != 0 || s.Passthrough != w.bytes {
				t.Errorf("%s: passthrough reads reached the daemon (%d FUSE READs) or split %+v", name, got.FuseReads, s)
			}
		case Direct:
			if got.FuseReadBytes != w.bytes || s.Daemon != w.bytes {
				t.Errorf("%s: direct I/O: want %d bytes from the daemon, got FUSE READ bytes %d, split %+v", name, w.bytes, got.FuseReadBytes, s)
			}
		case Cached:
			// The first read (3000 bytes) misses and waits; readahead brings
			// the rest of the 48 KiB file, so later reads hit the cache. The
			// second read may start the asynchronous readahead and see its
			// reply before it returns, which charges it to the daemon too.
			if got.FuseReads == 0 || s.Daemon < 3000 || s.Daemon > 6000 || s.PageCache < w.bytes-6000 {
				t.Errorf("%s: want the first read (3000 bytes) from the daemon and the rest from the page cache: %+v split %+v", name, got, s)
			}
		}
		t.Logf("%s ino %d: %d calls, %d bytes, class %s, FUSE READs %d (%d bytes), split %+v", name, ino, w.calls, w.bytes, c, got.FuseReads, got.FuseReadBytes, s)
	}
	for ino := range byIno {
		if ino == outIno {
			t.Errorf("the file outside the mount (ino %d) was counted", ino)
		}
	}
	// Per process: all reads are ours.
	pid := uint32(os.Getpid())
	for _, p := range d.Procs {
		if p.Tgid != pid {
			t.Errorf("a read by another process (%d) of ino %d was counted", p.Tgid, p.Ino)
		}
	}
	for name, w := range wants {
		_, ino := devOf(t, filepath.Join(mnt, name))
		var calls, b uint64
		for _, p := range d.Procs {
			if p.Ino == ino && p.Tgid == pid {
				calls, b = calls+p.Calls, b+p.Bytes
			}
		}
		if calls != w.calls || b != w.bytes {
			t.Errorf("%s per process: want %d/%d, got %d/%d", name, w.calls, w.bytes, calls, b)
		}
	}
	// Open events: one per file, by this process.
	opened := map[uint64]int{}
	for _, e := range d.Opens {
		if e.Tgid != pid {
			continue
		}
		if !strings.HasPrefix("bpf.test", e.Comm) && !strings.HasPrefix(e.Comm, "bpf.test") {
			t.Errorf("open event comm %q", e.Comm)
		}
		if e.Flags&unix.O_ACCMODE != unix.O_RDONLY {
			t.Errorf("open event flags %#x", e.Flags)
		}
		opened[e.Ino]++
	}
	for ino := range seenInos {
		if opened[ino] != 1 {
			t.Errorf("ino %d: want 1 open event, got %d (%+v)", ino, opened[ino], d.Opens)
		}
	}
	ops := map[string]FuseOp{}
	for _, o := range d.Fuse {
		ops[o.Name] = o
	}
	if ops["READ"].Count == 0 || ops["OPEN"].Count < 3 {
		t.Errorf("FUSE statistics lack READ or OPEN: %+v", d.Fuse)
	}
	for _, o := range d.Fuse {
		var n uint64
		for _, b := range o.Buckets {
			n += b
		}
		if n != o.Count || o.Sum <= 0 {
			t.Errorf("%s: buckets hold %d of %d requests, sum %v", o.Name, n, o.Count, o.Sum)
		}
	}
	if d.Lost != (Lost{}) {
		t.Errorf("lost: %+v", d.Lost)
	}

	// A second drain without activity reports no inode deltas.
	d2, err := tr.Drain()
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range d2.Inodes {
		if seenInos[in.Ino] {
			t.Errorf("idle drain reported ino %d: %+v", in.Ino, in.InodeCounts)
		}
	}

	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if after := bpfFds(t); after != before {
		t.Errorf("BPF file descriptors: %d before Load, %d after Close", before, after)
	}
	// The kernel frees programs after an RCU grace period: give it a moment.
	for _, id := range ids {
		deadline := time.Now().Add(5 * time.Second)
		for {
			p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
			if err != nil {
				break
			}
			p.Close()
			if time.Now().After(deadline) {
				t.Errorf("program %d still loaded 5s after Close", id)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestLoadErrors: a bad device is refused with a LoadError.
func TestLoadErrors(t *testing.T) {
	_, err := Load(context.Background(), Options{})
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("want a *LoadError, got %v", err)
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    InodeCounts
		want Split
	}{
		{"passthrough", InodeCounts{Bytes: [3]uint64{100, 0, 0}}, Split{Passthrough: 100}},
		{"all from cache", InodeCounts{Bytes: [3]uint64{0, 100, 0}, FuseReadBytes: 4096}, Split{PageCache: 100}},
		{"cold", InodeCounts{Bytes: [3]uint64{0, 100, 0}, MissBytes: 100}, Split{Daemon: 100}},
		{"half", InodeCounts{Bytes: [3]uint64{0, 100, 0}, MissBytes: 50}, Split{PageCache: 50, Daemon: 50}},
		{"miss capped", InodeCounts{Bytes: [3]uint64{0, 100, 0}, MissBytes: 500}, Split{Daemon: 100}},
		{"all three", InodeCounts{Bytes: [3]uint64{7, 100, 30}, MissBytes: 50}, Split{Passthrough: 7, PageCache: 50, Daemon: 80}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.Split(); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestOpenEventsLost: opens that do not fit the ring buffer are counted as lost,
// and every open is either delivered or counted.
func TestOpenEventsLost(t *testing.T) {
	backing := t.TempDir()
	if err := os.WriteFile(filepath.Join(backing, "cached-f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := mountLoopback(t, backing)
	dev, _ := devOf(t, mnt)
	tr, err := Load(context.Background(), Options{Dev: dev, OpenEventsBuffer: 4096})
	if err != nil {
		need(t, false, err.Error())
	}
	defer tr.Close()
	const n = 200
	for range n {
		f, err := os.Open(filepath.Join(mnt, "cached-f"))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	d, err := tr.Drain()
	if err != nil {
		t.Fatal(err)
	}
	if d.Lost.OpenEvents == 0 || uint64(len(d.Opens))+d.Lost.OpenEvents != n {
		t.Fatalf("%d opens: %d delivered, %d lost", n, len(d.Opens), d.Lost.OpenEvents)
	}
	// Drained, the buffer takes events again.
	f, err := os.Open(filepath.Join(mnt, "cached-f"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if d, err = tr.Drain(); err != nil || len(d.Opens) != 1 {
		t.Fatalf("after a drain: %d events, %v", len(d.Opens), err)
	}
}

// TestInodeMapFull: with room for few inodes, reads beyond it are counted as
// lost, and a drain makes room by dropping idle inodes.
func TestInodeMapFull(t *testing.T) {
	backing := t.TempDir()
	const files, capacity = 40, 16
	for i := range files {
		if err := os.WriteFile(filepath.Join(backing, fmt.Sprintf("cached-%02d", i)), []byte("0123456789"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mnt := mountLoopback(t, backing)
	dev, _ := devOf(t, mnt)
	tr, err := Load(context.Background(), Options{Dev: dev, MaxInodes: capacity})
	if err != nil {
		need(t, false, err.Error())
	}
	defer tr.Close()
	read := func(i int) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("cached-%02d", i)))
		if err != nil || len(b) != 10 {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	for i := range files {
		read(i)
	}
	d, err := tr.Drain()
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Inodes) > capacity || d.Lost.InodesFull == 0 {
		t.Fatalf("%d inodes counted with room for %d, %d lost", len(d.Inodes), capacity, d.Lost.InodesFull)
	}
	// Nothing read since: the next drain finds every entry idle and, the map
	// being full, deletes them; then new inodes are counted again.
	if _, err := tr.Drain(); err != nil {
		t.Fatal(err)
	}
	lost := d.Lost.InodesFull
	for i := files - 4; i < files; i++ {
		read(i)
	}
	if d, err = tr.Drain(); err != nil {
		t.Fatal(err)
	}
	if len(d.Inodes) != 4 || d.Lost.InodesFull != lost {
		t.Fatalf("after the idle entries went: %d inodes counted (want 4), lost %d -> %d", len(d.Inodes), lost, d.Lost.InodesFull)
	}
	for _, in := range d.Inodes {
		if in.ReadBytes() != 10 {
			t.Errorf("ino %d: %d bytes, want 10", in.Ino, in.ReadBytes())
		}
	}
}

// TestPerProcess: reads by another process are counted under its tgid, and
// its open event carries its command name.
func TestPerProcess(t *testing.T) {
	backing := t.TempDir()
	if err := os.WriteFile(filepath.Join(backing, "cached-p"), bytes.Repeat([]byte{'y'}, 12345), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := mountLoopback(t, backing)
	dev, _ := devOf(t, mnt)
	tr, err := Load(context.Background(), Options{Dev: dev})
	if err != nil {
		need(t, false, err.Error())
	}
	defer tr.Close()
	cmd := exec.Command("dd", "if="+filepath.Join(mnt, "cached-p"), "of=/dev/null", "bs=1000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dd: %v\n%s", err, out)
	}
	child := uint32(cmd.Process.Pid)
	d, err := tr.Drain()
	if err != nil {
		t.Fatal(err)
	}
	_, ino := devOf(t, filepath.Join(mnt, "cached-p"))
	var found bool
	for _, p := range d.Procs {
		if p.Ino == ino && p.Tgid == child {
			found = true
			// dd reads 12 full blocks, one of 345 bytes and one at the end (0).
			if p.Calls != 14 || p.Bytes != 12345 {
				t.Errorf("dd: %d calls, %d bytes; want 14 and 12345", p.Calls, p.Bytes)
			}
		}
	}
	if !found {
		t.Errorf("no per-process entry for dd (pid %d): %+v", child, d.Procs)
	}
	var opened bool
	for _, e := range d.Opens {
		if e.Tgid == child && e.Ino == ino && e.Comm == "dd" {
			opened = true
		}
	}
	if !opened {
		t.Errorf("no open event of dd: %+v", d.Opens)
	}
}
