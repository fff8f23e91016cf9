package bpf

import "time"

// Class is how a read reached its data (see the package documentation).
type Class int

const (
	Passthrough Class = iota // a passthrough backing file; the daemon saw nothing
	Cached                   // the page cache; misses went to the daemon as FUSE READ
	Direct                   // FOPEN_DIRECT_IO: every byte from the daemon
	numClasses
)

func (c Class) String() string {
	switch c {
	case Passthrough:
		return "passthrough"
	case Cached:
		return "cached"
	case Direct:
		return "direct"
	}
	return "unknown"
}

// Options configure Load.
type Options struct {
	// Dev is the mount's device number as stat(2) reports it in st_dev.
	Dev uint64
	// NoPerProcess turns the per (inode, process) counters off, which saves
	// an LRU map update on every read of the mount.
	NoPerProcess bool
	// MaxInodes is how many inodes the counters hold (default 65536). Past
	// three quarters, Drain deletes the entries idle since the previous
	// Drain; reads of inodes that find it full are counted in Lost.
	MaxInodes int
	// OpenEventsBuffer is the size of the open-event ring buffer in bytes
	// (rounded up to a power of two, at least 4 KiB; default 256 KiB, about
	// 4,000 events per drain). Events that do not fit are counted in Lost.
	OpenEventsBuffer int
}

// InodeCounts are read counters of one inode (cumulative or a delta).
type InodeCounts struct {
	// Calls and Bytes count read system calls that did not fail (a read at the
	// end of the file counts as a call of 0 bytes), by Class.
	Calls [numClasses]uint64
	Bytes [numClasses]uint64
	// MissBytes are the bytes of Cached reads that waited for FUSE READ
	// replies they sent (page cache misses, synchronous readahead), each read
	// counting at most its own size.
	MissBytes uint64
	// FuseReads and FuseReadBytes count the FUSE READ requests the daemon
	// answered for this inode and the bytes in their replies (readahead and
	// mmap faults included).
	FuseReads     uint64
	FuseReadBytes uint64
}

// ReadCalls is the number of read calls of every class.
func (c InodeCounts) ReadCalls() uint64 { return c.Calls[0] + c.Calls[1] + c.Calls[2] }

// ReadBytes is the number of bytes read by applications, every class.
func (c InodeCounts) ReadBytes() uint64 { return c.Bytes[0] + c.Bytes[1] + c.Bytes[2] }

// Split is where the bytes that applications read came from.
type Split struct {
	Passthrough uint64
	PageCache   uint64
	Daemon      uint64
}

// Split divides the bytes applications read by source: Passthrough bytes,
// Direct bytes plus the Cached bytes that waited for the daemon (MissBytes)
// from the daemon, the rest of the Cached bytes from the page cache.
func (c InodeCounts) Split() Split {
	miss := min(c.MissBytes, c.Bytes[Cached])
	return Split{
		Passthrough: c.Bytes[Passthrough],
		Daemon:      c.Bytes[Direct] + miss,
		PageCache:   c.Bytes[Cached] - miss,
	}
}

func (c InodeCounts) sub(prev InodeCounts) InodeCounts {
	var d InodeCounts
	for i := range c.Calls {
		d.Calls[i] = delta(c.Calls[i], prev.Calls[i])
		d.Bytes[i] = delta(c.Bytes[i], prev.Bytes[i])
	}
	d.MissBytes = delta(c.MissBytes, prev.MissBytes)
	d.FuseReads = delta(c.FuseReads, prev.FuseReads)
	d.FuseReadBytes = delta(c.FuseReadBytes, prev.FuseReadBytes)
	return d
}

func (c InodeCounts) zero() bool { return c == InodeCounts{} }

// delta of a cumulative counter; a counter below its previous value was
// recreated in the kernel and counts from zero.
func delta(cur, prev uint64) uint64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// InodeDelta is what one inode did since the previous Drain.
type InodeDelta struct {
	Ino uint64
	InodeCounts
}

// ProcDelta is what one process read of one inode since the previous Drain.
// Per-process entries are kept in an LRU map of 16384 entries (fewer on
// machines with more than 21 CPUs, to stay near 8 MiB): under pressure
// the least recently used are evicted and their counts lost (the per-inode
// counts stay exact).
type ProcDelta struct {
	Ino   uint64
	Tgid  uint32
	Calls uint64
	Bytes uint64
}

// OpenEvent is one successful open of a file on the mount.
type OpenEvent struct {
	Time  time.Time
	Ino   uint64
	Pid   uint32 // thread
	Tgid  uint32 // process
	UID   uint32
	Flags uint32 // open flags (O_RDONLY, O_WRONLY, ...)
	Comm  string
}

// LatencyBuckets is the number of latency buckets of a FuseOp.
const LatencyBuckets = 27

// BucketBound is the exclusive upper bound of latency bucket b; the last
// bucket has none (it returns 0).
func BucketBound(b int) time.Duration {
	if b >= LatencyBuckets-1 || b < 0 {
		return 0
	}
	return time.Duration(1) << (b + 10)
}

// FuseOp is the cumulative count and latency of one FUSE opcode on the mount.
type FuseOp struct {
	Opcode  uint32
	Name    string
	Count   uint64
	Errors  uint64
	Sum     time.Duration
	Buckets [LatencyBuckets]uint64 // per bucket, not cumulative
}

// Lost counts what the kernel side had to drop (cumulative).
type Lost struct {
	InodesFull   uint64 // reads of inodes that did not fit the inode map
	OpenEvents   uint64 // open events dropped on a full ring buffer
	PendingReads uint64 // reads not counted: no task storage for them
	FuseRequests uint64 // FUSE requests not timed: too many in flight
}

// Drained is the result of one Drain.
type Drained struct {
	Inodes []InodeDelta // inodes with activity since the previous Drain
	Procs  []ProcDelta
	Opens  []OpenEvent // in ring-buffer order
	Fuse   []FuseOp    // cumulative, opcodes seen so far
	Lost   Lost
}

// Source is what the daemon consumes; *Tracer implements it.
type Source interface {
	Drain() (Drained, error)
	ProgramIDs() []uint32
	Close() error
}
