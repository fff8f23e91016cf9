// Package tagging keeps a file's tags: the truth in its user.xdg.tags xattr
// (comma separated, the freedesktop convention), and the graph index in step
// with it. When the index is unavailable the xattr is still written and the
// index change is queued and retried, so tagging never blocks on the graph.
package tagging

// Lock order in this file: Service.locks[i] (one file's read-modify-write of
// its tags), then Service.mu (the queue of index changes), then Service.kmu
// (the set of files known to be tagged). Service.wmu (writes to the index,
// reindex.go) is taken before Service.mu and never under the others.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/disgrafs/disgrafs/graph"
)

// XattrName is where a file's tags live.
const XattrName = "user.xdg.tags"

// Files is what tagging needs from the volume. ENODATA from GetXattr is
// reported as (nil, nil).
type Files interface {
	GetXattr(ctx context.Context, ino uint64, name string) ([]byte, error)
	SetXattr(ctx context.Context, ino uint64, name string, value []byte) error
	RemoveXattr(ctx context.Context, ino uint64, name string) error
	// Name returns one base name of the file (for listings).
	Name(ctx context.Context, ino uint64) (string, error)
}

// Parents is implemented by Files that can tell which directory holds a
// file. The index keeps it, a hint checked on use, so that a query's answers
// turn into paths with one metadata lookup each.
type Parents interface {
	// Parent returns the inode of the directory holding ino, 0 when that is
	// unknown (a file with several links, or one that is gone).
	Parent(ctx context.Context, ino uint64) uint64
}

// parentLookups is how many Parent calls run at once while a batch of index
// changes is prepared.
const parentLookups = 8

// Service tags files.
type Service struct {
	files   Files
	parents Parents // nil when files cannot tell
	store   graph.Store
	log     *slog.Logger
	// timeout bounds every index call so that a slow or dead graph never
	// holds a FUSE request for long.
	timeout time.Duration
	// batch is how many files one index write may carry (a Bolt server takes
	// far smaller transactions than bbolt).
	batch int

	locks [256]sync.Mutex

	mu      sync.Mutex
	pending []graph.Change // index changes waiting to be applied, in order
	forgets []graph.FileID // deleted files waiting to be dropped
	wake    chan struct{}
	dropped atomic.Uint64
	// queued changes whenever a change joins the queue, so that a listing
	// built with the queue laid over it knows when it is out of date.
	queued atomic.Uint64
	// While a reindex runs (reindexing > 0), touched collects the files
	// that live changes name: their queued change is newer than what the
	// reindex read of them, which must not overwrite it (reindex.go).
	reindexing int
	touched    map[uint64]struct{}

	// wmu serializes writes to the index: the queue's batches and a
	// reindex's, so that a reindex's check of touched and its write are
	// one step with respect to the queue's writes.
	wmu sync.Mutex

	stats Stats

	// downUntil is when the index, after failing, may be tried again (unix
	// nanoseconds); until then calls fail at once instead of waiting out
	// their timeout, and Run probes it.
	downUntil atomic.Int64
	flushed   atomic.Uint64 // batches applied, for listings to notice

	kmu   sync.RWMutex
	known map[uint64]struct{} // files this node knows to be tagged
}

// Stats counts what the service did.
type Stats struct {
	Tagged       atomic.Uint64 // tag changes applied to files
	IndexErrors  atomic.Uint64 // index updates that failed (and were queued)
	IndexPending atomic.Int64  // changes waiting for the index
}

// maxPending bounds the retry queue; past it changes are dropped and a
// reindex is needed (logged and counted).
const maxPending = 100000

// New returns a tagging service. Call Run to retry failed index updates.
func New(files Files, store graph.Store, log *slog.Logger, timeout time.Duration) *Service {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	parents, _ := files.(Parents)
	return &Service{files: files, parents: parents, store: store, log: log, timeout: timeout, batch: 1000, wake: make(chan struct{}, 1), known: map[uint64]struct{}{}}
}

// fillParents sets the parent of the changes that name a file and carry
// none, looking them up several at once (off the FUSE request that made the
// change: the index writer and reindex call it).
func (s *Service) fillParents(ctx context.Context, changes []graph.Change) {
	if s.parents == nil {
		return
	}
	var g errgroup.Group
	g.SetLimit(parentLookups)
	for i := range changes {
		c := &changes[i]
		if c.File.Parent != 0 || (c.Replace && len(c.Add) == 0) {
			continue // has one, or leaves the index
		}
		g.Go(func() error {
			c.File.Parent = graph.FileID(s.parents.Parent(ctx, uint64(c.File.ID)))
			return nil
		})
	}
	_ = g.Wait()
}

// SetBatch sets how many files one index write may carry (default 1000).
func (s *Service) SetBatch(n int) {
	if n > 0 {
		s.batch = n
	}
}

// Known reports whether this node knows the file to be tagged. The FUSE layer
// asks before it spends a metadata call on keeping the index in step with a
// rename or unlink.
func (s *Service) Known(ino uint64) bool {
	s.kmu.RLock()
	defer s.kmu.RUnlock()
	_, ok := s.known[ino]
	return ok
}

// AnyKnown reports whether any file is known to be tagged.
func (s *Service) AnyKnown() bool {
	s.kmu.RLock()
	defer s.kmu.RUnlock()
	return len(s.known) > 0
}

func (s *Service) setKnown(ino uint64, tagged bool) {
	s.kmu.Lock()
	if tagged {
		s.known[ino] = struct{}{}
	} else {
		delete(s.known, ino)
	}
	s.kmu.Unlock()
}

// LoadKnown fills the set of tagged files from the index (at mount time, and
// periodically for tags other nodes set).
func (s *Service) LoadKnown(ctx context.Context) error {
	tags, err := s.store.Tags(ctx)
	if err != nil {
		return err
	}
	known := map[uint64]struct{}{}
	for _, tc := range tags {
		if tc.Files == 0 {
			continue
		}
		files, err := s.store.Files(ctx, []string{tc.Tag})
		if err != nil {
			return err
		}
		for _, f := range files {
			known[uint64(f.ID)] = struct{}{}
		}
	}
	s.kmu.Lock()
	s.known = known
	s.kmu.Unlock()
	return nil
}

// Store is the index the service keeps.
func (s *Service) Store() graph.Store { return s.store }

// Stats returns the service's counters.
func (s *Service) Stats() *Stats { return &s.stats }

// Timeout is the bound on index calls.
func (s *Service) Timeout() time.Duration { return s.timeout }

func (s *Service) lock(ino uint64) func() {
	m := &s.locks[ino%uint64(len(s.locks))]
	m.Lock()
	return m.Unlock
}

// downFor is how long a failed index is left alone before the next try.
const downFor = 3 * time.Second

// Available reports whether the index is believed to answer.
func (s *Service) Available() bool { return time.Now().UnixNano() >= s.downUntil.Load() }

// Check returns graph.ErrUnavailable at once while the index is believed down.
func (s *Service) Check() error {
	if !s.Available() {
		return fmt.Errorf("%w (failing fast; retried in the background)", graph.ErrUnavailable)
	}
	return nil
}

// Failed records the outcome of an index call: an unavailable index is left
// alone for a while.
func (s *Service) Failed(err error) {
	if errors.Is(err, graph.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		s.downUntil.Store(time.Now().Add(downFor).UnixNano())
	}
}

// Get returns a file's tags from its xattr.
func (s *Service) Get(ctx context.Context, ino uint64) ([]string, error) {
	v, err := s.files.GetXattr(ctx, ino, XattrName)
	if err != nil {
		return nil, err
	}
	return graph.ParseTagList(v)
}

// Modify removes then adds tags on a file and returns its new tags. Tag names
// are validated first: a bad name changes nothing.
func (s *Service) Modify(ctx context.Context, ino uint64, add, remove []string) ([]string, error) {
	for _, t := range add {
		if err := graph.ValidTag(t); err != nil {
			return nil, badTag(err)
		}
	}
	unlock := s.lock(ino)
	defer unlock()
	old, err := s.Get(ctx, ino)
	if err != nil {
		return nil, fmt.Errorf("read tags: %w", err)
	}
	tags := make([]string, 0, len(old)+len(add))
	for _, t := range old {
		if !slices.Contains(remove, t) {
			tags = append(tags, t)
		}
	}
	for _, t := range add {
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	if slices.Equal(tags, old) {
		return tags, nil
	}
	if err := s.write(ctx, ino, tags); err != nil {
		return nil, err
	}
	s.stats.Tagged.Add(1)
	s.Indexed(ctx, ino, tags)
	return tags, nil
}

// Set replaces a file's tags.
func (s *Service) Set(ctx context.Context, ino uint64, tags []string) error {
	for _, t := range tags {
		if err := graph.ValidTag(t); err != nil {
			return badTag(err)
		}
	}
	unlock := s.lock(ino)
	defer unlock()
	if err := s.write(ctx, ino, tags); err != nil {
		return err
	}
	s.stats.Tagged.Add(1)
	s.Indexed(ctx, ino, tags)
	return nil
}

func (s *Service) write(ctx context.Context, ino uint64, tags []string) error {
	if len(tags) == 0 {
		if err := s.files.RemoveXattr(ctx, ino, XattrName); err != nil {
			return fmt.Errorf("remove tags: %w", err)
		}
		return nil
	}
	v := graph.FormatTagList(tags)
	if len(v) > graph.MaxTagListBytes {
		return fmt.Errorf("%w: the tag list would be %d bytes, over the %d-byte xattr limit", ErrTooLong, len(v), graph.MaxTagListBytes)
	}
	if err := s.files.SetXattr(ctx, ino, XattrName, v); err != nil {
		return fmt.Errorf("write tags: %w", err)
	}
	return nil
}

// ErrTooLong is returned when a file's tag list would not fit its xattr.
var ErrTooLong = errors.New("tag list too long")

// Indexed brings the index in step with a file whose xattr now holds tags
// (called after a direct setxattr too). It never fails: a change the index
// cannot take now is queued.
func (s *Service) Indexed(ctx context.Context, ino uint64, tags []string) {
	name, err := s.files.Name(ctx, ino)
	if err != nil {
		s.log.Debug("no name for tagged file", "ino", ino, "error", err)
	}
	s.setKnown(ino, len(tags) > 0)
	s.apply(graph.Change{File: graph.File{ID: graph.FileID(ino), Name: name}, Add: tags, Replace: true})
}

// Renamed updates the indexed name of a file.
func (s *Service) Renamed(ino uint64, name string) {
	s.apply(graph.Change{File: graph.File{ID: graph.FileID(ino), Name: name}})
}

// Removed drops deleted files from the index, in the background with the
// other queued changes (an unlink must not wait for the index).
func (s *Service) Removed(ids ...uint64) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	for _, id := range ids {
		s.setKnown(id, false)
		if len(s.forgets) < maxPending {
			s.forgets = append(s.forgets, graph.FileID(id))
		}
		if s.touched != nil {
			s.touched[id] = struct{}{}
		}
	}
	s.queued.Add(1)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// apply queues an index change; the background writer applies queued changes
// in batches. One change per transaction would cost a posting-list rewrite
// per file (tagging a 100,000-file dataset slowed to under 60 files/s); in
// batches it is a rewrite per batch.
func (s *Service) apply(c graph.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) >= maxPending {
		s.dropped.Add(1)
		if s.dropped.Load() == 1 {
			s.log.Error("index queue full: dropping changes; run 'disgrafs reindex' when the graph is back")
		}
		return
	}
	s.pending = append(s.pending, c)
	s.queued.Add(1)
	if s.touched != nil && c.Replace {
		// (A rename carries no tags: the reindex still writes the file.)
		s.touched[uint64(c.File.ID)] = struct{}{}
	}
	s.stats.IndexPending.Store(int64(len(s.pending)))
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Sync waits until every queued index change has been applied (so that a tag
// directory lists what was just tagged), or returns the reason it cannot.
func (s *Service) Sync(ctx context.Context) error {
	for {
		s.mu.Lock()
		n := len(s.pending) + len(s.forgets)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		if err := s.Check(); err != nil {
			return err
		}
		select {
		case s.wake <- struct{}{}:
		default:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// Generation changes every time a change is queued and every time queued
// changes reach the index.
func (s *Service) Generation() uint64 { return s.flushed.Load() + s.queued.Load() }

// Queue is a snapshot of the index changes this node has made that the index
// has not yet taken, in the order they were made.
type Queue struct {
	Changes []graph.Change
	Forgets []graph.FileID // deleted files
}

// Queued returns the changes waiting for the index. A listing read from the
// index after this call, with the queue laid over it, shows every change
// made before the call: a change leaves the queue only once the index has
// it. A change both queued and already in the index (its batch in flight)
// is harmless to apply twice: it carries the file's whole tag set.
func (s *Service) Queued() Queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Queue{Changes: slices.Clone(s.pending), Forgets: slices.Clone(s.forgets)}
}

// Pending reports how many index changes wait for the graph.
func (s *Service) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Run retries queued index changes until ctx ends.
func (s *Service) Run(ctx context.Context) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.wake:
			// Let concurrent changes gather into one batch.
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
		if !s.Available() {
			pctx, cancel := context.WithTimeout(ctx, s.timeout)
			err := s.store.Ping(pctx)
			cancel()
			if err != nil {
				s.Failed(err)
				continue
			}
			if !s.Available() {
				s.log.Info("tag index answers again")
			}
			s.downUntil.Store(0)
		}
		if err := s.flushPending(ctx); err != nil {
			s.stats.IndexErrors.Add(1)
			s.log.Warn("index update failed; retrying", "pending", s.Pending(), "error", err)
		}
	}
}

func (s *Service) flushPending(ctx context.Context) error {
	s.mu.Lock()
	batch := slices.Clone(s.pending)
	forgets := slices.Clone(s.forgets)
	s.mu.Unlock()
	if s.parents != nil && len(batch) > 0 {
		s.fillParents(ctx, batch)
		// Keep them for a retry: only this goroutine takes changes off the
		// front of the queue, others append.
		s.mu.Lock()
		for i := range batch {
			if s.pending[i].File.ID == batch[i].File.ID {
				s.pending[i].File.Parent = batch[i].File.Parent
			}
		}
		s.mu.Unlock()
	}
	if len(forgets) > 0 {
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		s.wmu.Lock()
		err := s.store.Forget(cctx, forgets)
		s.wmu.Unlock()
		cancel()
		if err != nil {
			s.Failed(err)
			return err
		}
		s.mu.Lock()
		s.forgets = s.forgets[len(forgets):]
		s.mu.Unlock()
		s.flushed.Add(1)
	}
	if len(batch) == 0 {
		return nil
	}
	for len(batch) > 0 {
		n := min(len(batch), s.batch)
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		s.wmu.Lock()
		err := s.store.Update(cctx, batch[:n])
		s.wmu.Unlock()
		cancel()
		if err != nil {
			s.Failed(err)
			return err
		}
		s.mu.Lock()
		s.pending = s.pending[n:]
		s.stats.IndexPending.Store(int64(len(s.pending)))
		s.mu.Unlock()
		s.flushed.Add(1)
		batch = batch[n:]
	}
	return nil
}

// badTag marks a validation error as the caller's fault (graph.ErrBadTag).
func badTag(err error) error {
	if errors.Is(err, graph.ErrBadTag) {
		return err
	}
	return fmt.Errorf("%w: %w", graph.ErrBadTag, err)
}
