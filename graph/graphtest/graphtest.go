// Package graphtest is the behaviour suite every graph.Store backend passes:
// call Run from the backend's tests. Results are checked against a
// brute-force reference model fed the same operations.
package graphtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/graph"
)

// Run runs the suite. open must return a new, empty store for each call and
// arrange for it to be closed with t.Cleanup (closing twice must be harmless:
// one subtest closes its store itself).
func Run(t *testing.T, open func(t *testing.T) graph.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"Tagging", testTagging},
		{"AddRemoveReplace", testAddRemoveReplace},
		{"DropTagless", testDropTagless},
		{"Names", testNames},
		{"Parents", testParents},
		{"Files", testFiles},
		{"CoTags", testCoTags},
		{"Query", testQuery},
		{"Related", testRelated},
		{"CoAccess", testCoAccess},
		{"Forget", testForget},
		{"CreateDeleteTag", testCreateDeleteTag},
		{"InvalidInput", testInvalidInput},
		{"UnknownTags", testUnknownTags},
		{"Concurrent", testConcurrent},
		{"LargeBatch", testLargeBatch},
		{"RandomOps", testRandomOps},
		{"Context", testContext},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			tt.fn(t, &harness{t: t, ctx: ctx, s: open(t), m: newModel()})
		})
	}
}

// harness applies operations to the store and the model alike.
type harness struct {
	t   *testing.T
	ctx context.Context
	s   graph.Store
	m   *model
}

func (h *harness) update(changes ...graph.Change) {
	h.t.Helper()
	if err := h.s.Update(h.ctx, changes); err != nil {
		h.t.Fatalf("Update: %v", err)
	}
	h.m.update(changes)
}

func (h *harness) forget(ids ...graph.FileID) {
	h.t.Helper()
	if err := h.s.Forget(h.ctx, ids); err != nil {
		h.t.Fatalf("Forget(%v): %v", ids, err)
	}
	h.m.forget(ids)
}

func (h *harness) createTag(tag string) {
	h.t.Helper()
	if err := h.s.CreateTag(h.ctx, tag); err != nil {
		h.t.Fatalf("CreateTag(%q): %v", tag, err)
	}
	h.m.tags[tag] = true
}

func (h *harness) addCoAccess(edges ...graph.CoAccess) {
	h.t.Helper()
	if err := h.s.AddCoAccess(h.ctx, edges); err != nil {
		h.t.Fatalf("AddCoAccess: %v", err)
	}
	h.m.addCoAccess(edges)
}

func tc(tag string, n int) graph.TagCount { return graph.TagCount{Tag: tag, Files: n} }

func file(id graph.FileID, name string) graph.File { return graph.File{ID: id, Name: name} }

// tag makes a change adding tags to file id with name.
func tag(id graph.FileID, name string, tags ...string) graph.Change {
	return graph.Change{File: graph.File{ID: id, Name: name}, Add: tags}
}

// checkTags compares Tags and TagsOf (for ids) with the model.
func (h *harness) checkTags(ids ...graph.FileID) {
	h.t.Helper()
	got, err := h.s.Tags(h.ctx)
	if err != nil {
		h.t.Fatalf("Tags: %v", err)
	}
	if want := h.m.tagCounts(); !sameTagCounts(got, want) {
		h.t.Errorf("Tags = %v, want %v", got, want)
	}
	for _, id := range ids {
		got, err := h.s.TagsOf(h.ctx, id)
		if err != nil {
			h.t.Fatalf("TagsOf(%d): %v", id, err)
		}
		if want := h.m.tagsOf(id); !sameStrings(got, want) {
			h.t.Errorf("TagsOf(%d) = %q, want %q", id, got, want)
		}
	}
}

func (h *harness) checkFiles(tags ...string) {
	h.t.Helper()
	got, err := h.s.Files(h.ctx, tags)
	want, werr := h.m.filesWith(tags)
	if werr != nil {
		if !errors.Is(err, graph.ErrNoTag) {
			h.t.Errorf("Files(%q) error = %v, want ErrNoTag", tags, err)
		}
		return
	}
	if err != nil {
		h.t.Fatalf("Files(%q): %v", tags, err)
	}
	if !sameFiles(got, want) {
		h.t.Errorf("Files(%q) = %v, want %v", tags, got, want)
	}
}

func (h *harness) checkQuery(expr string) {
	h.t.Helper()
	e, err := graph.Parse(expr)
	if err != nil {
		h.t.Fatalf("Parse(%q): %v", expr, err)
	}
	h.checkExpr(e)
}

func (h *harness) checkExpr(e graph.Expr) {
	h.t.Helper()
	got, err := h.s.Query(h.ctx, e)
	if err != nil {
		h.t.Fatalf("Query(%v): %v", e, err)
	}
	if want := h.m.query(e); !sameFiles(got, want) {
		h.t.Errorf("Query(%v) = %v, want %v", e, got, want)
	}
}

func (h *harness) checkRelated(id graph.FileID, limit int) []graph.Scored {
	h.t.Helper()
	got, err := h.s.Related(h.ctx, id, limit)
	if err != nil {
		h.t.Fatalf("Related(%d, %d): %v", id, limit, err)
	}
	if want := h.m.related(id, limit); !sameScored(got, want) {
		h.t.Errorf("Related(%d, %d) =\n  %v, want\n  %v", id, limit, got, want)
	}
	return got
}

func (h *harness) checkCoAccessed(id graph.FileID, limit int, halfLife time.Duration, now time.Time) []graph.Scored {
	h.t.Helper()
	got, err := h.s.CoAccessed(h.ctx, id, limit, halfLife, now)
	if err != nil {
		h.t.Fatalf("CoAccessed(%d): %v", id, err)
	}
	if want := h.m.coAccessed(id, limit, halfLife, now); !sameScored(got, want) {
		h.t.Errorf("CoAccessed(%d, %d, %v) =\n  %v, want\n  %v", id, limit, halfLife, got, want)
	}
	return got
}

// checkAll compares every read with the model.
func (h *harness) checkAll() {
	h.t.Helper()
	var ids []graph.FileID
	for id := range h.m.files {
		ids = append(ids, id)
	}
	h.checkTags(ids...)
	for _, tc := range h.m.tagCounts() {
		h.checkFiles(tc.Tag)
		got, err := h.s.CoTags(h.ctx, []string{tc.Tag})
		if err != nil {
			h.t.Fatalf("CoTags(%q): %v", tc.Tag, err)
		}
		if want, _ := h.m.coTags([]string{tc.Tag}); !sameStrings(got, want) {
			h.t.Errorf("CoTags(%q) = %q, want %q", tc.Tag, got, want)
		}
	}
}

func sameStrings(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

func sameFiles(a, b []graph.File) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

func sameTagCounts(a, b []graph.TagCount) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

func sameScored(a, b []graph.Scored) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].File != b[i].File || math.Abs(a[i].Score-b[i].Score) > 1e-9*math.Max(1, math.Abs(b[i].Score)) {
			return false
		}
	}
	return true
}

func ids(fs []graph.File) []graph.FileID {
	out := make([]graph.FileID, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}

func testTagging(t *testing.T, h *harness) {
	h.update(
		tag(1, "a.txt", "music", "jazz"),
		tag(2, "b.txt", "music"),
		tag(3, "c.txt", "photo", "jazz", "photo"), // duplicate tags count once
	)
	h.checkTags(1, 2, 3, 4)
	if got, _ := h.s.TagsOf(h.ctx, 3); !sameStrings(got, []string{"jazz", "photo"}) {
		t.Errorf("TagsOf(3) = %q, want sorted [jazz photo]", got)
	}
	if got, _ := h.s.TagsOf(h.ctx, 4); len(got) != 0 {
		t.Errorf("TagsOf(unknown file) = %q, want none", got)
	}
	want := []graph.TagCount{tc("jazz", 2), tc("music", 2), tc("photo", 1)}
	if got, _ := h.s.Tags(h.ctx); !sameTagCounts(got, want) {
		t.Errorf("Tags = %v, want %v", got, want)
	}
	h.checkFiles("music")
	h.checkFiles("jazz")
	// Adding a tag a file already has changes nothing.
	h.update(tag(1, "", "music"))
	h.checkTags(1)
	if err := h.s.Update(h.ctx, nil); err != nil {
		t.Errorf("Update(nil) = %v", err)
	}
	if err := h.s.Ping(h.ctx); err != nil {
		t.Errorf("Ping = %v", err)
	}
}

func testAddRemoveReplace(t *testing.T, h *harness) {
	steps := []struct {
		ch   graph.Change
		want []string
	}{
		{tag(7, "f", "a", "b"), []string{"a", "b"}},
		{graph.Change{File: graph.File{ID: 7}, Add: []string{"c"}, Remove: []string{"a"}}, []string{"b", "c"}},
		{graph.Change{File: graph.File{ID: 7}, Remove: []string{"zzz-unknown"}}, []string{"b", "c"}},
		// Remove then Add: a tag in both ends up present.
		{graph.Change{File: graph.File{ID: 7}, Add: []string{"b"}, Remove: []string{"b"}}, []string{"b", "c"}},
		{graph.Change{File: graph.File{ID: 7}, Add: []string{"x", "y"}, Replace: true}, []string{"x", "y"}},
		{graph.Change{File: graph.File{ID: 7}, Add: []string{"y"}, Remove: []string{"x"}, Replace: true}, []string{"y"}},
		{graph.Change{File: graph.File{ID: 7}, Add: []string{"d", "c", "a"}}, []string{"a", "c", "d", "y"}},
	}
	for i, st := range steps {
		h.update(st.ch)
		got, err := h.s.TagsOf(h.ctx, 7)
		if err != nil {
			t.Fatal(err)
		}
		if !sameStrings(got, st.want) {
			t.Fatalf("step %d: TagsOf = %q, want %q", i, got, st.want)
		}
		h.checkTags(7)
	}
	// Several changes to one file in one batch apply in order.
	h.update(
		graph.Change{File: graph.File{ID: 8, Name: "g"}, Add: []string{"p"}},
		graph.Change{File: graph.File{ID: 8}, Add: []string{"q"}},
		graph.Change{File: graph.File{ID: 8}, Remove: []string{"p"}},
	)
	h.checkTags(7, 8)
	h.checkFiles("q")
	h.checkAll()
}

func testDropTagless(t *testing.T, h *harness) {
	h.update(tag(1, "one", "a", "b"), tag(2, "two", "a"))
	h.update(graph.Change{File: graph.File{ID: 1}, Remove: []string{"a", "b"}})
	h.checkTags(1, 2)
	h.checkFiles("a")
	h.checkFiles("b")
	h.checkQuery("not a") // file 1 is not tagged any more: not "not a"
	if got, _ := h.s.Files(h.ctx, []string{"b"}); len(got) != 0 {
		t.Errorf("Files(b) = %v after its only file lost it", got)
	}
	// The tag stays, with no files, until deleted.
	want := []graph.TagCount{tc("a", 1), tc("b", 0)}
	if got, _ := h.s.Tags(h.ctx); !sameTagCounts(got, want) {
		t.Errorf("Tags = %v, want %v", got, want)
	}
	// Replace with nothing drops too.
	h.update(graph.Change{File: graph.File{ID: 2}, Replace: true})
	if got, _ := h.s.Files(h.ctx, []string{"a"}); len(got) != 0 {
		t.Errorf("Files(a) = %v after replace with no tags", got)
	}
	// A change with no tags for an unknown file is a no-op.
	h.update(graph.Change{File: graph.File{ID: 99, Name: "ghost"}, Remove: []string{"a"}})
	h.checkQuery("not zzz")
	// A dropped file comes back with a new name.
	h.update(tag(1, "uno", "c"))
	h.checkFiles("c")
	h.checkAll()
}

func testNames(t *testing.T, h *harness) {
	h.update(tag(5, "b", "t"), tag(4, "b", "t"), tag(3, "a", "t"), tag(6, "", "t"), tag(2, "B", "t"), tag(1, "ab", "t"))
	got, err := h.s.Files(h.ctx, []string{"t"})
	if err != nil {
		t.Fatal(err)
	}
	// By name (byte order), then ID.
	want := []graph.File{file(6, ""), file(2, "B"), file(3, "a"), file(1, "ab"), file(4, "b"), file(5, "b")}
	if !sameFiles(got, want) {
		t.Fatalf("Files = %v, want %v", got, want)
	}
	// Rename; an empty name keeps the old one.
	h.update(tag(5, "a0", "u"), graph.Change{File: graph.File{ID: 3}, Add: []string{"u"}})
	h.checkFiles("t")
	h.checkFiles("u")
	h.checkFiles("t", "u")
	got, _ = h.s.Files(h.ctx, []string{"u"})
	if want := []graph.File{file(3, "a"), file(5, "a0")}; !sameFiles(got, want) {
		t.Errorf("Files(u) = %v, want %v", got, want)
	}
	h.checkQuery("t and not u")
	h.checkRelated(3, 0)
	h.update(tag(6, "é ✓ name with spaces", "t"))
	h.checkFiles("t")
	h.checkAll()
}

// tagIn makes a change adding tags to file id with name, in directory parent.
func tagIn(id graph.FileID, name string, parent graph.FileID, tags ...string) graph.Change {
	return graph.Change{File: graph.File{ID: id, Name: name, Parent: parent}, Add: tags}
}

func testParents(t *testing.T, h *harness) {
	h.update(tagIn(1, "a", 10, "t", "r"), tagIn(2, "b", 0, "t"), tagIn(3, "c", 11, "t", "r"), tagIn(4, "d", 1<<62, "t"))
	got := h.checkRelated(1, 0)
	want := map[graph.FileID]graph.FileID{2: 0, 3: 11, 4: 1 << 62}
	for _, s := range got {
		if s.File.Parent != want[s.File.ID] {
			t.Errorf("Related(1): file %d has parent %d, want %d", s.File.ID, s.File.Parent, want[s.File.ID])
		}
	}
	// Files and Query do not return parents.
	h.checkFiles("t")
	h.checkQuery("t and not r")
	// A change without a parent keeps it; a new parent replaces it, with or
	// without a new name.
	h.update(tag(3, "c2", "u"), graph.Change{File: graph.File{ID: 4, Parent: 12}, Add: []string{"u"}}, tagIn(2, "b2", 13, "u"))
	h.checkRelated(1, 0)
	h.checkRelated(4, 0)
	// A file dropped from the index and tagged again starts without one.
	h.update(graph.Change{File: graph.File{ID: 3}, Replace: true}, tag(3, "c3", "t"))
	h.checkRelated(1, 0)
	// Co-accessed files come with theirs.
	h.addCoAccess(graph.CoAccess{A: 1, B: 2, Weight: 1, At: time.Unix(100, 0)}, graph.CoAccess{A: 1, B: 4, Weight: 2, At: time.Unix(100, 0)}, graph.CoAccess{A: 1, B: 99, Weight: 3, At: time.Unix(100, 0)})
	h.checkCoAccessed(1, 0, 0, time.Unix(100, 0))
	h.checkAll()
}

func testFiles(t *testing.T, h *harness) {
	h.update(
		tag(1, "f1", "a", "b", "c"),
		tag(2, "f2", "a", "b"),
		tag(3, "f3", "a"),
		tag(4, "f4", "b", "c"),
	)
	h.createTag("empty")
	tests := []struct {
		tags []string
		want []graph.FileID
		err  error
	}{
		{[]string{"a"}, []graph.FileID{1, 2, 3}, nil},
		{[]string{"a", "b"}, []graph.FileID{1, 2}, nil},
		{[]string{"b", "a"}, []graph.FileID{1, 2}, nil},
		{[]string{"a", "b", "c"}, []graph.FileID{1}, nil},
		{[]string{"c", "a", "a"}, []graph.FileID{1}, nil},
		{[]string{"a", "empty"}, nil, nil},
		{[]string{"empty"}, nil, nil},
		{[]string{"a", "nope"}, nil, graph.ErrNoTag},
		{[]string{"nope"}, nil, graph.ErrNoTag},
	}
	for _, tt := range tests {
		got, err := h.s.Files(h.ctx, tt.tags)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Files(%q) error = %v, want %v", tt.tags, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Files(%q): %v", tt.tags, err)
			continue
		}
		if g := ids(got); !(len(g) == 0 && len(tt.want) == 0) && !reflect.DeepEqual(g, tt.want) {
			t.Errorf("Files(%q) = %v, want %v", tt.tags, g, tt.want)
		}
	}
	if _, err := h.s.Files(h.ctx, nil); err == nil {
		t.Error("Files(no tags) succeeded")
	}
}

func testCoTags(t *testing.T, h *harness) {
	h.update(
		tag(1, "f1", "a", "b", "c", "all"),
		tag(2, "f2", "a", "b", "all"),
		tag(3, "f3", "a", "d", "all"),
		tag(4, "f4", "b", "c", "all", "x"),
	)
	h.createTag("empty")
	tests := []struct {
		tags []string
		want []string
		err  error
	}{
		// "all" is on every file of a: it does not narrow; neither does a.
		{[]string{"a"}, []string{"b", "c", "d"}, nil},
		{[]string{"a", "b"}, []string{"c"}, nil},
		{[]string{"a", "b", "c"}, nil, nil},
		{[]string{"all"}, []string{"a", "b", "c", "d", "x"}, nil},
		{[]string{"b"}, []string{"a", "c", "x"}, nil},
		{[]string{"x"}, nil, nil},
		{[]string{"empty"}, nil, nil},
		{[]string{"a", "nope"}, nil, graph.ErrNoTag},
	}
	for _, tt := range tests {
		got, err := h.s.CoTags(h.ctx, tt.tags)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("CoTags(%q) error = %v, want %v", tt.tags, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("CoTags(%q): %v", tt.tags, err)
			continue
		}
		if !sameStrings(got, tt.want) {
			t.Errorf("CoTags(%q) = %q, want %q", tt.tags, got, tt.want)
		}
	}
}

// dataset tags n files with a deterministic mix of tags t0..t(k-1), some of
// them common and some rare, and returns the tags.
func (h *harness) dataset(n, k int, seed int64) []string {
	h.t.Helper()
	rng := rand.New(rand.NewSource(seed))
	tags := make([]string, k)
	for i := range tags {
		tags[i] = fmt.Sprintf("t%d", i)
	}
	var changes []graph.Change
	for i := 1; i <= n; i++ {
		var ts []string
		for j, tg := range tags {
			// Tag j is on about 1/(j+2) of the files.
			if rng.Intn(j+2) == 0 {
				ts = append(ts, tg)
			}
		}
		if len(ts) == 0 {
			ts = []string{tags[rng.Intn(k)]}
		}
		changes = append(changes, tag(graph.FileID(i), fmt.Sprintf("file-%03d", rng.Intn(n)), ts...))
	}
	h.update(changes...)
	return tags
}

// randomExpr builds a random expression over tags (plus one unknown tag).
func randomExpr(rng *rand.Rand, tags []string, depth int) graph.Expr {
	if depth <= 0 || rng.Intn(4) == 0 {
		if rng.Intn(10) == 0 {
			return graph.Tag{Name: "no-such-tag"}
		}
		return graph.Tag{Name: tags[rng.Intn(len(tags))]}
	}
	switch rng.Intn(3) {
	case 0:
		return graph.And{L: randomExpr(rng, tags, depth-1), R: randomExpr(rng, tags, depth-1)}
	case 1:
		return graph.Or{L: randomExpr(rng, tags, depth-1), R: randomExpr(rng, tags, depth-1)}
	default:
		return graph.Not{X: randomExpr(rng, tags, depth-1)}
	}
}

func testQuery(t *testing.T, h *harness) {
	tags := h.dataset(40, 6, 1)
	h.update(tag(100, "and-file", "and", "to do"))
	for _, q := range []string{
		"t0", "t0 and t1", "t0 or t5", "not t0", "not not t1", "t1 and not t2",
		"(t1 or t2) and (t3 or not t4)", "t0 and t1 and t2 and t3", "t5 or t4 or t3",
		"not (t0 or t1)", "t0 and nosuchtag", "nosuchtag or t5", "not nosuchtag",
		`"and"`, `"and" and "to do"`, `not "to do"`, "T0",
	} {
		h.checkQuery(q)
	}
	rng := rand.New(rand.NewSource(2))
	for i := 0; i < 60; i++ {
		e := randomExpr(rng, tags, 4)
		// Each expression goes through its printed form, as a user types it.
		back, err := graph.Parse(e.String())
		if err != nil {
			t.Fatalf("Parse(%q): %v", e.String(), err)
		}
		h.checkExpr(back)
	}
	if _, err := h.s.Query(h.ctx, nil); err == nil {
		t.Error("Query(nil) succeeded")
	}
}

func testRelated(t *testing.T, h *harness) {
	// 0 carries a rare tag and a common one. 1 shares the rare tag, 2..9
	// share the common tag, 10 shares both, 11 shares nothing.
	ch := []graph.Change{tag(1, "rare-mate", "rare"), tag(0, "self", "rare", "common"), tag(10, "both", "rare", "common"), tag(11, "alone", "other")}
	for i := 2; i <= 9; i++ {
		ch = append(ch, tag(graph.FileID(i), fmt.Sprintf("common-%d", i), "common"))
	}
	h.update(ch...)
	got := h.checkRelated(0, 0)
	if len(got) != 10 {
		t.Fatalf("Related(0) has %d files, want 10 (all but itself and the unrelated one): %v", len(got), got)
	}
	if got[0].File.ID != 10 || got[1].File.ID != 1 {
		t.Errorf("Related(0) ranks %v first, want 10 (both tags) then 1 (the rare tag)", ids([]graph.File{got[0].File, got[1].File}))
	}
	for _, s := range got {
		if s.File.ID == 0 || s.File.ID == 11 {
			t.Errorf("Related(0) includes %d", s.File.ID)
		}
	}
	n := 12.0
	if want := math.Log(1+n/3) + math.Log(1+n/10); math.Abs(got[0].Score-want) > 1e-9 {
		t.Errorf("score of 10 = %v, want log(1+12/3)+log(1+12/10) = %v", got[0].Score, want)
	}
	if got[1].Score <= got[2].Score {
		t.Errorf("a shared rare tag (%v) does not outweigh a shared common one (%v)", got[1].Score, got[2].Score)
	}
	// Ties rank by ID.
	for i := 3; i < len(got); i++ {
		if got[i].Score == got[i-1].Score && got[i].File.ID < got[i-1].File.ID {
			t.Errorf("tie not ordered by ID: %v", got)
		}
	}
	for _, limit := range []int{1, 3, 10, 50} {
		if got := h.checkRelated(0, limit); len(got) > limit {
			t.Errorf("Related(0, %d) returned %d", limit, len(got))
		}
	}
	if got := h.checkRelated(11, 5); len(got) != 0 {
		t.Errorf("Related(11) = %v, want none", got)
	}
	if got := h.checkRelated(999, 5); len(got) != 0 {
		t.Errorf("Related(unknown) = %v, want none", got)
	}
	h.dataset(30, 5, 3)
	for id := graph.FileID(0); id < 32; id += 3 {
		h.checkRelated(id, 7)
	}
}

func testCoAccess(t *testing.T, h *harness) {
	h.update(tag(1, "one", "x"), tag(2, "two", "x"))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	hour := time.Hour
	h.addCoAccess(
		graph.CoAccess{A: 1, B: 2, Weight: 4, At: t0},
		graph.CoAccess{A: 1, B: 3, Weight: 3, At: t0.Add(hour)},
		graph.CoAccess{A: 4, B: 1, Weight: 1, At: t0.Add(hour)},
		graph.CoAccess{A: 1, B: 1, Weight: 100, At: t0}, // self-edges are ignored
	)
	now := t0.Add(hour)
	got := h.checkCoAccessed(1, 0, hour, now)
	// 2 decayed by one half-life: 2; 3: 3; 4: 1.
	wantIDs := []graph.FileID{3, 2, 4}
	if len(got) != 3 {
		t.Fatalf("CoAccessed(1) = %v, want 3 files", got)
	}
	for i, id := range wantIDs {
		if got[i].File.ID != id {
			t.Errorf("CoAccessed(1) = %v, want order %v", got, wantIDs)
			break
		}
	}
	if math.Abs(got[1].Score-2) > 1e-9 {
		t.Errorf("weight 4 one half-life old = %v, want 2", got[1].Score)
	}
	if got[1].File.Name != "two" {
		t.Errorf("co-accessed file 2 named %q, want the indexed name", got[1].File.Name)
	}
	// Both directions.
	h.checkCoAccessed(2, 0, hour, now)
	h.checkCoAccessed(4, 0, hour, now)
	// Weights add up; the edge's time becomes the latest update.
	h.addCoAccess(graph.CoAccess{A: 2, B: 1, Weight: 1, At: t0.Add(2 * hour)})
	now = t0.Add(2 * hour)
	got = h.checkCoAccessed(1, 1, hour, now)
	if len(got) != 1 || got[0].File.ID != 2 || math.Abs(got[0].Score-5) > 1e-9 {
		t.Errorf("CoAccessed(1, limit 1) = %v, want file 2 with 5", got)
	}
	// No decay without a half-life; a time before the update counts as now.
	h.checkCoAccessed(1, 0, 0, now)
	h.checkCoAccessed(1, 0, hour, t0)
	// Many edges in one batch, repeated pairs included.
	var edges []graph.CoAccess
	for i := 0; i < 200; i++ {
		edges = append(edges, graph.CoAccess{A: graph.FileID(10 + i%20), B: graph.FileID(40 + i%7), Weight: float64(i%5 + 1), At: t0.Add(time.Duration(i) * time.Minute)})
	}
	h.addCoAccess(edges...)
	for id := graph.FileID(10); id < 50; id += 7 {
		h.checkCoAccessed(id, 5, 30*time.Minute, t0.Add(4*hour))
	}
	if got := h.checkCoAccessed(999, 5, hour, now); len(got) != 0 {
		t.Errorf("CoAccessed(unknown) = %v", got)
	}
	// Edges survive the file leaving the tag index; Forget removes them.
	h.update(graph.Change{File: graph.File{ID: 2}, Replace: true})
	h.checkCoAccessed(1, 0, hour, now)
	h.forget(2)
	h.checkCoAccessed(1, 0, hour, now)
	if got := h.checkCoAccessed(2, 0, hour, now); len(got) != 0 {
		t.Errorf("CoAccessed(forgotten) = %v", got)
	}
	if err := h.s.AddCoAccess(h.ctx, []graph.CoAccess{{A: 1, B: 2, Weight: math.NaN(), At: now}}); err == nil {
		t.Error("AddCoAccess accepted a NaN weight")
	}
}

func testForget(t *testing.T, h *harness) {
	h.update(tag(1, "a", "x", "y"), tag(2, "b", "x"), tag(3, "c", "y"))
	h.addCoAccess(graph.CoAccess{A: 1, B: 2, Weight: 1, At: time.Unix(100, 0)}, graph.CoAccess{A: 3, B: 1, Weight: 2, At: time.Unix(100, 0)})
	h.forget(1, 42) // an unknown file is fine
	h.checkTags(1, 2, 3)
	h.checkFiles("x")
	h.checkFiles("y")
	h.checkQuery("not x")
	h.checkRelated(2, 0)
	h.checkCoAccessed(2, 0, 0, time.Unix(200, 0))
	h.checkCoAccessed(3, 0, 0, time.Unix(200, 0))
	h.forget()
	h.checkAll()
}

func testCreateDeleteTag(t *testing.T, h *harness) {
	h.createTag("new")
	h.createTag("new") // again: no error
	h.checkTags()
	if got, _ := h.s.Files(h.ctx, []string{"new"}); len(got) != 0 {
		t.Errorf("Files(new) = %v", got)
	}
	h.update(tag(1, "f", "new", "other"))
	h.checkTags(1)
	if err := h.s.DeleteTag(h.ctx, "new"); !errors.Is(err, graph.ErrNotEmpty) {
		t.Errorf("DeleteTag(non-empty) = %v, want ErrNotEmpty", err)
	}
	if err := h.s.DeleteTag(h.ctx, "missing"); !errors.Is(err, graph.ErrNoTag) {
		t.Errorf("DeleteTag(missing) = %v, want ErrNoTag", err)
	}
	h.update(graph.Change{File: graph.File{ID: 1}, Remove: []string{"new"}})
	if err := h.s.DeleteTag(h.ctx, "new"); err != nil {
		t.Fatalf("DeleteTag(emptied) = %v", err)
	}
	delete(h.m.tags, "new")
	h.checkTags(1)
	if _, err := h.s.Files(h.ctx, []string{"new"}); !errors.Is(err, graph.ErrNoTag) {
		t.Errorf("Files(deleted tag) = %v, want ErrNoTag", err)
	}
	if err := h.s.DeleteTag(h.ctx, "new"); !errors.Is(err, graph.ErrNoTag) {
		t.Errorf("DeleteTag twice = %v, want ErrNoTag", err)
	}
	// A deleted tag can come back.
	h.update(tag(2, "g", "new"))
	h.checkAll()
	for _, bad := range []string{"", ".x", "a/b", "a,b", " x", "x\n"} {
		if err := h.s.CreateTag(h.ctx, bad); !errors.Is(err, graph.ErrBadTag) {
			t.Errorf("CreateTag(%q) = %v, want ErrBadTag", bad, err)
		}
	}
}

func testInvalidInput(t *testing.T, h *harness) {
	h.update(tag(1, "f", "ok"))
	bad := [][]graph.Change{
		{tag(2, "g", "fine"), tag(3, "h", "bad/tag")},
		{tag(2, "g", "fine"), tag(3, "h", "")},
		{tag(2, "g", "fine"), tag(3, "h", ".dot")},
		{tag(2, "g/h", "fine")},
		{tag(2, "g\x00", "fine")},
	}
	for _, changes := range bad {
		if err := h.s.Update(h.ctx, changes); err == nil {
			t.Errorf("Update(%v) succeeded", changes)
		}
	}
	if err := h.s.Update(h.ctx, bad[0]); !errors.Is(err, graph.ErrBadTag) {
		t.Errorf("Update with a bad tag = %v, want ErrBadTag", err)
	}
	// Nothing of a rejected batch is applied.
	h.checkAll()
	if _, err := h.s.Files(h.ctx, []string{"fine"}); !errors.Is(err, graph.ErrNoTag) {
		t.Errorf("a rejected batch left tag fine: %v", err)
	}
	// Removing a tag with an invalid name is harmless.
	h.update(graph.Change{File: graph.File{ID: 1}, Remove: []string{"bad/tag"}})
	h.checkAll()
}

func testUnknownTags(t *testing.T, h *harness) {
	h.update(tag(1, "f", "known"))
	if _, err := h.s.Files(h.ctx, []string{"unknown"}); !errors.Is(err, graph.ErrNoTag) {
		t.Errorf("Files(unknown) = %v, want ErrNoTag", err)
	}
	if _, err := h.s.CoTags(h.ctx, []string{"unknown"}); !errors.Is(err, graph.ErrNoTag) {
		t.Errorf("CoTags(unknown) = %v, want ErrNoTag", err)
	}
	// Query treats an unknown tag as carried by no file.
	h.checkQuery("unknown")
	h.checkQuery("not unknown")
	h.checkQuery("known or unknown")
	h.checkQuery(`"with space"`)
}

func testConcurrent(t *testing.T, h *harness) {
	const workers, rounds = 6, 8
	const common = 999999 // a file every worker retags
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*2)
	for w := 0; w < workers; w++ {
		wg.Add(2)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				var changes []graph.Change
				for f := 0; f < 5; f++ {
					id := graph.FileID(w*1000 + r*10 + f)
					changes = append(changes, tag(id, fmt.Sprintf("w%d-%d", w, f), "shared", fmt.Sprintf("w%d", w), fmt.Sprintf("r%d", r)))
				}
				// Every worker also retags one file they all share.
				changes = append(changes, graph.Change{File: graph.File{ID: common, Name: "common"}, Add: []string{"shared", fmt.Sprintf("w%d", w)}})
				if err := h.s.Update(h.ctx, changes); err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", w, r, err)
					return
				}
				if err := h.s.AddCoAccess(h.ctx, []graph.CoAccess{{A: common, B: 2, Weight: 1, At: time.Unix(1000, 0)}}); err != nil {
					errs <- fmt.Errorf("worker %d co-access: %w", w, err)
					return
				}
			}
		}(w)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if _, err := h.s.Tags(h.ctx); err != nil {
					errs <- err
					return
				}
				if _, err := h.s.Files(h.ctx, []string{"shared"}); err != nil && !errors.Is(err, graph.ErrNoTag) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The end state is the union of all the workers' changes.
	for w := 0; w < workers; w++ {
		for r := 0; r < rounds; r++ {
			for f := 0; f < 5; f++ {
				id := graph.FileID(w*1000 + r*10 + f)
				h.m.update([]graph.Change{tag(id, fmt.Sprintf("w%d-%d", w, f), "shared", fmt.Sprintf("w%d", w), fmt.Sprintf("r%d", r))})
			}
		}
		h.m.update([]graph.Change{{File: graph.File{ID: common, Name: "common"}, Add: []string{"shared", fmt.Sprintf("w%d", w)}}})
		for r := 0; r < rounds; r++ {
			h.m.addCoAccess([]graph.CoAccess{{A: common, B: 2, Weight: 1, At: time.Unix(1000, 0)}})
		}
	}
	h.checkAll()
	got := h.checkCoAccessed(common, 0, 0, time.Unix(1000, 0))
	if len(got) != 1 || got[0].Score != float64(workers*rounds) {
		t.Errorf("concurrent co-access adds = %v, want one edge of %d", got, workers*rounds)
	}
}

func testLargeBatch(t *testing.T, h *harness) {
	const n = 5000
	changes := make([]graph.Change, 0, n)
	for i := 0; i < n; i++ {
		changes = append(changes, tag(graph.FileID(i+1), fmt.Sprintf("f%05d", i), "big", fmt.Sprintf("mod7-%d", i%7), fmt.Sprintf("mod11-%d", i%11)))
	}
	start := time.Now()
	h.update(changes...)
	t.Logf("Update of %d files with 3 tags: %v", n, time.Since(start))
	start = time.Now()
	got, err := h.s.Files(h.ctx, []string{"big"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Files of a %d-file tag: %v", n, time.Since(start))
	if len(got) != n || got[0].Name != "f00000" || got[n-1].Name != fmt.Sprintf("f%05d", n-1) {
		t.Errorf("Files(big) has %d files, want %d in name order", len(got), n)
	}
	h.checkTags(1, n)
	h.checkFiles("mod7-3", "mod11-5")
	h.checkQuery("mod7-1 and not mod11-1")
	start = time.Now()
	h.checkRelated(17, 10)
	t.Logf("Related among %d files: %v", n, time.Since(start))
	// Drop every other file in one batch.
	var drop []graph.Change
	for i := 0; i < n; i += 2 {
		drop = append(drop, graph.Change{File: graph.File{ID: graph.FileID(i + 1)}, Replace: true})
	}
	h.update(drop...)
	h.checkTags(1, 2)
	h.checkFiles("big")
	var forget []graph.FileID
	for i := 1; i < n; i += 2 {
		forget = append(forget, graph.FileID(i+1))
	}
	h.forget(forget...)
	h.checkTags(2)
}

func testRandomOps(t *testing.T, h *harness) {
	rng := rand.New(rand.NewSource(7))
	tags := []string{"a", "b", "c", "d", "e", "f", "and", "x y"}
	names := []string{"n1", "n2", "n3", "", "same"}
	parents := []graph.FileID{0, 0, 1, 7, 1 << 40}
	pick := func(k int) []string {
		var out []string
		for i := 0; i < k; i++ {
			out = append(out, tags[rng.Intn(len(tags))])
		}
		return out
	}
	const files = 25
	for op := 0; op < 120; op++ {
		switch rng.Intn(10) {
		case 0, 1, 2, 3, 4:
			var changes []graph.Change
			for i := rng.Intn(4) + 1; i > 0; i-- {
				changes = append(changes, graph.Change{
					File:    graph.File{ID: graph.FileID(rng.Intn(files)), Name: names[rng.Intn(len(names))], Parent: parents[rng.Intn(len(parents))]},
					Add:     pick(rng.Intn(3)),
					Remove:  pick(rng.Intn(3)),
					Replace: rng.Intn(5) == 0,
				})
			}
			h.update(changes...)
		case 5:
			h.forget(graph.FileID(rng.Intn(files)))
		case 6:
			h.addCoAccess(graph.CoAccess{A: graph.FileID(rng.Intn(files)), B: graph.FileID(rng.Intn(files)), Weight: float64(rng.Intn(5) + 1), At: time.Unix(int64(rng.Intn(1000)), 0)})
		case 7:
			tg := tags[rng.Intn(len(tags))]
			err := h.s.DeleteTag(h.ctx, tg)
			switch {
			case !h.m.tags[tg]:
				if !errors.Is(err, graph.ErrNoTag) {
					t.Fatalf("DeleteTag(%q) = %v, want ErrNoTag", tg, err)
				}
			case h.m.count(tg) > 0:
				if !errors.Is(err, graph.ErrNotEmpty) {
					t.Fatalf("DeleteTag(%q) = %v, want ErrNotEmpty", tg, err)
				}
			default:
				if err != nil {
					t.Fatalf("DeleteTag(%q) = %v", tg, err)
				}
				delete(h.m.tags, tg)
			}
		case 8:
			h.createTag(tags[rng.Intn(len(tags))])
		case 9:
			h.checkExpr(randomExpr(rng, tags, 3))
			h.checkRelated(graph.FileID(rng.Intn(files)), rng.Intn(5))
		}
		if op%40 == 39 {
			h.checkAll()
			for id := graph.FileID(0); id < files; id += 4 {
				h.checkRelated(id, 0)
				h.checkCoAccessed(id, 0, 100*time.Second, time.Unix(1000, 0))
			}
		}
	}
}

func testContext(t *testing.T, h *harness) {
	h.update(tag(1, "f", "a"))
	ctx, cancel := context.WithCancel(h.ctx)
	cancel()
	calls := map[string]func() error{
		"Update": func() error { return h.s.Update(ctx, []graph.Change{tag(2, "g", "b")}) },
		"Files":  func() error { _, err := h.s.Files(ctx, []string{"a"}); return err },
		"Tags":   func() error { _, err := h.s.Tags(ctx); return err },
		"Ping":   func() error { return h.s.Ping(ctx) },
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s with a cancelled context succeeded", name)
		} else if !errors.Is(err, context.Canceled) && !errors.Is(err, graph.ErrUnavailable) {
			t.Errorf("%s with a cancelled context = %v, want context.Canceled", name, err)
		}
	}
	h.checkAll()
}

func testClosed(t *testing.T, h *harness) {
	h.update(tag(1, "f", "a"))
	if err := h.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := h.s.Ping(h.ctx); !errors.Is(err, graph.ErrUnavailable) {
		t.Errorf("Ping after Close = %v, want ErrUnavailable", err)
	}
	if _, err := h.s.Files(h.ctx, []string{"a"}); !errors.Is(err, graph.ErrUnavailable) {
		t.Errorf("Files after Close = %v, want ErrUnavailable", err)
	}
	if err := h.s.Update(h.ctx, []graph.Change{tag(2, "g", "a")}); !errors.Is(err, graph.ErrUnavailable) {
		t.Errorf("Update after Close = %v, want ErrUnavailable", err)
	}
}
