package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

const (
	targetDisgrafs = "disgrafs"
	targetJuiceFS  = "juicefs"
	targetNative   = "native"
)

// target is one place the workloads run in.
type target struct {
	name string
	// dir is where the workloads create their files: a mountpoint or a plain directory.
	dir string
	// base holds everything of the target (volume, mountpoint, native files).
	base        string
	description string
	daemon      *daemonProc // nil for the native directory
}

// cpuSeconds is the CPU time (user+system) the target's daemon processes have
// used so far; 0 for the native directory.
func (t *target) cpuSeconds() float64 {
	if t.daemon == nil {
		return 0
	}
	return procTreeCPU(t.daemon.cmd.Process.Pid)
}

// removeData deletes the target's volume or directory, refusing while anything
// is still mounted beneath it.
func (t *target) removeData() error {
	mounted, err := benchkit.MountsUnder(t.base)
	if err != nil {
		return err
	}
	if len(mounted) > 0 {
		return fmt.Errorf("not removing %s: %s is still mounted", t.base, mounted[0].Point)
	}
	if err := os.RemoveAll(t.base); err != nil {
		return fmt.Errorf("remove %s: %w", t.base, err)
	}
	return nil
}

// program is a binary under test, at the path the run uses.
type program struct {
	path, version string
}

// binaries are the programs under test: disgrafs and its variants by target
// name, and the juicefs CLI.
type binaries struct {
	disgrafs map[string]program
	juicefs  program
}

// resolveBinaries checks the binaries of the selected targets. The disgrafs
// binary is copied into the work directory so that a rebuild during the run
// cannot change what is measured.
func resolveBinaries(cfg *config, wd *workDir) (binaries, error) {
	b := binaries{disgrafs: map[string]program{}}
	copied := map[string]program{} // by source path
	disgrafs := func(target, src string) error {
		src, err := filepath.Abs(src)
		if err != nil {
			return fmt.Errorf("disgrafs binary: %w", err)
		}
		if p, ok := copied[src]; ok {
			b.disgrafs[target] = p
			return nil
		}
		dst := filepath.Join(wd.root, "bin", target)
		if err := benchkit.CopyFile(src, dst, 0o755); err != nil {
			return fmt.Errorf("disgrafs binary (build it with 'make build' or give -disgrafs): %w", err)
		}
		p := program{path: dst, version: benchkit.VersionOf(context.Background(), dst, "version")}
		copied[src] = p
		b.disgrafs[target] = p
		return nil
	}
	if contains(cfg.targets, targetDisgrafs) {
		if err := disgrafs(targetDisgrafs, cfg.disgrafsBin); err != nil {
			return b, err
		}
	}
	for _, v := range cfg.variants {
		src := v.bin
		if src == "" {
			src = cfg.disgrafsBin
		}
		if err := disgrafs(v.target(), src); err != nil {
			return b, fmt.Errorf("variant %s: %w", v.name, err)
		}
	}
	if contains(cfg.targets, targetJuiceFS) {
		p, err := filepath.Abs(cfg.juicefsBin)
		if err != nil {
			return b, fmt.Errorf("juicefs binary: %w", err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			return b, fmt.Errorf("juicefs binary %s is missing or not executable (build it with scripts/build-juicefs-peer.sh %s, or leave it out with -targets disgrafs,native)", p, p)
		}
		b.juicefs = program{path: p, version: benchkit.VersionOf(context.Background(), p, "--version")}
	}
	return b, nil
}

// startTarget creates a fresh target. A target that was (partly) started is
// returned even with an error, so that the caller can stop it.
func startTarget(ctx context.Context, name string, cfg *config, wd *workDir, bins binaries, logf func(string, ...any)) (*target, error) {
	base := filepath.Join(wd.root, name)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", base, err)
	}
	if prog, ok := bins.disgrafs[name]; ok {
		args := slices.Clone(cfg.disgrafsArgs)
		for _, v := range cfg.variants {
			if v.target() == name {
				args = append(args, v.args...)
			}
		}
		return startDisgrafs(ctx, name, base, prog, args, cfg, wd, logf)
	}
	switch name {
	case targetNative:
		dir := filepath.Join(base, "files")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
		return &target{name: name, dir: dir, base: base,
			description: fmt.Sprintf("a plain directory (%s) on the same file system as the volumes", dir)}, nil

	case targetJuiceFS:
		metaURL := "sqlite3://" + filepath.Join(base, "meta.db")
		objects := filepath.Join(base, "objects")
		cache := filepath.Join(base, "cache")
		mnt := filepath.Join(base, "mnt")
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", mnt, err)
		}
		logPath := filepath.Join(wd.logs, "juicefs.log")
		formatArgs := []string{"format", metaURL, "bench", "--storage", "file", "--bucket", objects, "--trash-days", "0"}
		if err := runLogged(ctx, 2*time.Minute, logPath, append([]string{bins.juicefs.path}, formatArgs...)); err != nil {
			return nil, fmt.Errorf("juicefs format: %w", err)
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := []string{"mount", metaURL, mnt, "--cache-size", "0", "--cache-dir", cache,
			"--no-usage-report", "--metrics", "127.0.0.1:" + strconv.Itoa(port)}
		args = append(args, cfg.juicefsArgs...)
		t := &target{name: name, dir: mnt, base: base}
		t.description = fmt.Sprintf("%s: fresh volume formatted with `juicefs %s` (SQLite metadata, file object storage %s, block size 4 MiB, no compression), foreground mount (supervisor + serving child): `juicefs %s`",
			bins.juicefs.version, strings.Join(formatArgs, " "), objects, strings.Join(args, " "))
		d, err := startDaemon(ctx, daemonSpec{
			name:    name,
			argv:    append([]string{bins.juicefs.path}, args...),
			mnt:     mnt,
			fstype:  "fuse.juicefs",
			logPath: logPath,
			umount:  []string{bins.juicefs.path, "umount", mnt},
			timeout: cfg.mountTimeout,
		}, logf)
		t.daemon = d
		if d == nil {
			return nil, err
		}
		return t, err
	}
	return nil, fmt.Errorf("unknown target %q", name)
}

// startDisgrafs mounts a fresh embedded volume with a disgrafs binary.
func startDisgrafs(ctx context.Context, name, base string, prog program, extra []string, cfg *config, wd *workDir, logf func(string, ...any)) (*target, error) {
	data := filepath.Join(base, "data")
	mnt := filepath.Join(base, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", mnt, err)
	}
	args := []string{"mount", "--data-dir", data, "--cache-size", "0", "--metrics", "off"}
	args = append(args, extra...)
	args = append(args, mnt)
	t := &target{name: name, dir: mnt, base: base}
	t.description = fmt.Sprintf("%s: fresh embedded volume (SQLite metadata %s/meta.db, file object storage %s/objects, block size 4 MiB, no compression, trash off), foreground daemon: `disgrafs %s`",
		prog.version, data, data, strings.Join(args, " "))
	d, err := startDaemon(ctx, daemonSpec{
		name:    name,
		argv:    append([]string{prog.path}, args...),
		env:     []string{"DISGRAFS_CONFIG=/dev/null"},
		mnt:     mnt,
		fstype:  "fuse.disgrafs",
		logPath: filepath.Join(wd.logs, name+".log"),
		umount:  []string{prog.path, "umount", mnt},
		timeout: cfg.mountTimeout,
	}, logf)
	t.daemon = d
	if d == nil {
		return nil, err
	}
	return t, err
}

// stopTargets unmounts every daemon target, last started first.
func stopTargets(targets []*target, logf func(string, ...any)) error {
	var errs []error
	for i := len(targets) - 1; i >= 0; i-- {
		if d := targets[i].daemon; d != nil {
			if err := d.stop(logf); err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", targets[i].name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port for metrics: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// runLogged runs a short command, appending its output to the log file.
func runLogged(ctx context.Context, timeout time.Duration, logPath string, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer lf.Close()
	fmt.Fprintf(lf, "### %s %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w (see %s)", strings.Join(argv, " "), err, logPath)
	}
	return nil
}

// daemonSpec describes a FUSE daemon to run in the foreground.
type daemonSpec struct {
	name    string
	argv    []string
	env     []string
	mnt     string
	fstype  string
	logPath string
	umount  []string
	timeout time.Duration
}

// daemonProc is a running FUSE daemon started by us.
type daemonProc struct {
	spec    daemonSpec
	cmd     *exec.Cmd
	log     *os.File
	exited  chan struct{}
	waitErr error
}

// startDaemon starts the daemon in a process group of its own (so that a
// terminal's Ctrl-C reaches only the benchmark, which then unmounts in order)
// and waits until its mount serves. If the benchmark dies, the daemon gets
// SIGTERM and unmounts itself. A started daemon is returned even with an error.
func startDaemon(ctx context.Context, s daemonSpec, logf func(string, ...any)) (*daemonProc, error) {
	if e, ok, err := benchkit.MountedAt(s.mnt); err != nil {
		return nil, err
	} else if ok {
		return nil, fmt.Errorf("%s is already mounted (%s)", s.mnt, e.FSType)
	}
	lf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	fmt.Fprintf(lf, "### %s %s\n", time.Now().Format(time.RFC3339), strings.Join(s.argv, " "))
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", s.argv[0], err)
	}
	d := &daemonProc{spec: s, cmd: cmd, log: lf, exited: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	logf("started %s (pid %d), waiting for %s", s.name, cmd.Process.Pid, s.mnt)
	if err := d.waitMounted(ctx); err != nil {
		return d, err
	}
	return d, nil
}

func (d *daemonProc) waitMounted(ctx context.Context) error {
	deadline := time.NewTimer(d.spec.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.exited:
			return fmt.Errorf("%s exited before its mount came up (%v); log %s:\n%s", d.spec.name, d.waitErr, d.spec.logPath, tail(d.spec.logPath, 20))
		case <-deadline.C:
			return fmt.Errorf("%s did not mount %s within %s; log %s:\n%s", d.spec.name, d.spec.mnt, d.spec.timeout, d.spec.logPath, tail(d.spec.logPath, 20))
		case <-tick.C:
			e, ok, err := benchkit.MountedAt(d.spec.mnt)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if e.FSType != d.spec.fstype {
				return fmt.Errorf("%s is mounted as %s, expected %s", d.spec.mnt, e.FSType, d.spec.fstype)
			}
			var st syscall.Statfs_t
			if err := syscall.Statfs(d.spec.mnt, &st); err != nil {
				continue
			}
			return nil
		}
	}
}

func (d *daemonProc) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// stop unmounts through the daemon's own command, waits for the daemon to
// flush and exit, and falls back to signals and a lazy unmount.
func (d *daemonProc) stop(logf func(string, ...any)) error {
	defer d.log.Close()
	var errs []error
	if !d.running() {
		errs = append(errs, fmt.Errorf("%s had exited before the end of the run (%v); see %s", d.spec.name, d.waitErr, d.spec.logPath))
	}
	if _, mounted, _ := benchkit.MountedAt(d.spec.mnt); mounted {
		logf("unmounting %s", d.spec.mnt)
		if err := runLogged(context.Background(), 2*time.Minute, d.spec.logPath, d.spec.umount); err != nil {
			errs = append(errs, err)
		}
	}
	if d.running() && !d.waitExit(time.Minute) {
		logf("%s still running after unmount: SIGTERM", d.spec.name)
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
		if !d.waitExit(30 * time.Second) {
			logf("%s still running: SIGKILL", d.spec.name)
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			d.waitExit(10 * time.Second)
		}
		errs = append(errs, fmt.Errorf("%s did not exit after unmounting", d.spec.name))
	}
	if _, mounted, _ := benchkit.MountedAt(d.spec.mnt); mounted {
		if err := syscall.Unmount(d.spec.mnt, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("lazy unmount of %s: %w", d.spec.mnt, err))
		} else {
			errs = append(errs, fmt.Errorf("%s had to be detached lazily", d.spec.mnt))
		}
	}
	return errors.Join(errs...)
}

func (d *daemonProc) waitExit(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-d.exited:
		return true
	case <-t.C:
		return false
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procTreeCPU sums the user and system time of a process and all its live
// descendants, in seconds.
func procTreeCPU(pid int) float64 {
	const ticks = 100 // USER_HZ on Linux
	total := 0.0
	for _, p := range processTree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		// After the command: state(3) ... utime(14) stime(15).
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			total += (u + st) / ticks
		}
	}
	return total
}
