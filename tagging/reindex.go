package tagging

import (
	"context"
	"fmt"
	"slices"

	"github.com/disgrafs/disgrafs/graph"
)

// Walker visits every regular file of the volume with its tags xattr.
type Walker interface {
	Walk(ctx context.Context, fn func(ino uint64, name string, tags []byte) error) error
}

// Progress is reported while reindexing.
type Progress struct {
	Scanned   int64 `json:"scanned"`   // files visited
	Tagged    int64 `json:"tagged"`    // files with tags
	Invalid   int64 `json:"invalid"`   // files whose tag xattr could not be parsed
	Forgotten int64 `json:"forgotten"` // index entries of files that no longer exist or carry no tags
	Done      bool  `json:"done"`
}

// Reindex rebuilds the index from the xattrs: every file's tags are replaced
// by what its xattr says, and index entries for files without tags are
// dropped. report is called after every batch.
//
// Tags may change while it runs (the rebuild after an unclean stop runs
// beside the mount's users). A file that a live change names after the
// reindex started is left to that change, which is queued and newer than
// what the walk read: the reindex neither writes nor drops it.
func (s *Service) Reindex(ctx context.Context, w Walker, report func(Progress)) (Progress, error) {
	s.mu.Lock()
	if s.reindexing == 0 {
		s.touched = map[uint64]struct{}{}
	}
	s.reindexing++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.reindexing--
		if s.reindexing == 0 {
			s.touched = nil
		}
		s.mu.Unlock()
	}()
	var p Progress
	seen := map[graph.FileID]struct{}{}
	known := map[uint64]struct{}{}
	batch := make([]graph.Change, 0, s.batch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		s.fillParents(ctx, batch)
		s.wmu.Lock()
		s.mu.Lock()
		batch = slices.DeleteFunc(batch, func(c graph.Change) bool {
			_, live := s.touched[uint64(c.File.ID)]
			return live
		})
		s.mu.Unlock()
		err := s.store.Update(ctx, batch)
		s.wmu.Unlock()
		if err != nil {
			return fmt.Errorf("write index: %w", err)
		}
		batch = batch[:0]
		report(p)
		return nil
	}
	err := w.Walk(ctx, func(ino uint64, name string, raw []byte) error {
		p.Scanned++
		if len(raw) == 0 {
			if p.Scanned%1000 == 0 {
				report(p)
			}
			return nil
		}
		tags, err := graph.ParseTagList(raw)
		if err != nil {
			p.Invalid++
			s.log.Warn("reindex: unreadable tag list; file skipped", "ino", ino, "name", name, "error", err)
			return nil
		}
		if len(tags) == 0 {
			return nil
		}
		p.Tagged++
		seen[graph.FileID(ino)] = struct{}{}
		known[ino] = struct{}{}
		batch = append(batch, graph.Change{File: graph.File{ID: graph.FileID(ino), Name: name}, Add: tags, Replace: true})
		if len(batch) == s.batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return p, err
	}
	// Drop what the index holds but the volume does not.
	tcs, err := s.store.Tags(ctx)
	if err != nil {
		return p, fmt.Errorf("list indexed tags: %w", err)
	}
	stale := map[graph.FileID]struct{}{}
	for _, tc := range tcs {
		if tc.Files == 0 {
			continue
		}
		files, err := s.store.Files(ctx, []string{tc.Tag})
		if err != nil {
			return p, fmt.Errorf("list indexed files of %q: %w", tc.Tag, err)
		}
		for _, f := range files {
			if _, ok := seen[f.ID]; !ok {
				stale[f.ID] = struct{}{}
			}
		}
	}
	if len(stale) > 0 {
		s.wmu.Lock()
		s.mu.Lock()
		ids := make([]graph.FileID, 0, len(stale))
		for id := range stale {
			if _, live := s.touched[uint64(id)]; !live {
				ids = append(ids, id)
			}
		}
		s.mu.Unlock()
		err := s.store.Forget(ctx, ids)
		s.wmu.Unlock()
		if err != nil {
			return p, fmt.Errorf("drop stale index entries: %w", err)
		}
		p.Forgotten = int64(len(ids))
	}
	// Files live changes named keep what those changes said.
	s.mu.Lock()
	s.kmu.Lock()
	for id := range s.touched {
		if _, ok := s.known[id]; ok {
			known[id] = struct{}{}
		} else {
			delete(known, id)
		}
	}
	s.known = known
	s.kmu.Unlock()
	s.mu.Unlock()
	p.Done = true
	report(p)
	return p, nil
}
