package boltstore

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"sort"
	"testing"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/internal/logic"
)

// TestRelatedDenseAndSparse checks Related against brute force on an index
// where some files share only rare tags (scores read back through the list
// of entries in use) and others common ones (read back by a pass over the
// whole array).
func TestRelatedDenseAndSparse(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, Options{NoSync: true})
	rng := rand.New(rand.NewSource(3))
	const files = 1500
	tags := map[graph.FileID][]string{}
	var changes []graph.Change
	for i := 1; i <= files; i++ {
		id := graph.FileID(i)
		set := map[string]bool{}
		for k := rng.Intn(4) + 1; k > 0; k-- {
			set[fmt.Sprintf("rare%03d", rng.Intn(600))] = true
		}
		if i%3 == 0 {
			set["common"] = true
		}
		if i%2 == 0 {
			set[fmt.Sprintf("mid%d", rng.Intn(3))] = true
		}
		for tg := range set {
			tags[id] = append(tags[id], tg)
		}
		sort.Strings(tags[id])
		changes = append(changes, graph.Change{File: graph.File{ID: id, Name: fmt.Sprintf("f%d", i), Parent: graph.FileID(i % 7)}, Add: tags[id]})
	}
	if err := s.Update(ctx, changes); err != nil {
		t.Fatal(err)
	}
	df := map[string]int{}
	for _, ts := range tags {
		for _, tg := range ts {
			df[tg]++
		}
	}
	want := func(id graph.FileID, limit int) []graph.Scored {
		scores := map[graph.FileID]float64{}
		for _, tg := range tags[id] { // name order, as the store adds them up
			w := logic.IDF(files, df[tg])
			for other, ts := range tags {
				if other != id && sort.SearchStrings(ts, tg) < len(ts) && ts[sort.SearchStrings(ts, tg)] == tg {
					scores[other] += w
				}
			}
		}
		out := logic.Top(scores, limit)
		for i := range out {
			f := out[i].File.ID
			out[i].File = graph.File{ID: f, Name: fmt.Sprintf("f%d", f), Parent: f % 7}
		}
		return out
	}
	dense, sparse := 0, 0
	for q := 0; q < 80; q++ {
		id := graph.FileID(rng.Intn(files) + 1)
		postings := 0
		for _, tg := range tags[id] {
			postings += df[tg]
		}
		if postings >= files/4 {
			dense++
		} else {
			sparse++
		}
		for _, limit := range []int{0, 1, 10} {
			got, err := s.Related(ctx, id, limit)
			if err != nil {
				t.Fatal(err)
			}
			w := want(id, limit)
			same := len(got) == len(w)
			for i := 0; same && i < len(got); i++ {
				same = got[i].File == w[i].File && math.Abs(got[i].Score-w[i].Score) <= 1e-9*math.Max(1, w[i].Score)
			}
			if !same {
				t.Fatalf("Related(%d, %d) (%d postings) =\n  %v, want\n  %v", id, limit, postings, got, w)
			}
		}
	}
	if dense < 5 || sparse < 5 {
		t.Fatalf("%d dense and %d sparse queries: the data set should give both", dense, sparse)
	}
}
