package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/tagging"
)

// refuseVirtual stops operations that would create or remove real entries in
// a virtual directory, or shadow the virtual names in the root.
func (fs *FS) refuseVirtual(parent uint64, name string) (fuse.Status, bool) {
	if isVirtual(parent) {
		return fuse.EPERM, true
	}
	if fs.tags != nil && fs.tags.reserved(parent, name) {
		return fuse.EPERM, true
	}
	return fuse.OK, false
}

// inodeOf finds the inode behind a name before it is removed or replaced, so
// that the index can follow. The kernel looked the name up just before, so the
// answer is almost always in the dentry cache.
func (fs *FS) inodeOf(ctx *reqContext, parent uint64, name string) uint64 {
	if fs.tags == nil || !fs.tags.svc.AnyKnown() {
		return 0
	}
	if ino, ok := fs.tags.dentryIno(parent, name); ok {
		return ino
	}
	e, err := fs.v.Lookup(ctx, meta.Ino(parent), name)
	if err != 0 {
		return 0
	}
	return uint64(e.Inode)
}

// gone reports whether a file has no names left.
func (fs *FS) gone(ctx *reqContext, ino uint64) bool {
	var a meta.Attr
	err := fs.v.Meta.GetAttr(ctx, meta.Ino(ino), &a)
	return err == syscall.ENOENT || (err == 0 && a.Nlink == 0)
}

func (fs *FS) afterRemove(ctx *reqContext, parent uint64, name string, ino uint64) {
	if fs.tags == nil {
		return
	}
	fs.tags.forgetDentry(parent, name)
	if ino != 0 && fs.tags.svc.Known(ino) && fs.gone(ctx, ino) {
		fs.tags.svc.Removed(ino)
		fs.tags.changed()
	}
}

func (fs *FS) afterRename(ctx *reqContext, in *fuse.RenameIn, oldName, newName string, src, dst uint64) {
	if fs.tags == nil {
		return
	}
	fs.tags.forgetDentry(in.NodeId, oldName)
	fs.tags.forgetDentry(in.Newdir, newName)
	changed := false
	if src != 0 {
		fs.tags.rememberDentry(in.Newdir, newName, src)
		if fs.tags.svc.Known(src) {
			fs.tags.svc.Renamed(src, newName)
			changed = true
		}
	}
	if dst != 0 && fs.tags.svc.Known(dst) {
		if in.Flags&unixRenameExchange != 0 {
			fs.tags.svc.Renamed(dst, oldName)
			changed = true
		} else if fs.gone(ctx, dst) {
			fs.tags.svc.Removed(dst)
			changed = true
		}
	}
	if changed {
		fs.tags.changed()
	}
}

const unixRenameExchange = 1 << 1 // RENAME_EXCHANGE

// fileForTagging resolves a real file and checks that the caller may tag it.
func (fs *FS) fileForTagging(ctx *reqContext, h *fuse.InHeader, ino uint64) (*meta.Entry, fuse.Status) {
	if isVirtual(ino) {
		return nil, fuse.EPERM
	}
	e, err := fs.v.GetAttr(ctx, meta.Ino(ino), 0)
	if err != 0 {
		return nil, st(err)
	}
	if e.Attr.Typ != meta.TypeFile {
		// Tagging directories would let tag directories contain loops.
		return nil, fuse.EPERM
	}
	if !canTag(h, e.Attr) {
		return nil, fuse.EACCES
	}
	return e, fuse.OK
}

// tagByLink handles "ln FILE MNT/.tags/a/b/": the file gets every tag of the path.
func (fs *FS) tagByLink(ctx *reqContext, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	v := fs.tags.node(in.NodeId)
	if v == nil {
		return fuse.ENOENT
	}
	if v.kind != kTagDir {
		return fuse.EPERM
	}
	e, status := fs.fileForTagging(ctx, &in.InHeader, in.Oldnodeid)
	if status != fuse.OK {
		return status
	}
	tctx, cancel := fs.tags.ctx()
	defer cancel()
	if _, err := fs.tags.svc.Modify(tctx, in.Oldnodeid, v.tags, nil); err != nil {
		return fs.tags.errno("tag", err)
	}
	fs.tags.sync(tctx)
	return fs.replyEntry(ctx, e, out)
}

// untag handles "rm MNT/.tags/a/b/ENTRY": the file loses the path's last tag.
// The file itself is never deleted.
func (fs *FS) untag(h *fuse.InHeader, name string) fuse.Status {
	v := fs.tags.node(h.NodeId)
	if v == nil {
		return fuse.ENOENT
	}
	if v.kind != kTagDir {
		return fuse.EPERM
	}
	l, err := fs.tags.getListing(v)
	if err != nil {
		return fs.tags.errno("untag", err)
	}
	ino, ok := l.files[name]
	if !ok {
		if _, isDir := l.subdirs[name]; isDir {
			return fuse.Status(syscall.EISDIR)
		}
		return fuse.ENOENT
	}
	ctx := newContext(nil, h)
	if _, status := fs.fileForTagging(ctx, h, ino); status != fuse.OK {
		return status
	}
	tctx, cancel := fs.tags.ctx()
	defer cancel()
	if _, err := fs.tags.svc.Modify(tctx, ino, nil, v.tags[len(v.tags)-1:]); err != nil {
		return fs.tags.errno("untag", err)
	}
	fs.tags.sync(tctx)
	// The kernel drops the file's link count after a successful unlink; the
	// file itself is untouched, so make it ask for the attributes again.
	if fs.server != nil {
		fs.server.InodeNotify(ino, -1, 0)
	}
	return fuse.OK
}

// retag handles "mv MNT/.tags/a/ENTRY MNT/.tags/b/": the file loses a and gains b.
func (fs *FS) retag(in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if !isVirtual(in.NodeId) || !isVirtual(in.Newdir) {
		return fuse.Status(syscall.EXDEV)
	}
	from, to := fs.tags.node(in.NodeId), fs.tags.node(in.Newdir)
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
	l, err := fs.tags.getListing(from)
	if err != nil {
		return fs.tags.errno("retag", err)
	}
	ino, ok := l.files[oldName]
	if !ok {
		return fuse.ENOENT
	}
	ctx := newContext(nil, &in.InHeader)
	if _, status := fs.fileForTagging(ctx, &in.InHeader, ino); status != fuse.OK {
		return status
	}
	remove := from.tags[len(from.tags)-1:]
	if contains(to.tags, remove[0]) {
		remove = nil
	}
	tctx, cancel := fs.tags.ctx()
	defer cancel()
	if _, err := fs.tags.svc.Modify(tctx, ino, to.tags, remove); err != nil {
		return fs.tags.errno("retag", err)
	}
	fs.tags.sync(tctx)
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
// written, indexed.
func (fs *FS) setTagsXattr(ctx *reqContext, in *fuse.SetXAttrIn, data []byte) fuse.Status {
	if len(data) > graph.MaxTagListBytes {
		return fuse.Status(syscall.E2BIG)
	}
	tags, err := graph.ParseTagList(data)
	if err != nil {
		fs.tags.log.Warn("setxattr user.xdg.tags refused", "ino", in.NodeId, "error", err)
		return fuse.EINVAL
	}
	const xattrCreate, xattrReplace = 1, 2
	if in.Flags&(xattrCreate|xattrReplace) != 0 {
		_, gerr := fs.v.GetXattr(ctx, meta.Ino(in.NodeId), tagging.XattrName, graph.MaxTagListBytes)
		exists := gerr == 0
		if in.Flags&xattrCreate != 0 && exists {
			return fuse.Status(syscall.EEXIST)
		}
		if in.Flags&xattrReplace != 0 && !exists {
			return fuse.ENODATA
		}
	}
	tctx, cancel := fs.tags.ctx()
	defer cancel()
	if err := fs.tags.svc.Set(tctx, in.NodeId, tags); err != nil {
		return fs.tags.errno("setxattr", err)
	}
	fs.tags.sync(tctx)
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

// TagsChanged makes the virtual directories list afresh (after a reindex).
func (fs *FS) TagsChanged() {
	if fs.tags != nil {
		fs.tags.changed()
	}
}

func (fs *FS) markWritten(fh uint64) {
	if fs.opts.Written == nil {
		return
	}
	fs.wmu.Lock()
	fs.written[fh] = struct{}{}
	fs.wmu.Unlock()
}

func (fs *FS) takeWritten(fh uint64) bool {
	if fs.opts.Written == nil {
		return false
	}
	fs.wmu.Lock()
	defer fs.wmu.Unlock()
	_, ok := fs.written[fh]
	delete(fs.written, fh)
	return ok
}
