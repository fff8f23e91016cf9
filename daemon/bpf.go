package daemon

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/juicedata/juicefs/pkg/meta"
	"golang.org/x/sys/unix"

	"github.com/disgrafs/disgrafs/bpf"
	"github.com/disgrafs/disgrafs/control"
)

// Lock order: bpfState.mu is a leaf. The drain job takes it to record a
// drain, releases it, then runs the sinks (which take the cache's and the
// learner's locks); neither the kernel (Drain, Close, program info) nor the
// metadata engine (paths for top) is called under it.

// BPF modes of --bpf.
const (
	BPFOff  = "off"
	BPFAuto = "auto" // load if possible, run without it otherwise
	BPFOn   = "on"   // fail the mount when it cannot load
)

// bpfDrainInterval is how often the kernel counters are read. Nothing wakes
// the daemon in between, whatever the read rate.
const bpfDrainInterval = time.Second

// bpfState is the daemon's eBPF read accounting: the tracer when it loaded,
// the reason when not, and the metrics fed from it.
type bpfState struct {
	mode string
	met  *bpf.Metrics

	// mu guards what status and top read while the drain job writes it.
	mu      sync.Mutex
	reason  string     // why it is off; empty when on
	tracer  bpf.Source // nil when off; set before the drain job starts, cleared by it when it ends
	progIDs []uint32   // the tracer's programs
	sinks   []func(bpf.Drained)
	totals  control.BPFInfo // cumulative, for status
	lastErr string
	last    control.BPFTop // the last interval, for top

	// The drain job's own, never shared.
	lastAt   time.Time
	prevFuse map[uint32]bpf.FuseOp
}

// startBPF loads the read accounting for the mount according to the --bpf
// mode; runBPF starts draining it. It fails only in mode "on".
func (d *Daemon) startBPF(ctx context.Context) error {
	mode := d.cfg.BPF
	if mode == "" {
		mode = BPFAuto
	}
	s := &bpfState{mode: mode, met: bpf.NewMetrics()}
	d.bpf = s
	if err := s.met.Register(d.reg.Subsystem); err != nil {
		return fmt.Errorf("bpf metrics: %w", err)
	}
	if mode == BPFOff {
		s.reason = "turned off (--bpf=off)"
		return nil
	}
	var st syscall.Stat_t
	if err := syscall.Stat(d.cfg.Mountpoint, &st); err != nil {
		return fmt.Errorf("stat the mountpoint for eBPF: %w", err)
	}
	tr, err := bpf.Load(ctx, bpf.Options{Dev: st.Dev})
	if err != nil {
		if mode == BPFOn {
			return fmt.Errorf("--bpf=on: %w", err)
		}
		s.reason = err.Error()
		d.log.Warn("eBPF read accounting unavailable, running without it (the daemon counts the opens it serves)", "reason", s.reason)
		return nil
	}
	ids := tr.ProgramIDs()
	s.mu.Lock()
	s.tracer, s.progIDs = tr, ids
	s.mu.Unlock()
	s.met.SetEnabled(true)
	d.log.Info("eBPF read accounting on", "dev", fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)))
	return nil
}

// AddBPFSink registers a consumer of every drain (cache recency, the
// co-access learner of the prefetcher). It runs on the drain goroutine, once
// per interval, and must not block. Nothing is called when eBPF is off.
func (d *Daemon) AddBPFSink(f func(bpf.Drained)) {
	if d.bpf == nil {
		return
	}
	d.bpf.mu.Lock()
	d.bpf.sinks = append(d.bpf.sinks, f)
	d.bpf.mu.Unlock()
}

// runBPF starts the drain job: it drains every bpfDrainInterval, once more
// when the background work stops, then detaches the programs.
func (d *Daemon) runBPF() {
	s := d.bpf
	if s == nil || s.tracer == nil {
		return
	}
	tr := s.tracer
	started := d.run.Go("eBPF drain", func(ctx context.Context) {
		s.loop(ctx, d, tr)
		s.detach(d, tr)
	})
	if !started {
		s.detach(d, tr)
	}
}

func (s *bpfState) loop(ctx context.Context, d *Daemon, tr bpf.Source) {
	t := time.NewTicker(bpfDrainInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.drain(d, tr) // what happened since the last tick
			return
		case <-t.C:
			s.drain(d, tr)
		}
	}
}

func (s *bpfState) drain(d *Daemon, tr bpf.Source) {
	dr, err := tr.Drain()
	if err != nil {
		s.mu.Lock()
		first := s.lastErr == ""
		s.lastErr = err.Error()
		s.mu.Unlock()
		if first {
			d.log.Warn("eBPF drain failed", "error", err)
		}
		return
	}
	sum, calls := dr.Totals()
	top := s.topOf(dr, sum, calls)
	s.mu.Lock()
	s.last = top
	s.totals.ReadBytes.Passthrough += sum.Passthrough
	s.totals.ReadBytes.PageCache += sum.PageCache
	s.totals.ReadBytes.Daemon += sum.Daemon
	s.totals.ReadCalls += calls[0] + calls[1] + calls[2]
	s.totals.OpenEvents += uint64(len(dr.Opens))
	s.totals.Lost = dr.Lost.InodesFull + dr.Lost.OpenEvents + dr.Lost.PendingReads + dr.Lost.FuseRequests
	s.lastErr = ""
	sinks := s.sinks
	s.mu.Unlock()
	for _, f := range sinks {
		f(dr)
	}
	// The counters move after the sinks ran: a scrape that shows a read has
	// been drained also knows that the cache's recency has seen it.
	s.met.Observe(dr)
}

// topFiles is how many files GET bpf/top lists.
const topFiles = 20

// topOf summarises one drain for 'disgrafs top'. Paths are resolved when asked.
func (s *bpfState) topOf(dr bpf.Drained, sum bpf.Split, calls [3]uint64) control.BPFTop {
	now := time.Now()
	t := control.BPFTop{
		Enabled: true, Passthrough: sum.Passthrough, PageCache: sum.PageCache, Daemon: sum.Daemon,
		ReadCalls: calls[0] + calls[1] + calls[2], Opens: uint64(len(dr.Opens)),
	}
	if !s.lastAt.IsZero() {
		t.Interval = now.Sub(s.lastAt).Seconds()
	}
	s.lastAt = now
	for _, in := range dr.Inodes {
		sp := in.Split()
		if in.ReadCalls() == 0 {
			continue
		}
		t.Files = append(t.Files, control.BPFFile{Ino: in.Ino, Calls: in.ReadCalls(), Passthrough: sp.Passthrough, PageCache: sp.PageCache, Daemon: sp.Daemon})
	}
	bytesOf := func(f control.BPFFile) uint64 { return f.Passthrough + f.PageCache + f.Daemon }
	sort.Slice(t.Files, func(i, j int) bool { return bytesOf(t.Files[i]) > bytesOf(t.Files[j]) })
	if len(t.Files) > topFiles {
		t.Files = t.Files[:topFiles]
	}
	cur := make(map[uint32]bpf.FuseOp, len(dr.Fuse))
	for _, op := range dr.Fuse {
		cur[op.Opcode] = op
		prev := s.prevFuse[op.Opcode]
		n := op.Count - prev.Count
		if n == 0 {
			continue
		}
		t.Fuse = append(t.Fuse, control.BPFFuseOp{Op: op.Name, Count: n, Errors: op.Errors - prev.Errors,
			AvgSecs: (op.Sum - prev.Sum).Seconds() / float64(n)})
	}
	s.prevFuse = cur
	sort.Slice(t.Fuse, func(i, j int) bool { return t.Fuse[i].Count > t.Fuse[j].Count })
	return t
}

// bpfTop is the reply of GET bpf/top, with the files' paths.
func (d *Daemon) bpfTop() control.BPFTop {
	s := d.bpf
	if s == nil {
		return control.BPFTop{Reason: "not started"}
	}
	s.mu.Lock()
	t := s.last
	t.Files = append([]control.BPFFile(nil), t.Files...)
	t.Enabled = s.tracer != nil
	t.Reason = s.reason
	s.mu.Unlock()
	for i := range t.Files {
		if paths := d.vol.VFS.Meta.GetPaths(meta.Background(), meta.Ino(t.Files[i].Ino)); len(paths) > 0 {
			t.Files[i].Path = paths[0]
		}
	}
	return t
}

// detach detaches the programs and frees the maps.
func (s *bpfState) detach(d *Daemon, tr bpf.Source) {
	if err := tr.Close(); err != nil {
		d.log.Warn("detaching eBPF programs", "error", err)
	}
	s.met.SetEnabled(false)
	s.mu.Lock()
	s.reason = "stopped"
	s.tracer = nil
	s.mu.Unlock()
}

// bpfInfo is the eBPF part of the status.
func (d *Daemon) bpfInfo() *control.BPFInfo {
	s := d.bpf
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	info := s.totals
	info.Mode = s.mode
	info.Enabled = s.tracer != nil
	info.Reason = s.reason
	info.Error = s.lastErr
	if s.tracer != nil {
		info.ProgramIDs = s.progIDs
	}
	return &info
}
