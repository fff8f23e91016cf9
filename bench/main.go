// Command bench measures disgrafs against the juicefs CLI (the same JuiceFS
// v1.4.1 code behind a different FUSE front end) and a plain native directory,
// side by side in one run on one disk.
//
// Every target gets a fresh volume of the same kind: SQLite metadata and local
// file object storage, no block cache. The workloads are a large sequential
// file (write with fsync, cold read, warm read) and many small files (write,
// cold read, warm read, every byte verified). Each repetition runs every target
// in turn, rotating the order, and the report gives the median of the runs.
//
// It needs root (FUSE mounts, drop_caches) and unmounts everything it mounted
// on exit, on error and on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

// config is what the command line asks for.
type config struct {
	workDir      string
	out          string
	disgrafsBin  string
	juicefsBin   string
	targets      []string
	runs         int
	largeMiB     int
	ioKiB        int
	smallFiles   int
	smallDirs    int
	smallMinKiB  int
	smallMaxKiB  int
	chunkFiles   int
	seed         uint64
	disgrafsArgs []string
	juicefsArgs  []string
	variants     []variant
	keep         bool
	mountTimeout time.Duration
	commandLine  string
}

// knownTargets are the targets -targets may name; variants come on top.
func knownTargets() []string { return []string{targetDisgrafs, targetJuiceFS, targetNative} }

// variant is one more disgrafs target: the same volume kind mounted by another
// binary or with other flags, measured beside the rest (for attributing a
// difference within one run rather than across noisy runs).
type variant struct {
	name string   // the target is "disgrafs-" + name
	bin  string   // empty: the -disgrafs binary
	args []string // appended to -disgrafs-args
}

func (v variant) target() string { return targetDisgrafs + "-" + v.name }

var validVariantName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// parseVariant reads NAME[@BINARY]=ARGS.
func parseVariant(s string) (variant, error) {
	head, args, ok := strings.Cut(s, "=")
	if !ok {
		return variant{}, fmt.Errorf("-variant %q: want NAME[@BINARY]=ARGS", s)
	}
	name, bin, _ := strings.Cut(head, "@")
	if !validVariantName.MatchString(name) {
		return variant{}, fmt.Errorf("-variant %q: name must be 1-32 of a-z, 0-9 and '-'", s)
	}
	return variant{name: name, bin: bin, args: strings.Fields(args)}, nil
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var targets, dgArgs, jfsArgs string
	fs.StringVar(&c.workDir, "workdir", "/var/tmp/disgrafs-bench", "work directory for volumes, mountpoints, the native directory and logs (on the disk to measure)")
	fs.StringVar(&c.out, "out", "", "also write the markdown report to this file")
	fs.StringVar(&c.disgrafsBin, "disgrafs", "bin/disgrafs", "disgrafs binary (copied into the work directory at start)")
	fs.StringVar(&c.juicefsBin, "juicefs", "/var/tmp/bench/juicefs", "juicefs CLI binary (v1.4.1, built by scripts/build-juicefs-peer.sh)")
	fs.StringVar(&targets, "targets", strings.Join(knownTargets(), ","), "comma-separated targets to measure")
	fs.Func("variant", "add a target `NAME[@BINARY]=ARGS`: disgrafs mounted by BINARY (default: -disgrafs) with ARGS added, reported as disgrafs-NAME (repeatable), e.g. -variant 'notags=--no-tags'", func(v string) error {
		vr, err := parseVariant(v)
		if err != nil {
			return err
		}
		c.variants = append(c.variants, vr)
		return nil
	})
	fs.IntVar(&c.runs, "runs", 3, "repetitions of every measurement (the report gives medians)")
	fs.IntVar(&c.largeMiB, "large-mib", 1024, "size of the large file in MiB")
	fs.IntVar(&c.ioKiB, "io-kib", 1024, "size of each read and write call on the large file, KiB")
	fs.IntVar(&c.smallFiles, "small-files", 20000, "number of small files")
	fs.IntVar(&c.smallDirs, "small-dirs", 20, "directories the small files are spread over")
	fs.IntVar(&c.smallMinKiB, "small-min-kib", 4, "smallest small file, KiB")
	fs.IntVar(&c.smallMaxKiB, "small-max-kib", 64, "largest small file, KiB")
	fs.IntVar(&c.chunkFiles, "chunk-files", 500, "small files each target handles before the next target's turn (the targets take turns chunk by chunk)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the file sizes and contents")
	fs.StringVar(&dgArgs, "disgrafs-args", "", "extra flags for 'disgrafs mount' (space separated), e.g. for experiments with FUSE options")
	fs.StringVar(&jfsArgs, "juicefs-args", "", "extra flags for 'juicefs mount' (space separated)")
	fs.BoolVar(&c.keep, "keep", false, "keep the volumes and the native directory after the run (logs are always kept)")
	fs.DurationVar(&c.mountTimeout, "mount-timeout", time.Minute, "how long a mount may take to come up")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench [flags]\n\nMeasures disgrafs, the juicefs CLI and a native directory side by side.\nNeeds root. Quick smoke run: bench -small-files 2000 -large-mib 128 -runs 1\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	seen := map[string]bool{}
	for _, t := range strings.Split(targets, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if !contains(knownTargets(), t) {
			return nil, fmt.Errorf("-targets: unknown target %q (known: %s)", t, strings.Join(knownTargets(), ", "))
		}
		if !seen[t] {
			c.targets = append(c.targets, t)
			seen[t] = true
		}
	}
	// Variants follow disgrafs in every table.
	at := 0
	if i := slices.Index(c.targets, targetDisgrafs); i >= 0 {
		at = i + 1
	}
	for _, v := range c.variants {
		if seen[v.target()] {
			return nil, fmt.Errorf("-variant %s given twice", v.name)
		}
		seen[v.target()] = true
		c.targets = slices.Insert(c.targets, at, v.target())
		at++
	}
	switch {
	case len(c.targets) == 0:
		return nil, errors.New("-targets: no target selected")
	case c.runs < 1:
		return nil, errors.New("-runs must be at least 1")
	case c.largeMiB < 1:
		return nil, errors.New("-large-mib must be at least 1")
	case c.ioKiB < 4 || c.ioKiB > 64<<10:
		return nil, errors.New("-io-kib must be between 4 and 65536")
	case c.chunkFiles < 1:
		return nil, errors.New("-chunk-files must be at least 1")
	case c.smallFiles < 1 || c.smallDirs < 1:
		return nil, errors.New("-small-files and -small-dirs must be at least 1")
	case c.smallMinKiB < 1 || c.smallMaxKiB < c.smallMinKiB:
		return nil, errors.New("need 1 <= -small-min-kib <= -small-max-kib")
	case c.smallMaxKiB > 64<<10:
		return nil, errors.New("-small-max-kib must be at most 65536")
	}
	c.disgrafsArgs = strings.Fields(dgArgs)
	c.juicefsArgs = strings.Fields(jfsArgs)
	c.commandLine = benchkit.ShellQuote(append([]string{"bench"}, args...))
	return c, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	os.Exit(benchkit.Main("bench", "stopping, unmounting everything", "still unmounting, please wait", func(ctx context.Context) error {
		return run(ctx, cfg, os.Stdout, os.Stderr)
	}))
}

// run prepares the work directory, mounts the targets, measures and reports.
func run(ctx context.Context, cfg *config, stdout, stderr io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark mounts FUSE file systems and drops the page cache")
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	started := time.Now()

	wd, err := prepareWorkDir(cfg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := wd.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	bins, err := resolveBinaries(cfg, wd)
	if err != nil {
		return err
	}
	info := gatherInfo(wd)

	data, err := newDataSet(cfg)
	if err != nil {
		return err
	}

	// Start every target; stop them all on the way out, whatever happens.
	var targets []*target
	defer func() {
		if serr := stopTargets(targets, logf); serr != nil && err == nil {
			err = serr
		}
		if !cfg.keep {
			for _, t := range targets {
				if rerr := t.removeData(); rerr != nil && err == nil {
					err = rerr
				}
			}
		}
	}()
	for _, name := range cfg.targets {
		t, err := startTarget(ctx, name, cfg, wd, bins, logf)
		if t != nil {
			targets = append(targets, t)
		}
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		info.targetConfig[name] = t.description
		logf("%s ready at %s", name, t.dir)
	}

	res := newResults(cfg.targets)
	if err := measure(ctx, cfg, targets, data, res, logf); err != nil {
		return err
	}
	info.duration = time.Since(started)
	info.loadEnd = benchkit.FirstLine("/proc/loadavg")
	report := renderReport(cfg, info, res)
	if err := benchkit.WriteReport(stdout, cfg.out, report); err != nil {
		return err
	}
	if cfg.out != "" {
		logf("report written to %s", cfg.out)
	}
	return nil
}
