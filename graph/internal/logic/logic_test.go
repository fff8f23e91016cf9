package logic

import (
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/graph"
)

func TestApply(t *testing.T) {
	tests := []struct {
		cur  []string
		ch   graph.Change
		want []string
	}{
		{nil, graph.Change{Add: []string{"b", "a", "b"}}, []string{"a", "b"}},
		{[]string{"a", "b"}, graph.Change{Remove: []string{"a"}, Add: []string{"c"}}, []string{"b", "c"}},
		{[]string{"a"}, graph.Change{Remove: []string{"a"}, Add: []string{"a"}}, []string{"a"}},
		{[]string{"a", "b"}, graph.Change{Replace: true, Add: []string{"x"}, Remove: []string{"x"}}, []string{"x"}},
		{[]string{"a"}, graph.Change{Replace: true}, []string{}},
		{[]string{"a"}, graph.Change{Remove: []string{"zz"}}, []string{"a"}},
	}
	for _, tt := range tests {
		if got := Apply(tt.cur, tt.ch); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Apply(%q, %+v) = %q, want %q", tt.cur, tt.ch, got, tt.want)
		}
	}
}

func TestCheckChanges(t *testing.T) {
	tests := []struct {
		ch graph.Change
		ok bool
	}{
		{graph.Change{File: graph.File{Name: "a b.txt"}, Add: []string{"x"}}, true},
		{graph.Change{File: graph.File{Name: "a/b"}}, false},
		{graph.Change{File: graph.File{Name: "a\x00"}}, false},
		{graph.Change{Add: []string{".x"}}, false},
		{graph.Change{Remove: []string{".x"}}, true},
	}
	for _, tt := range tests {
		if err := CheckChanges([]graph.Change{tt.ch}); (err == nil) != tt.ok {
			t.Errorf("CheckChanges(%+v) = %v", tt.ch, err)
		}
	}
}

func TestIDFAndDecay(t *testing.T) {
	if got, want := IDF(100, 10), math.Log(11); got != want {
		t.Errorf("IDF(100, 10) = %v, want %v", got, want)
	}
	if IDF(100, 0) != 0 || IDF(5, 10) != math.Log(2) {
		t.Error("IDF edge cases")
	}
	if IDF(1000, 1) <= IDF(1000, 500) {
		t.Error("a rare tag does not weigh more")
	}
	t0 := time.Unix(1000, 0)
	tests := []struct {
		at, now  time.Time
		halfLife time.Duration
		want     float64
	}{
		{t0, t0, time.Hour, 8},
		{t0, t0.Add(time.Hour), time.Hour, 4},
		{t0, t0.Add(3 * time.Hour), time.Hour, 1},
		{t0, t0.Add(-time.Hour), time.Hour, 8},
		{t0, t0.Add(100 * time.Hour), 0, 8},
	}
	for _, tt := range tests {
		if got := Decay(8, tt.at, tt.now, tt.halfLife); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("Decay(8, %v later, half-life %v) = %v, want %v", tt.now.Sub(tt.at), tt.halfLife, got, tt.want)
		}
	}
}

func TestTop(t *testing.T) {
	scores := map[graph.FileID]float64{5: 1, 3: 2, 4: 2, 9: 0.5, 7: 0, 8: -1, 1: 2}
	ids := func(s []graph.Scored) []graph.FileID {
		var out []graph.FileID
		for _, x := range s {
			out = append(out, x.File.ID)
		}
		return out
	}
	tests := []struct {
		limit int
		want  []graph.FileID
	}{
		{0, []graph.FileID{1, 3, 4, 5, 9}},
		{2, []graph.FileID{1, 3}},
		{4, []graph.FileID{1, 3, 4, 5}},
		{10, []graph.FileID{1, 3, 4, 5, 9}},
	}
	for _, tt := range tests {
		if got := ids(Top(scores, tt.limit)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Top(limit %d) = %v, want %v", tt.limit, got, tt.want)
		}
	}
}

func TestMatcher(t *testing.T) {
	e, err := graph.Parse("a and not (b or c)")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMatcher(e)
	if err != nil {
		t.Fatal(err)
	}
	if m.MatchesUntagged {
		t.Error("a and ... matches untagged files")
	}
	var b Bits
	b.Set(m.Index("a"))
	if !m.Match(&b) {
		t.Error("{a} does not match")
	}
	b.Set(m.Index("c"))
	if m.Match(&b) {
		t.Error("{a, c} matches")
	}
	if m.Index("zz") != -1 {
		t.Error("unknown tag has an index")
	}
	n, _ := NewMatcher(graph.Not{X: graph.Tag{Name: "a"}})
	if !n.MatchesUntagged {
		t.Error("not a does not match untagged files")
	}
	var hi Bits
	hi.Set(255)
	if !hi.Has(255) || hi.Has(254) {
		t.Error("bit 255")
	}
	if _, err := NewMatcher(nil); err == nil {
		t.Error("NewMatcher(nil) succeeded")
	}
}

// RankRelated against brute force on random data sets, and how much it
// reads.
func TestRankRelated(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	asked := 0
	defer func() {
		if asked == 0 {
			t.Error("RankRelated never asked about candidates")
		}
	}()
	for round := 0; round < 400; round++ {
		nfiles, ntags := 2+rng.Intn(300), 1+rng.Intn(30)
		if round%4 == 0 {
			nfiles, ntags = 2000, 4 // few tags, one on every file: worth asking
		}
		members := map[string][]graph.FileID{}
		fileTags := map[graph.FileID][]string{}
		for f := 1; f <= nfiles; f++ {
			for tg := 0; tg < ntags; tg++ {
				// Tag tg on about 1/(tg+1) of the files; tag 0 on all.
				if rng.Intn(tg+1) == 0 {
					name := fmt.Sprintf("t%02d", tg)
					members[name] = append(members[name], graph.FileID(f))
					fileTags[graph.FileID(f)] = append(fileTags[graph.FileID(f)], name)
				}
			}
		}
		self := graph.FileID(1 + rng.Intn(nfiles))
		var tags []TagDF
		for _, name := range fileTags[self] {
			tags = append(tags, TagDF{Name: name, DF: len(members[name])})
		}
		limit := rng.Intn(12)
		// Brute force, in name order.
		scores := map[graph.FileID]float64{}
		sorted := append([]string(nil), fileTags[self]...)
		sort.Strings(sorted)
		for _, name := range sorted {
			w := IDF(nfiles, len(members[name]))
			for _, f := range members[name] {
				if f != self {
					scores[f] += w
				}
			}
		}
		want := Top(scores, limit)
		read := 0
		got, err := RankRelated(self, nfiles, tags, limit,
			func(tag string) ([]graph.FileID, error) { read += len(members[tag]); return members[tag], nil },
			func(tag string, ids []graph.FileID) ([]graph.FileID, error) {
				read += len(ids)
				asked++
				var out []graph.FileID
				for _, id := range ids {
					for _, x := range fileTags[id] {
						if x == tag {
							out = append(out, id)
						}
					}
				}
				return out, nil
			})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("round %d (files %d, tags %d, limit %d):\n got  %v\n want %v", round, nfiles, ntags, limit, got, want)
		}
	}
}
