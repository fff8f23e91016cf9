package fusefs

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"

	"github.com/disgrafs/disgrafs/cache"
	"github.com/disgrafs/disgrafs/coherence"
	"github.com/disgrafs/disgrafs/graph/boltstore"
	"github.com/disgrafs/disgrafs/names"
	"github.com/disgrafs/disgrafs/prealloc"
	"github.com/disgrafs/disgrafs/tagging"
	"github.com/disgrafs/disgrafs/tagging/tagtest"
	"github.com/disgrafs/disgrafs/volume"
)

var quiet = slog.New(slog.DiscardHandler)

// memSource is a cache.Source over files held in memory (our own interface).
type memSource struct {
	files map[uint64][]byte
	attrs map[uint64]*meta.Attr
}

func (s *memSource) Stat(ctx context.Context, ino uint64) (cache.Version, error) {
	return volume.FileVersion(s.attrs[ino]), nil
}

func (s *memSource) Open(ctx context.Context, ino uint64) (cache.Reader, cache.Version, error) {
	b, ok := s.files[ino]
	if !ok {
		return nil, cache.Version{}, syscall.ENOENT
	}
	return nopCloser{bytes.NewReader(b)}, volume.FileVersion(s.attrs[ino]), nil
}

func (s *memSource) Cached(context.Context, uint64, uint64) {}

type nopCloser struct{ io.ReaderAt }

func (nopCloser) Close() error { return nil }

// cacheHolding is a whole-file cache holding ino's content at the version
// of attrs[ino], closed at the end of the test.
func cacheHolding(t *testing.T, attrs map[uint64]*meta.Attr, ino uint64, content []byte) *cache.Cache {
	t.Helper()
	c, err := cache.Open(cache.Config{Dir: t.TempDir(), Capacity: 1 << 20, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Fill(context.Background(), &memSource{files: map[uint64][]byte{ino: content}, attrs: attrs}, ino); err != nil {
		t.Fatal(err)
	}
	return c
}

// baseLike makes a recordingFS open and release handles as the base layer
// does: an entry in the table with the file's attributes.
func baseLike(r *recordingFS, handles *handleTable, attrs map[uint64]*meta.Attr) {
	var next uint64
	var mu sync.Mutex
	r.open = func(in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
		mu.Lock()
		next++
		out.Fh = next
		mu.Unlock()
		handles.add(&handle{fh: out.Fh, ino: in.NodeId, attr: *attrs[in.NodeId]})
		return fuse.OK
	}
	r.release = func(in *fuse.ReleaseIn) { handles.remove(in.Fh) }
	r.read = func(in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
		return fuse.ReadResultData([]byte("from the volume")), fuse.OK
	}
}

// TestCacheLayerOpen: how the cache layer serves opens, without a mount:
// cached files are read from the local copy, misses and written files from
// the next layer.
func TestCacheLayerOpen(t *testing.T) {
	old := time.Now().Add(-time.Hour)
	attr := func(n int) *meta.Attr {
		return &meta.Attr{Typ: meta.TypeFile, Length: uint64(n), Mtime: old.Unix(), Ctime: old.Unix(), Full: true}
	}
	content := []byte("the cached content of file two")
	type step struct {
		ino      uint64
		flags    uint32
		wantErr  fuse.Status
		wantRead string // what a read of the handle returns
		keep     bool   // FOPEN_KEEP_CACHE expected
	}
	cases := []struct {
		name  string
		steps []step
		// cachedAfter says whether inode 2's copy is still cached.
		cachedAfter bool
	}{
		{"hit is served from the copy", []step{{ino: 2, wantRead: string(content)}}, true},
		{"second open keeps the pages", []step{{ino: 2, wantRead: string(content)}, {ino: 2, wantRead: string(content), keep: true}}, true},
		{"miss reads the volume", []step{{ino: 3, wantRead: "from the volume"}}, true},
		{"write open drops the copy", []step{{ino: 2, flags: syscall.O_WRONLY, wantRead: "from the volume"}, {ino: 2, wantRead: "from the volume"}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			attrs := map[uint64]*meta.Attr{2: attr(len(content)), 3: attr(10)}
			c := cacheHolding(t, attrs, 2, content)
			handles := newHandleTable()
			next := &recordingFS{}
			baseLike(next, handles, attrs)
			l := newCacheLayer(next, CacheOptions{Cache: c}, handles, names.New(16), quiet)
			for i, s := range tc.steps {
				var out fuse.OpenOut
				in := &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: s.ino}, Flags: s.flags}
				if got := l.Open(nil, in, &out); got != s.wantErr {
					t.Fatalf("step %d: open = %v, want %v", i, got, s.wantErr)
				}
				if keep := out.OpenFlags&fuse.FOPEN_KEEP_CACHE != 0; keep != s.keep {
					t.Errorf("step %d: KEEP_CACHE = %v, want %v", i, keep, s.keep)
				}
				buf := make([]byte, 64)
				r, st := l.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: s.ino}, Fh: out.Fh, Size: 64}, buf)
				if st != fuse.OK {
					t.Fatalf("step %d: read = %v", i, st)
				}
				data, _ := r.Bytes(buf)
				if string(data) != s.wantRead {
					t.Errorf("step %d: read %q, want %q", i, data, s.wantRead)
				}
				l.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: s.ino}, Fh: out.Fh})
			}
			if got := c.Contains(2); got != tc.cachedAfter {
				t.Errorf("inode 2 cached = %v, want %v", got, tc.cachedAfter)
			}
			if n := handles.len(); n != 0 {
				t.Errorf("%d handles left open", n)
			}
		})
	}
}

// fakePrealloc is a preallocator (our own interface) with a pool of one
// file and one pending name.
type fakePrealloc struct {
	mu       sync.Mutex
	calls    []string
	pool     *prealloc.Created
	pending  map[string]uint64 // name -> inode whose rename has not landed
	async    bool
	commits  []prealloc.CloseCommit
	overlaid []uint64
}

func (f *fakePrealloc) note(c string) {
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
}
func (f *fakePrealloc) Enabled(dir uint64) bool { return dir == 1 }
func (f *fakePrealloc) Create(ctx context.Context, parent uint64, name string, mode, uid, gid uint32) (*prealloc.Created, bool, error) {
	f.note("Create " + name)
	c := f.pool
	f.pool = nil
	return c, c != nil, nil
}
func (f *fakePrealloc) NoteName(parent uint64, name string) {}
func (f *fakePrealloc) Settle(ctx context.Context, parent uint64, name string) (uint64, string, error) {
	f.note("Settle " + name)
	return parent, name, nil
}
func (f *fakePrealloc) SettleOwner(ctx context.Context, ino uint64) error { return nil }
func (f *fakePrealloc) Lookup(parent uint64, name string) (uint64, bool) {
	ino, ok := f.pending[name]
	return ino, ok
}
func (f *fakePrealloc) Absent(parent uint64, name string) bool { return name == "absent" }
func (f *fakePrealloc) Overlay(ino uint64, a *meta.Attr) {
	if _, ok := f.pending["p"]; ok && f.pending["p"] == ino {
		a.Mode = 0o600
		f.overlaid = append(f.overlaid, ino)
	}
}
func (f *fakePrealloc) Pending() bool                                 { return len(f.pending) > 0 }
func (f *fakePrealloc) WaitIno(ctx context.Context, ino uint64) error { return nil }
func (f *fakePrealloc) WaitDir(ctx context.Context, dir uint64) error { return nil }
func (f *fakePrealloc) SetInvalidate(prealloc.Invalidator)            {}
func (f *fakePrealloc) AsyncClose() bool                              { return f.async }
func (f *fakePrealloc) StageClose(ctx context.Context, ino, parent uint64, name string, size uint64) (*prealloc.CloseTicket, error) {
	f.note("StageClose " + name)
	return &prealloc.CloseTicket{}, nil
}
func (f *fakePrealloc) QueueClose(t *prealloc.CloseTicket, commit prealloc.CloseCommit) {
	f.note("QueueClose")
	f.commits = append(f.commits, commit)
}
func (f *fakePrealloc) ClosesPending() bool                                 { return len(f.commits) > 0 }
func (f *fakePrealloc) WaitCommitted(ctx context.Context, ino uint64) error { return nil }

// fakeReplier makes entries as the base layer does, without a volume.
type fakeReplier struct{ policies []attrPolicy }

func (r fakeReplier) replyEntry(ctx *reqContext, e *meta.Entry, parent uint64, out *fuse.EntryOut) fuse.Status {
	for _, p := range r.policies {
		p.replyAttr(e, parent)
	}
	out.NodeId = uint64(e.Inode)
	attrToFuse(e.Inode, e.Attr, &out.Attr)
	return fuse.OK
}

// TestPreallocLayer: creates from the pool, pending names and async closes,
// without a mount.
func TestPreallocLayer(t *testing.T) {
	setup := func(async bool) (*preallocLayer, *fakePrealloc, *recordingFS, *handleTable, *names.Index) {
		f := &fakePrealloc{
			pool:    &prealloc.Created{Ino: 50, Fh: 7, Attr: meta.Attr{Typ: meta.TypeFile, Mode: 0o644}},
			pending: map[string]uint64{"p": 60},
			async:   async,
		}
		next := &recordingFS{}
		next.getAttr = func(in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
			out.Ino = in.NodeId
			out.Mode = syscall.S_IFREG | 0o644
			return fuse.OK
		}
		handles, idx := newHandleTable(), names.New(16)
		l := newPreallocLayer(next, f, nil, handles, idx, time.Second, quiet)
		l.replier = fakeReplier{policies: []attrPolicy{l}}
		return l, f, next, handles, idx
	}
	t.Run("create from the pool", func(t *testing.T) {
		l, _, next, handles, idx := setup(false)
		var out fuse.CreateOut
		in := &fuse.CreateIn{InHeader: fuse.InHeader{NodeId: 1}, Mode: 0o644}
		if st := l.Create(nil, in, "a", &out); st != fuse.OK {
			t.Fatal(st)
		}
		if out.Fh != 7 || out.NodeId != 50 {
			t.Fatalf("create answered fh %d ino %d, want the pool's 7 and 50", out.Fh, out.NodeId)
		}
		if h := handles.get(7); h == nil || !h.wrote.Load() {
			t.Fatal("the pool's handle is not in the table as written")
		}
		if ino, ok := idx.Ino(1, "a"); !ok || ino != 50 {
			t.Fatal("the name index does not know the created name")
		}
		if slices.Contains(next.calls, "Create") {
			t.Fatal("a create answered from the pool reached the next layer")
		}
		// The pool is empty now: the next create goes down.
		if st := l.Create(nil, in, "b", &out); st != fuse.OK || !slices.Contains(next.calls, "Create") {
			t.Fatalf("a create with an empty pool: %v, next saw %v", st, next.calls)
		}
	})
	t.Run("exclusive create settles and goes down", func(t *testing.T) {
		l, f, next, _, _ := setup(false)
		var out fuse.CreateOut
		in := &fuse.CreateIn{InHeader: fuse.InHeader{NodeId: 1}, Flags: syscall.O_EXCL}
		l.Create(nil, in, "x", &out)
		if !slices.Contains(f.calls, "Settle x") || slices.Contains(f.calls, "Create x") || !slices.Contains(next.calls, "Create") {
			t.Fatalf("manager saw %v, next saw %v", f.calls, next.calls)
		}
	})
	t.Run("pending and absent names", func(t *testing.T) {
		l, _, next, _, _ := setup(false)
		var out fuse.EntryOut
		if st := l.Lookup(nil, &fuse.InHeader{NodeId: 1}, "p", &out); st != fuse.OK || out.NodeId != 60 {
			t.Fatalf("lookup of a pending name: %v, node %d", st, out.NodeId)
		}
		if slices.Contains(next.calls, "Lookup") {
			t.Fatal("a pending name was looked up in the volume")
		}
		if st := l.Lookup(nil, &fuse.InHeader{NodeId: 1}, "absent", &out); st != fuse.ENOENT {
			t.Fatalf("lookup of a name known absent: %v", st)
		}
	})
	t.Run("overlay", func(t *testing.T) {
		l, f, _, _, _ := setup(false)
		a := &meta.Attr{Typ: meta.TypeFile, Mode: 0o644}
		l.replyAttr(&meta.Entry{Inode: 60, Attr: a}, 1)
		if a.Mode != 0o600 || len(f.overlaid) != 1 {
			t.Fatalf("pending file shows mode %o", a.Mode)
		}
	})
	t.Run("async close", func(t *testing.T) {
		l, f, next, _, _ := setup(true)
		var out fuse.CreateOut
		l.Create(nil, &fuse.CreateIn{InHeader: fuse.InHeader{NodeId: 1}}, "a", &out)
		l.Write(nil, &fuse.WriteIn{InHeader: fuse.InHeader{NodeId: 50}, Fh: 7, Offset: 0}, []byte("12345"))
		if st := l.Flush(nil, &fuse.FlushIn{InHeader: fuse.InHeader{NodeId: 50}, Fh: 7}); st != fuse.OK {
			t.Fatal(st)
		}
		if slices.Contains(next.calls, "Flush") {
			t.Fatal("an async close was flushed at once")
		}
		l.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: 50}, Fh: 7})
		if len(f.commits) != 1 || slices.Contains(next.calls, "Release") {
			t.Fatalf("release was not queued: %v / %v", f.calls, next.calls)
		}
		if err := f.commits[0](context.Background()); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(next.calls, "Flush") || !slices.Contains(next.calls, "Release") {
			t.Fatalf("the queued commit did not flush and release below: %v", next.calls)
		}
	})
}

// tagsLayerOverFiles is a tags layer over a fake next layer whose every
// inode is a regular file, and a lookup through it.
func tagsLayerOverFiles(svc *tagging.Service) (*tagsLayer, *recordingFS, func(parent uint64, name string) (uint64, fuse.Status)) {
	next := &recordingFS{}
	next.getAttr = func(in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
		out.Ino = in.NodeId
		out.Mode = syscall.S_IFREG | 0o644
		out.Nlink = 1
		return fuse.OK
	}
	l := newTagsLayer(next, TagOptions{Service: svc, Log: quiet}, names.New(16))
	lookup := func(parent uint64, name string) (uint64, fuse.Status) {
		var out fuse.EntryOut
		h := fuse.InHeader{NodeId: parent}
		st := l.Lookup(nil, &h, name, &out)
		return out.NodeId, st
	}
	return l, next, lookup
}

// TestTagsLayer: the tag tree served over a fake next layer and a real bbolt
// index: setfattr, listing, ln, mv and rm in .tags, bad names.
func TestTagsLayer(t *testing.T) {
	store, err := boltstore.Open(filepath.Join(t.TempDir(), "tags.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	files := tagtest.NewMemFiles()
	svc := tagging.New(files, store, quiet, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	defer func() { cancel(); <-done }()

	l, next, lookup := tagsLayerOverFiles(svc)
	hdr := func(ino uint64) fuse.InHeader { return fuse.InHeader{NodeId: ino} }
	var tagsRoot0 uint64
	list := func(dir uint64) []string {
		var oo fuse.OpenOut
		if st := l.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(dir)}, &oo); st != fuse.OK {
			t.Fatalf("opendir: %v", st)
		}
		defer l.ReleaseDir(&fuse.ReleaseIn{InHeader: hdr(dir), Fh: oo.Fh})
		lst := l.t.handles[oo.Fh]
		var got []string // files only: subdirectories are the co-occurring tags
		for _, e := range lst.entries {
			if e.Mode&syscall.S_IFREG != 0 || dir == tagsRoot0 {
				if e.Name != "." && e.Name != ".." {
					got = append(got, e.Name)
				}
			}
		}
		slices.Sort(got)
		return got
	}
	setTags := func(ino uint64, v string) fuse.Status {
		return l.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: hdr(ino)}, tagging.XattrName, []byte(v))
	}
	if st := setTags(10, "cat, cute"); st != fuse.OK {
		t.Fatalf("setxattr: %v", st)
	}
	if st := setTags(11, "bad\x00tag"); st != fuse.EINVAL {
		t.Fatalf("setxattr of a bad tag list: %v, want EINVAL", st)
	}
	tagsRoot, st := lookup(1, ".tags")
	tagsRoot0 = tagsRoot
	if st != fuse.OK || !isVirtual(tagsRoot) {
		t.Fatalf("lookup .tags: %v %d", st, tagsRoot)
	}
	if got := list(tagsRoot); !slices.Equal(got, []string{"cat", "cute"}) {
		t.Fatalf(".tags lists %v", got)
	}
	catDir, _ := lookup(tagsRoot, "cat")
	if got := list(catDir); !slices.Equal(got, []string{"file0"}) {
		t.Fatalf(".tags/cat lists %v", got)
	}
	// ln file11 .tags/cat/
	var eo fuse.EntryOut
	if st := l.Link(nil, &fuse.LinkIn{InHeader: hdr(catDir), Oldnodeid: 11}, "file1", &eo); st != fuse.OK || eo.NodeId != 11 {
		t.Fatalf("ln into a tag: %v %d", st, eo.NodeId)
	}
	l.t.changed()
	if got := list(catDir); !slices.Equal(got, []string{"file0", "file1"}) {
		t.Fatalf("after ln .tags/cat lists %v", got)
	}
	// mv .tags/cat/file1 .tags/cute/
	cuteDir, _ := lookup(tagsRoot, "cute")
	if st := l.Rename(nil, &fuse.RenameIn{InHeader: hdr(catDir), Newdir: cuteDir}, "file1", "file1"); st != fuse.OK {
		t.Fatalf("mv between tags: %v", st)
	}
	if got := files.Xattr(11); !strings.Contains(got, "cute") || strings.Contains(got, "cat") {
		t.Fatalf("after mv file 11 has tags %q", got)
	}
	// rm .tags/cute/file0: untags, never deletes.
	h := hdr(cuteDir)
	if st := l.Unlink(nil, &h, "file0"); st != fuse.OK {
		t.Fatalf("rm in a tag: %v", st)
	}
	if slices.Contains(next.calls, "Unlink") {
		t.Fatal("rm in a tag directory unlinked the file")
	}
	if got := files.Xattr(10); got != "cat" {
		t.Fatalf("after rm file 10 has tags %q, want cat", got)
	}
	// Reserved names and virtual directories refuse real entries.
	var co fuse.CreateOut
	if st := l.Create(nil, &fuse.CreateIn{InHeader: hdr(1)}, ".tags", &co); st != fuse.EPERM {
		t.Fatalf("create .tags in the root: %v", st)
	}
	if st := l.Create(nil, &fuse.CreateIn{InHeader: hdr(catDir)}, "x", &co); st != fuse.EPERM {
		t.Fatalf("create in a tag directory: %v", st)
	}
	if _, st := lookup(tagsRoot, "no-such-tag"); st != fuse.ENOENT {
		t.Fatalf("lookup of a missing tag: %v", st)
	}
}

// fakeChannel is a coherence.Channel (our own interface) whose epoch and
// health the test sets.
type fakeChannel struct {
	epoch uint64
	ok    bool
}

func (f *fakeChannel) Epoch() (uint64, bool)  { return f.epoch, f.ok }
func (f *fakeChannel) State() coherence.State { return coherence.State{Mode: "fake", Trusted: f.ok} }

// TestCacheLayerTrust: when the cache layer vouches for a file's attributes
// at an open (no metadata round trip), and what takes that away.
func TestCacheLayerTrust(t *testing.T) {
	content := []byte("cached")
	attr := &meta.Attr{Typ: meta.TypeFile, Length: uint64(len(content)), Mtime: 1, Full: true}
	type env struct {
		l  *cacheLayer
		ch *fakeChannel
		h  *handleTable
	}
	open := func(e env, ino uint64, flags uint32) {
		var out fuse.OpenOut
		if st := e.l.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: ino}, Flags: flags}, &out); st != fuse.OK {
			t.Fatalf("open %d: %v", ino, st)
		}
		e.l.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: ino}, Fh: out.Fh})
	}
	cases := []struct {
		name  string
		do    func(e env)
		ino   uint64
		flags uint32
		want  bool
	}{
		{"a checked open of a current copy trusts it", func(e env) { open(e, 2, 0) }, 2, 0, true},
		{"never for a write open", func(e env) { open(e, 2, 0) }, 2, syscall.O_RDWR, false},
		{"a miss is not trusted", func(e env) { open(e, 3, 0) }, 3, 0, false},
		{"a write open takes it away", func(e env) { open(e, 2, 0); open(e, 2, syscall.O_WRONLY) }, 2, 0, false},
		{"setattr takes it away", func(e env) {
			open(e, 2, 0)
			e.l.SetAttr(nil, &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: fuse.InHeader{NodeId: 2}, Valid: fuse.FATTR_MODE}}, &fuse.AttrOut{})
		}, 2, 0, false},
		{"setxattr takes it away", func(e env) {
			open(e, 2, 0)
			e.l.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: fuse.InHeader{NodeId: 2}}, "system.posix_acl_access", nil)
		}, 2, 0, false},
		{"a new epoch voids it", func(e env) { open(e, 2, 0); e.ch.epoch++ }, 2, 0, false},
		{"an unhealthy channel gives none", func(e env) { e.ch.ok = false; open(e, 2, 0); e.ch.ok = true }, 2, 0, false},
		{"none while a handle may write the file", func(e env) {
			w := &handle{fh: 99, ino: 2}
			w.wrote.Store(true)
			e.h.add(w)
			open(e, 2, 0)
		}, 2, 0, false},
		{"another node's data change takes it away", func(e env) {
			open(e, 2, 0)
			e.l.applyRemote(coherence.Change{Inodes: []uint64{2}}, func(uint64) {})
		}, 2, 0, false},
		{"another node's attribute change takes it away", func(e env) {
			open(e, 2, 0)
			e.l.applyRemote(coherence.Change{Attrs: []uint64{2}}, func(uint64) {})
		}, 2, 0, false},
		{"another file's change leaves it", func(e env) {
			open(e, 2, 0)
			e.l.applyRemote(coherence.Change{Inodes: []uint64{3}, Entries: []coherence.Entry{{Parent: 1, Name: "x"}}}, func(uint64) {})
		}, 2, 0, true},
		{"none from an open that a change reported meanwhile may have raced", func(e env) {
			gen := e.l.remoteGen() // the open begins
			e.l.applyRemote(coherence.Change{Attrs: []uint64{2}}, func(uint64) {})
			e.l.trustFile(2, attr, e.ch.epoch, gen) // its attributes may predate the change
		}, 2, 0, false},
		{"none once the changes reported outgrow the marks", func(e env) {
			gen := e.l.remoteGen()
			for ino := range uint64(1<<16 + 1) {
				e.l.applyRemote(coherence.Change{Attrs: []uint64{1000 + ino}}, func(uint64) {})
			}
			e.l.trustFile(2, attr, e.ch.epoch, gen)
		}, 2, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			attrs := map[uint64]*meta.Attr{2: attr, 3: attr}
			c := cacheHolding(t, attrs, 2, content)
			handles := newHandleTable()
			next := &recordingFS{}
			baseLike(next, handles, attrs)
			ch := &fakeChannel{epoch: 1, ok: true}
			l := newCacheLayer(next, CacheOptions{Cache: c, Coherence: ch}, handles, names.New(16), quiet)
			tc.do(env{l: l, ch: ch, h: handles})
			if _, got := l.vouch(tc.ino, tc.flags); got != tc.want {
				t.Errorf("vouched = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLeasedTimeouts: under a channel whose trust may lapse, long kernel
// timeouts of cached files are given only while it is current, and each is
// remembered, with the name it was given for, until a lapse takes it back.
func TestLeasedTimeouts(t *testing.T) {
	content := []byte("cached")
	attr := &meta.Attr{Typ: meta.TypeFile, Length: uint64(len(content)), Mtime: 1, Full: true, Parent: 1}
	for _, tc := range []struct {
		name      string
		leased    bool
		ok        bool
		doubt     bool
		wantTTL   bool
		wantGiven int
	}{
		{"exclusive volume: long, nothing to remember", false, true, false, true, 0},
		{"shared, current: long and remembered", true, true, false, true, 1},
		{"shared, lapsed: short", true, false, false, false, 0},
		{"shared, current, then a lapse: taken back", true, true, true, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs := map[uint64]*meta.Attr{2: attr}
			c := cacheHolding(t, attrs, 2, content)
			ch := &fakeChannel{epoch: 1, ok: tc.ok}
			l := newCacheLayer(&recordingFS{}, CacheOptions{Cache: c, Coherence: ch, TTL: time.Minute, Leased: tc.leased}, newHandleTable(), names.New(16), quiet)
			ttl := l.replyAttr(&meta.Entry{Inode: 2, Name: []byte("f"), Attr: attr}, 1)
			if got := ttl > 0; got != tc.wantTTL {
				t.Errorf("long timeout = %v (%v), want %v", got, ttl, tc.wantTTL)
			}
			if tc.doubt {
				l.doubt()
			}
			l.gmu.Lock()
			got, d := len(l.given), l.given[2]
			l.gmu.Unlock()
			if got != tc.wantGiven {
				t.Errorf("%d inodes remembered, want %d", got, tc.wantGiven)
			}
			if got == 1 && (d.Parent != 1 || d.Name != "f") {
				t.Errorf("remembered under %+v, want 1/f", d)
			}
		})
	}
}

// TestRemoteNamesRace: a name a lookup read before another node's change to
// it, reported while the lookup ran, does not go back into the name index
// (from which lookups of trusted files are answered).
func TestRemoteNamesRace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changed bool
		want    bool
	}{
		{"no change meanwhile: recorded", false, true},
		{"a change reported meanwhile: left out", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idx := names.New(16)
			attr := &meta.Attr{Typ: meta.TypeFile, Length: 1, Mtime: 1, Full: true}
			c := cacheHolding(t, map[uint64]*meta.Attr{2: attr}, 2, []byte("x"))
			l := newCacheLayer(&recordingFS{}, CacheOptions{Cache: c, Leased: true}, newHandleTable(), idx, quiet)
			gen := l.entryGen() // the lookup begins
			if tc.changed {
				l.applyRemote(coherence.Change{Entries: []coherence.Entry{{Parent: 1, Name: "f"}}}, func(uint64) {})
			}
			l.addName(1, "f", 2, gen)
			if _, got := idx.Ino(1, "f"); got != tc.want {
				t.Errorf("name recorded = %v, want %v", got, tc.want)
			}
		})
	}
}
