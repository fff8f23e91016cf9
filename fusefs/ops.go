package fusefs

import (
	"sync/atomic"
	"time"
)

// Op names a FUSE operation in counters and status output.
type Op int

// The operations counted per mount.
const (
	OpLookup Op = iota
	OpGetattr
	OpSetattr
	OpMknod
	OpMkdir
	OpUnlink
	OpRmdir
	OpRename
	OpLink
	OpSymlink
	OpReadlink
	OpAccess
	OpGetxattr
	OpListxattr
	OpSetxattr
	OpRemovexattr
	OpCreate
	OpOpen
	OpRead
	OpWrite
	OpFlush
	OpFsync
	OpRelease
	OpFallocate
	OpCopyFileRange
	OpLock
	OpOpendir
	OpReaddir
	OpReleasedir
	OpStatfs
	numOps
)

var opNames = [numOps]string{
	"lookup", "getattr", "setattr", "mknod", "mkdir", "unlink", "rmdir", "rename",
	"link", "symlink", "readlink", "access", "getxattr", "listxattr", "setxattr",
	"removexattr", "create", "open", "read", "write", "flush", "fsync", "release",
	"fallocate", "copy_file_range", "lock", "opendir", "readdir", "releasedir", "statfs",
}

func (o Op) String() string { return opNames[o] }

// opCounters counts requests per operation without locks or allocation.
type opCounters struct {
	n    [numOps]atomic.Uint64
	last atomic.Int64 // unix nanoseconds of the latest request
}

func (c *opCounters) inc(o Op) {
	c.n[o].Add(1)
	c.last.Store(time.Now().UnixNano())
}

// Snapshot returns the non-zero counts by operation name.
func (c *opCounters) snapshot() map[string]uint64 {
	out := make(map[string]uint64)
	for i := range c.n {
		if v := c.n[i].Load(); v > 0 {
			out[opNames[i]] = v
		}
	}
	return out
}
