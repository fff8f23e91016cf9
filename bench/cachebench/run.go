package main

import (
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// Targets, in report order.
const (
	tJuiceCold = "juicefs-cold"
	tJuiceWarm = "juicefs-warm"
	tDgCold    = "disgrafs-cold"
	tDgWarm    = "disgrafs-warm"
	tNative    = "native"
	// The embedded default volume (SQLite, local objects: no latency),
	// warmed, with the default open check and with --open-check always.
	tDgLocal      = "disgrafs-local"
	tDgLocalCheck = "disgrafs-local-check"
	tDgLocalRO    = "disgrafs-local-ro" // remounted --read-only after the warmup
	// A go-fuse loopback of a native copy whose OPEN is answered from
	// memory with KEEP_CACHE and NOFLUSH (loopfloor.go).
	tLoopFloor = "loopback-floor"
)

func allTargets() []string {
	return []string{tJuiceCold, tJuiceWarm, tDgCold, tDgWarm, tNative, tDgLocal, tDgLocalCheck, tDgLocalRO, tLoopFloor}
}

func isLocal(t string) bool { return t == tDgLocal || t == tDgLocalCheck || t == tDgLocalRO }

// targetLetter is the name for a target.
func targetLetter(t string) string {
	switch t {
	case tJuiceCold:
		return "a"
	case tJuiceWarm:
		return "b"
	case tDgCold:
		return "c"
	case tDgWarm:
		return "d"
	case tNative:
		return "e"
	case tDgLocal:
		return "f"
	case tDgLocalCheck:
		return "g"
	case tDgLocalRO:
		return "h"
	case tLoopFloor:
		return "i"
	}
	return ""
}

func targetTitle(t string) string {
	switch t {
	case tJuiceCold:
		return "juicefs CLI, cold"
	case tJuiceWarm:
		return "juicefs CLI, after juicefs warmup"
	case tDgCold:
		return "disgrafs, cold, prefetcher on"
	case tDgWarm:
		return "disgrafs, after disgrafs warmup --tag"
	case tNative:
		return "native directory"
	case tDgLocal:
		return "disgrafs, embedded volume, warm"
	case tDgLocalCheck:
		return "disgrafs, embedded volume, warm, --open-check always"
	case tDgLocalRO:
		return "disgrafs, embedded volume, warm, --read-only"
	case tLoopFloor:
		return "go-fuse loopback, OPEN from memory (KEEP_CACHE, NOFLUSH)"
	}
	return t
}

// target is one place the reader reads from.
type target struct {
	name     string
	base     string // everything of the target lives below
	root     string // where the data set is seen: the mountpoint or the native directory
	cacheDir string
	metrics  int
	m        *mounted
	// mount starts the target's daemon (nil for the native directory).
	mount func(ctx context.Context) (*mounted, error)
	// setupMount, when set, mounts the target for writing and warming the
	// data set; mount then serves the passes.
	setupMount func(ctx context.Context) (*mounted, error)
}

func (t *target) cold() bool { return t.name == tJuiceCold || t.name == tDgCold }

// env is everything the run started, for cleaning up.
type env struct {
	cfg       *config
	root      string
	logs      string
	lock      *os.File
	redis     *proc
	toxi      *toxiproxy
	setup     *mounted
	targets   []*target
	metaURL   string
	juicefs   string
	disgrafs  string
	manifest  string
	cacheSize int64 // MiB
	logf      func(string, ...any)
}

// close stops every daemon, toxiproxy and Redis, and removes the data.
func (e *env) close() error {
	var errs []error
	for i := len(e.targets) - 1; i >= 0; i-- {
		if t := e.targets[i]; t.m != nil {
			e.logf("unmounting %s", t.root)
			errs = append(errs, t.m.stop())
			t.m = nil
		}
	}
	if e.setup != nil {
		errs = append(errs, e.setup.stop())
		e.setup = nil
	}
	if e.toxi != nil {
		errs = append(errs, e.toxi.proc.terminate())
	}
	if e.redis != nil {
		errs = append(errs, e.redis.terminate())
	}
	if !e.cfg.keep && e.root != "" {
		if left, err := benchkit.MountsUnder(e.root); err != nil || len(left) > 0 {
			errs = append(errs, fmt.Errorf("not removing the data in %s: still mounted: %v %v", e.root, left, err))
		} else {
			for _, t := range e.targets {
				errs = append(errs, os.RemoveAll(t.base))
			}
			errs = append(errs, os.RemoveAll(filepath.Join(e.root, "setup")), os.RemoveAll(filepath.Join(e.root, "redis")))
		}
	}
	if e.lock != nil {
		e.lock.Close()
	}
	return errors.Join(errs...)
}

// prepareWorkDir locks the work directory and clears what an earlier run left.
func prepareWorkDir(e *env) error {
	root, err := filepath.Abs(e.cfg.workDir)
	if err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	if root == "/" {
		return errors.New("work directory: refusing to use /")
	}
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("lock the work directory: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return fmt.Errorf("another cachebench is running in %s (lock: %w)", root, err)
	}
	e.lock = lock
	if left, err := benchkit.MountsUnder(root); err != nil {
		return err
	} else if len(left) > 0 {
		return fmt.Errorf("file systems are still mounted under %s: %s; unmount them first", root, fmt.Sprint(left))
	}
	e.root = root
	for _, name := range append([]string{"logs", "bin", "setup", "redis", "manifest.tsv"}, allTargets()...) {
		if err := os.RemoveAll(filepath.Join(root, name)); err != nil {
			return fmt.Errorf("clear %s: %w", name, err)
		}
	}
	e.logs = filepath.Join(root, "logs")
	return os.MkdirAll(e.logs, 0o755)
}

// checkBinaries finds the programs and copies disgrafs into the work
// directory, so that a rebuild during the run cannot change what is measured.
func checkBinaries(ctx context.Context, e *env, info *runInfo) error {
	cfg := e.cfg
	p, err := exec.LookPath(cfg.juicefsBin)
	if err != nil {
		return fmt.Errorf("juicefs CLI %s: %w (build it with scripts/build-juicefs-peer.sh %s); it formats the volume, so it is needed for every target", cfg.juicefsBin, err, cfg.juicefsBin)
	}
	e.juicefs, _ = filepath.Abs(p)
	info.juicefsVersion = benchkit.VersionOf(ctx, e.juicefs, "--version")
	if !strings.Contains(info.juicefsVersion, "1.4.1") {
		e.logf("warning: the juicefs CLI says %q, the peer should be v1.4.1", info.juicefsVersion)
	}
	if _, err := exec.LookPath(cfg.toxiproxyBin); err != nil {
		return fmt.Errorf("toxiproxy server %s: %w (install it with scripts/toxiproxy.sh install)", cfg.toxiproxyBin, err)
	}
	if _, err := exec.LookPath(cfg.redisBin); err != nil {
		return fmt.Errorf("redis-server: %w (apt-get install redis-server)", err)
	}
	if !slices.ContainsFunc(cfg.targets, func(t string) bool { return t == tDgCold || t == tDgWarm || isLocal(t) }) {
		return nil
	}
	src, err := filepath.Abs(cfg.disgrafsBin)
	if err != nil {
		return err
	}
	dst := filepath.Join(e.root, "bin", "disgrafs")
	if err := benchkit.CopyFile(src, dst, 0o755); err != nil {
		return fmt.Errorf("disgrafs binary (build it with 'make build' or give -disgrafs): %w", err)
	}
	e.disgrafs = dst
	info.disgrafsVersion = benchkit.VersionOf(ctx, dst, "version")
	// The whole-file cache brings 'disgrafs warmup' and 'mount --prefetch'.
	mountHelp, _ := exec.CommandContext(ctx, dst, "mount", "--help").CombinedOutput()
	if err := exec.CommandContext(ctx, dst, "warmup", "--help").Run(); err != nil || !strings.Contains(string(mountHelp), "--prefetch") {
		return fmt.Errorf("%s (%s) has no whole-file cache yet ('disgrafs warmup' or 'mount --prefetch' missing): leave the disgrafs targets out with -targets %s,%s,%s",
			cfg.disgrafsBin, info.disgrafsVersion, tJuiceCold, tJuiceWarm, tNative)
	}
	return nil
}

// checkLine is the gist of a warmup --check: its last line without a log prefix.
func checkLine(out string) string {
	line := lastLines(strings.TrimSpace(out), 1)
	if _, rest, ok := strings.Cut(line, "check cache: "); ok {
		line = "check cache: " + rest
	}
	if i := strings.LastIndex(line, " ["); i > 0 && strings.HasSuffix(line, "]") {
		line = line[:i] // juicefs's [file@source.go:N]
	}
	return "`" + strings.ReplaceAll(line, "`", "'") + "`"
}

// moduleVersion reads a Go binary's build information: the version of module
// mod it was built from (go install leaves toxiproxy's own version string unset).
func moduleVersion(bin, mod string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "toxiproxy (unknown version: " + err.Error() + ")"
	}
	if bi.Main.Path == mod {
		return "toxiproxy " + bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == mod {
			return "toxiproxy " + d.Version
		}
	}
	return "toxiproxy (unknown version)"
}

// juicefsMount mounts the volume with the juicefs CLI in the foreground.
func (e *env) juicefsMount(name, mnt, cacheDir string, cacheMiB int64, metricsPort int, extra []string) func(context.Context) (*mounted, error) {
	args := []string{e.juicefs, "mount", e.metaURL, mnt, "--cache-dir", cacheDir, "--cache-size", strconv.FormatInt(cacheMiB, 10),
		"--no-usage-report", "--enable-xattr", "--metrics", "127.0.0.1:" + strconv.Itoa(metricsPort)}
	args = append(args, extra...)
	return func(ctx context.Context) (*mounted, error) {
		return startMount(ctx, mountSpec{name: name, argv: args, mnt: mnt, fstype: "fuse.juicefs",
			logPath: filepath.Join(e.logs, name+".log"), umount: []string{e.juicefs, "umount", mnt}, timeout: e.cfg.mountTimeout})
	}
}

// disgrafsMountArgs are the flags of 'disgrafs mount' for a target.
func (e *env) disgrafsMountArgs(dataDir, mnt, cacheDir string, metricsPort int) []string {
	args := []string{e.disgrafs, "mount", "--meta", e.metaURL, "--data-dir", dataDir, "--cache-dir", cacheDir,
		"--cache-size", strconv.FormatInt(e.cacheSize, 10) + "M", "--auto-tag=false", "--metrics", "127.0.0.1:" + strconv.Itoa(metricsPort)}
	args = append(args, e.cfg.disgrafsArgs...)
	return append(args, mnt)
}

func (e *env) disgrafsMount(name, dataDir, mnt, cacheDir string, metricsPort int) func(context.Context) (*mounted, error) {
	args := e.disgrafsMountArgs(dataDir, mnt, cacheDir, metricsPort)
	return func(ctx context.Context) (*mounted, error) {
		return startMount(ctx, mountSpec{name: name, argv: args, env: []string{"DISGRAFS_CONFIG=/dev/null"}, mnt: mnt,
			fstype: "fuse.disgrafs", logPath: filepath.Join(e.logs, name+".log"), umount: []string{e.disgrafs, "umount", mnt}, timeout: e.cfg.mountTimeout})
	}
}

// disgrafsLocalMount mounts the embedded default volume kept in dataDir.
func (e *env) disgrafsLocalMount(name, dataDir, mnt, cacheDir string, metricsPort int, extra []string) (func(context.Context) (*mounted, error), []string) {
	args := []string{e.disgrafs, "mount", "--data-dir", dataDir, "--cache-dir", cacheDir,
		"--cache-size", strconv.FormatInt(e.cacheSize, 10) + "M", "--auto-tag=false", "--metrics", "127.0.0.1:" + strconv.Itoa(metricsPort)}
	args = append(append(args, e.cfg.disgrafsArgs...), extra...)
	args = append(args, mnt)
	return func(ctx context.Context) (*mounted, error) {
		return startMount(ctx, mountSpec{name: name, argv: args, env: []string{"DISGRAFS_CONFIG=/dev/null"}, mnt: mnt,
			fstype: "fuse.disgrafs", logPath: filepath.Join(e.logs, name+".log"), umount: []string{e.disgrafs, "umount", mnt}, timeout: e.cfg.mountTimeout})
	}, args
}

// newTargets describes the selected targets; nothing is mounted yet.
func (e *env) newTargets(info *runInfo) {
	for i, name := range e.cfg.targets {
		base := filepath.Join(e.root, name)
		t := &target{name: name, base: base, cacheDir: filepath.Join(base, "cache"), metrics: e.cfg.metricsPort + i}
		mnt := filepath.Join(base, "mnt")
		switch name {
		case tNative:
			t.root = filepath.Join(base, "files")
			info.targetConfig[name] = fmt.Sprintf("a plain directory (%s) on the same file system as the caches", t.root)
		case tLoopFloor:
			t.root = mnt
			self, _ := os.Executable()
			files := filepath.Join(base, "files")
			t.mount = func(ctx context.Context) (*mounted, error) {
				return startMount(ctx, mountSpec{name: name, argv: []string{self, "loopfloor", files, mnt}, mnt: mnt, fstype: "fuse.loopfloor",
					logPath: filepath.Join(e.logs, name+".log"), umount: []string{"umount", mnt}, timeout: e.cfg.mountTimeout})
			}
			info.targetConfig[name] = fmt.Sprintf("`cachebench loopfloor %s MNT`: a go-fuse v2.12.1 loopback of a native copy; OPEN answered from memory with FOPEN_KEEP_CACHE|FOPEN_NOFLUSH, entries and attributes kept 1 h", files)
		case tJuiceCold, tJuiceWarm:
			t.root = mnt
			t.mount = e.juicefsMount(name, mnt, t.cacheDir, e.cacheSize, t.metrics, e.cfg.juicefsArgs)
			how := "a fresh, empty cache directory for every pass (remounted)"
			if name == tJuiceWarm {
				how = fmt.Sprintf("mounted once; `juicefs warmup -p %d` of the whole data set before the first pass", e.cfg.warmThreads)
			}
			info.targetConfig[name] = fmt.Sprintf("`juicefs mount %s MNT --cache-dir DIR --cache-size %d --no-usage-report --enable-xattr --metrics ... %s`, %s",
				e.metaURL, e.cacheSize, strings.Join(e.cfg.juicefsArgs, " "), how)
		case tDgCold, tDgWarm:
			t.root = mnt
			data := filepath.Join(base, "data")
			t.mount = e.disgrafsMount(name, data, mnt, t.cacheDir, t.metrics)
			how := "a fresh, empty cache directory for every pass (remounted; the tag index in --data-dir stays)"
			if name == tDgWarm {
				how = fmt.Sprintf("mounted once; `disgrafs warmup --tag %s` and `--tag %s` before the first pass", tagSmall, tagLarge)
			}
			args := e.disgrafsMountArgs(data, "MNT", "DIR", t.metrics)
			info.targetConfig[name] = fmt.Sprintf("`disgrafs %s`, %s", strings.Join(args[1:], " "), how)
		case tDgLocal, tDgLocalCheck, tDgLocalRO:
			t.root = mnt
			var extra []string
			switch name {
			case tDgLocalCheck:
				extra = []string{"--open-check", "always"}
			case tDgLocalRO:
				extra = []string{"--read-only"}
				t.setupMount, _ = e.disgrafsLocalMount(name+"-setup", filepath.Join(base, "data"), mnt, t.cacheDir, t.metrics, nil)
			}
			var args []string
			t.mount, args = e.disgrafsLocalMount(name, filepath.Join(base, "data"), mnt, t.cacheDir, t.metrics, extra)
			args = slices.Clone(args)
			args[len(args)-1] = "MNT"
			how := "mounted once; the data set written through it and `disgrafs warmup --tag %s` and `--tag %s` before the first pass"
			if t.setupMount != nil {
				how = "the data set written through a read-write mount and `disgrafs warmup --tag %s` and `--tag %s`, then remounted with these flags for the passes"
			}
			info.targetConfig[name] = fmt.Sprintf("`disgrafs %s` (the embedded default volume: SQLite and objects on local disk, so no latency applies), "+how,
				strings.Join(args[1:], " "), tagSmall, tagLarge)
		}
		e.targets = append(e.targets, t)
	}
}

// passKey names one measured quantity.
type passKey struct {
	latency time.Duration
	kind    string
	threads int
	target  string
}

type results map[passKey][]passResult

func run(ctx context.Context, cfg *config, stdout, stderr io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark mounts FUSE file systems and drops the page cache")
	}
	started := time.Now()
	e := &env{cfg: cfg, logf: func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}}
	defer func() {
		if cerr := e.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := prepareWorkDir(e); err != nil {
		return err
	}
	info := gatherInfo(e.root)
	info.commandLine = cfg.commandLine
	if err := checkBinaries(ctx, e, info); err != nil {
		return err
	}
	ds, err := newDataSet(cfg.data)
	if err != nil {
		return err
	}
	info.smallBytes, info.largeBytes = ds.bytesOf(kindSmall), ds.bytesOf(kindLarge)
	// Room for the whole data set in every cache, with a margin for block
	// trailers and metadata.
	e.cacheSize = (info.smallBytes+info.largeBytes)*5/4>>20 + 1024

	// The remote side: Redis behind toxiproxy, no latency while the data set is made.
	e.logf("starting redis-server on port %d and toxiproxy (API %d) forwarding %d to it", cfg.redisPort, cfg.toxiAPIPort, cfg.proxyPort)
	if e.redis, err = startRedis(ctx, cfg.redisBin, cfg.redisPort, filepath.Join(e.root, "redis"), filepath.Join(e.logs, "redis.log")); err != nil {
		return err
	}
	if e.toxi, err = startToxiproxy(ctx, cfg.toxiproxyBin, cfg.toxiAPIPort, filepath.Join(e.logs, "toxiproxy.log")); err != nil {
		return err
	}
	if err := e.toxi.createProxy(ctx, cfg.proxyPort, cfg.redisPort); err != nil {
		return err
	}
	info.toxiproxyVersion = moduleVersion(cfg.toxiproxyBin, "github.com/Shopify/toxiproxy/v2")
	e.metaURL = fmt.Sprintf("redis://127.0.0.1:%d/0", cfg.proxyPort)
	bucket := fmt.Sprintf("redis://127.0.0.1:%d/1", cfg.proxyPort)
	formatArgs := []string{e.juicefs, "format", e.metaURL, "cachebench", "--storage", "redis", "--bucket", bucket, "--trash-days", "0"}
	if err := runLogged(ctx, 2*time.Minute, filepath.Join(e.logs, "setup.log"), formatArgs...); err != nil {
		return fmt.Errorf("format the volume: %w", err)
	}
	info.format = "juicefs " + strings.Join(formatArgs[1:], " ")
	e.newTargets(info)

	if err := createData(ctx, e, ds, info); err != nil {
		return err
	}
	if err := warmTargets(ctx, e, ds, info); err != nil {
		return err
	}

	res := results{}
	if err := measure(ctx, e, res); err != nil {
		return err
	}
	info.duration = time.Since(started)
	info.loadEnd = benchkit.FirstLine("/proc/loadavg")
	report := renderReport(cfg, info, res)
	if err := benchkit.WriteReport(stdout, cfg.out, report); err != nil {
		return err
	}
	if cfg.out != "" {
		e.logf("report written to %s", cfg.out)
	}
	return nil
}

// createData writes the data set into the volume through a setup mount of
// the juicefs CLI (tags as user.xdg.tags xattrs) and into the native
// directory, and writes the manifest the reader checks against.
func createData(ctx context.Context, e *env, ds *dataSet, info *runInfo) error {
	mnt := filepath.Join(e.root, "setup", "mnt")
	start := time.Now()
	var err error
	e.setup, err = e.juicefsMount("setup", mnt, filepath.Join(e.root, "setup", "cache"), 0, e.cfg.metricsPort+len(allTargets()), []string{"--cache-size", "0"})(ctx)
	if err != nil {
		return fmt.Errorf("setup mount: %w", err)
	}
	progress := func(where string) func(int, int) {
		return func(done, total int) { e.logf("writing the data set into %s: %d/%d files", where, done, total) }
	}
	e.logf("writing %d small and %d large files into the volume (no latency)", e.cfg.data.smallFiles, e.cfg.data.largeFiles)
	var mtime time.Time
	if e.cfg.dataAge > 0 {
		mtime = time.Now().Add(-e.cfg.dataAge)
	}
	if err := writeTree(ctx, mnt, ds, e.cfg.writers, true, mtime, progress("the volume")); err != nil {
		return fmt.Errorf("write the data set into the volume: %w", err)
	}
	err = e.setup.stop()
	e.setup = nil
	if err != nil {
		return fmt.Errorf("setup mount: %w", err)
	}
	info.writeVolume = time.Since(start)
	for _, t := range e.targets {
		if t.name == tNative || t.name == tLoopFloor {
			start := time.Now()
			dir := filepath.Join(t.base, "files")
			if err := writeTree(ctx, dir, ds, e.cfg.writers, false, mtime, progress("the native directory")); err != nil {
				return fmt.Errorf("write the native copy: %w", err)
			}
			info.writeNative = time.Since(start)
		}
	}
	e.manifest = filepath.Join(e.root, "manifest.tsv")
	return writeManifest(e.manifest, ds.files)
}

// warmTargets mounts the warm targets for the whole run and warms them; the
// disgrafs targets first rebuild their tag index from the xattrs.
func warmTargets(ctx context.Context, e *env, ds *dataSet, info *runInfo) error {
	for _, t := range e.targets {
		if t.mount == nil {
			continue
		}
		if t.name == tJuiceCold {
			continue
		}
		var err error
		mount := t.mount
		if t.setupMount != nil {
			mount = t.setupMount
		}
		if t.m, err = mount(ctx); err != nil {
			return fmt.Errorf("mount %s: %w", t.name, err)
		}
		log := filepath.Join(e.logs, t.name+"-setup.log")
		if t.name == tDgCold || t.name == tDgWarm {
			start := time.Now()
			e.logf("%s: disgrafs reindex (the files were tagged through the juicefs CLI)", t.name)
			if err := runLogged(ctx, 30*time.Minute, log, e.disgrafs, "reindex", t.root); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			e.logf("%s: reindexed in %.1f s", t.name, time.Since(start).Seconds())
		}
		if isLocal(t.name) {
			start := time.Now()
			e.logf("%s: writing the data set through the mount", t.name)
			var mtime time.Time
			if e.cfg.dataAge > 0 {
				mtime = time.Now().Add(-e.cfg.dataAge)
			}
			if err := writeTree(ctx, t.root, ds, e.cfg.writers, true, mtime, func(done, total int) {
				e.logf("writing the data set into %s: %d/%d files", t.name, done, total)
			}); err != nil {
				return fmt.Errorf("%s: write the data set: %w", t.name, err)
			}
			e.logf("%s: written in %.1f s", t.name, time.Since(start).Seconds())
		}
		switch t.name {
		case tJuiceWarm:
			start := time.Now()
			e.logf("%s: juicefs warmup -p %d of the data set (no latency)", t.name, e.cfg.warmThreads)
			paths := []string{filepath.Join(t.root, "small")}
			if e.cfg.data.largeFiles > 0 {
				paths = append(paths, filepath.Join(t.root, "large"))
			}
			if err := runLogged(ctx, 2*time.Hour, log, append([]string{e.juicefs, "warmup", "-p", strconv.Itoa(e.cfg.warmThreads)}, paths...)...); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			info.warmup[t.name] = time.Since(start)
			out, err := runOutput(ctx, 30*time.Minute, log, append([]string{e.juicefs, "warmup", "--check"}, paths...)...)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			info.warmCheck[t.name] = checkLine(out)
		case tDgWarm, tDgLocal, tDgLocalCheck, tDgLocalRO:
			start := time.Now()
			tags := []string{tagSmall}
			if e.cfg.data.largeFiles > 0 {
				tags = append(tags, tagLarge)
			}
			var checks []string
			for _, tag := range tags {
				e.logf("%s: disgrafs warmup --tag %s (no latency)", t.name, tag)
				if err := runLogged(ctx, 2*time.Hour, log, e.disgrafs, "warmup", "--tag", tag, t.root); err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
			}
			info.warmup[t.name] = time.Since(start)
			for _, tag := range tags {
				out, err := runOutput(ctx, 30*time.Minute, log, e.disgrafs, "warmup", "--check", "--tag", tag, t.root)
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				checks = append(checks, tag+": "+checkLine(out))
			}
			info.warmCheck[t.name] = strings.Join(checks, "; ")
		}
		if t.cold() || t.setupMount != nil {
			err := t.m.stop()
			t.m = nil
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
		}
		if t.setupMount != nil {
			if t.m, err = t.mount(ctx); err != nil {
				return fmt.Errorf("mount %s: %w", t.name, err)
			}
		}
		e.logf("%s ready", t.name)
	}
	return nil
}

// measure runs every pass: for each latency and repetition every target in
// turn (the order rotates), small files then large files, each with every
// thread count. The page cache is dropped before every pass; cold targets
// get a fresh, empty cache directory and a new mount before every pass.
func measure(ctx context.Context, e *env, res results) error {
	cfg := e.cfg
	kinds := []string{kindSmall}
	if cfg.data.largeFiles > 0 {
		kinds = append(kinds, kindLarge)
	}
	total := len(cfg.latencies) * cfg.runs * len(e.targets) * len(kinds) * len(cfg.threads)
	n := 0
	start := time.Now()
	for _, lat := range cfg.latencies {
		if err := e.toxi.setLatency(ctx, lat); err != nil {
			return err
		}
		e.logf("toxiproxy: every Redis reply now waits %s", lat)
		for rep := range cfg.runs {
			for i := range e.targets {
				t := e.targets[(i+rep)%len(e.targets)]
				for _, kind := range kinds {
					for _, th := range cfg.threads {
						n++
						r, err := pass(ctx, e, t, kind, th, cfg.data.seed*1000+uint64(rep))
						if err != nil {
							return fmt.Errorf("%s, %s latency, run %d, %s files, %d threads: %w", t.name, lat, rep+1, kind, th, err)
						}
						res[passKey{lat, kind, th, t.name}] = append(res[passKey{lat, kind, th, t.name}], r)
						mark := ""
						if r.Partial {
							mark = fmt.Sprintf(" (cut at the %s limit after %d of %d files)", cfg.passLimit, r.Files, r.Total)
						}
						elapsed := time.Since(start)
						eta := time.Duration(float64(elapsed) / float64(n) * float64(total-n)).Round(time.Second)
						e.logf("[%d/%d] %s run %d/%d %-13s %s x%d: %.0f files/s, %.1f MB/s, %.2f s%s; about %s to go",
							n, total, lat, rep+1, cfg.runs, t.name, kind, th, r.filesPerSec(), r.mbPerSec(), r.Seconds, mark, eta)
						if c := r.cpu.perFile(r.Files); c != "" {
							e.logf("        CPU ms per file: %s", c)
						}
						if r.counters != "" {
							e.logf("        counters: %s", r.counters)
						}
					}
				}
			}
		}
	}
	return nil
}

// pass prepares a target and runs one reader pass in a child process.
func pass(ctx context.Context, e *env, t *target, kind string, threads int, seed uint64) (passResult, error) {
	if t.cold() {
		if t.m != nil {
			err := t.m.stop()
			t.m = nil
			if err != nil {
				return passResult{}, err
			}
		}
		if err := os.RemoveAll(t.cacheDir); err != nil {
			return passResult{}, fmt.Errorf("empty the cache: %w", err)
		}
		var err error
		if t.m, err = t.mount(ctx); err != nil {
			return passResult{}, err
		}
		defer func() {
			if t.m != nil {
				if err := t.m.stop(); err != nil {
					e.logf("%s: %v", t.name, err)
				} else if err := os.RemoveAll(t.cacheDir); err != nil {
					// Free the disk for the next target (a full-size cache is 9 GB).
					e.logf("%s: %v", t.name, err)
				}
				t.m = nil
			}
		}()
	} else if t.m != nil && !t.m.p.running() {
		return passResult{}, fmt.Errorf("%s exited (%v); log %s:\n%s", t.name, t.m.p.waitErr, t.m.spec.logPath, tailFile(t.m.spec.logPath, 20))
	}
	// This very binary, even if bin/cachebench is rebuilt during the run.
	const self = "/proc/self/exe"
	lf, err := os.OpenFile(filepath.Join(e.logs, "reader.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return passResult{}, err
	}
	defer lf.Close()
	var readerCPU time.Duration
	reader := func(what string, limit time.Duration) ([]byte, error) {
		args := []string{"read", "-root", t.root, "-manifest", e.manifest, "-kind", kind,
			"-threads", strconv.Itoa(threads), "-seed", strconv.FormatUint(seed, 10), "-limit", limit.String()}
		fmt.Fprintf(lf, "### %s %s %s: %s\n", time.Now().Format(time.RFC3339), t.name, what, strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Stderr = lf
		out, err := cmd.Output()
		if cmd.ProcessState != nil {
			readerCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			return nil, fmt.Errorf("reader: %w; log %s:\n%s", err, lf.Name(), tailFile(lf.Name(), 5))
		}
		return out, nil
	}
	if e.cfg.pageCache == "drop" || t.cold() {
		if err := benchkit.DropCaches(); err != nil {
			return passResult{}, err
		}
	} else {
		// The previous epoch, unmeasured: the kernel keeps what it cached.
		// Same order as the pass, and twice its time limit, so that a pass
		// cut at the limit reads only files the epoch before it read.
		if _, err := reader("unmeasured epoch", 2*e.cfg.passLimit); err != nil {
			return passResult{}, err
		}
	}
	var before map[string]float64
	if t.m != nil {
		before, _ = scrapeCounters(ctx, t.metrics)
	}
	pids := map[string]int{"redis": e.redis.cmd.Process.Pid, "toxiproxy": e.toxi.proc.cmd.Process.Pid}
	if t.m != nil {
		pids["mount"] = t.m.p.cmd.Process.Pid
	}
	cpu := startCPUWatch(pids)
	out, err := reader("pass", e.cfg.passLimit)
	if err != nil {
		return passResult{}, err
	}
	var r passResult
	if err := json.Unmarshal(out, &r); err != nil {
		return passResult{}, fmt.Errorf("reader output %q: %w", out, err)
	}
	r.cpu = cpu.stop(readerCPU)
	if t.m != nil {
		if after, err := scrapeCounters(ctx, t.metrics); err == nil {
			r.counters = counterDelta(before, after)
		} else {
			r.counters = err.Error()
		}
	}
	return r, nil
}
