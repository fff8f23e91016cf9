// Package daemon runs one mount: it checks the mountpoint, opens the volume,
// serves FUSE, the control API and metrics, and on a signal or an unmount
// request flushes everything and unmounts cleanly.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	dto "github.com/prometheus/client_model/go"

	"github.com/disgrafs/disgrafs/coherence"
	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/fusefs"
	"github.com/disgrafs/disgrafs/metrics"
	"github.com/disgrafs/disgrafs/names"
	"github.com/disgrafs/disgrafs/prealloc"
	"github.com/disgrafs/disgrafs/version"
	"github.com/disgrafs/disgrafs/volume"
)

// Config is everything a mount needs.
type Config struct {
	Mountpoint string
	// MetaURL of a shared volume; empty mounts the embedded default volume in DataDir.
	MetaURL         string
	DataDir         string
	StorageOverride string
	BucketOverride  string
	CacheDir        string
	CacheSize       uint64
	FreeSpaceRatio  float64
	BufferSize      uint64
	MetricsAddr     string // empty disables metrics
	LogPath         string
	AllowOther      bool
	Debug           bool
	FuseOptions     []string
	FS              fusefs.Options
	FuseDevice      string // /dev/fuse unless a test says otherwise
	Tags            TagsConfig
	Cache           CacheConfig
	BPF             string // --bpf: off, auto (default) or on
	Prealloc        PreallocConfig
	// ReadOnly mounts read-only; on the embedded volume also without OPEN,
	// FLUSH and RELEASE requests (fusefs.Options.NoOpen).
	ReadOnly bool
}

// Daemon is a running mount.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	vol     *volume.Volume
	fs      *fusefs.FS
	srv     *fuse.Server
	ctl     *control.Server
	met     *metrics.Server
	reg     *metrics.Registry
	paths   control.Paths
	lock    *os.File
	started time.Time
	tags    *tagState
	cache   *cacheState
	bpf     *bpfState
	pre     *prealloc.Manager
	names   *names.Index // the mount's one name index (fusefs feeds it)
	obs     observer

	// stops undoes start, last step first (shutdown and a failed start).
	stops *stopStack
	// run owns every goroutine the daemon starts but the FUSE server's.
	run *runGroup
	// channel: how the mount learns of changes; shared: set on a volume shared
	// through Redis (also how it tells the others).
	channel     coherence.Channel
	shared      *coherence.Shared
	channelStop func() // set while the channel runs (runChannel)
	// requests is the context of control requests: it ends when the
	// control socket closes or the background work stops.
	requests    context.Context
	endRequests context.CancelFunc

	stop chan control.UnmountRequest
}

// maxNames bounds the mount's name index (about 100 bytes a name).
const maxNames = 200_000

// Run mounts and serves until the mount goes away or a signal arrives. ready is
// called once: with nil when the mount serves, or with the error that stopped it.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(error)) error {
	// Like the juicefs CLI, serve file system requests ahead of the node's other
	// work: a starved daemon stalls every process that touches the mount.
	if os.Geteuid() == 0 {
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, -19); err != nil {
			log.Debug("cannot raise the daemon's priority", "error", err)
		}
	}
	d, err := start(ctx, cfg, log)
	if err != nil {
		ready(err)
		return err
	}
	ready(nil)
	return d.serve(ctx)
}

func start(ctx context.Context, cfg Config, log *slog.Logger) (_ *Daemon, err error) {
	if cfg.FuseDevice == "" {
		cfg.FuseDevice = "/dev/fuse"
	}
	mp, err := CheckMountpoint(cfg.Mountpoint)
	if err != nil {
		return nil, err
	}
	cfg.Mountpoint = mp
	if err := CheckFuse(cfg.FuseDevice); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, paths: control.PathsFor(mp), started: time.Now(), stop: make(chan control.UnmountRequest, 1),
		stops: &stopStack{log: log}}
	// Every step below that needs undoing pushes its undoing right after it
	// succeeded; a failure undoes what was done, in reverse order, as
	// shutdown does.
	defer func() {
		if err != nil {
			_ = d.stops.stopAll()
		}
	}()

	metaURL := cfg.MetaURL
	if metaURL == "" {
		emb := volume.Embedded{Dir: cfg.DataDir}
		if err := os.MkdirAll(emb.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		d.lock, err = lockEmbedded(emb.LockPath(), mp)
		if err != nil {
			return nil, err
		}
		d.stops.push("embedded volume lock", d.lock.Close)
		if metaURL, err = emb.Ensure(ctx); err != nil {
			return nil, err
		}
		if cfg.CacheDir == "" {
			cfg.CacheDir = filepath.Join(emb.Dir, "cache")
		}
	}
	if emb, ok := volume.EmbeddedAt(metaURL); ok && cfg.MetaURL != "" {
		// An embedded volume named by URL: one daemon at a time still (the
		// embedded mount trusts that nothing else changes it).
		d.lock, err = lockEmbedded(emb.LockPath(), mp)
		if err != nil {
			return nil, err
		}
		d.stops.push("embedded volume lock", d.lock.Close)
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = defaultCacheDir()
	}
	if cfg.ReadOnly {
		cfg.FuseOptions = append(cfg.FuseOptions, "ro")
		if cfg.MetaURL == "" {
			// Nothing can change the embedded volume while this daemon
			// holds its lock, least of all this mount: the kernel may open
			// files without asking and keep entries, attributes and pages.
			cfg.FS.NoOpen = true
			cfg.FS.AttrTimeout = max(cfg.FS.AttrTimeout, cfg.Cache.TTL)
			cfg.FS.EntryTimeout = max(cfg.FS.EntryTimeout, cfg.Cache.TTL)
			cfg.FS.DirEntryTimeout = max(cfg.FS.DirEntryTimeout, cfg.Cache.TTL)
			// The backing file of a passthrough open travels in the OPEN
			// reply, which this mount never sends.
			cfg.Cache.Passthrough = false
		}
	}
	d.cfg = cfg

	conn, err := volume.Connect(ctx, metaURL, volume.ConnectOptions{Mountpoint: mp, ReadOnly: cfg.ReadOnly})
	if err != nil {
		return nil, err
	}
	if cfg.StorageOverride != "" {
		conn.Format.Storage = cfg.StorageOverride
	}
	if cfg.BucketOverride != "" {
		conn.Format.Bucket = cfg.BucketOverride
	}
	d.reg = metrics.New(conn.Format.Name, mp)
	// Handles of a previous process are never handed over, so this file never exists.
	statePath := filepath.Join(d.paths.Dir, "juicefs-state-"+filepath.Base(d.paths.Socket)+".json")
	d.vol, err = conn.Open(ctx, volume.Options{
		Mountpoint:      mp,
		CacheDir:        cfg.CacheDir,
		CacheSize:       cfg.CacheSize,
		FreeSpaceRatio:  cfg.FreeSpaceRatio,
		BufferSize:      cfg.BufferSize,
		AttrTimeout:     cfg.FS.AttrTimeout,
		EntryTimeout:    cfg.FS.EntryTimeout,
		DirEntryTimeout: cfg.FS.DirEntryTimeout,
		StatePath:       statePath,
		Registerer:      d.reg.JuiceFS,
		Registry:        d.reg.Registry,
	})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	d.stops.push("volume", d.closeVolume)

	// What the FUSE tree and the background work use: each closes after
	// the background work stopped.
	d.names = names.New(maxNames)
	cfg.FS.Names = d.names
	if cfg.Tags.Enabled {
		if err := d.openTags(ctx, &cfg.FS); err != nil {
			return nil, err
		}
		d.stops.push("graph store", d.tags.store.Close)
	}
	// The change channel outlives the pre-allocation layer: async closes
	// still committing at unmount publish through it (stops run last
	// pushed first).
	d.openChannel(&cfg.FS)
	d.stops.push("change channel", d.stopChannel)
	if len(cfg.Prealloc.Dirs) > 0 {
		if err := d.startPrealloc(ctx, &cfg.FS); err != nil {
			return nil, err
		}
		d.stops.push("pre-allocation", d.closePrealloc)
	}
	if err := d.openCache(&cfg.FS); err != nil {
		return nil, err
	}
	if d.cache != nil {
		d.stops.push("whole-file cache", d.cache.c.Close)
	}
	cfg.FS.Log = d.log
	d.fs = fusefs.New(d.vol.VFS, cfg.FS)
	if d.tags != nil {
		d.tags.paths = newPathResolver(d.vol.Meta, d.names.Gen)
	}
	if err := d.registerMetrics(); err != nil {
		return nil, err
	}
	if d.tags != nil && d.tags.auto != nil {
		fs := d.fs
		d.tags.auto.SetIdle(func() bool { return fs.Idle(250 * time.Millisecond) })
	}

	// The background work, and what must happen after it stopped.
	if d.tags != nil {
		d.stops.push("tag index marker", d.clearTagsMarker)
	}
	if d.cache != nil && d.cache.learner != nil {
		d.stops.push("co-access edges", d.flushLearner)
	}
	d.run = newRunGroup(d.log)
	d.stops.push("background work", d.run.stop)
	d.runTags()
	d.runCache()
	d.runChannel()
	d.runObserve()
	if d.tags != nil {
		// While the index writer still runs.
		d.stops.push("tag index", d.syncTags)
	}

	// Answer on the control socket before the mount appears, so that the
	// CLI never sees a mount without its daemon (requests wait for Ready).
	d.ctl = control.NewServer()
	d.requests, d.endRequests = context.WithCancel(d.run.ctx)
	d.registerControl()
	d.registerObsControl()
	if d.tags != nil {
		d.registerTagControl()
	}
	d.registerCacheControl()
	if err := d.ctl.Listen(d.paths.Socket); err != nil {
		d.endRequests()
		return nil, err
	}
	d.stops.push("control socket", d.closeControl)
	info, _ := json.Marshal(control.Info{Pid: os.Getpid(), Mountpoint: mp, LogPath: cfg.LogPath})
	_ = os.WriteFile(d.paths.Info, info, 0o600)
	_ = os.WriteFile(d.paths.Pid, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)

	d.srv, err = fusefs.Mount(d.fs, mp, fusefs.MountConfig{
		FsName:     "DisGraFS:" + conn.Format.Name,
		AllowOther: cfg.AllowOther,
		Debug:      cfg.Debug,
		Options:    cfg.FuseOptions,
		LocalLocks: cfg.FS.NoOpen,
	})
	if err != nil {
		return nil, err
	}
	// The server's loops are its own: they end when the kernel lets go of
	// the mount, and srv.Wait (serve) waits for them.
	go d.srv.Serve()
	d.stops.push("mount", d.unmountIfMounted)
	if err := d.srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount did not come up: %w", err)
	}
	if d.tags != nil {
		d.markTagsRunning()
	}
	// eBPF attaches to the mount's device, known once it is mounted.
	if err := d.startBPF(ctx); err != nil {
		return nil, err
	}
	d.feedCacheFromBPF()
	d.runBPF()

	if cfg.MetricsAddr != "" {
		d.met, err = metrics.Listen(cfg.MetricsAddr, d.reg)
		if err != nil {
			return nil, err
		}
		d.stops.push("metrics listener", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return d.met.Close(ctx)
		})
	}
	d.ctl.Ready()
	log.Info("mounted", "mountpoint", mp, "volume", conn.Format.Name, "meta", volume.MaskURL(metaURL),
		"storage", d.vol.StorageURL(), "metrics", d.metricsAddr(), "control", d.paths.Socket)
	return d, nil
}

func defaultCacheDir() string {
	if os.Geteuid() == 0 {
		return "/var/jfsCache"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "disgrafs", "blocks")
	}
	return filepath.Join(os.TempDir(), "disgrafs-cache")
}

func (d *Daemon) metricsAddr() string {
	if d.met == nil {
		return ""
	}
	return d.met.Addr
}

// lockEmbedded makes sure one daemon at a time mounts the embedded volume: its
// SQLite database and object directory belong to one process.
func lockEmbedded(path, mp string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the embedded volume: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("the embedded default volume in %s is already mounted (%s); unmount it first, or use a shared volume (--meta redis://...) to mount on several mountpoints",
				filepath.Dir(path), strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("lock the embedded volume: %w", err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("by pid %d at %s\n", os.Getpid(), mp)), 0)
	return f, nil
}

// handle serves a control request. Each request is a job of the run group
// (refused once the daemon stops), under a context that ends when the
// control socket closes, so nothing it uses is closed under it.
func (d *Daemon) handle(method, path string, fn func(ctx context.Context, body []byte) (any, error)) {
	d.ctl.Handle(method, path, func(ctx context.Context, body []byte) (v any, err error) {
		ctx, stop := d.requestContext(ctx)
		defer stop()
		if rerr := d.run.Do(ctx, "control "+path, func(ctx context.Context) { v, err = fn(ctx, body) }); rerr != nil {
			return nil, rerr
		}
		return v, err
	})
}

// handleRaw is handle for handlers that write their own reply.
func (d *Daemon) handleRaw(method, path string, fn http.HandlerFunc) {
	d.ctl.HandleRaw(method, path, func(w http.ResponseWriter, r *http.Request) {
		ctx, stop := d.requestContext(r.Context())
		defer stop()
		if err := d.run.Do(ctx, "control "+path, func(ctx context.Context) { fn(w, r.WithContext(ctx)) }); err != nil {
			control.WriteError(w, http.StatusServiceUnavailable, err)
		}
	})
}

// requestContext is ctx, ended also by closeControl.
func (d *Daemon) requestContext(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(d.requests, cancel)
	return ctx, func() { stop(); cancel() }
}

func (d *Daemon) registerControl() {
	d.handle("GET", "status", func(ctx context.Context, _ []byte) (any, error) {
		return d.Status(), nil
	})
	d.handle("GET", "bpf/top", func(ctx context.Context, _ []byte) (any, error) {
		return d.bpfTop(), nil
	})
	d.handle("POST", "unmount", func(ctx context.Context, body []byte) (any, error) {
		req, err := control.DecodeUnmount(body)
		if err != nil {
			return nil, err
		}
		if !req.Lazy {
			// Try now so that a busy mount is reported to the caller.
			if err := d.srv.Unmount(); err != nil {
				return nil, fmt.Errorf("unmount %s: %w (files are open; close them or use --lazy)", d.cfg.Mountpoint, err)
			}
		}
		select {
		case d.stop <- req:
		default:
		}
		return map[string]string{"result": "unmounting"}, nil
	})
}

// Status reports what the daemon serves.
func (d *Daemon) Status() control.Status {
	s := control.Status{
		APIVersion:  control.APIVersion,
		Version:     version.Version,
		Pid:         os.Getpid(),
		Mountpoint:  d.cfg.Mountpoint,
		Volume:      d.vol.Format.Name,
		Embedded:    d.cfg.MetaURL == "",
		MetaURL:     volume.MaskURL(d.vol.URL),
		StorageURL:  d.vol.StorageURL(),
		CacheDir:    d.cfg.CacheDir,
		CacheSize:   d.cfg.CacheSize,
		MetricsAddr: d.metricsAddr(),
		LogPath:     d.cfg.LogPath,
		StartedAt:   d.started,
		Uptime:      time.Since(d.started).Seconds(),
		Ops:         d.fs.OpCounts(),
		Tags:        d.tagInfo(),
		Cache:       d.cacheInfo(),
		Instance:    d.reg.Labels[metrics.LabelInstance],
		FUSE:        d.fuseInfo(),
		Sections:    d.statusSections(context.Background()),
		BPF:         d.bpfInfo(),
		Prealloc:    d.preallocInfo(),
	}
	if mfs, err := d.reg.Gather(); err == nil {
		s.CacheBytes = int64(gaugeSum(mfs, "juicefs_blockcache_bytes"))
		s.CacheBlocks = int64(gaugeSum(mfs, "juicefs_blockcache_blocks"))
	}
	return s
}

func gaugeSum(mfs []*dto.MetricFamily, name string) float64 {
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			}
		}
	}
	return sum
}

// serve waits for the end: the kernel unmounted us (umount, fusermount -u), a
// signal, or an unmount request. Then it flushes and closes the volume.
func (d *Daemon) serve(ctx context.Context) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	go func() { d.srv.Wait(); close(done) }()

	select {
	case <-done:
		d.log.Info("unmounted by the kernel", "mountpoint", d.cfg.Mountpoint)
	case sig := <-sigs:
		d.log.Info("signal received: unmounting", "signal", sig.String())
		d.unmount(false)
	case req := <-d.stop:
		d.log.Info("unmount requested", "lazy", req.Lazy)
		d.unmount(req.Lazy)
	case <-ctx.Done():
		d.unmount(false)
	}
	// A lazy unmount leaves open files working: keep serving them until the
	// kernel lets go; a second signal stops waiting.
	select {
	case <-done:
	case sig := <-sigs:
		d.log.Warn("second signal: closing with files still open", "signal", sig.String())
	}
	return d.shutdown()
}

// unmount detaches the mount; if files are open it falls back to a lazy detach.
func (d *Daemon) unmount(lazy bool) {
	if !lazy {
		err := d.srv.Unmount()
		if err == nil || !IsMounted(d.cfg.Mountpoint) {
			return
		}
		d.log.Warn("unmount failed, detaching lazily", "error", err)
	}
	if err := DetachMount(d.cfg.Mountpoint); err != nil {
		d.log.Error("lazy unmount failed", "error", err)
	}
}

// shutdown undoes start: what was started last stops first. By then the
// kernel has let go of the mount (or a second signal gave up waiting).
func (d *Daemon) shutdown() error {
	return d.stops.stopAll()
}

// unmountIfMounted detaches the mount unless it is gone already (the usual
// case at shutdown: serve returns once it is).
func (d *Daemon) unmountIfMounted() error {
	if IsMounted(d.cfg.Mountpoint) {
		d.unmount(false)
	}
	return nil
}

// closeControl ends the control requests in flight, stops serving the
// socket and removes the files that point the CLI at this daemon.
func (d *Daemon) closeControl() error {
	d.endRequests()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.ctl.Close(ctx)
	_ = os.Remove(d.paths.Pid)
	_ = os.Remove(d.paths.Info)
	return err
}

// closeVolume flushes buffered writes and closes the volume.
func (d *Daemon) closeVolume() error {
	if err := d.vol.Close(); err != nil {
		return err
	}
	d.log.Info("flushed and closed", "mountpoint", d.cfg.Mountpoint)
	return nil
}
