package tagging

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/boltstore"
	"github.com/disgrafs/disgrafs/tagging/tagtest"
)

// walkFunc is a Walker (our own interface) made of a function.
type walkFunc func(ctx context.Context, fn func(ino uint64, name string, tags []byte) error) error

func (w walkFunc) Walk(ctx context.Context, fn func(ino uint64, name string, tags []byte) error) error {
	return w(ctx, fn)
}

// TestReindexLeavesLiveChanges: a tag change made while a reindex walks the
// volume, and written to the index before the reindex writes what it read
// earlier, is not undone by the reindex; nor is a file tagged meanwhile
// dropped as stale.
func TestReindexLeavesLiveChanges(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		before   map[uint64]string // xattrs and index at the start
		walkSees map[uint64]string // what the walk read, before the live change
		live     func(s *Service)  // the change made during the walk
		want     []graph.FileID    // files the index lists under tag a at the end
	}{
		{"untagged during the walk", map[uint64]string{1: "a", 2: "a"}, map[uint64]string{1: "a", 2: "a"},
			func(s *Service) { _, _ = s.Modify(ctx, 1, nil, []string{"a"}) }, []graph.FileID{2}},
		{"tagged during the walk", map[uint64]string{2: "a"}, map[uint64]string{2: "a"},
			func(s *Service) { _, _ = s.Modify(ctx, 3, []string{"a"}, nil) }, []graph.FileID{2, 3}},
		{"nothing live: the walk's view wins", map[uint64]string{1: "a"}, map[uint64]string{2: "a"},
			func(s *Service) {}, []graph.FileID{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, err := boltstore.Open(filepath.Join(t.TempDir(), "tags.db"), boltstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			files := tagtest.NewMemFiles()
			s := New(files, store, slog.New(slog.DiscardHandler), time.Second)
			for ino, tags := range tt.before {
				if err := s.Set(ctx, ino, []string{tags}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.flushPending(ctx); err != nil {
				t.Fatal(err)
			}
			w := walkFunc(func(ctx context.Context, fn func(uint64, string, []byte) error) error {
				// The walk has read every xattr; now a live change lands
				// in the index before the walk's batch is written.
				tt.live(s)
				if err := s.flushPending(ctx); err != nil {
					return err
				}
				for ino, tags := range tt.walkSees {
					if err := fn(ino, "f", []byte(tags)); err != nil {
						return err
					}
				}
				return nil
			})
			if _, err := s.Reindex(ctx, w, func(Progress) {}); err != nil {
				t.Fatal(err)
			}
			got, err := store.Files(ctx, []string{"a"})
			if err != nil {
				t.Fatal(err)
			}
			var ids []graph.FileID
			for _, f := range got {
				ids = append(ids, f.ID)
			}
			if len(ids) != len(tt.want) {
				t.Fatalf("tag a lists %v, want %v", ids, tt.want)
			}
			for i := range ids {
				if ids[i] != tt.want[i] {
					t.Fatalf("tag a lists %v, want %v", ids, tt.want)
				}
			}
		})
	}
}
