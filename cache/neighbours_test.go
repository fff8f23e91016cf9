package cache

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/graph"
)

// fakeGraph answers the ranking's questions from maps and counts them.
type fakeGraph struct {
	tagsOf    map[uint64][]string
	tagsOfErr error
	counts    map[string]int
	files     map[string][]graph.File
	related   map[uint64][]uint64
	co        map[uint64][]uint64

	mu    sync.Mutex
	calls map[string]int
}

func (g *fakeGraph) count(what string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.calls == nil {
		g.calls = map[string]int{}
	}
	g.calls[what]++
}

func (g *fakeGraph) called(what string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[what]
}

func scored(ids []uint64) []graph.Scored {
	out := make([]graph.Scored, len(ids))
	for i, id := range ids {
		out[i] = graph.Scored{File: graph.File{ID: graph.FileID(id)}, Score: float64(len(ids) - i)}
	}
	return out
}

func (g *fakeGraph) Tags(ctx context.Context) ([]graph.TagCount, error) {
	g.count("Tags")
	var out []graph.TagCount
	for t, n := range g.counts {
		out = append(out, graph.TagCount{Tag: t, Files: n})
	}
	return out, nil
}

func (g *fakeGraph) TagsOf(ctx context.Context, id graph.FileID) ([]string, error) {
	g.count("TagsOf")
	return g.tagsOf[uint64(id)], g.tagsOfErr
}

func (g *fakeGraph) Files(ctx context.Context, tags []string) ([]graph.File, error) {
	g.count("Files " + tags[0])
	fs, ok := g.files[tags[0]]
	if !ok {
		return nil, graph.ErrNoTag
	}
	return slices.Clone(fs), nil
}

func (g *fakeGraph) Related(ctx context.Context, id graph.FileID, limit int) ([]graph.Scored, error) {
	g.count("Related")
	return scored(g.related[uint64(id)]), nil
}

func (g *fakeGraph) CoAccessed(ctx context.Context, id graph.FileID, limit int, halfLife time.Duration, now time.Time) ([]graph.Scored, error) {
	g.count("CoAccessed")
	return scored(g.co[uint64(id)]), nil
}

// fakeDirs is one namespace: each file's parent and each directory's files.
type fakeDirs struct {
	parent    map[uint64]uint64
	parentErr error
	files     map[uint64][]graph.File

	mu    sync.Mutex
	lists int
}

func (d *fakeDirs) Parent(ctx context.Context, ino uint64) (uint64, error) {
	return d.parent[ino], d.parentErr
}

func (d *fakeDirs) Files(ctx context.Context, dir uint64) ([]graph.File, error) {
	d.mu.Lock()
	d.lists++
	d.mu.Unlock()
	fs, ok := d.files[dir]
	if !ok {
		return nil, errors.New("no such directory")
	}
	return slices.Clone(fs), nil
}

func file(id uint64, name string) graph.File { return graph.File{ID: graph.FileID(id), Name: name} }

// The opened file is 1 ("b" in directory 100, whose other files are 2 "a",
// 3 "c", 4 "d" and 5 "e"), tagged x and y.
func testDirs() *fakeDirs {
	return &fakeDirs{
		parent: map[uint64]uint64{1: 100},
		files:  map[uint64][]graph.File{100: {file(5, "e"), file(3, "c"), file(1, "b"), file(4, "d"), file(2, "a")}},
	}
}

func testGraph() *fakeGraph {
	return &fakeGraph{
		tagsOf: map[uint64][]string{1: {"x", "y"}},
		counts: map[string]int{"x": 3, "y": 2},
		files: map[string][]graph.File{
			"x": {file(20, "c"), file(1, "b"), file(21, "a")},
			"y": {file(22, "n"), file(1, "m")},
		},
		related: map[uint64][]uint64{1: {10, 11}},
		co:      map[uint64][]uint64{1: {12, 10}},
	}
}

func TestRankingNeighbours(t *testing.T) {
	for _, c := range []struct {
		name      string
		graph     func(*fakeGraph) // nil: tags are off
		available bool
		dirs      func(*fakeDirs)
		limit     int
		skip      []uint64
		want      []uint64
	}{
		{
			name: "tags off: the next files of the directory in name order", limit: 10,
			want: []uint64{3, 4, 5},
		},
		{
			name: "tags off, limited", limit: 2,
			want: []uint64{3, 4},
		},
		{
			name: "graph unavailable: the directory only", graph: func(*fakeGraph) {}, available: false, limit: 10,
			want: []uint64{3, 4, 5},
		},
		{
			name: "shared tags, co-access, the tags' name order, then the directory", graph: func(*fakeGraph) {}, available: true, limit: 10,
			want: []uint64{10, 11, 12, 20, 22, 3, 4, 5},
		},
		{
			name: "the limit ends the ranking in its first source", graph: func(*fakeGraph) {}, available: true, limit: 1,
			want: []uint64{10},
		},
		{
			name: "the limit ends the ranking in the tags' name order", graph: func(*fakeGraph) {}, available: true, limit: 4,
			want: []uint64{10, 11, 12, 20},
		},
		{
			name: "skipped and repeated files are left out", graph: func(*fakeGraph) {}, available: true, limit: 10, skip: []uint64{11, 3},
			want: []uint64{10, 12, 20, 22, 4, 5},
		},
		{
			name: "one tag: every file of it ties, no shared-tag ranking", available: true, limit: 10,
			graph: func(g *fakeGraph) { g.tagsOf[1] = []string{"x"} },
			want:  []uint64{12, 10, 20, 3, 4, 5},
		},
		{
			name: "tags spanning more than relatedPostings files: no shared-tag ranking", available: true, limit: 10,
			graph: func(g *fakeGraph) { g.counts = map[string]int{"x": relatedPostings, "y": 1} },
			want:  []uint64{12, 10, 20, 22, 3, 4, 5},
		},
		{
			name: "tags at relatedPostings files: shared-tag ranking", available: true, limit: 10,
			graph: func(g *fakeGraph) { g.counts = map[string]int{"x": relatedPostings - 1, "y": 1} },
			want:  []uint64{10, 11, 12, 20, 22, 3, 4, 5},
		},
		{
			name: "a tag without a count: no shared-tag ranking", available: true, limit: 10,
			graph: func(g *fakeGraph) { delete(g.counts, "y") },
			want:  []uint64{12, 10, 20, 22, 3, 4, 5},
		},
		{
			name: "a tag that cannot be listed is passed over", available: true, limit: 10,
			graph: func(g *fakeGraph) { delete(g.files, "x") },
			want:  []uint64{10, 11, 12, 22, 3, 4, 5},
		},
		{
			name: "the file's tags unknown: co-access and the directory", available: true, limit: 10,
			graph: func(g *fakeGraph) { g.tagsOfErr = graph.ErrUnavailable },
			want:  []uint64{12, 10, 3, 4, 5},
		},
		{
			name: "no parent: the graph only", graph: func(*fakeGraph) {}, available: true, limit: 10,
			dirs: func(d *fakeDirs) { d.parent = nil },
			want: []uint64{10, 11, 12, 20, 22},
		},
		{
			name: "the parent unknown: the graph only", graph: func(*fakeGraph) {}, available: true, limit: 10,
			dirs: func(d *fakeDirs) { d.parentErr = errors.New("gone") },
			want: []uint64{10, 11, 12, 20, 22},
		},
		{
			name: "the directory cannot be listed", limit: 10,
			dirs: func(d *fakeDirs) { d.files = nil },
			want: nil,
		},
		{
			name: "the file is no longer in its directory's listing", limit: 10,
			dirs: func(d *fakeDirs) { d.files[100] = d.files[100][:2] },
			want: nil,
		},
		{
			name: "equal names are ordered by inode", limit: 10,
			dirs: func(d *fakeDirs) {
				d.files[100] = []graph.File{file(9, "b"), file(1, "b"), file(7, "b"), file(2, "a")}
			},
			want: []uint64{7, 9},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			dirs := testDirs()
			if c.dirs != nil {
				c.dirs(dirs)
			}
			var r *Ranking
			if c.graph == nil {
				r = NewRanking(nil, nil, dirs)
			} else {
				g := testGraph()
				c.graph(g)
				available := c.available
				r = NewRanking(g, func() bool { return available }, dirs)
			}
			var skip func(uint64) bool
			if c.skip != nil {
				skip = func(ino uint64) bool { return slices.Contains(c.skip, ino) }
			}
			got, err := r.Neighbours(context.Background(), 1, c.limit, skip)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("Neighbours(1, %d) = %v, want %v", c.limit, got, c.want)
			}
		})
	}
}

// Listings of tags and directories and the tags' counts are read once per
// listTTL, however many opens ask.
func TestRankingRemembersListings(t *testing.T) {
	g, dirs := testGraph(), testDirs()
	r := NewRanking(g, nil, dirs)
	for range 5 {
		if _, err := r.Neighbours(context.Background(), 1, 10, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, what := range []string{"Tags", "Files x", "Files y"} {
		if n := g.called(what); n != 1 {
			t.Errorf("%s called %d times, want 1", what, n)
		}
	}
	if dirs.lists != 1 {
		t.Errorf("the directory was listed %d times, want 1", dirs.lists)
	}
	// Per-file answers are never remembered.
	if n := g.called("TagsOf"); n != 5 {
		t.Errorf("TagsOf called %d times, want 5", n)
	}
}
