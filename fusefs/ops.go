package fusefs

import (
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
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

// OpNames lists every operation name, in Op order.
func OpNames() []string { return opNames[:] }

// opCounters counts requests per operation without locks or allocation, and
// (once metrics are registered) times them.
type opCounters struct {
	n    [numOps]atomic.Uint64
	ns   [numOps]atomic.Uint64 // time spent answering, while timed
	last atomic.Int64          // monoNow() of the latest request
	// dur holds one pre-resolved histogram child per operation; nil until
	// RegisterMetrics, so a file system without metrics times nothing.
	dur *[numOps]prometheus.Observer
}

// epoch anchors monoNow; it is set once and never changes.
var epoch = time.Now()

// monoNow reads the monotonic clock only (time.Now reads the wall clock too,
// which doubles the cost on a virtual machine's clock).
func monoNow() int64 { return int64(time.Since(epoch)) }

// inc counts a request.
func (c *opCounters) inc(o Op) { c.n[o].Add(1) }

// start notes that a request arrived and returns when (monoNow).
func (c *opCounters) start() int64 {
	t := monoNow()
	c.last.Store(t)
	return t
}

// done records how long a request took. It neither allocates nor locks.
func (c *opCounters) done(o Op, began int64) {
	if c.dur != nil {
		d := monoNow() - began
		c.ns[o].Add(uint64(d))
		c.dur[o].Observe(float64(d) / 1e9)
	}
}

// idleFor is how long ago the latest request arrived.
func (c *opCounters) idleFor() time.Duration { return time.Duration(monoNow() - c.last.Load()) }

// OpTotal is what a mount served of one operation since it started.
type OpTotal struct {
	Count uint64        // requests
	Time  time.Duration // time spent answering them (zero without metrics)
}

// OpTotals returns the running totals of every operation, in Op order (see
// OpNames). Cheap enough to call every second.
func (fs *FS) OpTotals() []OpTotal {
	out := make([]OpTotal, numOps)
	for i := range out {
		out[i] = OpTotal{Count: fs.ops.n[i].Load(), Time: time.Duration(fs.ops.ns[i].Load())}
	}
	return out
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

// OpDurationBuckets are the bounds (seconds) of the FUSE latency histogram:
// from 50 µs (a cached getattr) to 10 s (a stalled object store).
var OpDurationBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// opsCollector exports the request counters at scrape time, so counting costs
// the request path one atomic add.
type opsCollector struct {
	c    *opCounters
	desc *prometheus.Desc
}

func (oc opsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- oc.desc }

func (oc opsCollector) Collect(ch chan<- prometheus.Metric) {
	for i := range oc.c.n {
		ch <- prometheus.MustNewConstMetric(oc.desc, prometheus.CounterValue, float64(oc.c.n[i].Load()), opNames[i])
	}
}

// RegisterMetrics registers the mount's FUSE metrics on r (the "fuse"
// subsystem: names come out as disgrafs_fuse_...):
//   - ops_total{op}: requests served, by operation;
//   - op_duration_seconds{op}: how long the daemon took to answer them;
//   - opens_after_lookup_total: opens that used the attributes their own
//     path walk's LOOKUP had just read, saving a metadata round trip.
//
// Call it before Mount: latencies are recorded from then on.
func (fs *FS) RegisterMetrics(r prometheus.Registerer) error {
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "op_duration_seconds",
		Help:    "Time the daemon took to answer a FUSE request, by operation.",
		Buckets: OpDurationBuckets,
	}, []string{"op"})
	ops := opsCollector{c: fs.ops, desc: prometheus.NewDesc("ops_total",
		"FUSE requests served, by operation.", []string{"op"}, nil)}
	if err := r.Register(ops); err != nil {
		return err
	}
	if err := r.Register(hist); err != nil {
		r.Unregister(ops)
		return err
	}
	after := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "opens_after_lookup_total",
		Help: "Opens that used the attributes their own path walk's LOOKUP had just read from the metadata engine instead of reading them again.",
	}, func() float64 { return float64(fs.base.opensAfterLookup.Load()) })
	if err := r.Register(after); err != nil {
		r.Unregister(ops)
		r.Unregister(hist)
		return err
	}
	var dur [numOps]prometheus.Observer
	for i := range dur {
		dur[i] = hist.WithLabelValues(opNames[i])
	}
	fs.ops.dur = &dur
	return nil
}

// instrumented is the top of the stack: it counts and times every request
// the kernel sends, then hands it to the next layer. Operations the mount
// does not implement (go-fuse's defaults below the stack answer ENOSYS) pass
// through uncounted; TestEveryImplementedOpIsCounted fails when a layer
// implements an operation this layer does not count.
type instrumented struct {
	fuse.RawFileSystem // the next layer
	ops                *opCounters
}

func (w *instrumented) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpLookup)
	s := w.RawFileSystem.Lookup(cancel, h, name, out)
	w.ops.done(OpLookup, t)
	return s
}

func (w *instrumented) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpGetattr)
	s := w.RawFileSystem.GetAttr(cancel, in, out)
	w.ops.done(OpGetattr, t)
	return s
}

func (w *instrumented) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpSetattr)
	s := w.RawFileSystem.SetAttr(cancel, in, out)
	w.ops.done(OpSetattr, t)
	return s
}

func (w *instrumented) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpMknod)
	s := w.RawFileSystem.Mknod(cancel, in, name, out)
	w.ops.done(OpMknod, t)
	return s
}

func (w *instrumented) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpMkdir)
	s := w.RawFileSystem.Mkdir(cancel, in, name, out)
	w.ops.done(OpMkdir, t)
	return s
}

func (w *instrumented) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpUnlink)
	s := w.RawFileSystem.Unlink(cancel, h, name)
	w.ops.done(OpUnlink, t)
	return s
}

func (w *instrumented) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpRmdir)
	s := w.RawFileSystem.Rmdir(cancel, h, name)
	w.ops.done(OpRmdir, t)
	return s
}

func (w *instrumented) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpRename)
	s := w.RawFileSystem.Rename(cancel, in, oldName, newName)
	w.ops.done(OpRename, t)
	return s
}

func (w *instrumented) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpLink)
	s := w.RawFileSystem.Link(cancel, in, name, out)
	w.ops.done(OpLink, t)
	return s
}

func (w *instrumented) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpSymlink)
	s := w.RawFileSystem.Symlink(cancel, h, target, name, out)
	w.ops.done(OpSymlink, t)
	return s
}

func (w *instrumented) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t := w.ops.start()
	w.ops.inc(OpReadlink)
	r0, r1 := w.RawFileSystem.Readlink(cancel, h)
	w.ops.done(OpReadlink, t)
	return r0, r1
}

func (w *instrumented) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpAccess)
	s := w.RawFileSystem.Access(cancel, in)
	w.ops.done(OpAccess, t)
	return s
}

func (w *instrumented) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t := w.ops.start()
	w.ops.inc(OpGetxattr)
	r0, r1 := w.RawFileSystem.GetXAttr(cancel, h, attr, dest)
	w.ops.done(OpGetxattr, t)
	return r0, r1
}

func (w *instrumented) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t := w.ops.start()
	w.ops.inc(OpListxattr)
	r0, r1 := w.RawFileSystem.ListXAttr(cancel, h, dest)
	w.ops.done(OpListxattr, t)
	return r0, r1
}

func (w *instrumented) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpSetxattr)
	s := w.RawFileSystem.SetXAttr(cancel, in, attr, data)
	w.ops.done(OpSetxattr, t)
	return s
}

func (w *instrumented) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpRemovexattr)
	s := w.RawFileSystem.RemoveXAttr(cancel, h, attr)
	w.ops.done(OpRemovexattr, t)
	return s
}

func (w *instrumented) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpCreate)
	s := w.RawFileSystem.Create(cancel, in, name, out)
	w.ops.done(OpCreate, t)
	return s
}

func (w *instrumented) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpOpen)
	s := w.RawFileSystem.Open(cancel, in, out)
	w.ops.done(OpOpen, t)
	return s
}

func (w *instrumented) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := w.ops.start()
	w.ops.inc(OpRead)
	r0, r1 := w.RawFileSystem.Read(cancel, in, buf)
	w.ops.done(OpRead, t)
	return r0, r1
}

func (w *instrumented) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := w.ops.start()
	w.ops.inc(OpWrite)
	r0, r1 := w.RawFileSystem.Write(cancel, in, data)
	w.ops.done(OpWrite, t)
	return r0, r1
}

func (w *instrumented) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpFlush)
	s := w.RawFileSystem.Flush(cancel, in)
	w.ops.done(OpFlush, t)
	return s
}

func (w *instrumented) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpFsync)
	s := w.RawFileSystem.Fsync(cancel, in)
	w.ops.done(OpFsync, t)
	return s
}

func (w *instrumented) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpFsync)
	s := w.RawFileSystem.FsyncDir(cancel, in)
	w.ops.done(OpFsync, t)
	return s
}

func (w *instrumented) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	t := w.ops.start()
	w.ops.inc(OpRelease)
	w.RawFileSystem.Release(cancel, in)
	w.ops.done(OpRelease, t)
}

func (w *instrumented) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpFallocate)
	s := w.RawFileSystem.Fallocate(cancel, in)
	w.ops.done(OpFallocate, t)
	return s
}

func (w *instrumented) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	t := w.ops.start()
	w.ops.inc(OpCopyFileRange)
	r0, r1 := w.RawFileSystem.CopyFileRange(cancel, in)
	w.ops.done(OpCopyFileRange, t)
	return r0, r1
}

func (w *instrumented) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpLock)
	s := w.RawFileSystem.GetLk(cancel, in, out)
	w.ops.done(OpLock, t)
	return s
}

func (w *instrumented) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpLock)
	s := w.RawFileSystem.SetLk(cancel, in)
	w.ops.done(OpLock, t)
	return s
}

func (w *instrumented) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpLock)
	s := w.RawFileSystem.SetLkw(cancel, in)
	w.ops.done(OpLock, t)
	return s
}

func (w *instrumented) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpOpendir)
	s := w.RawFileSystem.OpenDir(cancel, in, out)
	w.ops.done(OpOpendir, t)
	return s
}

func (w *instrumented) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpReaddir)
	s := w.RawFileSystem.ReadDir(cancel, in, out)
	w.ops.done(OpReaddir, t)
	return s
}

func (w *instrumented) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpReaddir)
	s := w.RawFileSystem.ReadDirPlus(cancel, in, out)
	w.ops.done(OpReaddir, t)
	return s
}

func (w *instrumented) ReleaseDir(in *fuse.ReleaseIn) {
	t := w.ops.start()
	w.ops.inc(OpReleasedir)
	w.RawFileSystem.ReleaseDir(in)
	w.ops.done(OpReleasedir, t)
}

func (w *instrumented) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := w.ops.start()
	w.ops.inc(OpStatfs)
	s := w.RawFileSystem.StatFs(cancel, h, out)
	w.ops.done(OpStatfs, t)
	return s
}
