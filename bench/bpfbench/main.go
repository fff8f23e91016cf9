// Command bpfbench measures what the eBPF read accounting costs: the same warm
// small-file read loop through one disgrafs mount (--bpf=off) with the
// programs of package bpf attached (loaded here, exactly as the daemon loads
// them), with empty programs on sys_enter/sys_exit (the cost of the
// tracepoints alone) and with nothing, alternating pass by pass so that the
// load of a busy machine spreads over all three, and prints the medians side
// by side: wall time, and CPU time of this process plus the daemon.
//
// Usage (root): bpfbench -disgrafs bin/disgrafs -workdir /var/tmp/bpfbench [-files 2000] [-passes 10]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/disgrafs/disgrafs/bpf"
)

type config struct {
	disgrafs, workdir, out string
	files, passes, preads  int
	extra                  string
}

func main() {
	var c config
	flag.StringVar(&c.disgrafs, "disgrafs", "bin/disgrafs", "disgrafs binary")
	flag.StringVar(&c.workdir, "workdir", "/var/tmp/disgrafs-bpfbench", "work directory (volume and mountpoint)")
	flag.StringVar(&c.out, "out", "", "also write the markdown table here")
	flag.IntVar(&c.files, "files", 2000, "small files (4-64 KiB)")
	flag.IntVar(&c.passes, "passes", 10, "measured warm passes over all files per mode (the three modes alternate)")
	flag.IntVar(&c.preads, "preads", 50000, "4 KiB preads of one warm file per pass (per-call cost)")
	flag.StringVar(&c.extra, "mount-flags", "--attr-cache=1h --entry-cache=1h", "more flags for disgrafs mount")
	flag.Parse()
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintln(os.Stderr, "bpfbench:", err)
		os.Exit(1)
	}
}

type sample struct {
	filesPerSec []float64
	cpuPerFile  []float64 // µs of CPU (this process and the daemon) per file
	preadNs     []float64
	preadCPU    []float64 // ns of this process's CPU per pread
	nullCPU     []float64 // ns of CPU per getppid(2), a system call off the mount
}

func run(ctx context.Context, c config) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (FUSE mount and BPF)")
	}
	data := filepath.Join(c.workdir, "data")
	mp := filepath.Join(c.workdir, "mnt")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return err
	}
	_ = os.RemoveAll(data)
	d, err := mount(ctx, c, data, mp)
	if err != nil {
		return err
	}
	defer func() { _ = d.stop(c) }()
	totalBytes, err := createFiles(mp, c.files)
	if err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil {
		return err
	}
	w, err := newWorkload(mp, c.files)
	if err != nil {
		return err
	}
	defer w.close()
	if _, _, err := w.pass(); err != nil { // warm the caches
		return err
	}
	res := map[string]*sample{"off": {}, "on": {}, "empty": {}}
	var counted uint64
	// off, on, empty, empty, on, off, ...: every mode sees early and late passes.
	modes := []string{"off", "on", "empty", "empty", "on", "off"}
	for i := 0; i < 3*c.passes; i++ {
		mode := modes[i%len(modes)]
		var tr *bpf.Tracer
		var empty io.Closer
		switch mode {
		case "on":
			if tr, err = bpf.Load(ctx, bpf.Options{Dev: st.Dev}); err != nil {
				return err
			}
		case "empty":
			if empty, err = attachEmpty(); err != nil {
				return err
			}
		}
		s := res[mode]
		cpu0 := cpuSelf() + cpuOf(d.cmd.Process.Pid)
		dur, files, err := w.pass()
		cpu1 := cpuSelf() + cpuOf(d.cmd.Process.Pid)
		if err == nil {
			s.filesPerSec = append(s.filesPerSec, float64(files)/dur.Seconds())
			s.cpuPerFile = append(s.cpuPerFile, (cpu1-cpu0).Seconds()*1e6/float64(files))
			var pd, pc time.Duration
			pd, pc, err = w.preads(c.preads)
			s.preadNs = append(s.preadNs, float64(pd.Nanoseconds())/float64(c.preads))
			s.preadCPU = append(s.preadCPU, float64(pc.Nanoseconds())/float64(c.preads))
			s.nullCPU = append(s.nullCPU, nullSyscalls(c.preads))
		}
		if empty != nil {
			if cerr := empty.Close(); err == nil {
				err = cerr
			}
		}
		if tr != nil {
			dr, derr := tr.Drain()
			for _, in := range dr.Inodes {
				counted += in.ReadCalls()
			}
			if cerr := tr.Close(); err == nil {
				err = errors.Join(derr, cerr)
			}
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "pass %2d bpf %-3s: %6.0f files/s, %5.1f µs CPU/file, pread %5.0f ns (%4.0f ns CPU)\n", i+1, mode,
			s.filesPerSec[len(s.filesPerSec)-1], s.cpuPerFile[len(s.cpuPerFile)-1], s.preadNs[len(s.preadNs)-1], s.preadCPU[len(s.preadCPU)-1])
	}
	if counted == 0 {
		return errors.New("the programs counted no read: the measurement is void")
	}
	off, on, em := res["off"], res["on"], res["empty"]
	row := func(b *strings.Builder, name string, o, n, e []float64, unit string) {
		mo, mn, me := median(o), median(n), median(e)
		fmt.Fprintf(b, "| %s | %.1f %s | %.1f %s (%+.1f%%) | %.1f %s (%+.1f%%) |\n", name, mo, unit, me, unit, (me/mo-1)*100, mn, unit, (mn/mo-1)*100)
	}
	var b strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "eBPF read accounting overhead (%s on %s, load average %s; %d passes per mode, alternating; %d files of 4-64 KiB = %.1f MiB, warm; mount flags %q)\n\n",
		time.Now().UTC().Format(time.RFC3339), host, strings.Join(strings.Fields(string(load))[:3], " "), c.passes, c.files, float64(totalBytes)/(1<<20), c.extra)
	fmt.Fprintf(&b, "| median | no programs | empty programs on sys_enter/sys_exit | the accounting programs |\n|---|---:|---:|---:|\n")
	row(&b, "small-file read loop (open, read to EOF, close)", off.filesPerSec, on.filesPerSec, em.filesPerSec, "files/s")
	row(&b, "CPU per file (reader + daemon)", off.cpuPerFile, on.cpuPerFile, em.cpuPerFile, "µs")
	row(&b, "4 KiB pread of a warm file, wall", off.preadNs, on.preadNs, em.preadNs, "ns")
	row(&b, "4 KiB pread of a warm file, CPU", off.preadCPU, on.preadCPU, em.preadCPU, "ns")
	row(&b, "getppid(2), any process, CPU", off.nullCPU, on.nullCPU, em.nullCPU, "ns")
	fmt.Print(b.String())
	if c.out != "" {
		return os.WriteFile(c.out, []byte(b.String()), 0o644)
	}
	return nil
}

// nullSyscalls is the CPU time of one getppid(2), in ns: the cost the
// tracepoints add to every system call of the machine.
func nullSyscalls(n int) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var ts0, ts1 syscall.Timespec
	const clockThreadCPU = 3 // CLOCK_THREAD_CPUTIME_ID
	_, _, _ = syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPU, uintptr(unsafe.Pointer(&ts0)), 0)
	for i := 0; i < n; i++ {
		syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
	}
	_, _, _ = syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPU, uintptr(unsafe.Pointer(&ts1)), 0)
	return float64(ts1.Nano()-ts0.Nano()) / float64(n)
}

// cpuSelf is the CPU time (user+system) of this process so far.
func cpuSelf() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuOf is the CPU time of every thread of a process, from schedstat (ns).
func cpuOf(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		var ns int64
		if _, err := fmt.Sscan(string(b), &ns); err == nil {
			sum += ns
		}
	}
	return time.Duration(sum)
}

type daemonProc struct {
	cmd  *exec.Cmd
	mp   string
	done chan error
}

func mount(ctx context.Context, c config, data, mp string) (*daemonProc, error) {
	const mode = "off"
	args := []string{"mount", "--bpf", mode, "--metrics", "off", "--no-tags", "--data-dir", data}
	args = append(args, strings.Fields(c.extra)...)
	args = append(args, mp)
	cmd := exec.CommandContext(ctx, c.disgrafs, args...)
	cmd.Env = append(os.Environ(), "DISGRAFS_CONFIG=none")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &daemonProc{cmd: cmd, mp: mp, done: make(chan error, 1)}
	ready := make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		closed := false
		for sc.Scan() {
			line := sc.Text()
			if log.Len() < 1<<16 {
				log.WriteString(line + "\n")
			}
			if !closed && strings.Contains(line, "disgrafs: serving ") {
				close(ready)
				closed = true
			}
		}
		d.done <- cmd.Wait()
	}()
	select {
	case <-ready:
		return d, nil
	case err := <-d.done:
		return nil, fmt.Errorf("mount --bpf=%s exited: %v\n%s", mode, err, log.String())
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("mount --bpf=%s did not serve within 60s", mode)
	}
}

func (d *daemonProc) stop(c config) error {
	out, err := exec.Command(c.disgrafs, "umount", d.mp).CombinedOutput()
	if err != nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		return fmt.Errorf("daemon did not exit: %s", out)
	}
	if err != nil {
		return fmt.Errorf("umount: %v: %s", err, out)
	}
	return nil
}

func createFiles(mp string, n int) (int64, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	var total int64
	for i := 0; i < n; i++ {
		dir := filepath.Join(mp, "small", fmt.Sprintf("d%02d", i%50))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, err
		}
		size := 4<<10 + rng.IntN(60<<10)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), buf[:size], 0o644); err != nil {
			return 0, err
		}
		total += int64(size)
	}
	if err := os.WriteFile(filepath.Join(mp, "one"), buf[:4096], 0o644); err != nil {
		return 0, err
	}
	return total, nil
}

type workload struct {
	paths []string
	one   *os.File
	buf   []byte
}

func newWorkload(mp string, n int) (*workload, error) {
	w := &workload{buf: make([]byte, 64<<10)}
	for i := 0; i < n; i++ {
		w.paths = append(w.paths, filepath.Join(mp, "small", fmt.Sprintf("d%02d", i%50), fmt.Sprintf("f%05d", i)))
	}
	var err error
	w.one, err = os.Open(filepath.Join(mp, "one"))
	return w, err
}

func (w *workload) close() { w.one.Close() }

// pass opens, reads to the end and closes every file.
func (w *workload) pass() (time.Duration, int, error) {
	start := time.Now()
	for _, p := range w.paths {
		f, err := os.Open(p)
		if err != nil {
			return 0, 0, err
		}
		for {
			n, err := f.Read(w.buf)
			if n == 0 || err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return 0, 0, err
			}
		}
		f.Close()
	}
	return time.Since(start), len(w.paths), nil
}

// preads reads 4 KiB of one warm file n times; it returns wall and CPU time.
func (w *workload) preads(n int) (time.Duration, time.Duration, error) {
	small := w.buf[:4096]
	fd := int(w.one.Fd())
	cpu0 := cpuSelf()
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := syscall.Pread(fd, small, 0); err != nil {
			return 0, 0, err
		}
	}
	return time.Since(start), cpuSelf() - cpu0, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// attachEmpty attaches programs that do nothing to sys_enter and sys_exit:
// the cost every system call pays for the tracepoints alone.
func attachEmpty() (io.Closer, error) {
	var cl closers
	for _, tp := range []string{"sys_enter", "sys_exit"} {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: tp, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err != nil {
			cl.Close()
			return nil, fmt.Errorf("empty program on %s: %w", tp, err)
		}
		cl = append(cl, p)
		l, err := link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			cl.Close()
			return nil, fmt.Errorf("attach the empty program to %s: %w", tp, err)
		}
		cl = append(cl, l)
	}
	return cl, nil
}

type closers []io.Closer

func (c closers) Close() error {
	var errs []error
	for i := len(c) - 1; i >= 0; i-- {
		errs = append(errs, c[i].Close())
	}
	return errors.Join(errs...)
}
