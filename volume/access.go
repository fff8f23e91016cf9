package volume

import (
	"context"
	"os"
	"syscall"

	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"
)

// RootContext acts as root, as this process, under ctx: every call the
// daemon makes on its own behalf (the cache's copies, tagging, pre-allocation,
// path lookups) uses it, so JuiceFS sees one caller for all of them.
//
// Not meta.WrapWithCancel: its cancel is never called, and a cancellable
// child of a long-lived context stays registered in its parent for good.
func RootContext(ctx context.Context) vfs.LogContext {
	return vfs.NewLogContext(meta.WrapWithoutCancel(ctx, daemonPid, 0, []uint32{0}))
}

// daemonPid is this process's pid; it never changes.
var daemonPid = uint32(os.Getpid())

// ValidatedAttrs is implemented by the contexts of requests whose own path
// walk has just read the attributes of the inode they open: JuiceFS then
// need not read them again (see fusefs's open-after-lookup).
type ValidatedAttrs interface {
	// ValidatedAttr returns those attributes for ino, or false.
	ValidatedAttr(ino meta.Ino) (*meta.Attr, bool)
}

// openWithAttrs is the metadata client the VFS is built with. JuiceFS's
// VFS.Open reads a file's attributes through Meta.Open unless they arrive
// complete; an open whose context carries validated attributes hands them
// over. It still checks access and records the open file.
type openWithAttrs struct {
	meta.Meta
}

func (m openWithAttrs) Open(ctx meta.Context, inode meta.Ino, flags uint32, attr *meta.Attr) syscall.Errno {
	if va, ok := ctx.(ValidatedAttrs); ok && attr != nil {
		if a, ok := va.ValidatedAttr(inode); ok {
			*attr = *a
			attr.Full = true
		}
	}
	return m.Meta.Open(ctx, inode, flags, attr)
}
