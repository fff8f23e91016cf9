package logic

import (
	"container/heap"
	"sort"

	"github.com/disgrafs/disgrafs/graph"
)

// TagDF is one of a file's tags and how many files carry it.
type TagDF struct {
	Name string
	DF   int
}

// RankRelated ranks the files sharing tags with self (see graph.Store's
// Related) for a backend where reading a tag's members is costly. It reads
// the tags rarest (heaviest) first with members; once the weight of the
// tags left cannot lift a file that has shared nothing so far into the top
// limit, it only updates the candidates it has, drops those that cannot
// reach the top any more, and, where that is cheaper than reading the tag,
// asks having which of them carry each further tag. The result is exact: the
// same as summing every tag, in name order, over every file.
func RankRelated(self graph.FileID, n int, tags []TagDF, limit int,
	members func(tag string) ([]graph.FileID, error),
	having func(tag string, ids []graph.FileID) ([]graph.FileID, error),
) ([]graph.Scored, error) {
	type tagW struct {
		TagDF
		w    float64
		rank int // position in name order
	}
	order := make([]tagW, len(tags))
	for i, t := range tags {
		order[i] = tagW{TagDF: t, w: IDF(n, t.DF)}
	}
	sort.Slice(order, func(i, j int) bool { return order[i].Name < order[j].Name })
	for i := range order {
		order[i].rank = i
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i].w > order[j].w })
	rem := make([]float64, len(order)+1)
	for i := len(order) - 1; i >= 0; i-- {
		rem[i] = rem[i+1] + order[i].w
	}
	type cand struct {
		partial float64
		shared  []int // indexes into order
	}
	cands := map[graph.FileID]*cand{}
	closed := false
	for i, t := range order {
		if limit > 0 && len(cands) > limit {
			kth := kthLargest(cands, limit, func(c *cand) float64 { return c.partial })
			cut := kth - 1e-9*max(1, kth)
			if rem[i] < cut {
				closed = true
			}
			if closed {
				for id, c := range cands {
					if c.partial+rem[i] < cut {
						delete(cands, id)
					}
				}
			}
		}
		var ids []graph.FileID
		var err error
		// Asking about a candidate costs about one look at each of its tags
		// (as many as self's, say); reading a tag costs one look per member.
		if closed && len(cands)*len(order) < t.DF {
			ask := make([]graph.FileID, 0, len(cands))
			for id := range cands {
				ask = append(ask, id)
			}
			sort.Slice(ask, func(i, j int) bool { return ask[i] < ask[j] })
			ids, err = having(t.Name, ask)
		} else {
			ids, err = members(t.Name)
		}
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			if id == self {
				continue
			}
			c := cands[id]
			if c == nil {
				if closed {
					continue
				}
				c = &cand{}
				cands[id] = c
			}
			c.partial += t.w
			c.shared = append(c.shared, i)
		}
	}
	// Exact scores: the shared tags' weights added in name order.
	scores := make(map[graph.FileID]float64, len(cands))
	for id, c := range cands {
		sort.Slice(c.shared, func(a, b int) bool { return order[c.shared[a]].rank < order[c.shared[b]].rank })
		s := 0.0
		for _, i := range c.shared {
			s += order[i].w
		}
		scores[id] = s
	}
	return Top(scores, limit), nil
}

// kthLargest is the k-th largest of score over m (k <= len(m)).
func kthLargest[K comparable, V any](m map[K]V, k int, score func(V) float64) float64 {
	h := make(minHeap, 0, k)
	for _, v := range m {
		s := score(v)
		if len(h) < k {
			heap.Push(&h, s)
		} else if s > h[0] {
			h[0] = s
			heap.Fix(&h, 0)
		}
	}
	return h[0]
}

type minHeap []float64

func (h minHeap) Len() int           { return len(h) }
func (h minHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h minHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *minHeap) Push(x any)        { *h = append(*h, x.(float64)) }
func (h *minHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
