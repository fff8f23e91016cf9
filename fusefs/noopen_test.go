package fusefs

import (
	"slices"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"
)

// TestNoOpenLayer: OPEN and FLUSH are refused so that the kernel stops
// sending them; reads by inode share one handle below per inode, opened at
// the first read and released when the kernel forgets the inode.
func TestNoOpenLayer(t *testing.T) {
	handles := newHandleTable()
	next := &recordingFS{}
	baseLike(next, handles, map[uint64]*meta.Attr{7: {Typ: meta.TypeFile, Length: 15}, 8: {Typ: meta.TypeFile, Length: 15}})
	l := newNoOpenLayer(next)
	var out fuse.OpenOut
	if st := l.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: 7}}, &out); st != fuse.ENOSYS {
		t.Fatalf("open = %v, want ENOSYS (the kernel's no_open)", st)
	}
	if st := l.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: 7}, Flags: syscall.O_RDWR}, &out); st != fuse.Status(syscall.EROFS) {
		t.Fatalf("write open = %v, want EROFS", st)
	}
	if st := l.Flush(nil, &fuse.FlushIn{InHeader: fuse.InHeader{NodeId: 7}}); st != fuse.ENOSYS {
		t.Fatalf("flush = %v, want ENOSYS", st)
	}
	for _, ino := range []uint64{7, 7, 8, 7} {
		buf := make([]byte, 32)
		r, st := l.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: ino}, Size: 32}, buf)
		if st != fuse.OK {
			t.Fatalf("read of %d: %v", ino, st)
		}
		if b, _ := r.Bytes(buf); string(b) != "from the volume" {
			t.Fatalf("read of %d: %q", ino, b)
		}
	}
	count := func(op string) int {
		n := 0
		for _, c := range next.calls {
			if c == op {
				n++
			}
		}
		return n
	}
	if n := count("Open"); n != 2 {
		t.Errorf("%d opens below for reads of two inodes, want 2", n)
	}
	l.Forget(7, 1)
	if n := count("Release"); n != 1 || handles.len() != 1 {
		t.Errorf("after forgetting inode 7: %d releases below, %d handles open; want 1 and 1", n, handles.len())
	}
	if !slices.Contains(next.calls, "Forget") {
		t.Error("the forget did not reach the next layer")
	}
}
