package prealloc

import (
	"context"
	"syscall"

	"github.com/juicedata/juicefs/pkg/meta"
)

// Volume is what pre-allocation needs from the mounted volume. Errors are
// errno values as the volume reports them (0 is success).
type Volume interface {
	// Lookup resolves a name.
	Lookup(ctx context.Context, parent uint64, name string) (uint64, *meta.Attr, syscall.Errno)
	// GetAttr reads a file's attributes.
	GetAttr(ctx context.Context, ino uint64) (*meta.Attr, syscall.Errno)
	// Mkdir makes a directory (EEXIST when the name is taken).
	Mkdir(ctx context.Context, parent uint64, name string, mode uint32) (uint64, syscall.Errno)
	// CreateOpen creates an empty file exclusively and keeps it open for
	// reading and writing: the handle is what a create hands to the kernel.
	CreateOpen(ctx context.Context, parent uint64, name string, mode uint32) (uint64, *meta.Attr, uint64, syscall.Errno)
	// Open opens an existing file for reading and writing.
	Open(ctx context.Context, ino uint64) (*meta.Attr, uint64, syscall.Errno)
	// Release closes a handle from CreateOpen or Open.
	Release(ctx context.Context, ino, fh uint64)
	// Rename moves a name; flags as renameat2.
	Rename(ctx context.Context, parent uint64, name string, newParent uint64, newName string, flags uint32) syscall.Errno
	// Unlink removes a file name.
	Unlink(ctx context.Context, parent uint64, name string) syscall.Errno
	// SetOwner sets permission bits and owner.
	SetOwner(ctx context.Context, ino uint64, mode, uid, gid uint32) syscall.Errno
	// ReadDir lists a directory (without "." and "..").
	ReadDir(ctx context.Context, dir uint64) ([]DirEntry, syscall.Errno)
}

// DirEntry is one name of a listing.
type DirEntry struct {
	Name   string
	Ino    uint64
	Length uint64
	IsDir  bool
}
