package boltstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/graphtest"
	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "graph.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Every test leaves a consistent index behind (unless it closed it).
		if err := s.Check(context.Background()); err != nil && !errors.Is(err, graph.ErrUnavailable) {
			t.Errorf("Check: %v", err)
		}
		s.Close()
	})
	return s
}

func TestSuite(t *testing.T) {
	graphtest.Run(t, func(t *testing.T) graph.Store { return openTemp(t, Options{NoSync: true}) })
}

func TestSuiteBatched(t *testing.T) {
	graphtest.Run(t, func(t *testing.T) graph.Store {
		return openTemp(t, Options{NoSync: true, BatchDelay: time.Millisecond})
	})
}

func TestOpenFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	_, err = Open(path, Options{LockTimeout: 200 * time.Millisecond})
	if err == nil {
		t.Fatal("second Open of a locked file succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open took %v", d)
	}
	if !strings.Contains(err.Error(), "locked by another process") || !errors.Is(err, graph.ErrUnavailable) {
		t.Errorf("second Open: %v", err)
	}
}

func TestOpenGarbage(t *testing.T) {
	dir := t.TempDir()
	cases := map[string][]byte{
		"text":  []byte("this is not a database\n"),
		"zeros": make([]byte, 64<<10),
		"junk":  []byte(strings.Repeat("\xde\xad\xbe\xef", 8192)),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open of garbage succeeded")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error does not name the file: %v", err)
			}
			t.Logf("%s: %v", name, err)
		})
	}
}

func TestOpenForeignBolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Turn it into somebody else's bbolt file.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bMeta) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "not a disgrafs graph index") {
		t.Errorf("Open of a foreign bbolt file: %v", err)
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, []graph.Change{{File: graph.File{ID: 1, Name: "f"}, Add: []string{"a", "b"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTag(ctx, "empty"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tags, err := s.Tags(ctx)
	if err != nil || len(tags) != 3 || tags[0] != (graph.TagCount{Tag: "a", Files: 1}) || tags[2] != (graph.TagCount{Tag: "empty"}) {
		t.Errorf("after reopen: %v, %v", tags, err)
	}
	if err := s.Check(ctx); err != nil {
		t.Error(err)
	}
}

// TestOpenSchema1 opens an index written before file records kept the
// parent: it reads as it is (parents unknown), takes parents from then on,
// and is marked schema 2 so that an older binary refuses it.
func TestOpenSchema1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	changes := []graph.Change{
		{File: graph.File{ID: 1, Name: "one"}, Add: []string{"a", "b"}},
		{File: graph.File{ID: 2, Name: "two"}, Add: []string{"a", "b"}},
		{File: graph.File{ID: 3}, Add: []string{"a"}}, // no name
	}
	if err := s.Update(ctx, changes); err != nil {
		t.Fatal(err)
	}
	// Rewrite it the way schema 1 stored it.
	err = s.db.Update(func(tx *bolt.Tx) error {
		files := tx.Bucket(bFiles)
		for _, ch := range changes {
			r, ok, err := getFile(tx, ch.File.ID)
			if err != nil || !ok {
				return fmt.Errorf("file %d: %v %v", ch.File.ID, ok, err)
			}
			if err := files.Put(fileKey(ch.File.ID), append(u32(r.ord), r.name...)); err != nil {
				return err
			}
		}
		return tx.Bucket(bMeta).Put(kSchema, []byte(schemaID1))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("open a schema 1 index: %v", err)
	}
	defer s.Close()
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	files, err := s.Files(ctx, []string{"a"})
	if want := []graph.File{{ID: 3}, {ID: 1, Name: "one"}, {ID: 2, Name: "two"}}; err != nil || fmt.Sprint(files) != fmt.Sprint(want) {
		t.Errorf("Files(a) = %v, %v; want %v", files, err, want)
	}
	rel, err := s.Related(ctx, 1, 0)
	if err != nil || len(rel) != 2 || rel[0].File != (graph.File{ID: 2, Name: "two"}) || rel[1].File != (graph.File{ID: 3}) {
		t.Errorf("Related(1) = %v, %v", rel, err)
	}
	if err := s.Update(ctx, []graph.Change{{File: graph.File{ID: 2, Parent: 7}}, {File: graph.File{ID: 3, Name: "three", Parent: 8}}}); err != nil {
		t.Fatal(err)
	}
	rel, err = s.Related(ctx, 1, 0)
	if err != nil || len(rel) != 2 || rel[0].File != (graph.File{ID: 2, Name: "two", Parent: 7}) || rel[1].File != (graph.File{ID: 3, Name: "three", Parent: 8}) {
		t.Errorf("Related(1) after parents were set = %v, %v", rel, err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	var schema string
	_ = s.db.View(func(tx *bolt.Tx) error { schema = string(tx.Bucket(bMeta).Get(kSchema)); return nil })
	if schema != schemaID {
		t.Errorf("schema after open = %q, want %q", schema, schemaID)
	}
}

func TestOpenUnknownSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put(kSchema, []byte("disgrafs-graph/3")) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "unknown index schema") {
		t.Errorf("Open of a newer schema: %v", err)
	}
}

func TestCheckFindsDamage(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{NoSync: true})
	if err := s.Update(ctx, []graph.Change{{File: graph.File{ID: 1, Name: "f"}, Add: []string{"a", "b"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx); err != nil {
		t.Fatal(err)
	}
	// Remove a posting behind the index's back.
	err := s.db.Update(func(tx *bolt.Tx) error {
		rec, _, _ := getTag(tx, "a")
		return tx.Bucket(bPostings).Delete(postingKey(rec.id, "f", 1))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "missing from its postings") {
		t.Errorf("Check after damage: %v", err)
	}
	// Repair, so that the cleanup check passes.
	err = s.db.Update(func(tx *bolt.Tx) error {
		rec, _, _ := getTag(tx, "a")
		f, _, _ := getFile(tx, 1)
		return tx.Bucket(bPostings).Put(postingKey(rec.id, "f", 1), u32(f.ord))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A file whose data pages are damaged (the meta pages intact) must give
// errors, never a panic or a crash: Open, every read, Check.
func TestDamagedPages(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	s, err := Open(orig, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var changes []graph.Change
	for i := 1; i <= 3000; i++ {
		changes = append(changes, graph.Change{File: graph.File{ID: graph.FileID(i), Name: fmt.Sprintf("file-%d", i)}, Add: []string{"all", fmt.Sprintf("m%d", i%13), fmt.Sprintf("n%d", i%101)}})
	}
	if err := s.Update(ctx, changes); err != nil {
		t.Fatal(err)
	}
	if err := s.AddCoAccess(ctx, []graph.CoAccess{{A: 1, B: 2, Weight: 1}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	data, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	rng := rand.New(rand.NewSource(1))
	failures := 0
	for round := 0; round < 40; round++ {
		bad := append([]byte(nil), data...)
		// Garble a few bytes in a few pages past the two meta pages.
		for i := 0; i < 1+rng.Intn(4); i++ {
			p := 2 + rng.Intn(len(bad)/page-2)
			for j := 0; j < 1+rng.Intn(64); j++ {
				bad[p*page+rng.Intn(page)] = byte(rng.Intn(256))
			}
		}
		path := filepath.Join(dir, fmt.Sprintf("bad-%d.db", round))
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{})
		if err != nil {
			failures++
			continue
		}
		var errs []error
		_, err = s.Tags(ctx)
		errs = append(errs, err)
		_, err = s.Files(ctx, []string{"all"})
		errs = append(errs, err)
		_, err = s.Related(ctx, 17, 10)
		errs = append(errs, err)
		_, err = s.Query(ctx, graph.Not{X: graph.Tag{Name: "m3"}})
		errs = append(errs, err)
		_, err = s.CoTags(ctx, []string{"m1"})
		errs = append(errs, err)
		errs = append(errs, s.Update(ctx, []graph.Change{{File: graph.File{ID: 5000, Name: "new"}, Add: []string{"m1"}}}))
		errs = append(errs, s.Check(ctx))
		s.Close()
		for _, err := range errs {
			if err != nil {
				failures++
				break
			}
		}
	}
	t.Logf("%d of 40 damaged files reported errors (the others were damaged where nothing looked)", failures)
}
