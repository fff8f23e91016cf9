package fusefs

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/boltstore"
	"github.com/disgrafs/disgrafs/tagging"
	"github.com/disgrafs/disgrafs/tagging/tagtest"
)

func TestOverlay(t *testing.T) {
	f := func(id graph.FileID, name string) graph.File { return graph.File{ID: id, Name: name} }
	tagged := func(id graph.FileID, name string, tags ...string) graph.Change {
		return graph.Change{File: f(id, name), Add: tags, Replace: true}
	}
	query, err := graph.Parse("a and not b")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		dir         *vnode
		q           tagging.Queue
		files       []graph.File
		subdirs     []string
		wantFiles   []graph.File
		wantSubdirs []string
	}{{
		name:      "nothing queued",
		dir:       &vnode{kind: kTagDir, tags: []string{"a"}},
		files:     []graph.File{f(1, "x")},
		wantFiles: []graph.File{f(1, "x")},
	}, {
		name:        "a tagged file joins, its other tags become subdirectories",
		dir:         &vnode{kind: kTagDir, tags: []string{"a"}},
		q:           tagging.Queue{Changes: []graph.Change{tagged(2, "y", "a", "c")}},
		files:       []graph.File{f(1, "x")},
		wantFiles:   []graph.File{f(1, "x"), f(2, "y")},
		wantSubdirs: []string{"c"},
	}, {
		name:      "an untagged file leaves",
		dir:       &vnode{kind: kTagDir, tags: []string{"a"}},
		q:         tagging.Queue{Changes: []graph.Change{tagged(1, "x", "c")}},
		files:     []graph.File{f(1, "x"), f(2, "y")},
		wantFiles: []graph.File{f(2, "y")},
	}, {
		name: "the last change of a file wins (tagged, untagged, tagged again)",
		dir:  &vnode{kind: kTagDir, tags: []string{"a", "b"}},
		q: tagging.Queue{Changes: []graph.Change{
			tagged(3, "z", "a", "b"), tagged(3, "z", "a"), tagged(3, "z", "b", "a"),
		}},
		wantFiles: []graph.File{f(3, "z")},
	}, {
		name:      "a change the index already has is applied twice harmlessly",
		dir:       &vnode{kind: kTagDir, tags: []string{"a"}},
		q:         tagging.Queue{Changes: []graph.Change{tagged(1, "x", "a")}},
		files:     []graph.File{f(1, "x")},
		wantFiles: []graph.File{f(1, "x")},
	}, {
		name:      "a rename renames; a deleted file leaves",
		dir:       &vnode{kind: kTagDir, tags: []string{"a"}},
		q:         tagging.Queue{Changes: []graph.Change{{File: f(1, "renamed")}}, Forgets: []graph.FileID{2}},
		files:     []graph.File{f(1, "x"), f(2, "y")},
		wantFiles: []graph.File{f(1, "renamed")},
	}, {
		name:      "a query evaluates the queued tag set",
		dir:       &vnode{kind: kQueryDir, expr: query},
		q:         tagging.Queue{Changes: []graph.Change{tagged(1, "x", "a", "b"), tagged(2, "y", "a")}},
		files:     []graph.File{f(1, "x")},
		wantFiles: []graph.File{f(2, "y")},
	}, {
		name:        "the tag root gains new tags and keeps the rest",
		dir:         &vnode{kind: kTagsRoot},
		q:           tagging.Queue{Changes: []graph.Change{tagged(1, "x", "new", "a"), tagged(2, "y")}},
		subdirs:     []string{"a", "old"},
		wantSubdirs: []string{"a", "old", "new"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subdirs, files := overlay(tt.dir, tt.q, slices.Clone(tt.subdirs), slices.Clone(tt.files))
			if !slices.Equal(files, tt.wantFiles) {
				t.Errorf("files %v, want %v", files, tt.wantFiles)
			}
			if !slices.Equal(subdirs, tt.wantSubdirs) {
				t.Errorf("subdirectories %v, want %v", subdirs, tt.wantSubdirs)
			}
		})
	}
}

// TestTagListingsShowQueuedChanges: ln and rm in a tag directory show in its
// listing at once while the index has not taken them (here its writer is not
// running at all), and the index agrees once it has.
func TestTagListingsShowQueuedChanges(t *testing.T) {
	store, err := boltstore.Open(filepath.Join(t.TempDir(), "tags.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	files := tagtest.NewMemFiles()
	// A short timeout: each tag change waits this long for an index that
	// never takes it, then returns with the change queued.
	svc := tagging.New(files, store, quiet, 50*time.Millisecond)
	if err := store.CreateTag(context.Background(), "cat"); err != nil {
		t.Fatal(err)
	}
	l, _, lookup := tagsLayerOverFiles(svc)
	hdr := func(ino uint64) fuse.InHeader { return fuse.InHeader{NodeId: ino} }
	tagsRoot, _ := lookup(1, ".tags")
	catDir, st := lookup(tagsRoot, "cat")
	if st != fuse.OK {
		t.Fatalf("lookup .tags/cat: %v", st)
	}
	for step, want := range [][]string{{"file1", "file2"}, {"file2"}} {
		switch step {
		case 0:
			for _, ino := range []uint64{11, 12} {
				var eo fuse.EntryOut
				if st := l.Link(nil, &fuse.LinkIn{InHeader: hdr(catDir), Oldnodeid: ino}, "x", &eo); st != fuse.OK {
					t.Fatalf("ln %d into cat: %v", ino, st)
				}
			}
		case 1:
			h := hdr(catDir)
			if st := l.Unlink(nil, &h, "file1"); st != fuse.OK {
				t.Fatalf("rm .tags/cat/file1 right after ln: %v", st)
			}
		}
		for _, name := range []string{"file1", "file2"} {
			_, st := lookup(catDir, name)
			if (st == fuse.OK) != slices.Contains(want, name) {
				t.Errorf("step %d: lookup .tags/cat/%s: %v, want it listed = %v", step, name, st, slices.Contains(want, name))
			}
		}
	}
	if svc.Pending() == 0 {
		t.Fatal("the index took the changes: the test no longer tests the queue")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := svc.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	got, err := store.Files(ctx, []string{"cat"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != 12 {
		t.Fatalf("the index lists %v in cat, want file 12 alone", got)
	}
}
