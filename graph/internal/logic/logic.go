// Package logic holds the semantics the graph backends share, so that they
// agree exactly: how a Change applies, validation, idf weights, decay, ranking
// and ordering.
package logic

import (
	"container/heap"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/disgrafs/disgrafs/graph"
)

// MaxNameBytes bounds an indexed file name (Linux allows 255; leave room).
const MaxNameBytes = 1024

// CheckChanges validates a batch before anything is written: every added tag
// must pass graph.ValidTag, and names must be base names.
func CheckChanges(changes []graph.Change) error {
	for i, ch := range changes {
		if err := CheckName(ch.File.Name); err != nil {
			return fmt.Errorf("change %d (file %d): %w", i, ch.File.ID, err)
		}
		for _, t := range ch.Add {
			if err := graph.ValidTag(t); err != nil {
				return fmt.Errorf("change %d (file %d): %w", i, ch.File.ID, err)
			}
		}
	}
	return nil
}

// CheckName validates a file name for the index.
func CheckName(name string) error {
	switch {
	case len(name) > MaxNameBytes:
		return fmt.Errorf("file name longer than %d bytes", MaxNameBytes)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("file name %q contains '/' or NUL", name)
	}
	return nil
}

// Apply returns the tags a file has after ch, given its current tags: sorted,
// without duplicates.
func Apply(cur []string, ch graph.Change) []string {
	set := make(map[string]bool, len(cur)+len(ch.Add))
	if !ch.Replace {
		for _, t := range cur {
			set[t] = true
		}
		for _, t := range ch.Remove {
			delete(set, t)
		}
	}
	for _, t := range ch.Add {
		set[t] = true
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// IDF is the weight of a shared tag carried by df of n tagged files.
func IDF(n, df int) float64 {
	if df <= 0 {
		return 0
	}
	if n < df {
		n = df
	}
	return math.Log(1 + float64(n)/float64(df))
}

// Decay is weight w last updated at, seen at now, halved every halfLife
// (halfLife <= 0: no decay; at in the future counts as now).
func Decay(w float64, at, now time.Time, halfLife time.Duration) float64 {
	if halfLife <= 0 {
		return w
	}
	age := now.Sub(at)
	if age <= 0 {
		return w
	}
	return w * math.Exp2(-float64(age)/float64(halfLife))
}

// CheckCoAccess validates edges.
func CheckCoAccess(edges []graph.CoAccess) error {
	for i, e := range edges {
		if math.IsNaN(e.Weight) || math.IsInf(e.Weight, 0) {
			return fmt.Errorf("co-access edge %d (%d-%d): weight %v is not finite", i, e.A, e.B, e.Weight)
		}
	}
	return nil
}

// SortFiles orders files by name, then ID.
func SortFiles(fs []graph.File) {
	sort.Slice(fs, func(i, j int) bool { return FileLess(fs[i], fs[j]) })
}

// FileLess is the order of file listings: by name, then ID.
func FileLess(a, b graph.File) bool {
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.ID < b.ID
}

// Better is the order of rankings: higher score first, then lower ID.
func Better(a, b graph.Scored) bool {
	if a.Score != b.Score {
		return a.Score > b.Score
	}
	return a.File.ID < b.File.ID
}

// Top returns the limit best entries of scores (all when limit <= 0), best
// first. Entries with a score <= 0 are left out. Names are not filled in.
func Top(scores map[graph.FileID]float64, limit int) []graph.Scored {
	if limit <= 0 || limit >= len(scores) {
		out := make([]graph.Scored, 0, len(scores))
		for id, s := range scores {
			if s > 0 {
				out = append(out, graph.Scored{File: graph.File{ID: id}, Score: s})
			}
		}
		sort.Slice(out, func(i, j int) bool { return Better(out[i], out[j]) })
		return out
	}
	h := make(worstFirst, 0, limit+1)
	for id, s := range scores {
		if s <= 0 {
			continue
		}
		e := graph.Scored{File: graph.File{ID: id}, Score: s}
		if len(h) < limit {
			heap.Push(&h, e)
		} else if Better(e, h[0]) {
			h[0] = e
			heap.Fix(&h, 0)
		}
	}
	out := []graph.Scored(h)
	sort.Slice(out, func(i, j int) bool { return Better(out[i], out[j]) })
	return out
}

// worstFirst is a heap whose root is the worst entry.
type worstFirst []graph.Scored

func (h worstFirst) Len() int           { return len(h) }
func (h worstFirst) Less(i, j int) bool { return Better(h[j], h[i]) }
func (h worstFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *worstFirst) Push(x any)        { *h = append(*h, x.(graph.Scored)) }
func (h *worstFirst) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Matcher evaluates an expression against files described by which of the
// expression's tags they carry, as bit sets.
type Matcher struct {
	Expr graph.Expr
	// Tags are the expression's tags; bit i of a Bits stands for Tags[i].
	Tags  []string
	index map[string]int
	// MatchesUntagged is whether a file carrying none of Tags matches; then
	// every tagged file is a candidate, not only those carrying one of Tags.
	MatchesUntagged bool
}

// Bits records which of a Matcher's tags a file carries.
type Bits [(graph.MaxExprTags + 63) / 64]uint64

// Set marks tag i.
func (b *Bits) Set(i int) { b[i/64] |= 1 << (i % 64) }

// Has reports tag i.
func (b *Bits) Has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }

// NewMatcher prepares e, which must hold at most graph.MaxExprTags tags.
func NewMatcher(e graph.Expr) (*Matcher, error) {
	if e == nil {
		return nil, fmt.Errorf("nil expression")
	}
	tags := graph.TagsIn(e)
	if len(tags) > graph.MaxExprTags {
		return nil, fmt.Errorf("expression refers to %d tags, more than %d", len(tags), graph.MaxExprTags)
	}
	m := &Matcher{Expr: e, Tags: tags, index: make(map[string]int, len(tags))}
	for i, t := range tags {
		m.index[t] = i
	}
	m.MatchesUntagged = graph.Eval(e, func(string) bool { return false })
	return m, nil
}

// Index is the bit of tag t, or -1.
func (m *Matcher) Index(t string) int {
	if i, ok := m.index[t]; ok {
		return i
	}
	return -1
}

// Match reports whether a file carrying the tags in b matches.
func (m *Matcher) Match(b *Bits) bool {
	return graph.Eval(m.Expr, func(t string) bool {
		i, ok := m.index[t]
		return ok && b.Has(i)
	})
}
