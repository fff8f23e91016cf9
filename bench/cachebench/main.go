// Command cachebench measures the graph-aware cache against the juicefs CLI
// v1.4.1 and a native directory on a volume whose metadata and object storage
// are remote: a private redis-server reached through toxiproxy, which adds 1 ms
// or 10 ms to every reply.
//
// The data set is many small files tagged "train" plus a few large files. A
// reader (this binary's "read" subcommand, run as a child process) reads every
// small file in shuffled order with 1 and 8 threads and every large file with
// 1 and 8 threads, checking each file's CRC-32C. Side by side, for each
// latency and each of -runs repetitions:
//
//	(a) juicefs-cold   the juicefs CLI with a fresh cache directory
//	(b) juicefs-warm   the juicefs CLI after `juicefs warmup` of the data set
//	(c) disgrafs-cold  disgrafs with a fresh cache directory, prefetcher on
//	(d) disgrafs-warm  disgrafs after `disgrafs warmup --tag train`
//	(e) native         a plain local directory holding the same files
//	(f) disgrafs-local        the embedded default volume (no latency),
//	                          written through its mount and warmed
//	(g) disgrafs-local-check  the same with --open-check always
//	(h) disgrafs-local-ro     the same, remounted --read-only after the warmup
//
// The page cache is dropped before every pass (-page-cache second-epoch
// instead reads every file once, unmeasured, before the passes of warm
// targets and native); cold targets are remounted with an empty cache
// directory before every pass. The report gives medians
// and the ratios the issue sets goals for.
//
// Usage: cachebench [flags]  (needs root: FUSE mounts, drop_caches)
//
//	cachebench read -root DIR -manifest FILE -kind small -threads 8   (one reader pass)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
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
	redisBin     string
	toxiproxyBin string
	redisPort    int
	proxyPort    int
	toxiAPIPort  int
	metricsPort  int
	targets      []string
	latencies    []time.Duration
	threads      []int
	runs         int
	data         dataSpec
	passLimit    time.Duration
	dataAge      time.Duration
	pageCache    string
	warmThreads  int
	writers      int
	disgrafsArgs []string
	juicefsArgs  []string
	keep         bool
	mountTimeout time.Duration
	commandLine  string
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("cachebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	home, _ := os.UserHomeDir()
	var targets, latencies, threads, dgArgs, jfsArgs string
	fs.StringVar(&c.workDir, "workdir", "/var/tmp/disgrafs-cachebench", "work directory: caches, mountpoints, the native copy, logs (on the disk to measure)")
	fs.StringVar(&c.out, "out", "", "also write the markdown report to this file")
	fs.StringVar(&c.disgrafsBin, "disgrafs", "bin/disgrafs", "disgrafs binary (copied into the work directory at start)")
	fs.StringVar(&c.juicefsBin, "juicefs", "/var/tmp/bench/juicefs", "juicefs CLI v1.4.1 (scripts/build-juicefs-peer.sh); it also formats the volume")
	fs.StringVar(&c.redisBin, "redis-server", "redis-server", "redis-server binary")
	fs.StringVar(&c.toxiproxyBin, "toxiproxy", home+"/.cache/disgrafs/bin/server", "toxiproxy v2.12.0 server binary (scripts/toxiproxy.sh install)")
	fs.IntVar(&c.redisPort, "redis-port", 16382, "port of the private redis-server (metadata in db 0, objects in db 1)")
	fs.IntVar(&c.proxyPort, "proxy-port", 16490, "port toxiproxy listens on in front of Redis")
	fs.IntVar(&c.toxiAPIPort, "toxiproxy-api-port", 18474, "port of toxiproxy's HTTP API")
	fs.IntVar(&c.metricsPort, "metrics-port", 9610, "first of four metrics ports for the mounts")
	fs.StringVar(&targets, "targets", strings.Join(allTargets(), ","), "comma-separated targets to measure")
	fs.StringVar(&latencies, "latencies", "1ms,10ms", "comma-separated latencies toxiproxy adds to every Redis reply")
	fs.StringVar(&threads, "threads", "1,8", "comma-separated reader thread counts")
	fs.IntVar(&c.runs, "runs", 3, "repetitions of every pass (the report gives medians)")
	fs.IntVar(&c.data.smallFiles, "small", 20000, "number of small files (tagged train)")
	fs.IntVar(&c.data.minKiB, "small-min-kib", 4, "smallest small file, KiB")
	fs.IntVar(&c.data.maxKiB, "small-max-kib", 64, "largest small file, KiB")
	fs.IntVar(&c.data.largeFiles, "large", 8, "number of large files (tagged train-large; 0: none)")
	fs.IntVar(&c.data.largeMiB, "large-mib", 1024, "size of each large file, MiB")
	fs.Uint64Var(&c.data.seed, "seed", 1, "seed of the file sizes, contents and read orders")
	fs.DurationVar(&c.passLimit, "pass-limit", 2*time.Minute, "longest a pass may take; a pass cut short reports its rate so far (marked; its epoch time is extrapolated). 0: no limit")
	fs.DurationVar(&c.dataAge, "data-age", time.Hour, "date the data set's files this long ago after writing them, as a data set written earlier (0: leave them new); disgrafs keeps files modified within --passthrough-min-age (10m) off FUSE passthrough")
	fs.StringVar(&c.pageCache, "page-cache", "drop", "drop: empty the page cache before every pass; second-epoch: warm targets and native read every file once, unmeasured, right before their pass (a training job's next epoch, with the kernel's caches warm); cold targets are dropped either way")
	fs.IntVar(&c.warmThreads, "warmup-threads", 8, "threads of juicefs warmup (-p); disgrafs warmup runs with its default")
	fs.IntVar(&c.writers, "writers", 8, "parallel writers when creating the data set")
	fs.StringVar(&dgArgs, "disgrafs-args", "", "extra flags for 'disgrafs mount' (space separated)")
	fs.StringVar(&jfsArgs, "juicefs-args", "", "extra flags for 'juicefs mount' (space separated)")
	fs.BoolVar(&c.keep, "keep", false, "keep the caches and the native copy after the run (logs are always kept)")
	fs.DurationVar(&c.mountTimeout, "mount-timeout", 2*time.Minute, "how long a mount may take to come up")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: cachebench [flags]\n       cachebench read -root DIR -manifest FILE [-kind small|large] [-threads N] [-seed S] [-limit D]\n\n"+
			"Measures the graph-aware cache (disgrafs) against the juicefs CLI and a native directory\n"+
			"on a volume whose Redis (metadata and objects) sits behind toxiproxy. Needs root.\n"+
			"Quick run: cachebench -small 2000 -large 2 -large-mib 128 -runs 1\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if c.targets, err = parseTargets(targets); err != nil {
		return nil, err
	}
	for _, s := range splitList(latencies) {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d%time.Millisecond != 0 {
			return nil, fmt.Errorf("-latencies: %q is not a whole number of milliseconds (e.g. 1ms,10ms)", s)
		}
		c.latencies = append(c.latencies, d)
	}
	for _, s := range splitList(threads) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 256 {
			return nil, fmt.Errorf("-threads: %q is not a thread count between 1 and 256", s)
		}
		c.threads = append(c.threads, n)
	}
	switch {
	case len(c.latencies) == 0:
		return nil, errors.New("-latencies: none given")
	case len(c.threads) == 0:
		return nil, errors.New("-threads: none given")
	case c.runs < 1:
		return nil, errors.New("-runs must be at least 1")
	case c.data.smallFiles < 1:
		return nil, errors.New("-small must be at least 1")
	case c.data.minKiB < 1 || c.data.maxKiB < c.data.minKiB || c.data.maxKiB > 1024:
		return nil, errors.New("need 1 <= -small-min-kib <= -small-max-kib <= 1024")
	case c.data.largeFiles < 0 || c.data.largeMiB < 1:
		return nil, errors.New("-large must be at least 0 and -large-mib at least 1")
	case c.pageCache != "drop" && c.pageCache != "second-epoch":
		return nil, fmt.Errorf("-page-cache %q: want drop or second-epoch", c.pageCache)
	case c.passLimit < 0:
		return nil, errors.New("-pass-limit must not be negative")
	case c.warmThreads < 1 || c.writers < 1:
		return nil, errors.New("-warmup-threads and -writers must be at least 1")
	}
	c.disgrafsArgs = strings.Fields(dgArgs)
	c.juicefsArgs = strings.Fields(jfsArgs)
	c.commandLine = benchkit.ShellQuote(append([]string{"cachebench"}, args...))
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func parseTargets(s string) ([]string, error) {
	seen := map[string]bool{}
	for _, t := range splitList(s) {
		if !seen[t] && targetLetter(t) == "" {
			return nil, fmt.Errorf("-targets: unknown target %q (known: %s)", t, strings.Join(allTargets(), ", "))
		}
		seen[t] = true
	}
	// Keep the report's order, whatever order they were given in.
	var out []string
	for _, t := range allTargets() {
		if seen[t] {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-targets: no target selected")
	}
	return out, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "read" {
		os.Exit(readerMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "loopfloor" {
		os.Exit(loopfloorMain(os.Args[2:]))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cachebench:", err)
		os.Exit(2)
	}
	os.Exit(benchkit.Main("cachebench", "stopping, unmounting and stopping redis/toxiproxy", "still cleaning up, please wait", func(ctx context.Context) error {
		return run(ctx, cfg, os.Stdout, os.Stderr)
	}))
}
