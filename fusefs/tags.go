package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/names"
	"github.com/disgrafs/disgrafs/tagging"
)

// tagsLayer serves the virtual tag tree (.tags, .query) and keeps the tag
// index in step with the files: it tags on ln, mv and rm inside the tree,
// validates user.xdg.tags, and tells the index about removals and renames.
//
// It owns inodes the layers below do not know (isVirtual): no request about
// a virtual node id, and no handle of a virtual directory, may reach them.
// It therefore overrides every operation that takes a node id or a handle;
// TestTagsLayerKeepsVirtualInodes checks that for each RawFileSystem method.
type tagsLayer struct {
	fuse.RawFileSystem // the next layer
	t                  *tagTree
	names              *names.Index
	server             *fuse.Server
}

func newTagsLayer(next fuse.RawFileSystem, o TagOptions, idx *names.Index) *tagsLayer {
	return &tagsLayer{RawFileSystem: next, t: newTagTree(o), names: idx}
}

// Init keeps the server, to make the kernel drop attributes after untagging.
func (l *tagsLayer) Init(s *fuse.Server) {
	l.server = s
	l.RawFileSystem.Init(s)
}

// refuse stops operations that would create or remove real entries in a
// virtual directory, or shadow the virtual names in the root.
func (l *tagsLayer) refuse(parent uint64, name string) bool {
	return isVirtual(parent) || l.t.reserved(parent, name)
}

// Lookup answers in virtual directories and for the virtual names of the root.
func (l *tagsLayer) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if isVirtual(h.NodeId) {
		v := l.t.node(h.NodeId)
		if v == nil {
			return fuse.ENOENT
		}
		return l.t.lookup(v, name, func(ino uint64, out *fuse.EntryOut) fuse.Status {
			var ao fuse.AttrOut
			status := l.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: withNode(h, ino)}, &ao)
			if status == fuse.OK {
				entryFromAttr(ino, &ao, out)
			}
			return status
		}, out)
	}
	if h.NodeId == 1 {
		if status, ok := l.t.rootLookup(name, out); ok {
			return status
		}
	}
	return l.RawFileSystem.Lookup(cancel, h, name, out)
}

// withNode is h about another node.
func withNode(h *fuse.InHeader, ino uint64) fuse.InHeader {
	c := *h
	c.NodeId = ino
	return c
}

// Forget drops the kernel's references to a virtual node.
func (l *tagsLayer) Forget(nodeid, nlookup uint64) {
	if isVirtual(nodeid) {
		l.t.forget(nodeid, nlookup)
		return
	}
	l.RawFileSystem.Forget(nodeid, nlookup)
}

// GetAttr answers for virtual directories.
func (l *tagsLayer) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if isVirtual(in.NodeId) {
		if l.t.node(in.NodeId) == nil {
			return fuse.ENOENT
		}
		l.t.dirAttr(in.NodeId, &out.Attr)
		out.SetTimeout(listingTTL)
		return fuse.OK
	}
	return l.RawFileSystem.GetAttr(cancel, in, out)
}

// SetAttr refuses to change virtual directories.
func (l *tagsLayer) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EPERM
	}
	return l.RawFileSystem.SetAttr(cancel, in, out)
}

// Mknod refuses virtual directories and reserved names.
func (l *tagsLayer) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if l.refuse(in.NodeId, name) {
		return fuse.EPERM
	}
	return l.RawFileSystem.Mknod(cancel, in, name, out)
}

// Mkdir in the tag root creates a tag.
func (l *tagsLayer) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if isVirtual(in.NodeId) {
		if v := l.t.node(in.NodeId); v != nil {
			return l.t.mkdir(v, name, out)
		}
		return fuse.ENOENT
	}
	if l.refuse(in.NodeId, name) {
		return fuse.EPERM
	}
	return l.RawFileSystem.Mkdir(cancel, in, name, out)
}

// Symlink refuses virtual directories and reserved names.
func (l *tagsLayer) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if l.refuse(h.NodeId, name) {
		return fuse.EPERM
	}
	return l.RawFileSystem.Symlink(cancel, h, target, name, out)
}

// Create refuses virtual directories and reserved names.
func (l *tagsLayer) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if l.refuse(in.NodeId, name) {
		return fuse.EPERM
	}
	return l.RawFileSystem.Create(cancel, in, name, out)
}

// Tmpfile refuses virtual directories.
func (l *tagsLayer) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EPERM
	}
	return l.RawFileSystem.Tmpfile(cancel, in, out)
}

// Unlink in a tag directory untags; elsewhere the index forgets a file that
// lost its last name.
func (l *tagsLayer) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if isVirtual(h.NodeId) {
		return l.untag(cancel, h, name)
	}
	if l.refuse(h.NodeId, name) {
		return fuse.EPERM
	}
	victim := l.inodeOf(cancel, h, h.NodeId, name)
	status := l.RawFileSystem.Unlink(cancel, h, name)
	if status == fuse.OK && victim != 0 && l.t.svc.Known(victim) && l.gone(cancel, h, victim) {
		l.t.svc.Removed(victim)
		l.t.changed()
	}
	return status
}

// Rmdir in the tag root deletes an unused tag.
func (l *tagsLayer) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if isVirtual(h.NodeId) {
		if v := l.t.node(h.NodeId); v != nil {
			return l.t.rmdir(v, name)
		}
		return fuse.ENOENT
	}
	if l.refuse(h.NodeId, name) {
		return fuse.EPERM
	}
	return l.RawFileSystem.Rmdir(cancel, h, name)
}

// Rename between tag directories retags; elsewhere the index follows.
func (l *tagsLayer) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if isVirtual(in.NodeId) || isVirtual(in.Newdir) {
		return l.retag(in, oldName, newName)
	}
	if l.refuse(in.NodeId, oldName) || l.refuse(in.Newdir, newName) {
		return fuse.EPERM
	}
	src := l.inodeOf(cancel, &in.InHeader, in.NodeId, oldName)
	dst := l.inodeOf(cancel, &in.InHeader, in.Newdir, newName)
	status := l.RawFileSystem.Rename(cancel, in, oldName, newName)
	if status != fuse.OK {
		return status
	}
	changed := false
	if src != 0 && l.t.svc.Known(src) {
		l.t.svc.Renamed(src, newName)
		changed = true
	}
	if dst != 0 && l.t.svc.Known(dst) {
		if in.Flags&renameExchange != 0 {
			l.t.svc.Renamed(dst, oldName)
			changed = true
		} else if l.gone(cancel, &in.InHeader, dst) {
			l.t.svc.Removed(dst)
			changed = true
		}
	}
	if changed {
		l.t.changed()
	}
	return status
}

// Link into a tag directory tags the file.
func (l *tagsLayer) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return l.tagByLink(cancel, in, out)
	}
	if l.refuse(in.NodeId, name) || isVirtual(in.Oldnodeid) {
		return fuse.EPERM
	}
	return l.RawFileSystem.Link(cancel, in, name, out)
}

// Readlink: virtual nodes are directories.
func (l *tagsLayer) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	if isVirtual(h.NodeId) {
		return nil, fuse.EINVAL
	}
	return l.RawFileSystem.Readlink(cancel, h)
}

// Access grants everything on virtual directories (mode 0777).
func (l *tagsLayer) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.OK
	}
	return l.RawFileSystem.Access(cancel, in)
}

// GetXAttr: virtual directories have none.
func (l *tagsLayer) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if isVirtual(h.NodeId) {
		return 0, fuse.ENODATA
	}
	return l.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

// ListXAttr: virtual directories have none.
func (l *tagsLayer) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if isVirtual(h.NodeId) {
		return 0, fuse.OK
	}
	return l.RawFileSystem.ListXAttr(cancel, h, dest)
}

// SetXAttr of user.xdg.tags is validated, normalised, written and indexed.
func (l *tagsLayer) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EPERM
	}
	if attr == tagging.XattrName {
		return l.setTagsXattr(cancel, in, data)
	}
	return l.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

// RemoveXAttr of user.xdg.tags untags the file in the index.
func (l *tagsLayer) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	if isVirtual(h.NodeId) {
		return fuse.EPERM
	}
	status := l.RawFileSystem.RemoveXAttr(cancel, h, attr)
	if status == fuse.OK && attr == tagging.XattrName {
		l.t.svc.Indexed(context.Background(), h.NodeId, nil)
		l.t.changed()
	}
	return status
}

// Open: virtual nodes are directories.
func (l *tagsLayer) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.Status(syscall.EISDIR)
	}
	return l.RawFileSystem.Open(cancel, in, out)
}

// The file-handle operations below never see a virtual node: their opens
// are refused. A request that names one anyway gets EBADF and goes no
// further.

func (l *tagsLayer) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if isVirtual(in.NodeId) {
		return nil, fuse.EBADF
	}
	return l.RawFileSystem.Read(cancel, in, buf)
}

func (l *tagsLayer) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EBADF
	}
	return l.RawFileSystem.Lseek(cancel, in, out)
}

func (l *tagsLayer) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if isVirtual(in.NodeId) {
		return 0, fuse.EBADF
	}
	return l.RawFileSystem.Write(cancel, in, data)
}

func (l *tagsLayer) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if isVirtual(in.NodeId) {
		return 0, fuse.EBADF
	}
	return l.RawFileSystem.Writev(cancel, in, data)
}

func (l *tagsLayer) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EBADF
	}
	return l.RawFileSystem.Flush(cancel, in)
}

func (l *tagsLayer) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EBADF
	}
	return l.RawFileSystem.Fsync(cancel, in)
}

func (l *tagsLayer) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if isVirtual(in.NodeId) {
		return
	}
	l.RawFileSystem.Release(cancel, in)
}

func (l *tagsLayer) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EBADF
	}
	return l.RawFileSystem.Fallocate(cancel, in)
}

func (l *tagsLayer) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if isVirtual(in.NodeId) || isVirtual(in.NodeIdOut) {
		return 0, fuse.EBADF
	}
	return l.RawFileSystem.CopyFileRange(cancel, in)
}

func (l *tagsLayer) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.Status(syscall.ENOTTY)
	}
	return l.RawFileSystem.Ioctl(cancel, in, inbuf, out, outbuf)
}

func (l *tagsLayer) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EBADF
	}
	return l.RawFileSystem.GetLk(cancel, in, out)
}

func (l *tagsLayer) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EBADF
	}
	return l.RawFileSystem.SetLk(cancel, in)
}

func (l *tagsLayer) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EBADF
	}
	return l.RawFileSystem.SetLkw(cancel, in)
}

// Statx: the kernel falls back to GETATTR for virtual directories.
func (l *tagsLayer) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.ENOSYS
	}
	return l.RawFileSystem.Statx(cancel, in, out)
}

// OpenDir opens a snapshot of a virtual directory.
func (l *tagsLayer) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if isVirtual(in.NodeId) {
		v := l.t.node(in.NodeId)
		if v == nil {
			return fuse.ENOENT
		}
		return l.t.openDir(v, out)
	}
	return l.RawFileSystem.OpenDir(cancel, in, out)
}

func (l *tagsLayer) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if isVirtual(in.NodeId) {
		return l.t.readDir(in, out, false)
	}
	return l.RawFileSystem.ReadDir(cancel, in, out)
}

func (l *tagsLayer) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	if isVirtual(in.NodeId) {
		return l.t.readDir(in, out, true)
	}
	return l.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (l *tagsLayer) ReleaseDir(in *fuse.ReleaseIn) {
	if isVirtual(in.NodeId) {
		l.t.releaseDir(in.Fh)
		return
	}
	l.RawFileSystem.ReleaseDir(in)
}

// FsyncDir: a virtual directory has nothing to sync.
func (l *tagsLayer) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.OK
	}
	return l.RawFileSystem.FsyncDir(cancel, in)
}

// StatFs of a virtual directory is the volume's.
func (l *tagsLayer) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	if isVirtual(h.NodeId) {
		root := withNode(h, 1)
		return l.RawFileSystem.StatFs(cancel, &root, out)
	}
	return l.RawFileSystem.StatFs(cancel, h, out)
}

// inodeOf finds the inode behind a name before it is removed or replaced, so
// that the index can follow. The kernel looked the name up just before, so
// the name index almost always knows it.
func (l *tagsLayer) inodeOf(cancel <-chan struct{}, h *fuse.InHeader, parent uint64, name string) uint64 {
	if !l.t.svc.AnyKnown() {
		return 0
	}
	if ino, ok := l.names.Ino(parent, name); ok {
		return ino
	}
	var out fuse.EntryOut
	hh := withNode(h, parent)
	if l.RawFileSystem.Lookup(cancel, &hh, name, &out) != fuse.OK {
		return 0
	}
	return out.NodeId
}

// gone reports whether a file has no names left.
func (l *tagsLayer) gone(cancel <-chan struct{}, h *fuse.InHeader, ino uint64) bool {
	var out fuse.AttrOut
	status := l.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: withNode(h, ino)}, &out)
	return status == fuse.ENOENT || (status == fuse.OK && out.Nlink == 0)
}

// fileForTagging resolves a real file and checks that the caller may tag it.
func (l *tagsLayer) fileForTagging(cancel <-chan struct{}, h *fuse.InHeader, ino uint64, out *fuse.AttrOut) fuse.Status {
	if isVirtual(ino) {
		return fuse.EPERM
	}
	if status := l.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: withNode(h, ino)}, out); status != fuse.OK {
		return status
	}
	if out.Mode&syscall.S_IFMT != syscall.S_IFREG {
		// Tagging directories would let tag directories contain loops.
		return fuse.EPERM
	}
	if !canTag(h, &out.Attr) {
		return fuse.EACCES
	}
	return fuse.OK
}

// tagByLink handles "ln FILE MNT/.tags/a/b/": the file gets every tag of the path.
func (l *tagsLayer) tagByLink(cancel <-chan struct{}, in *fuse.LinkIn, out *fuse.EntryOut) fuse.Status {
	v := l.t.node(in.NodeId)
	if v == nil {
		return fuse.ENOENT
	}
	if v.kind != kTagDir {
		return fuse.EPERM
	}
	var ao fuse.AttrOut
	if status := l.fileForTagging(cancel, &in.InHeader, in.Oldnodeid, &ao); status != fuse.OK {
		return status
	}
	tctx, stop := l.t.ctx()
	defer stop()
	if _, err := l.t.svc.Modify(tctx, in.Oldnodeid, v.tags, nil); err != nil {
		return l.t.errno("tag", err)
	}
	l.t.sync(tctx)
	entryFromAttr(in.Oldnodeid, &ao, out)
	return fuse.OK
}

// untag handles "rm MNT/.tags/a/b/ENTRY": the file loses the path's last tag.
// The file itself is never deleted.
func (l *tagsLayer) untag(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	v := l.t.node(h.NodeId)
	if v == nil {
		return fuse.ENOENT
	}
	if v.kind != kTagDir {
		return fuse.EPERM
	}
	lst, err := l.t.getListing(v)
	if err != nil {
		return l.t.errno("untag", err)
	}
	ino, ok := lst.files[name]
	if !ok {
		if _, isDir := lst.subdirs[name]; isDir {
			return fuse.Status(syscall.EISDIR)
		}
		return fuse.ENOENT
	}
	var ao fuse.AttrOut
	if status := l.fileForTagging(cancel, h, ino, &ao); status != fuse.OK {
		return status
	}
	tctx, stop := l.t.ctx()
	defer stop()
	if _, err := l.t.svc.Modify(tctx, ino, nil, v.tags[len(v.tags)-1:]); err != nil {
		return l.t.errno("untag", err)
	}
	l.t.sync(tctx)
	// The kernel drops the file's link count after a successful unlink; the
	// file itself is untouched, so make it ask for the attributes again.
	if l.server != nil {
		l.server.InodeNotify(ino, -1, 0)
	}
	return fuse.OK
}

// retag handles "mv MNT/.tags/a/ENTRY MNT/.tags/b/": the file loses a and gains b.
func (l *tagsLayer) retag(in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if !isVirtual(in.NodeId) || !isVirtual(in.Newdir) {
		return fuse.Status(syscall.EXDEV)
	}
	from, to := l.t.node(in.NodeId), l.t.node(in.Newdir)
	if from == nil || to == nil {
		return fuse.ENOENT
	}
	if from.kind != kTagDir || to.kind != kTagDir {
		return fuse.EPERM
	}
	if from == to {
		if oldName == newName {
			return fuse.OK
		}
		return fuse.EPERM // entries in tag directories cannot be renamed
	}
	lst, err := l.t.getListing(from)
	if err != nil {
		return l.t.errno("retag", err)
	}
	ino, ok := lst.files[oldName]
	if !ok {
		return fuse.ENOENT
	}
	var ao fuse.AttrOut
	if status := l.fileForTagging(nil, &in.InHeader, ino, &ao); status != fuse.OK {
		return status
	}
	remove := from.tags[len(from.tags)-1:]
	if contains(to.tags, remove[0]) {
		remove = nil
	}
	tctx, stop := l.t.ctx()
	defer stop()
	if _, err := l.t.svc.Modify(tctx, ino, to.tags, remove); err != nil {
		return l.t.errno("retag", err)
	}
	l.t.sync(tctx)
	return fuse.OK
}

func contains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

// setTagsXattr handles setfattr -n user.xdg.tags: validated, normalised,
// written (by the tagging service, through the volume), indexed.
func (l *tagsLayer) setTagsXattr(cancel <-chan struct{}, in *fuse.SetXAttrIn, data []byte) fuse.Status {
	if len(data) > graph.MaxTagListBytes {
		return fuse.Status(syscall.E2BIG)
	}
	tags, err := graph.ParseTagList(data)
	if err != nil {
		l.t.log.Warn("setxattr user.xdg.tags refused", "ino", in.NodeId, "error", err)
		return fuse.EINVAL
	}
	const xattrCreate, xattrReplace = 1, 2
	if in.Flags&(xattrCreate|xattrReplace) != 0 {
		buf := make([]byte, graph.MaxTagListBytes)
		_, gerr := l.RawFileSystem.GetXAttr(cancel, &in.InHeader, tagging.XattrName, buf)
		exists := gerr == fuse.OK
		if in.Flags&xattrCreate != 0 && exists {
			return fuse.Status(syscall.EEXIST)
		}
		if in.Flags&xattrReplace != 0 && !exists {
			return fuse.ENODATA
		}
	}
	tctx, stop := l.t.ctx()
	defer stop()
	if err := l.t.svc.Set(tctx, in.NodeId, tags); err != nil {
		return l.t.errno("setxattr", err)
	}
	l.t.sync(tctx)
	return fuse.OK
}

// sync waits (bounded by ctx) until a tag change has reached the index, so
// that the next listing shows it. The xattr is already written: when the
// index is slow or down, the change lands later and nothing is lost.
func (t *tagTree) sync(ctx context.Context) {
	if err := t.svc.Sync(ctx); err != nil {
		t.log.Debug("tag change not yet in the index", "error", err)
	}
	t.changed()
}
