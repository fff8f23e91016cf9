package tagging

import (
	"context"
	"fmt"

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
func (s *Service) Reindex(ctx context.Context, w Walker, report func(Progress)) (Progress, error) {
	var p Progress
	seen := map[graph.FileID]struct{}{}
	known := map[uint64]struct{}{}
	batch := make([]graph.Change, 0, s.batch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		s.fillParents(ctx, batch)
		if err := s.store.Update(ctx, batch); err != nil {
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
		ids := make([]graph.FileID, 0, len(stale))
		for id := range stale {
			ids = append(ids, id)
		}
		if err := s.store.Forget(ctx, ids); err != nil {
			return p, fmt.Errorf("drop stale index entries: %w", err)
		}
		p.Forgotten = int64(len(ids))
	}
	s.kmu.Lock()
	s.known = known
	s.kmu.Unlock()
	p.Done = true
	report(p)
	return p, nil
}
