package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/juicedata/juicefs/pkg/utils"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/disgrafs/disgrafs/cache"
	"github.com/disgrafs/disgrafs/config"
	"github.com/disgrafs/disgrafs/daemon"
	"github.com/disgrafs/disgrafs/fusefs"
	"github.com/disgrafs/disgrafs/metrics"
	"github.com/disgrafs/disgrafs/tagging"
	"github.com/disgrafs/disgrafs/volume"
)

// childEnv marks the background child of 'mount -d'; readyFd is the pipe on
// which it reports that the mount serves, or why it failed.
const (
	childEnv = "DISGRAFS_DAEMON_CHILD"
	readyFd  = 3
)

type mountFlags struct {
	meta, dataDir, storage, bucket  string
	cacheDir, cacheSize             string
	blockCacheSize                  string
	passthrough                     bool
	passthroughMin                  string
	passthroughMinAge               time.Duration
	cacheTTL                        time.Duration
	openCheck                       string
	readOnly                        bool
	prefetch                        bool
	prefetchWidth, prefetchDepth    int
	prefetchThreads                 int
	prefetchMaxFile                 string
	freeSpace                       float64
	bufferSize                      string
	metrics                         string
	background                      bool
	logPath                         string
	allowOther                      bool
	debug                           bool
	options                         []string
	attrCache, entryCache, dirCache time.Duration
	openCheckWindow                 time.Duration

	noTags                 bool
	graph, graphUser       string
	tagsDir, queryDir      string
	autoTag                bool
	autoDirs, autoKeywords int
	tagger                 string
	taggerTimeout          time.Duration

	bpf            string
	prealloc       []string
	preallocPool   int
	preallocNoSync bool
	preallocAsync  bool
	preallocDelay  time.Duration
	preallocNegTTL time.Duration
}

func newMount(g *globals) *cobra.Command {
	f := &mountFlags{}
	cmd := &cobra.Command{
		Use:   "mount [flags] MOUNTPOINT",
		Short: "Mount a volume (the embedded default unless --meta is given)",
		Example: `  disgrafs mount /mnt/dg                                  # embedded default volume
  disgrafs mount -d --meta redis://10.0.0.5:6379/1 /mnt/dg  # shared volume, in the background
  META_PASSWORD=secret disgrafs mount --meta redis://user@host:6379/1 /mnt/dg`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMount(cmd.Context(), g, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.meta, "meta", "", "metadata URL of a shared volume (redis://[user[:password]@]host:port/db); empty mounts the embedded default volume")
	fl.StringVar(&f.dataDir, "data-dir", volume.DefaultDataDir(), "directory of the embedded default volume")
	fl.StringVar(&f.storage, "storage", "", "override the volume's object storage type for this mount")
	fl.StringVar(&f.bucket, "bucket", "", "override the volume's bucket/endpoint for this mount")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "directory of the local caches (default: <data-dir>/cache for the embedded volume, /var/jfsCache for root)")
	fl.StringVar(&f.cacheSize, "cache-size", "100G", "budget of the whole-file cache that serves reads without the daemon (binary units, bare number in MiB; 0 turns it off)")
	fl.StringVar(&f.blockCacheSize, "block-cache-size", "", "size of JuiceFS's block cache for files not cached whole (default 1G, 0 for the embedded volume whose objects are already local)")
	fl.BoolVar(&f.passthrough, "passthrough", true, "serve cached files through FUSE passthrough (needs CAP_SYS_ADMIN; falls back to the page cache)")
	fl.StringVar(&f.passthroughMin, "passthrough-min", "1M", "cached files smaller than this are served from the page cache instead of passthrough (faster for small files)")
	fl.DurationVar(&f.passthroughMinAge, "passthrough-min-age", 10*time.Minute, "cached files modified more recently are served from the page cache, not passthrough (a file open through passthrough cannot be opened for writing on this node until its readers close it)")
	fl.DurationVar(&f.cacheTTL, "cache-ttl", time.Minute, "how long the kernel caches entries and attributes of files whose cached copy is current")
	fl.BoolVar(&f.readOnly, "read-only", false, "mount read-only (writes fail with EROFS); on the embedded volume, which nothing else can change, opens and closes then cost no FUSE request and entries and attributes are kept for --cache-ttl")
	fl.StringVar(&f.openCheck, "open-check", "auto", "when an open of a cached file asks the metadata engine whether the file changed: auto (only when no change channel vouches for the copy; the embedded volume needs none) or always")
	fl.BoolVar(&f.prefetch, "prefetch", true, "prefetch files related to opened ones (shared tags, co-access, next in name order) and learn co-access")
	fl.IntVar(&f.prefetchWidth, "prefetch-width", 16, "files queued per opened file")
	fl.IntVar(&f.prefetchDepth, "prefetch-depth", 1, "1: files related to opened ones; 2: also files related to those; ...")
	fl.IntVar(&f.prefetchThreads, "prefetch-threads", 32, "files fetched at once when no foreground read goes through the daemon (half as many while some do); fetches from remote storage are bound by latency, not bandwidth")
	fl.StringVar(&f.prefetchMaxFile, "prefetch-max-file", "64M", "largest file the prefetcher copies (warmup has no limit)")
	fl.Float64Var(&f.freeSpace, "free-space-ratio", 0.1, "minimum free space ratio kept on the cache disk")
	fl.StringVar(&f.bufferSize, "buffer-size", "300M", "total size of read/write buffers")
	fl.StringVar(&f.metrics, "metrics", metrics.DefaultAddr, "address to serve Prometheus metrics on ('off' disables)")
	fl.BoolVarP(&f.background, "background", "d", false, "run in the background")
	fl.StringVar(&f.logPath, "log", "", "log file (default: stderr in the foreground; /var/log/disgrafs.log or ~/.local/state/disgrafs/disgrafs.log in the background)")
	fl.BoolVar(&f.allowOther, "allow-other", os.Geteuid() == 0, "let other users access the mount, with POSIX permission checks (default on for root, as juicefs; others need user_allow_other in /etc/fuse.conf)")
	fl.BoolVar(&f.debug, "debug", false, "log every FUSE request")
	fl.StringSliceVarP(&f.options, "options", "o", nil, "extra FUSE mount options, comma separated")
	fl.DurationVar(&f.attrCache, "attr-cache", time.Second, "how long the kernel caches attributes")
	fl.DurationVar(&f.entryCache, "entry-cache", time.Second, "how long the kernel caches file entries")
	fl.DurationVar(&f.dirCache, "dir-entry-cache", time.Second, "how long the kernel caches directory entries")
	fl.DurationVar(&f.openCheckWindow, "open-check-window", 2*time.Millisecond, "an open uses the attributes its own path walk's lookup read from the metadata engine at most this long before, instead of reading them again (one round trip less per file); 0 reads them at every open")
	fl.BoolVar(&f.noTags, "no-tags", false, "turn tags, the graph index and the tag directories off")
	fl.StringVar(&f.graph, "graph", "", "tag index: empty for the embedded bbolt index, or neo4j://HOST:7687 / bolt://HOST:7687 for a graph shared by several nodes (password in DISGRAFS_GRAPH_PASSWORD or the config key graph-password)")
	fl.StringVar(&f.graphUser, "graph-user", "neo4j", "user of the Neo4j graph")
	fl.StringVar(&f.tagsDir, "tags-dir", ".tags", "name of the tag directory in the mount's root")
	fl.StringVar(&f.queryDir, "query-dir", ".query", "name of the query directory in the mount's root")
	fl.BoolVar(&f.autoTag, "auto-tag", true, "tag files automatically after they are written (kind, directory names, image size, keywords)")
	fl.IntVar(&f.autoDirs, "auto-tag-dirs", 2, "how many of the nearest parent directory names become tags (0: none)")
	fl.IntVar(&f.autoKeywords, "auto-tag-keywords", 3, "how many top keywords of a text file become kw:WORD tags (0: none)")
	fl.StringVar(&f.tagger, "tagger", "", "external tagger: a command run with a written file's path that prints tags (one per line or comma separated)")
	fl.DurationVar(&f.taggerTimeout, "tagger-timeout", 10*time.Second, "how long the external tagger may run per file")
	fl.StringVar(&f.bpf, "bpf", daemon.BPFAuto, "eBPF read accounting (reads through passthrough and the page cache, FUSE latency): off, auto (use it when the kernel allows) or on (fail the mount without it)")
	fl.StringSliceVar(&f.prealloc, "prealloc", nil, "directories of the volume (paths from its root, comma separated) whose creates are answered from a pool of pre-created files; off by default")
	fl.IntVar(&f.preallocPool, "prealloc-pool", 256, "pre-created files kept ready per --prealloc directory")
	fl.BoolVar(&f.preallocNoSync, "prealloc-nosync", false, "do not fsync the pre-allocation journal (faster creates; a machine crash may lose the names of files not yet fsynced)")
	fl.BoolVar(&f.preallocAsync, "prealloc-async-close", false, "in --prealloc directories, answer the close of a file created there once it is journaled and commit its data in the background, in order; fsync, unmount and a later open by this mount wait for the commit, other nodes see the data once it lands, and a kill -9 before it lands loses that unsynced data (reported at the next mount)")
	fl.DurationVar(&f.preallocDelay, "prealloc-rename-delay", 0, "hold a pre-allocated file's background rename until it is this old (renames then follow a burst of creates instead of competing with it; fsync, listing and renames of the file land it at once)")
	fl.DurationVar(&f.preallocNegTTL, "prealloc-negative-cache", time.Second, "in --prealloc directories, answer lookups of names missing from a background listing younger than this without asking the metadata engine (the lookup the kernel makes before every create); names other nodes created within this time may be missed, as with the entry cache; 0 asks every time")
	return cmd
}

func defaultLogPath() string {
	if os.Geteuid() == 0 {
		return "/var/log/disgrafs.log"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "disgrafs", "disgrafs.log")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "state", "disgrafs", "disgrafs.log")
}

func runMount(ctx context.Context, g *globals, f *mountFlags, mp string) (err error) {
	if f.background && f.logPath == "" {
		f.logPath = defaultLogPath()
	}
	// Relative paths mean the caller's directory: the background child starts
	// there, resolves them, then leaves it so it holds no file system busy.
	if f.logPath != "" {
		if f.logPath, err = filepath.Abs(f.logPath); err != nil {
			return err
		}
	}
	cfg, err := f.config(mp)
	if err != nil {
		return err
	}
	if f.background && os.Getenv(childEnv) == "" {
		return startBackground(cfg)
	}
	if os.Getenv(childEnv) != "" {
		if err := os.Chdir("/"); err != nil {
			return err
		}
	}

	var out io.Writer = os.Stderr
	if f.logPath != "" {
		lf, err := openLog(f.logPath)
		if err != nil {
			return err
		}
		defer lf.Close()
		out = lf
		if os.Getenv(childEnv) == "" {
			out = io.MultiWriter(os.Stderr, lf)
		}
	}
	log := newLogger(out, g)

	var ready func(error)
	if os.Getenv(childEnv) != "" {
		pipe := os.NewFile(readyFd, "ready")
		ready = func(err error) {
			if err != nil {
				fmt.Fprintf(pipe, "error: %v\n", err)
			} else {
				fmt.Fprintln(pipe, "ok")
			}
			pipe.Close()
		}
	} else {
		ready = func(err error) {
			if err == nil {
				fmt.Fprintf(os.Stderr, "disgrafs: serving %s (Ctrl-C or 'disgrafs umount %s' to stop)\n", cfg.Mountpoint, cfg.Mountpoint)
			}
		}
	}
	return daemon.Run(ctx, cfg, log, ready)
}

func (f *mountFlags) config(mp string) (daemon.Config, error) {
	cfg := daemon.Config{
		Mountpoint:      mp,
		MetaURL:         f.meta,
		DataDir:         f.dataDir,
		StorageOverride: f.storage,
		BucketOverride:  f.bucket,
		CacheDir:        f.cacheDir,
		FreeSpaceRatio:  f.freeSpace,
		LogPath:         f.logPath,
		AllowOther:      f.allowOther,
		Debug:           f.debug,
		FuseOptions:     f.options,
		FS: fusefs.Options{
			AttrTimeout:     f.attrCache,
			EntryTimeout:    f.entryCache,
			DirEntryTimeout: f.dirCache,
			OpenCheckWindow: f.openCheckWindow,
		},
	}
	if !f.noTags {
		for _, n := range []string{f.tagsDir, f.queryDir} {
			if n == "" || strings.ContainsAny(n, "/\x00") || n == "." || n == ".." {
				return cfg, fmt.Errorf("--tags-dir/--query-dir %q: must be a plain file name", n)
			}
		}
		if f.tagsDir == f.queryDir {
			return cfg, errors.New("--tags-dir and --query-dir must differ")
		}
		ao := tagging.DefaultAutoOptions()
		ao.DirLevels, ao.Keywords, ao.Command, ao.CommandTimeout = f.autoDirs, f.autoKeywords, f.tagger, f.taggerTimeout
		cfg.Tags = daemon.TagsConfig{
			Enabled: true, Graph: f.graph, GraphUser: f.graphUser, GraphPassword: os.Getenv("DISGRAFS_GRAPH_PASSWORD"),
			TagsDir: f.tagsDir, QueryDir: f.queryDir, Auto: f.autoTag, AutoOptions: ao, Timeout: 5 * time.Second,
		}
	}
	switch f.bpf {
	case daemon.BPFOff, daemon.BPFAuto, daemon.BPFOn:
		cfg.BPF = f.bpf
	default:
		return cfg, fmt.Errorf("--bpf %q: must be off, auto or on", f.bpf)
	}
	if f.readOnly {
		if len(f.prealloc) > 0 {
			return cfg, errors.New("--read-only and --prealloc: pre-allocation creates files; leave --prealloc out")
		}
		cfg.ReadOnly = true
		cfg.Tags.Auto = false // nothing is written to tag
	}
	if f.preallocAsync && len(f.prealloc) == 0 {
		return cfg, fmt.Errorf("--prealloc-async-close applies to --prealloc directories: name at least one")
	}
	if len(f.prealloc) > 0 {
		if f.preallocPool < 1 || f.preallocPool > 1<<20 {
			return cfg, fmt.Errorf("--prealloc-pool %d: must be between 1 and %d", f.preallocPool, 1<<20)
		}
		for _, d := range f.prealloc {
			if strings.TrimSpace(d) == "" || strings.ContainsRune(d, 0) {
				return cfg, fmt.Errorf("--prealloc %q: must be a directory path of the volume", d)
			}
		}
		cfg.Prealloc = daemon.PreallocConfig{Dirs: f.prealloc, Pool: f.preallocPool, NoSync: f.preallocNoSync, AsyncClose: f.preallocAsync, RenameDelay: f.preallocDelay, NegativeTTL: f.preallocNegTTL}
		if f.preallocNegTTL < 0 {
			return cfg, fmt.Errorf("--prealloc-negative-cache %s: must not be negative", f.preallocNegTTL)
		}
		if f.preallocDelay < 0 {
			return cfg, fmt.Errorf("--prealloc-rename-delay %s: must not be negative", f.preallocDelay)
		}
	}
	if f.metrics != "off" && f.metrics != "" {
		cfg.MetricsAddr = f.metrics
	}
	if f.meta != "" {
		u, err := volume.NormalizeMetaURL(f.meta)
		if err != nil {
			return cfg, err
		}
		cfg.MetaURL = u
	}
	size := f.blockCacheSize
	if size == "" {
		size = "1G"
		if f.meta == "" {
			size = "0"
		}
	}
	var err error
	if cfg.CacheSize, err = config.ParseBytes(size, 'M'); err != nil {
		return cfg, fmt.Errorf("--block-cache-size: %w", err)
	}
	whole, err := config.ParseBytes(f.cacheSize, 'M')
	if err != nil {
		return cfg, fmt.Errorf("--cache-size: %w", err)
	}
	ptMin, err := config.ParseBytes(f.passthroughMin, 'M')
	if err != nil {
		return cfg, fmt.Errorf("--passthrough-min: %w", err)
	}
	maxFile, err := config.ParseBytes(f.prefetchMaxFile, 'M')
	if err != nil {
		return cfg, fmt.Errorf("--prefetch-max-file: %w", err)
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"--prefetch-width", f.prefetchWidth}, {"--prefetch-depth", f.prefetchDepth}, {"--prefetch-threads", f.prefetchThreads}} {
		if c.v < 1 || c.v > 1024 {
			return cfg, fmt.Errorf("%s %d: must be between 1 and 1024", c.name, c.v)
		}
	}
	if f.passthroughMinAge < 0 {
		return cfg, fmt.Errorf("--passthrough-min-age %v: must not be negative", f.passthroughMinAge)
	}
	if f.openCheckWindow < 0 || f.openCheckWindow > time.Second {
		return cfg, fmt.Errorf("--open-check-window %v: must be between 0 and 1s (it is how stale an open may be, measured from its own lookup)", f.openCheckWindow)
	}
	if f.cacheTTL < 0 {
		return cfg, fmt.Errorf("--cache-ttl %v: must not be negative", f.cacheTTL)
	}
	if f.openCheck != "auto" && f.openCheck != "always" {
		return cfg, fmt.Errorf("--open-check %q: want auto or always", f.openCheck)
	}
	pc := cache.DefaultPrefetchConfig()
	pc.Width, pc.Depth, pc.Threads, pc.MaxFileSize = f.prefetchWidth, f.prefetchDepth, f.prefetchThreads, int64(maxFile)
	cfg.Cache = daemon.CacheConfig{
		Size: int64(whole), Passthrough: f.passthrough, PassthroughMin: int64(ptMin), PassthroughMinAge: f.passthroughMinAge, TTL: f.cacheTTL,
		Prefetch: f.prefetch, PrefetchConfig: pc, OpenCheckAlways: f.openCheck == "always",
	}
	if cfg.BufferSize, err = config.ParseBytes(f.bufferSize, 'M'); err != nil {
		return cfg, fmt.Errorf("--buffer-size: %w", err)
	}
	if f.freeSpace < 0 || f.freeSpace >= 1 {
		return cfg, fmt.Errorf("--free-space-ratio %v: must be in [0, 1)", f.freeSpace)
	}
	for _, p := range []*string{&cfg.DataDir, &cfg.Mountpoint, &cfg.CacheDir} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return cfg, err
			}
		}
	}
	return cfg, nil
}

func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	lf, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return lf, nil
}

// newLogger logs our messages and JuiceFS's (which uses logrus) to out.
func newLogger(out io.Writer, g *globals) *slog.Logger {
	level, jlevel := slog.LevelInfo, logrus.InfoLevel
	switch {
	case g.verbose:
		level, jlevel = slog.LevelDebug, logrus.DebugLevel
	case g.quiet:
		level, jlevel = slog.LevelWarn, logrus.WarnLevel
	}
	utils.SetOutput(out)
	utils.SetLogLevel(jlevel)
	utils.DisableLogColor()
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
}

// startBackground re-executes this command as a detached child and waits until
// the child reports that the mount serves (or why it could not), so that
// 'mount -d' fails with the real error and exits only once the mount is usable.
func startBackground(cfg daemon.Config) error {
	// Check what we can before forking, for a fast and clear error.
	if _, err := daemon.CheckMountpoint(cfg.Mountpoint); err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	lf, err := openLog(cfg.LogPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	c := exec.Command(self, os.Args[1:]...)
	c.Env = append(os.Environ(), childEnv+"=1")
	c.Stdout, c.Stderr = lf, lf
	c.ExtraFiles = []*os.File{w} // becomes fd 3 (readyFd)
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The child resolves relative paths of the command line from here (and
	// then moves to /).
	if c.Dir, err = os.Getwd(); err != nil {
		c.Dir = "/"
	}
	if err := c.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start the background daemon: %w", err)
	}
	w.Close()
	line, err := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == "ok":
		fmt.Fprintf(os.Stderr, "disgrafs: mounted %s in the background (pid %d, log %s)\n", cfg.Mountpoint, c.Process.Pid, cfg.LogPath)
		_ = c.Process.Release()
		return nil
	case strings.HasPrefix(line, "error: "):
		_ = c.Wait()
		return errors.New(strings.TrimPrefix(line, "error: "))
	default:
		_ = c.Wait()
		return fmt.Errorf("the background daemon exited during start-up (%v); see %s", err, cfg.LogPath)
	}
}
