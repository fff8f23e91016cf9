//go:build linux && amd64

package bpf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Tracer is the loaded and attached programs of one mount.
type Tracer struct {
	objs  readsObjects
	links []link.Link
	ring  *ringbuf.Reader
	// monoToWall converts bpf_ktime_get_ns (CLOCK_MONOTONIC) to wall time.
	monoToWall int64

	mu        sync.Mutex
	closed    bool
	prevInode map[uint64]InodeCounts
	prevProc  map[readsProcKey]readsProcStats
}

// Load loads the programs, limited to the mount whose st_dev is o.Dev, and
// attaches them. An error is a *LoadError saying why eBPF is unavailable.
func Load(ctx context.Context, o Options) (_ *Tracer, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, &LoadError{Reason: ReasonNoBTF, Err: err}
	}
	if o.Dev == 0 {
		return nil, &LoadError{Reason: ReasonOther, Err: errors.New("no device number given")}
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones
	// use memory cgroups and this does nothing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, classify(err, "raise RLIMIT_MEMLOCK")
	}
	spec, err := loadReads()
	if err != nil {
		return nil, &LoadError{Reason: ReasonOther, Err: fmt.Errorf("parse the BPF object: %w", err)}
	}
	// The kernel's dev_t (MKDEV) encoding, which s_dev holds.
	kdev := unix.Major(o.Dev)<<20 | unix.Minor(o.Dev)
	if err := spec.Variables["target_dev"].Set(kdev); err != nil {
		return nil, &LoadError{Reason: ReasonOther, Err: fmt.Errorf("set the device: %w", err)}
	}
	// Per-process counters are preallocated per CPU: keep them near 8 MiB.
	if ms := spec.Maps["proc_reads"]; ms != nil {
		n := uint32(8 << 20 / (24 * max(runtime.NumCPU(), 1)))
		ms.MaxEntries = min(max(n, 1024), ms.MaxEntries)
	}
	if o.MaxInodes > 0 {
		spec.Maps["inode_reads"].MaxEntries = uint32(o.MaxInodes)
	}
	if o.OpenEventsBuffer > 0 {
		size := uint32(4096)
		for int(size) < o.OpenEventsBuffer && size < 1<<30 {
			size <<= 1
		}
		spec.Maps["open_events"].MaxEntries = size
	}
	if o.NoPerProcess {
		if err := spec.Variables["per_process"].Set(uint8(0)); err != nil {
			return nil, &LoadError{Reason: ReasonOther, Err: fmt.Errorf("set per_process: %w", err)}
		}
	}
	t := &Tracer{prevInode: map[uint64]InodeCounts{}, prevProc: map[readsProcKey]readsProcStats{}}
	defer func() {
		if err != nil {
			_ = t.Close()
		}
	}()
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, &LoadError{Reason: ReasonKernel, Err: fmt.Errorf("the verifier rejected the programs: %w", err)}
		}
		return nil, classify(err, "load")
	}
	for _, p := range []*ebpf.Program{t.objs.OnSysEnter, t.objs.OnSysExit, t.objs.OnFuseSend, t.objs.OnFuseEnd} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return nil, classify(err, "attach "+p.String())
		}
		t.links = append(t.links, l)
	}
	if t.ring, err = ringbuf.NewReader(t.objs.OpenEvents); err != nil {
		return nil, classify(err, "open the ring buffer")
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return nil, &LoadError{Reason: ReasonOther, Err: err}
	}
	t.monoToWall = time.Now().UnixNano() - ts.Nano()
	return t, nil
}

// Close detaches the programs and frees the maps; it may be called more than once.
func (t *Tracer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	if t.ring != nil {
		errs = append(errs, t.ring.Close())
	}
	errs = append(errs, t.objs.Close())
	return errors.Join(errs...)
}

// ProgramIDs are the kernel ids of the loaded programs (for leak checks).
func (t *Tracer) ProgramIDs() []uint32 {
	var ids []uint32
	for _, p := range []*ebpf.Program{t.objs.OnSysEnter, t.objs.OnSysExit, t.objs.OnFuseSend, t.objs.OnFuseEnd} {
		if p == nil {
			continue
		}
		if info, err := p.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids = append(ids, uint32(id))
			}
		}
	}
	return ids
}

// Drain returns what happened since the previous call: per-inode and
// per-process deltas, the open events, and the cumulative FUSE statistics.
func (t *Tracer) Drain() (Drained, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var d Drained
	if t.closed {
		return d, errors.New("bpf tracer closed")
	}
	var err error
	if d.Inodes, err = t.drainInodes(); err != nil {
		return d, err
	}
	if d.Procs, err = t.drainProcs(); err != nil {
		return d, err
	}
	if d.Opens, err = t.drainOpens(); err != nil {
		return d, err
	}
	if d.Fuse, err = t.fuseOps(); err != nil {
		return d, err
	}
	d.Lost, err = t.lost()
	return d, err
}

func (t *Tracer) drainInodes() ([]InodeDelta, error) {
	var (
		out   []InodeDelta
		idle  []uint64
		seen  = make(map[uint64]bool, len(t.prevInode))
		total int
	)
	err := eachPerCPU(t.objs.InodeReads, func(key uint64, vals []readsInodeStats) {
		total++
		var cur InodeCounts
		for _, v := range vals {
			for c := range cur.Calls {
				cur.Calls[c] += v.Calls[c]
				cur.Bytes[c] += v.Bytes[c]
			}
			cur.MissBytes += v.MissBytes
			cur.FuseReads += v.FuseReads
			cur.FuseReadBytes += v.FuseReadBytes
		}
		seen[key] = true
		dl := cur.sub(t.prevInode[key])
		t.prevInode[key] = cur
		if dl.zero() {
			idle = append(idle, key)
			return
		}
		out = append(out, InodeDelta{Ino: key, InodeCounts: dl})
	})
	if err != nil {
		return nil, fmt.Errorf("read the inode counters: %w", err)
	}
	for k := range t.prevInode {
		if !seen[k] {
			delete(t.prevInode, k)
		}
	}
	// Make room: increments that race this delete are lost, so only idle
	// entries go, and only when the map fills up.
	// Past three quarters of the capacity, entries idle since the previous
	// Drain are deleted.
	if total > int(t.objs.InodeReads.MaxEntries())*3/4 {
		for _, k := range idle {
			if err := t.objs.InodeReads.Delete(k); err == nil {
				delete(t.prevInode, k)
			}
		}
	}
	return out, nil
}

func (t *Tracer) drainProcs() ([]ProcDelta, error) {
	var (
		out  []ProcDelta
		seen = make(map[readsProcKey]bool, len(t.prevProc))
	)
	err := eachPerCPU(t.objs.ProcReads, func(key readsProcKey, vals []readsProcStats) {
		var cur readsProcStats
		for _, v := range vals {
			cur.Calls += v.Calls
			cur.Bytes += v.Bytes
		}
		prev := t.prevProc[key]
		t.prevProc[key] = cur
		seen[key] = true
		if dc, db := delta(cur.Calls, prev.Calls), delta(cur.Bytes, prev.Bytes); dc != 0 || db != 0 {
			out = append(out, ProcDelta{Ino: key.Ino, Tgid: key.Tgid, Calls: dc, Bytes: db})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read the per-process counters: %w", err)
	}
	for k := range t.prevProc {
		if !seen[k] {
			delete(t.prevProc, k)
		}
	}
	return out, nil
}

func (t *Tracer) drainOpens() ([]OpenEvent, error) {
	var out []OpenEvent
	// The programs submit without waking us: read what is there, then stop.
	t.ring.SetDeadline(time.Now())
	var rec ringbuf.Record
	for {
		err := t.ring.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("read open events: %w", err)
		}
		var ev readsOpenEvent
		if len(rec.RawSample) < int(unsafe.Sizeof(ev)) {
			continue
		}
		ev = *(*readsOpenEvent)(unsafe.Pointer(&rec.RawSample[0]))
		comm := unsafe.Slice((*byte)(unsafe.Pointer(&ev.Comm[0])), len(ev.Comm))
		if i := bytes.IndexByte(comm, 0); i >= 0 {
			comm = comm[:i]
		}
		out = append(out, OpenEvent{
			Time: time.Unix(0, int64(ev.TsNs)+t.monoToWall),
			Ino:  ev.Ino, Pid: ev.Pid, Tgid: ev.Tgid, UID: ev.Uid, Flags: ev.Flags,
			Comm: string(comm),
		})
	}
}

func (t *Tracer) fuseOps() ([]FuseOp, error) {
	var (
		out  []FuseOp
		vals []readsFuseOpStats
	)
	for op := uint32(0); op < t.objs.FuseOps.MaxEntries(); op++ {
		if err := t.objs.FuseOps.Lookup(op, &vals); err != nil {
			return nil, fmt.Errorf("read the FUSE counters: %w", err)
		}
		f := FuseOp{Opcode: op, Name: OpcodeName(op)}
		for _, v := range vals {
			f.Count += v.Count
			f.Errors += v.Errors
			f.Sum += time.Duration(v.SumNs)
			for b := range f.Buckets {
				f.Buckets[b] += v.Buckets[b]
			}
		}
		if f.Count > 0 {
			out = append(out, f)
		}
	}
	return out, nil
}

func (t *Tracer) lost() (Lost, error) {
	var l Lost
	dst := []*uint64{&l.InodesFull, &l.OpenEvents, &l.PendingReads, &l.FuseRequests}
	var vals []uint64
	for i, p := range dst {
		if err := t.objs.Stats.Lookup(uint32(i), &vals); err != nil {
			return l, fmt.Errorf("read the loss counters: %w", err)
		}
		for _, v := range vals {
			*p += v
		}
	}
	return l, nil
}
