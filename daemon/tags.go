package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/fusefs"
	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/boltstore"
	"github.com/disgrafs/disgrafs/graph/neo4jstore"
	"github.com/disgrafs/disgrafs/metrics"
	"github.com/disgrafs/disgrafs/tagging"
	"github.com/disgrafs/disgrafs/volume"
)

// TagsConfig configures tags, the graph index and the virtual tag tree.
type TagsConfig struct {
	Enabled bool
	// Graph is empty for the embedded bbolt index, or a neo4j:// / bolt:// URL.
	Graph         string
	GraphUser     string
	GraphPassword string // from the environment or the config file only
	TagsDir       string
	QueryDir      string
	Auto          bool
	AutoOptions   tagging.AutoOptions
	Timeout       time.Duration
}

type tagState struct {
	store    graph.Store
	metered  *metrics.GraphStore // store, wrapped for metrics
	svc      *tagging.Service
	auto     *tagging.AutoTagger
	backend  string
	location string
	paths    *pathResolver
	files    volume.TagFiles

	// marked: this run created the clean-stop marker. rebuilding: the
	// rebuild after an unclean stop has not completed. synced: every queued
	// index change landed at shutdown.
	marked, rebuilding, synced atomic.Bool
}

// stateDir is where this node keeps its own files for a volume.
func (d *Daemon) stateDir() string {
	if d.cfg.MetaURL == "" {
		return d.cfg.DataDir
	}
	// One index per volume and mountpoint: two daemons of one node may mount
	// the same shared volume.
	return filepath.Join(d.cfg.DataDir, "state", d.vol.Format.UUID+"-"+filepath.Base(d.paths.Socket[:len(d.paths.Socket)-5]))
}

// dirtyMarker exists while a daemon runs with tags on: finding it at start
// means the previous run did not stop cleanly, and index changes it still held
// in memory may be missing from the index (the xattrs have them).
func (d *Daemon) dirtyMarker() string { return filepath.Join(d.stateDir(), "tags.running") }

// markTagsRunning creates the marker and, when the last run left it,
// rebuilds the index from the xattrs in the background; listings are
// complete again when it finishes.
func (d *Daemon) markTagsRunning() {
	path := d.dirtyMarker()
	_, err := os.Stat(path)
	unclean := err == nil
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
		if os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600) == nil {
			d.tags.marked.Store(true)
		}
	}
	if !unclean {
		return
	}
	d.log.Warn("the last run did not stop cleanly: rebuilding the tag index from the xattrs in the background")
	d.tags.rebuilding.Store(true)
	d.run.Go("tag index rebuild", func(ctx context.Context) {
		p, err := d.tags.svc.Reindex(ctx, d.tags.files, func(tagging.Progress) {})
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("rebuilding the tag index after an unclean stop; run 'disgrafs reindex'", "error", err)
			}
			return
		}
		d.tags.rebuilding.Store(false)
		d.fs.TagsChanged()
		d.log.Info("tag index rebuilt after an unclean stop", "files", p.Scanned, "tagged", p.Tagged, "stale_dropped", p.Forgotten)
	})
}

// syncTags lands the queued index changes while the index writer still runs.
func (d *Daemon) syncTags() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.tags.svc.Sync(ctx); err != nil {
		// Not a failure to stop: the marker stays, and the next start
		// rebuilds the index from the xattrs.
		d.log.Warn("index changes left unapplied; 'disgrafs reindex' repairs the index", "pending", d.tags.svc.Pending(), "error", err)
		return nil
	}
	d.tags.synced.Store(true)
	return nil
}

// clearTagsMarker removes the marker once the background work stopped, if
// the index holds every change: the queued ones landed, nothing was queued
// since, and no rebuild was cut short.
func (d *Daemon) clearTagsMarker() error {
	t := d.tags
	if !t.marked.Load() || !t.synced.Load() || t.rebuilding.Load() || t.svc.Pending() > 0 {
		return nil
	}
	if err := os.Remove(d.dirtyMarker()); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func (d *Daemon) openGraph(ctx context.Context) (graph.Store, string, string, error) {
	tc := d.cfg.Tags
	if tc.Graph == "" || tc.Graph == "bolt" || tc.Graph == "bbolt" {
		dir := d.stateDir()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, "", "", fmt.Errorf("state directory: %w", err)
		}
		path := filepath.Join(dir, "graph.db")
		// The index can always be rebuilt from the xattrs, so it does without
		// fsync (a killed daemon loses nothing: its writes are in the page
		// cache; after a machine crash 'disgrafs reindex' repairs it), and
		// concurrent small updates share a transaction.
		st, err := boltstore.Open(path, boltstore.Options{NoSync: true, BatchDelay: 2 * time.Millisecond})
		if err != nil {
			return nil, "", "", fmt.Errorf("open the tag index %s: %w (move it away and run 'disgrafs reindex' to rebuild it)", path, err)
		}
		return st, "bbolt", path, nil
	}
	if !strings.HasPrefix(tc.Graph, "neo4j://") && !strings.HasPrefix(tc.Graph, "bolt://") &&
		!strings.HasPrefix(tc.Graph, "neo4j+s://") && !strings.HasPrefix(tc.Graph, "bolt+s://") {
		return nil, "", "", fmt.Errorf("--graph %s: use neo4j://HOST:7687 or bolt://HOST:7687 (or leave it empty for the embedded index)", volume.MaskURL(tc.Graph))
	}
	user := tc.GraphUser
	if user == "" {
		user = "neo4j"
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	st, err := neo4jstore.Open(cctx, tc.Graph, user, tc.GraphPassword, d.vol.Format.UUID, neo4jstore.Options{})
	if err != nil {
		return nil, "", "", fmt.Errorf("graph %s: %w", volume.MaskURL(tc.Graph), err)
	}
	return st, "neo4j", volume.MaskURL(tc.Graph), nil
}

// openTags opens the graph store and the tagging service and fills in the
// FUSE options that serve tags; runTags starts their background work.
func (d *Daemon) openTags(ctx context.Context, fo *fusefs.Options) error {
	raw, backend, loc, err := d.openGraph(ctx)
	if err != nil {
		return err
	}
	metered, err := metrics.InstrumentGraph(raw, backend, d.reg.Subsystem("graph"))
	if err != nil {
		_ = raw.Close()
		return fmt.Errorf("graph metrics: %w", err)
	}
	var store graph.Store = metered
	files := d.vol.TagFiles(d.names)
	svc := tagging.New(files, store, d.log.With("component", "tags"), d.cfg.Tags.Timeout)
	if backend == "neo4j" {
		svc.SetBatch(100) // NornicDB refuses transactions of about 10,000 entries
	}
	d.tags = &tagState{store: store, metered: metered, svc: svc, backend: backend, location: loc, files: files}
	fo.Tags = fusefs.TagOptions{Service: svc, TagsDir: d.cfg.Tags.TagsDir, QueryDir: d.cfg.Tags.QueryDir, Log: d.log.With("component", "tagtree")}
	if d.cfg.Tags.Auto {
		ao := d.cfg.Tags.AutoOptions
		ao.Mountpoint = d.cfg.Mountpoint
		d.tags.auto = tagging.NewAutoTagger(svc, files, ao, d.log.With("component", "autotag"))
		fo.Written = d.tags.auto.Enqueue
	}
	return nil
}

// runTags starts the index writer, the upkeep of the set of tagged files
// and the auto-tagger.
func (d *Daemon) runTags() {
	if d.tags == nil {
		return
	}
	svc := d.tags.svc
	d.run.Go("tag index writer", svc.Run)
	d.run.Go("tagged files", func(ctx context.Context) {
		// Learn which files are tagged (for index upkeep on unlink and
		// rename), and again now and then for what other nodes tag.
		for {
			lctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := svc.LoadKnown(lctx); err != nil && ctx.Err() == nil {
				d.log.Warn("loading the set of tagged files", "error", err)
			}
			cancel()
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Minute):
			}
		}
	})
	if d.tags.auto != nil {
		d.run.Go("auto-tagger", d.tags.auto.Run)
	}
}

func (d *Daemon) tagInfo() *control.TagInfo {
	if d.tags == nil {
		return nil
	}
	st := d.tags.svc.Stats()
	ti := &control.TagInfo{Backend: d.tags.backend, Location: d.tags.location, Tagged: st.Tagged.Load(),
		IndexPending: st.IndexPending.Load(), IndexErrors: st.IndexErrors.Load()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.tags.store.Ping(ctx); err != nil {
		ti.Error = err.Error()
	} else {
		ti.Available = true
	}
	if a := d.tags.auto; a != nil {
		ti.AutoDone, ti.AutoQueued, ti.AutoFailed, ti.AutoDropped = a.Done.Load(), a.Queued(), a.Failed.Load(), a.Dropped.Load()
		ti.AutoCapacity = a.Capacity()
	}
	if m := d.tags.metered; m != nil {
		calls, failed, took := m.Totals()
		ti.GraphCalls, ti.GraphErrors = calls, failed
		if calls > 0 {
			ti.GraphAvgLatencyMs = float64(took) / float64(calls) / float64(time.Millisecond)
		}
	}
	return ti
}

func (d *Daemon) registerTagControl() {
	d.handle("GET", "tags", func(ctx context.Context, _ []byte) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, d.tags.svc.Timeout())
		defer cancel()
		return d.tags.store.Tags(ctx)
	})
	d.handle("POST", "find", func(ctx context.Context, body []byte) (any, error) {
		_, e, err := control.DecodeFind(body)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		files, err := d.tags.store.Query(ctx, e)
		if err != nil {
			return nil, err
		}
		return d.found(ctx, files, nil), nil
	})
	d.handle("POST", "related", func(ctx context.Context, body []byte) (any, error) {
		req, err := control.DecodeRelated(body)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		scored, err := d.tags.store.Related(ctx, graph.FileID(req.Ino), req.Limit)
		if err != nil {
			return nil, err
		}
		files := make([]graph.File, len(scored))
		scores := make([]float64, len(scored))
		for i, s := range scored {
			files[i], scores[i] = s.File, s.Score
		}
		return d.found(ctx, files, scores), nil
	})
	d.handleRaw("POST", "reindex", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		last := time.Time{}
		report := func(p tagging.Progress) {
			if !p.Done && time.Since(last) < 200*time.Millisecond {
				return
			}
			last = time.Now()
			_ = enc.Encode(p)
			if flusher != nil {
				flusher.Flush()
			}
		}
		_, err := d.tags.svc.Reindex(r.Context(), d.tags.files, report)
		if err != nil {
			_ = enc.Encode(control.Error{Error: err.Error()})
			d.log.Error("reindex failed", "error", err)
			return
		}
		if d.fs != nil {
			d.fs.TagsChanged()
		}
		d.log.Info("reindexed the tags from the xattrs")
	})
}

func (d *Daemon) found(ctx context.Context, files []graph.File, scores []float64) []control.FoundFile {
	paths := d.tags.paths.resolve(ctx, files)
	out := make([]control.FoundFile, 0, len(files))
	for i, f := range files {
		if paths[i] == "" {
			continue // deleted since it was indexed
		}
		ff := control.FoundFile{Path: filepath.Join(d.cfg.Mountpoint, paths[i]), Ino: uint64(f.ID)}
		if scores != nil {
			ff.Score = scores[i]
		}
		out = append(out, ff)
	}
	return out
}
