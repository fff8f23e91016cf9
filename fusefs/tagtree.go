package fusefs

// Locks in this file: vnode.mu is held while that virtual directory's
// listing is built (a call to the index, bounded by the tag timeout), so only
// requests about that directory wait; tagTree.mu and tagTree.hmu are taken
// alone, never while another lock is held.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/tagging"
)

// The virtual tag tree lives at inode numbers JuiceFS never hands out: its own
// inodes count up from 1 and its internal nodes sit near 2^63.
const (
	vBase          = uint64(1) << 62
	vTagsRoot      = vBase + 1
	vQueryRoot     = vBase + 2
	vFirstDynamic  = vBase + 16
	listingTTL     = time.Second
	maxQueryLength = 4096
)

func isVirtual(ino uint64) bool { return ino >= vBase && ino < vBase<<1 }

// TagOptions configure the virtual tag tree. A nil Service disables it.
type TagOptions struct {
	Service  *tagging.Service
	TagsDir  string // ".tags"
	QueryDir string // ".query"
	Log      *slog.Logger
}

type vkind int

const (
	kTagsRoot vkind = iota
	kQueryRoot
	kTagDir
	kQueryDir
)

// vnode is a virtual directory: the tag root, a tag path, or a query.
type vnode struct {
	ino     uint64
	kind    vkind
	key     string
	tags    []string   // kTagDir: the path's tags, in path order
	expr    graph.Expr // kQueryDir
	nlookup atomic.Int64

	mu      sync.Mutex
	list    *listing
	listGen uint64
	listAt  time.Time
}

// listing is a snapshot of a virtual directory.
type listing struct {
	entries []fuse.DirEntry
	files   map[string]uint64 // entry name -> file inode
	subdirs map[string]string // entry name -> tag
}

// tagTree serves the virtual directories.
type tagTree struct {
	svc      *tagging.Service
	tagsDir  string
	queryDir string
	log      *slog.Logger
	start    time.Time

	mu    sync.Mutex
	byIno map[uint64]*vnode
	byKey map[string]*vnode
	next  uint64
	// gen changes whenever this node changes tags, so listings refresh at once.
	gen atomic.Uint64

	hmu     sync.Mutex
	handles map[uint64]*listing
	nextFh  uint64
}

func newTagTree(o TagOptions) *tagTree {
	if o.TagsDir == "" {
		o.TagsDir = ".tags"
	}
	if o.QueryDir == "" {
		o.QueryDir = ".query"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	t := &tagTree{
		svc: o.Service, tagsDir: o.TagsDir, queryDir: o.QueryDir, log: o.Log, start: time.Now(),
		byIno: map[uint64]*vnode{}, byKey: map[string]*vnode{}, next: vFirstDynamic,
		handles: map[uint64]*listing{}, nextFh: 1,
	}
	t.byIno[vTagsRoot] = &vnode{ino: vTagsRoot, kind: kTagsRoot, key: "root:tags"}
	t.byIno[vQueryRoot] = &vnode{ino: vQueryRoot, kind: kQueryRoot, key: "root:query"}
	return t
}

func (t *tagTree) node(ino uint64) *vnode {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byIno[ino]
}

// intern returns the vnode for a key, creating it.
func (t *tagTree) intern(key string, mk func() *vnode) *vnode {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.byKey[key]; ok {
		return n
	}
	n := mk()
	n.ino = t.next
	n.key = key
	t.next++
	t.byIno[n.ino] = n
	t.byKey[key] = n
	return n
}

func (t *tagTree) forget(ino, n uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.byIno[ino]
	if !ok || ino < vFirstDynamic {
		return
	}
	if v.nlookup.Add(-int64(n)) <= 0 {
		delete(t.byIno, ino)
		delete(t.byKey, v.key)
	}
}

func (t *tagTree) changed() { t.gen.Add(1) }

func (t *tagTree) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), t.svc.Timeout())
}

// errno maps index and tagging errors to what a file system caller can act on.
func (t *tagTree) errno(op string, err error) fuse.Status {
	switch {
	case err == nil:
		return fuse.OK
	case errors.Is(err, graph.ErrNoTag):
		return fuse.ENOENT
	case errors.Is(err, graph.ErrNotEmpty):
		return fuse.Status(syscall.ENOTEMPTY)
	case errors.Is(err, tagging.ErrTooLong):
		t.log.Warn("tag operation refused", "op", op, "error", err)
		return fuse.Status(syscall.E2BIG)
	case errors.Is(err, graph.ErrBadTag):
		t.log.Warn("tag operation refused", "op", op, "error", err)
		return fuse.EINVAL
	case errors.Is(err, graph.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		t.log.Warn("tag index unavailable", "op", op, "error", err)
		return fuse.Status(syscall.EHOSTDOWN)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fuse.Status(errno)
	}
	t.log.Warn("tag operation failed", "op", op, "error", err)
	return fuse.EIO
}

func (t *tagTree) dirAttr(ino uint64, out *fuse.Attr) {
	ts := uint64(t.start.Unix())
	*out = fuse.Attr{Ino: ino, Mode: syscall.S_IFDIR | 0o777, Nlink: 2, Size: 4096, Blocks: 8,
		Atime: ts, Mtime: ts, Ctime: ts, Blksize: 4096}
}

func (t *tagTree) virtualEntry(v *vnode, out *fuse.EntryOut) fuse.Status {
	v.nlookup.Add(1)
	out.NodeId = v.ino
	out.Generation = 1
	// Short timeouts: other nodes change tags too.
	out.SetEntryTimeout(listingTTL)
	out.SetAttrTimeout(listingTTL)
	t.dirAttr(v.ino, &out.Attr)
	return fuse.OK
}

// rootLookup answers the virtual names in the volume's root.
func (t *tagTree) rootLookup(name string, out *fuse.EntryOut) (fuse.Status, bool) {
	switch name {
	case t.tagsDir:
		return t.virtualEntry(t.node(vTagsRoot), out), true
	case t.queryDir:
		return t.virtualEntry(t.node(vQueryRoot), out), true
	}
	return 0, false
}

func (t *tagTree) reserved(parent uint64, name string) bool {
	return parent == 1 && (name == t.tagsDir || name == t.queryDir)
}

func tagKey(tags []string) string { return "tag:" + strings.Join(tags, "\x00") }

func (t *tagTree) tagDir(tags []string) *vnode {
	return t.intern(tagKey(tags), func() *vnode { return &vnode{kind: kTagDir, tags: slices.Clone(tags)} })
}

// getListing returns a fresh enough snapshot of a virtual directory.
func (t *tagTree) getListing(v *vnode) (*listing, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	gen := t.gen.Load() + t.svc.Generation()
	if v.list != nil && v.listGen == gen && time.Since(v.listAt) < listingTTL {
		return v.list, nil
	}
	if err := t.svc.Check(); err != nil {
		return nil, err
	}
	ctx, cancel := t.ctx()
	defer cancel()
	l, err := t.build(ctx, v)
	if err != nil {
		t.svc.Failed(err)
		return nil, err
	}
	v.list, v.listGen, v.listAt = l, gen, time.Now()
	return l, nil
}

func (t *tagTree) build(ctx context.Context, v *vnode) (*listing, error) {
	// The queue first, then the index: see tagging.Service.Queued.
	q := t.svc.Queued()
	st := t.svc.Store()
	var subdirs []string
	var files []graph.File
	var err error
	switch v.kind {
	case kTagsRoot:
		var tcs []graph.TagCount
		if tcs, err = st.Tags(ctx); err == nil {
			for _, tc := range tcs {
				subdirs = append(subdirs, tc.Tag)
			}
		}
	case kQueryRoot:
	case kTagDir:
		if subdirs, err = st.CoTags(ctx, v.tags); err == nil {
			files, err = st.Files(ctx, v.tags)
		}
	case kQueryDir:
		files, err = st.Query(ctx, v.expr)
	}
	if err != nil {
		return nil, err
	}
	subdirs, files = overlay(v, q, subdirs, files)
	l := &listing{files: make(map[string]uint64, len(files)), subdirs: make(map[string]string, len(subdirs))}
	l.entries = make([]fuse.DirEntry, 0, len(files)+len(subdirs)+2)
	l.entries = append(l.entries, fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: v.ino}, fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: 1})
	for _, s := range subdirs {
		l.subdirs[s] = s
		l.entries = append(l.entries, fuse.DirEntry{Name: s, Mode: syscall.S_IFDIR})
	}
	// A file's entry is its own name, made unique with its inode number only
	// where two names collide (or a name collides with a tag subdirectory).
	count := make(map[string]int, len(files))
	for _, f := range files {
		count[f.Name]++
	}
	for _, f := range files {
		name := f.Name
		if name == "" || count[name] > 1 || l.subdirs[name] != "" || name == "." || name == ".." {
			name = suffixed(f.Name, uint64(f.ID))
		}
		l.files[name] = uint64(f.ID)
		l.entries = append(l.entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: uint64(f.ID)})
	}
	return l, nil
}

// overlay lays this node's queued index changes over a listing read from the
// index, so that a tag change shows in the listings as soon as it returned,
// whether or not its batch has reached the index yet. Subdirectories are only
// added: a tag a queued change leaves empty may still be listed until the
// index has the change (its directory then lists no file through it).
func overlay(v *vnode, q tagging.Queue, subdirs []string, files []graph.File) ([]string, []graph.File) {
	if len(q.Changes) == 0 && len(q.Forgets) == 0 {
		return subdirs, files
	}
	var match func(tags []string) bool
	switch v.kind {
	case kTagDir:
		match = func(tags []string) bool {
			for _, t := range v.tags {
				if !slices.Contains(tags, t) {
					return false
				}
			}
			return true
		}
	case kQueryDir:
		match = func(tags []string) bool {
			return graph.Eval(v.expr, func(t string) bool { return slices.Contains(tags, t) })
		}
	}
	haveDir := make(map[string]bool, len(subdirs))
	for _, s := range subdirs {
		haveDir[s] = true
	}
	addDir := func(tag string) {
		if !haveDir[tag] && !(v.kind == kTagDir && slices.Contains(v.tags, tag)) {
			haveDir[tag] = true
			subdirs = append(subdirs, tag)
		}
	}
	// at maps a listed file to its position in files; a dropped file keeps
	// its slot with ID 0 until the end.
	at := make(map[graph.FileID]int, len(files))
	for i, f := range files {
		at[f.ID] = i
	}
	drop := func(id graph.FileID) {
		if i, ok := at[id]; ok {
			files[i].ID = 0
			delete(at, id)
		}
	}
	for _, c := range q.Changes {
		id := c.File.ID
		switch {
		case v.kind == kTagsRoot:
			for _, t := range c.Add {
				addDir(t)
			}
		case v.kind == kQueryRoot:
		case c.Replace && match(c.Add):
			if i, ok := at[id]; ok {
				if c.File.Name != "" {
					files[i].Name = c.File.Name
				}
			} else {
				at[id] = len(files)
				files = append(files, graph.File{ID: id, Name: c.File.Name, Parent: c.File.Parent})
			}
			if v.kind == kTagDir {
				for _, t := range c.Add {
					addDir(t)
				}
			}
		case c.Replace:
			drop(id)
		default:
			// A rename, or a relative change whose outcome needs tags the
			// listing does not carry: applied where it is certain.
			if v.kind == kTagDir && slices.ContainsFunc(c.Remove, func(t string) bool { return slices.Contains(v.tags, t) }) {
				drop(id)
			} else if i, ok := at[id]; ok && c.File.Name != "" {
				files[i].Name = c.File.Name
			}
		}
	}
	for _, id := range q.Forgets {
		drop(id)
	}
	files = slices.DeleteFunc(files, func(f graph.File) bool { return f.ID == 0 })
	return subdirs, files
}

// suffixed makes "001.png" of inode 42 into "001@42.png": stable and readable.
func suffixed(name string, ino uint64) string {
	if name == "" {
		return "@" + strconv.FormatUint(ino, 10)
	}
	ext := filepath.Ext(name)
	if ext == name {
		ext = ""
	}
	return strings.TrimSuffix(name, ext) + "@" + strconv.FormatUint(ino, 10) + ext
}

// lookup resolves a name in a virtual directory. Files answer with their real
// inode and attributes (from getattr), so the entry is the file itself.
func (t *tagTree) lookup(v *vnode, name string, getattr func(uint64, *fuse.EntryOut) fuse.Status, out *fuse.EntryOut) fuse.Status {
	switch v.kind {
	case kQueryRoot:
		if len(name) > maxQueryLength {
			return fuse.Status(syscall.ENAMETOOLONG)
		}
		e, err := graph.Parse(name)
		if err != nil {
			t.log.Warn("bad query expression", "expr", name, "error", err)
			return fuse.EINVAL
		}
		q := t.intern("query:"+e.String(), func() *vnode { return &vnode{kind: kQueryDir, expr: e} })
		return t.virtualEntry(q, out)
	case kTagsRoot:
		if err := graph.ValidTag(name); err != nil {
			return fuse.ENOENT
		}
		l, err := t.getListing(v)
		if err != nil {
			return t.errno("lookup", err)
		}
		if _, ok := l.subdirs[name]; !ok {
			return fuse.ENOENT
		}
		return t.virtualEntry(t.tagDir([]string{name}), out)
	}
	l, err := t.getListing(v)
	if err != nil {
		return t.errno("lookup", err)
	}
	if tag, ok := l.subdirs[name]; ok {
		return t.virtualEntry(t.tagDir(append(slices.Clone(v.tags), tag)), out)
	}
	ino, ok := l.files[name]
	if !ok {
		return fuse.ENOENT
	}
	st := getattr(ino, out)
	if st == fuse.ENOENT {
		// Deleted behind the index's back (another node): drop it.
		t.svc.Removed(ino)
		t.changed()
	}
	return st
}

func (t *tagTree) openDir(v *vnode, out *fuse.OpenOut) fuse.Status {
	l, err := t.getListing(v)
	if err != nil {
		return t.errno("opendir", err)
	}
	t.hmu.Lock()
	fh := t.nextFh
	t.nextFh++
	t.handles[fh] = l
	t.hmu.Unlock()
	out.Fh = fh
	out.OpenFlags |= fuse.FOPEN_DIRECT_IO
	return fuse.OK
}

// readDir lists a virtual directory. With plus, entries carry no attributes
// (node id 0), so the kernel looks up only what is used: listing a tag of
// 100,000 files costs no getattr per file.
func (t *tagTree) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	t.hmu.Lock()
	l := t.handles[in.Fh]
	t.hmu.Unlock()
	if l == nil {
		return fuse.EBADF
	}
	for i := int(in.Offset); i < len(l.entries); i++ {
		e := l.entries[i]
		if e.Ino == 0 {
			e.Ino = vBase // subdirectories get their inode at lookup
		}
		e.Off = uint64(i + 1)
		if plus {
			eo := out.AddDirLookupEntry(e)
			if eo == nil {
				break
			}
			*eo = fuse.EntryOut{}
		} else if !out.AddDirEntry(e) {
			break
		}
	}
	return fuse.OK
}

func (t *tagTree) releaseDir(fh uint64) {
	t.hmu.Lock()
	delete(t.handles, fh)
	t.hmu.Unlock()
}

// mkdir in the tag root creates an empty tag.
func (t *tagTree) mkdir(v *vnode, name string, out *fuse.EntryOut) fuse.Status {
	if v.kind != kTagsRoot {
		return fuse.EPERM
	}
	if err := graph.ValidTag(name); err != nil {
		t.log.Warn("mkdir: invalid tag name", "name", name, "error", err)
		return fuse.EINVAL
	}
	if err := t.svc.Check(); err != nil {
		return t.errno("mkdir", err)
	}
	ctx, cancel := t.ctx()
	defer cancel()
	if err := t.svc.Store().CreateTag(ctx, name); err != nil {
		t.svc.Failed(err)
		return t.errno("mkdir", err)
	}
	t.changed()
	return t.virtualEntry(t.tagDir([]string{name}), out)
}

// rmdir in the tag root deletes a tag no file carries.
func (t *tagTree) rmdir(v *vnode, name string) fuse.Status {
	if v.kind != kTagsRoot {
		return fuse.EPERM
	}
	if err := t.svc.Check(); err != nil {
		return t.errno("rmdir", err)
	}
	ctx, cancel := t.ctx()
	defer cancel()
	err := t.svc.Store().DeleteTag(ctx, name)
	t.svc.Failed(err)
	if err == nil {
		t.changed()
	}
	return t.errno("rmdir", err)
}

// canTag says whether the caller may change a file's tags: the same rule as
// writing its user.* xattrs (write permission on the file).
func canTag(h *fuse.InHeader, a *fuse.Attr) bool {
	if h.Uid == 0 {
		return true
	}
	var bits uint32
	switch {
	case h.Uid == a.Uid:
		bits = a.Mode >> 6
	case h.Gid == a.Gid || inGroups(h.Pid, a.Gid):
		bits = a.Mode >> 3
	default:
		bits = a.Mode
	}
	return bits&2 != 0
}

// inGroups reads the supplementary groups of a process.
func inGroups(pid uint32, gid uint32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil && uint32(g) == gid {
					return true
				}
			}
		}
	}
	return false
}
