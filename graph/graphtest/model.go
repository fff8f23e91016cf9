package graphtest

import (
	"fmt"
	"sort"
	"time"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/internal/logic"
)

// model is the brute-force reference: the obvious maps, scanned in full for
// every question.
type model struct {
	files map[graph.FileID]*mfile
	tags  map[string]bool // every existing tag, also empty ones
	co    map[[2]graph.FileID]medge
}

type mfile struct {
	name   string
	parent graph.FileID
	tags   map[string]bool
}

type medge struct {
	w  float64
	at time.Time
}

func newModel() *model {
	return &model{files: map[graph.FileID]*mfile{}, tags: map[string]bool{}, co: map[[2]graph.FileID]medge{}}
}

func (m *model) update(changes []graph.Change) {
	for _, ch := range changes {
		f := m.files[ch.File.ID]
		var cur []string
		if f != nil {
			cur = sortedKeys(f.tags)
		}
		next := logic.Apply(cur, ch)
		if len(next) == 0 {
			delete(m.files, ch.File.ID)
			continue
		}
		if f == nil {
			f = &mfile{}
			m.files[ch.File.ID] = f
		}
		if ch.File.Name != "" {
			f.name = ch.File.Name
		}
		if ch.File.Parent != 0 {
			f.parent = ch.File.Parent
		}
		f.tags = map[string]bool{}
		for _, t := range next {
			f.tags[t] = true
			m.tags[t] = true
		}
	}
}

func (m *model) forget(ids []graph.FileID) {
	for _, id := range ids {
		delete(m.files, id)
		for k := range m.co {
			if k[0] == id || k[1] == id {
				delete(m.co, k)
			}
		}
	}
}

func (m *model) count(tag string) int {
	n := 0
	for _, f := range m.files {
		if f.tags[tag] {
			n++
		}
	}
	return n
}

func (m *model) tagCounts() []graph.TagCount {
	var out []graph.TagCount
	for _, t := range sortedKeys(m.tags) {
		out = append(out, graph.TagCount{Tag: t, Files: m.count(t)})
	}
	return out
}

func (m *model) tagsOf(id graph.FileID) []string {
	if f := m.files[id]; f != nil {
		return sortedKeys(f.tags)
	}
	return nil
}

func (m *model) filesWith(tags []string) ([]graph.File, error) {
	if len(tags) == 0 {
		return nil, fmt.Errorf("no tags")
	}
	for _, t := range tags {
		if !m.tags[t] {
			return nil, graph.ErrNoTag
		}
	}
	return m.match(func(f *mfile) bool {
		for _, t := range tags {
			if !f.tags[t] {
				return false
			}
		}
		return true
	}), nil
}

func (m *model) match(pred func(*mfile) bool) []graph.File {
	var out []graph.File
	for id, f := range m.files {
		if pred(f) {
			out = append(out, graph.File{ID: id, Name: f.name})
		}
	}
	logic.SortFiles(out)
	return out
}

func (m *model) coTags(tags []string) ([]string, error) {
	set, err := m.filesWith(tags)
	if err != nil {
		return nil, err
	}
	in := map[string]bool{}
	for _, t := range tags {
		in[t] = true
	}
	var out []string
	for _, t := range sortedKeys(m.tags) {
		if in[t] {
			continue
		}
		n := 0
		for _, f := range set {
			if m.files[f.ID].tags[t] {
				n++
			}
		}
		if n > 0 && n < len(set) {
			out = append(out, t)
		}
	}
	return out, nil
}

func (m *model) query(e graph.Expr) []graph.File {
	return m.match(func(f *mfile) bool { return graph.Eval(e, func(t string) bool { return f.tags[t] }) })
}

func (m *model) related(id graph.FileID, limit int) []graph.Scored {
	f := m.files[id]
	if f == nil {
		return nil
	}
	n := len(m.files)
	scores := map[graph.FileID]float64{}
	for _, t := range sortedKeys(f.tags) {
		w := logic.IDF(n, m.count(t))
		for gid, g := range m.files {
			if gid != id && g.tags[t] {
				scores[gid] += w
			}
		}
	}
	return m.named(logic.Top(scores, limit))
}

func (m *model) named(s []graph.Scored) []graph.Scored {
	for i := range s {
		if f := m.files[s[i].File.ID]; f != nil {
			s[i].File.Name, s[i].File.Parent = f.name, f.parent
		}
	}
	return s
}

func (m *model) addCoAccess(edges []graph.CoAccess) {
	for _, e := range edges {
		if e.A == e.B {
			continue
		}
		for _, k := range [][2]graph.FileID{{e.A, e.B}, {e.B, e.A}} {
			old, ok := m.co[k]
			old.w += e.Weight
			if !ok || e.At.After(old.at) {
				old.at = e.At
			}
			m.co[k] = old
		}
	}
}

func (m *model) coAccessed(id graph.FileID, limit int, halfLife time.Duration, now time.Time) []graph.Scored {
	scores := map[graph.FileID]float64{}
	for k, e := range m.co {
		if k[0] == id {
			scores[k[1]] = logic.Decay(e.w, e.at, now, halfLife)
		}
	}
	return m.named(logic.Top(scores, limit))
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
