package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/redis/go-redis/v9"

	"github.com/disgrafs/disgrafs/bpf"
	"github.com/disgrafs/disgrafs/cache"
	"github.com/disgrafs/disgrafs/coherence"
	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/fusefs"
	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/volume"
)

// Lock order: cacheState.mu before warmupJob.mu (the status lists the
// warmups' progress under cacheState.mu). The cache's own locks (Cache,
// Prefetcher) are never taken under either: Stats and QueueLen are asked
// before. A foreground warmup's report lock serializes the writes of its
// progress to its own client; only that warmup's workers wait for it.

// CacheConfig configures the whole-file cache and the prefetcher.
type CacheConfig struct {
	// Size is the budget in bytes; 0 turns the whole-file cache off.
	Size int64
	// Passthrough serves cached files of at least PassthroughMin bytes
	// through FUSE passthrough.
	Passthrough       bool
	PassthroughMin    int64
	PassthroughMinAge time.Duration
	// TTL is the kernel's entry and attribute timeout for cached files.
	TTL time.Duration
	// OpenCheckAlways makes every open ask the metadata engine whether the
	// file changed, even where a change channel could vouch for the copy.
	OpenCheckAlways bool
	// Prefetch turns the prefetcher and co-access learning on.
	Prefetch       bool
	PrefetchConfig cache.PrefetchConfig
}

// cacheState is the daemon's whole-file cache.
type cacheState struct {
	c        *cache.Cache
	src      cache.Source
	met      *cache.Metrics
	prefetch *cache.Prefetcher
	learner  *cache.Learner
	dir      string
	channel  coherence.Channel
	opens    *coherence.Counters

	mu      sync.Mutex
	warmups []*warmupJob
}

type warmupJob struct {
	mu       sync.Mutex
	what     string
	started  time.Time
	progress cache.Progress
}

func (j *warmupJob) set(p cache.Progress) {
	j.mu.Lock()
	j.progress = p
	j.mu.Unlock()
}

func (j *warmupJob) info() control.WarmupInfo {
	j.mu.Lock()
	defer j.mu.Unlock()
	return control.WarmupInfo{What: j.what, StartedAt: j.started, Progress: j.progress}
}

// cacheDir is where this mount keeps its whole-file cache: per volume and per
// mountpoint, so that two mounts of one volume on a node never share an index.
func (d *Daemon) wholeCacheDir() string {
	sum := sha256.Sum256([]byte(d.cfg.Mountpoint))
	return filepath.Join(d.cfg.CacheDir, d.vol.Format.UUID, "files-"+hex.EncodeToString(sum[:4]))
}

// openCache opens the cache and fills in the FUSE options that serve it;
// runCache starts its background work.
func (d *Daemon) openCache(fo *fusefs.Options) error {
	cc := d.cfg.Cache
	if cc.Size <= 0 {
		return nil
	}
	st := &cacheState{met: cache.NewMetrics(d.reg.Subsystem), dir: d.wholeCacheDir()}
	c, err := cache.Open(cache.Config{
		Dir: st.dir, Capacity: cc.Size, FreeRatio: d.cfg.FreeSpaceRatio,
		Log: d.log.With("component", "cache"), Metrics: st.met,
	})
	if err != nil {
		return fmt.Errorf("whole-file cache: %w", err)
	}
	st.c = c
	st.src = d.vol.CacheSource()
	st.channel = d.channel
	st.opens = coherence.NewCounters(st.channel, d.reg.Subsystem("coherence"))
	opts := &fusefs.CacheOptions{
		Cache: c, Passthrough: cc.Passthrough, PassthroughMin: cc.PassthroughMin, PassthroughMinAge: cc.PassthroughMinAge,
		TTL: cc.TTL, Metrics: st.met, Coherence: st.channel, Opens: st.opens,
	}
	opts.Leased = d.shared != nil
	if cc.Prefetch {
		st.prefetch = cache.NewPrefetcher(c, st.src, d.ranking(), cc.PrefetchConfig, d.log.With("component", "prefetch"))
		opts.Prefetch = st.prefetch
		opts.ReadThroughMax = st.prefetch.MaxFileSize()
		if d.tags != nil {
			st.learner = cache.NewLearner(d.tags.store, st.met, d.log.With("component", "coaccess"))
			opts.Learner = st.learner
		}
	}
	fo.Cache = opts
	d.cache = st
	return nil
}

// openChannel sets up how this mount learns that files changed on the
// volume (d.channel) and, on a volume shared through Redis, how it tells
// the others (d.shared, run by runChannel).
func (d *Daemon) openChannel(fo *fusefs.Options) {
	d.channel, d.shared = d.changeChannel()
	if d.shared != nil {
		fo.Publisher = d.shared
	}
}

// runChannel starts the shared volume's change channel. It is not part of
// the background work: it stops after the pre-allocation layer drained
// (stopChannel), since every change must still be published.
func (d *Daemon) runChannel() {
	sh := d.shared
	if sh == nil {
		return
	}
	sh.Handle(d.fs.ApplyRemote, d.fs.Doubt)
	d.run.Go("directory checks", d.fs.RunRemote)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // owner: stopChannel waits for it
		defer close(done)
		if err := sh.Run(ctx); err != nil {
			d.log.Error("change channel", "error", err)
		}
	}()
	d.channelStop = func() { cancel(); <-done }
}

// stopChannel stops the change channel (or releases it, when it never ran).
func (d *Daemon) stopChannel() error {
	switch {
	case d.channelStop != nil:
		d.channelStop()
	case d.shared != nil:
		return d.shared.Close()
	}
	return nil
}

func (d *Daemon) changeChannel() (ch coherence.Channel, shared *coherence.Shared) {
	switch {
	case d.cfg.FS.NoOpen:
		return coherence.Exclusive{Detail: "a --read-only mount of the embedded volume: nothing can change it, so the kernel opens files without asking and keeps their pages"}, nil
	case d.cfg.MetaURL == "" && d.cfg.Cache.OpenCheckAlways:
		return coherence.Check{Why: "--open-check always: every open of a cached file asks the metadata engine"}, nil
	case d.cfg.MetaURL == "":
		return coherence.Exclusive{}, nil
	}
	name := d.vol.Meta.Name()
	if name != "redis" {
		return coherence.Check{Why: fmt.Sprintf("no change channel for a shared %s volume yet: every open of a cached file asks the metadata engine (one round trip)", name)}, nil
	}
	var opt *redis.Options
	var err error
	if u, perr := url.Parse(d.vol.URL); perr == nil && strings.Contains(u.Host, ",") {
		err = errors.New("a Sentinel or Cluster address list")
	} else {
		// The password as JuiceFS takes it: in the URL or META_PASSWORD.
		opt, err = volume.RedisOptions(d.vol.URL)
	}
	if err == nil {
		shared, err = coherence.NewShared(coherence.SharedConfig{Redis: opt, Volume: d.vol.Format.UUID,
			Trust: !d.cfg.Cache.OpenCheckAlways && d.cfg.Cache.Size > 0, Log: d.log.With("component", "coherence"), Reg: d.reg.Subsystem("coherence")})
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = shared.Ping(ctx)
		cancel()
		if err != nil {
			_ = shared.Close()
			shared = nil
		}
	}
	if err != nil {
		// Sentinel and cluster addresses: no channel, and the other
		// nodes' channels do not hear of this node's changes either.
		d.log.Warn("no change channel for this Redis address; every open of a cached file asks the metadata engine, and other nodes that trust their copies do not hear of this node's changes",
			"error", err)
		return coherence.Check{Why: "no change channel for this Redis address (" + err.Error() + "): every open of a cached file asks the metadata engine"}, nil
	}
	return shared, shared
}

// runCache starts the cache's background work: saving the index, the
// prefetcher and the co-access learner.
func (d *Daemon) runCache() {
	if d.cache == nil {
		return
	}
	d.run.Go("cache index", d.cache.c.Run)
	if p := d.cache.prefetch; p != nil {
		p.SetForeground(d.fs.ForegroundReads)
		d.run.Go("prefetcher", p.Run)
	}
	if l := d.cache.learner; l != nil {
		d.run.Go("co-access learner", l.Run)
	}
}

// flushLearner saves the co-access edges observed since the learner's last
// flush (the eBPF drain may feed it until the background work stops).
// Edges are hints for the prefetcher: losing them is not a failure to stop.
func (d *Daemon) flushLearner() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.cache.learner.Flush(ctx); err != nil {
		d.log.Warn("saving co-access edges", "error", err)
	}
	return nil
}

// cacheInfo is the cache part of the status.
func (d *Daemon) cacheInfo() *control.CacheInfo {
	if d.cache == nil {
		return nil
	}
	s := d.cache.c.Stats()
	ci := &control.CacheInfo{
		Dir: s.Dir, Files: s.Files, Bytes: s.Bytes, Budget: s.Capacity,
		Passthrough: d.fs != nil && d.fs.PassthroughActive(),
		Prefetch:    d.cache.prefetch != nil,
	}
	cs := d.cache.channel.State()
	ci.Coherence = control.CoherenceInfo{Mode: cs.Mode, Trusted: cs.Trusted, Detail: cs.Detail}
	ci.Coherence.LocalOpens, ci.Coherence.CheckedOpens = d.cache.opens.Opens()
	switch {
	case d.cfg.FS.NoOpen:
		ci.PassthroughNote = "off: this --read-only mount of the embedded volume gets no OPEN requests, whose replies would carry the backing files; cached files are served through the page cache"
	case !d.cfg.Cache.Passthrough:
		ci.PassthroughNote = "off (--passthrough=false): cached files are served through the page cache"
	case !ci.Passthrough:
		ci.PassthroughNote = "unavailable: the kernel refused a backing file (needs CAP_SYS_ADMIN and Linux 6.9+); cached files are served through the page cache"
	default:
		ci.PassthroughNote = fmt.Sprintf("on for cached files of %d bytes or more, unmodified for %s", d.cfg.Cache.PassthroughMin, d.cfg.Cache.PassthroughMinAge)
	}
	if d.cache.prefetch != nil {
		ci.PrefetchQueue = d.cache.prefetch.QueueLen()
	}
	d.cache.mu.Lock()
	for _, j := range d.cache.warmups {
		ci.Warmups = append(ci.Warmups, j.info())
	}
	d.cache.mu.Unlock()
	return ci
}

// volumeDirs is the namespace the prefetcher's ranking reads (cache.Dirs).
type volumeDirs struct{ m meta.Meta }

func (v volumeDirs) Parent(ctx context.Context, ino uint64) (uint64, error) {
	var attr meta.Attr
	if st := v.m.GetAttr(volume.RootContext(ctx), meta.Ino(ino), &attr); st != 0 {
		return 0, st
	}
	return uint64(attr.Parent), nil
}

func (v volumeDirs) Files(ctx context.Context, dir uint64) ([]graph.File, error) {
	var entries []*meta.Entry
	if st := v.m.Readdir(volume.RootContext(ctx), meta.Ino(dir), 1, &entries); st != 0 {
		return nil, st
	}
	files := make([]graph.File, 0, len(entries))
	for _, e := range entries {
		if e.Attr.Typ == meta.TypeFile {
			files = append(files, graph.File{ID: graph.FileID(e.Inode), Name: string(e.Name)})
		}
	}
	return files, nil
}

// ranking is the prefetcher's ranking of an opened file's neighbours: the
// tag index when tags are on and the index answers, and the directory.
func (d *Daemon) ranking() *cache.Ranking {
	dirs := volumeDirs{d.vol.Meta}
	if d.tags == nil {
		return cache.NewRanking(nil, nil, dirs)
	}
	svc := d.tags.svc
	return cache.NewRanking(d.tags.store, func() bool { return svc.Check() == nil }, dirs)
}

// registerCacheControl serves warmup.
func (d *Daemon) registerCacheControl() {
	d.handleRaw("POST", "warmup", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 256<<20))
		if err != nil {
			control.WriteError(w, http.StatusBadRequest, fmt.Errorf("warmup request: %w", err))
			return
		}
		req, err := control.DecodeWarmup(body)
		if err != nil {
			control.WriteError(w, http.StatusBadRequest, err)
			return
		}
		if d.cache == nil {
			control.WriteError(w, http.StatusConflict, errors.New("the whole-file cache is off on this mount (--cache-size 0)"))
			return
		}
		mode := cache.WarmupMode(req.Mode)
		if mode == "" {
			mode = cache.ModeWarm
		}
		inos, what, err := d.warmupSet(r.Context(), req)
		if err != nil {
			code := http.StatusInternalServerError
			var be control.BadRequest
			if errors.As(err, &be) {
				code = http.StatusBadRequest
			}
			control.WriteError(w, code, err)
			return
		}
		job := &warmupJob{what: what, started: time.Now()}
		d.cache.mu.Lock()
		d.cache.warmups = append(d.cache.warmups, job)
		if len(d.cache.warmups) > 8 {
			d.cache.warmups = d.cache.warmups[len(d.cache.warmups)-8:]
		}
		d.cache.mu.Unlock()

		if req.Background {
			started := d.run.Go("background warmup", func(ctx context.Context) {
				if _, err := d.cache.c.Warmup(ctx, d.cache.src, inos, mode, req.Threads, job.set); err != nil && ctx.Err() == nil {
					d.log.Warn("background warmup", "what", what, "error", err)
				}
			})
			if !started {
				control.WriteError(w, http.StatusServiceUnavailable, errStopping)
				return
			}
			w.Header().Set("Content-Type", "application/x-ndjson")
			_ = json.NewEncoder(w).Encode(cache.Progress{Mode: mode, Total: int64(len(inos))})
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		ctx := r.Context()
		var mu sync.Mutex
		last := time.Time{}
		report := func(p cache.Progress) {
			job.set(p)
			mu.Lock()
			defer mu.Unlock()
			if !p.Done && time.Since(last) < 200*time.Millisecond {
				return
			}
			last = time.Now()
			_ = enc.Encode(p)
			if flusher != nil {
				flusher.Flush()
			}
		}
		if _, err := d.cache.c.Warmup(ctx, d.cache.src, inos, mode, req.Threads, report); err != nil && ctx.Err() == nil {
			d.log.Warn("warmup", "what", what, "error", err)
		}
	})
}

// warmupSet resolves what a warmup covers to inodes.
func (d *Daemon) warmupSet(ctx context.Context, req control.WarmupRequest) ([]uint64, string, error) {
	var files []graph.File
	var what string
	switch {
	case req.Tag != "" || req.Query != "":
		if d.tags == nil {
			return nil, "", control.BadRequest{Err: errors.New("tags are off on this mount (--no-tags): warm paths instead")}
		}
		expr := req.Query
		what = "query " + req.Query
		if req.Tag != "" {
			if err := graph.ValidTag(req.Tag); err != nil {
				return nil, "", control.BadRequest{Err: err}
			}
			expr, what = "", "tag "+req.Tag
		}
		// Tags set through this node just before belong in the set: land
		// their queued index changes first (bounded: an index that is down
		// or busy gives the set it has).
		sctx, scancel := context.WithTimeout(ctx, d.tags.svc.Timeout())
		if err := d.tags.svc.Sync(sctx); err != nil {
			d.log.Debug("warmup: tag changes still queued for the index", "error", err)
		}
		scancel()
		qctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		var err error
		if expr == "" {
			files, err = d.tags.store.Files(qctx, []string{req.Tag})
		} else {
			e, perr := graph.Parse(expr)
			if perr != nil {
				return nil, "", control.BadRequest{Err: perr}
			}
			files, err = d.tags.store.Query(qctx, e)
		}
		if err != nil {
			return nil, "", err
		}
	default:
		what = fmt.Sprintf("%d paths", len(req.Inos))
	}
	inos := make([]uint64, 0, len(files)+len(req.Inos))
	for _, f := range files {
		inos = append(inos, uint64(f.ID))
	}
	inos = append(inos, req.Inos...)
	slices.Sort(inos)
	return slices.Compact(inos), what, nil
}

// feedCacheFromBPF gives the cache the recency of reads the daemon never sees
// (passthrough and the page cache): a file read through a long-lived open
// stays hot although it was opened once; and the co-access learner the files
// each process reads together. Without eBPF, opens count for both.
func (d *Daemon) feedCacheFromBPF() {
	if d.cache == nil {
		return
	}
	c, learner := d.cache.c, d.cache.learner
	if d.bpf == nil || d.bpf.tracer == nil {
		return // eBPF is off: opens count
	}
	if learner != nil {
		learner.UseReads()
	}
	d.AddBPFSink(func(dr bpf.Drained) {
		for _, in := range dr.Inodes {
			if sp := in.Split(); sp.Passthrough > 0 || sp.PageCache > 0 {
				c.Touch(in.Ino)
			}
		}
		// Files read by one process in the same interval were read together.
		if learner != nil {
			for _, p := range dr.Procs {
				if p.Bytes > 0 {
					learner.Read(p.Tgid, p.Ino)
				}
			}
		}
	})
}
