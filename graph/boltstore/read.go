package boltstore

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/internal/logic"
)

// Tags lists every tag with its file count, by name.
func (s *Store) Tags(ctx context.Context) ([]graph.TagCount, error) {
	var out []graph.TagCount
	err := s.view(ctx, "tags", func(tx *bolt.Tx) error {
		return tx.Bucket(bTags).ForEach(func(k, v []byte) error {
			r, err := decodeTag(v)
			if err != nil {
				return fmt.Errorf("tag %q: %w", k, err)
			}
			out = append(out, graph.TagCount{Tag: string(k), Files: int(r.count)})
			return nil
		})
	})
	return out, err
}

// TagsOf lists a file's tags, sorted; none for a file not in the index.
func (s *Store) TagsOf(ctx context.Context, id graph.FileID) ([]string, error) {
	var out []string
	err := s.view(ctx, "tags of file", func(tx *bolt.Tx) error {
		ts, err := tagsOf(tx, id)
		for _, t := range ts {
			out = append(out, t.name)
		}
		return err
	})
	return out, err
}

// lookupTags finds tag records, ErrNoTag for a missing one, rarest first.
func lookupTags(tx *bolt.Tx, tags []string) ([]fileTag, error) {
	if len(tags) == 0 {
		return nil, errors.New("no tags given")
	}
	type rt struct {
		name string
		rec  tagRec
	}
	seen := map[string]bool{}
	var rs []rt
	for _, t := range tags {
		if seen[t] {
			continue
		}
		seen[t] = true
		rec, ok, err := getTag(tx, t)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%q: %w", t, graph.ErrNoTag)
		}
		rs = append(rs, rt{t, rec})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].rec.count < rs[j].rec.count })
	out := make([]fileTag, len(rs))
	for i, r := range rs {
		out[i] = fileTag{name: r.name, id: r.rec.id}
	}
	return out, nil
}

// intersect calls fn, in listing order, for each file carrying every tag,
// with its ordinal. It scans the rarest tag's postings, checking the others
// in a bitmap of their members.
func intersect(ctx context.Context, tx *bolt.Tx, tags []string, fn func(f graph.File, ord uint32) error) error {
	ts, err := lookupTags(tx, tags)
	if err != nil {
		return err
	}
	var others bitmap
	if len(ts) > 1 {
		n := getU32(tx.Bucket(bMeta), kNextOrd)
		c := tx.Bucket(bPlists).Cursor()
		for i, t := range ts[1:] {
			b, err := tagBitmap(c, t.id, n)
			if err != nil {
				return err
			}
			if i == 0 {
				others = b
			} else {
				others.and(b)
			}
		}
	}
	prefix := u32(ts[0].id)
	tk := ticker{ctx: ctx}
	c := tx.Bucket(bPostings).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := tk.tick(); err != nil {
			return err
		}
		if len(v) != 4 || len(k) < 13 {
			return fmt.Errorf("malformed postings entry %x: %w", k, ErrCorrupt)
		}
		ord := binary.BigEndian.Uint32(v)
		if others != nil && !others.has(ord) {
			continue
		}
		if err := fn(postingFile(k), ord); err != nil {
			return err
		}
	}
	return nil
}

// bitmap is a set of ordinals.
type bitmap []uint64

func (b bitmap) has(o uint32) bool { return int(o/64) < len(b) && b[o/64]&(1<<(o%64)) != 0 }

func (b bitmap) set(o uint32) { b[o/64] |= 1 << (o % 64) }

func (b bitmap) and(c bitmap) {
	for i := range b {
		b[i] &= c[i]
	}
}

// tagBitmap reads a tag's posting list into a bitmap of n ordinals.
func tagBitmap(c *bolt.Cursor, tid, n uint32) (bitmap, error) {
	b := make(bitmap, (n+63)/64)
	bad := false
	err := eachOrd(c, tid, func(o uint32) {
		if o >= n {
			bad = true
			return
		}
		b.set(o)
	})
	if err == nil && bad {
		err = fmt.Errorf("posting list of tag id %d holds an ordinal past the last one: %w", tid, ErrCorrupt)
	}
	return b, err
}

// Files lists the files carrying every one of tags, by name then ID.
func (s *Store) Files(ctx context.Context, tags []string) ([]graph.File, error) {
	var out []graph.File
	err := s.view(ctx, "files", func(tx *bolt.Tx) error {
		return intersect(ctx, tx, tags, func(f graph.File, _ uint32) error {
			out = append(out, f)
			return nil
		})
	})
	return out, err
}

// CoTags lists the tags that narrow Files(tags): it marks those files in a
// bitmap, then reads every other tag's posting list against it, stopping
// early where it can.
func (s *Store) CoTags(ctx context.Context, tags []string) ([]string, error) {
	var out []string
	err := s.view(ctx, "co-tags", func(tx *bolt.Tx) error {
		n := getU32(tx.Bucket(bMeta), kNextOrd)
		set := make(bitmap, (n+63)/64)
		size := 0
		err := intersect(ctx, tx, tags, func(_ graph.File, ord uint32) error {
			if ord >= n {
				return fmt.Errorf("ordinal %d past the last one: %w", ord, ErrCorrupt)
			}
			set.set(ord)
			size++
			return nil
		})
		if err != nil || size == 0 {
			return err
		}
		in := make(map[string]bool, len(tags))
		for _, t := range tags {
			in[t] = true
		}
		pc := tx.Bucket(bPlists).Cursor()
		c := tx.Bucket(bTags).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			rec, err := decodeTag(v)
			if err != nil {
				return fmt.Errorf("tag %q: %w", k, err)
			}
			if rec.count == 0 || in[string(k)] {
				continue
			}
			// With fewer files than the set, a tag narrows it as soon as
			// one of them is in the set.
			few := rec.count < uint64(size)
			hits := 0
			prefix := u32(rec.id)
		scan:
			for ck, chunk := pc.Seek(prefix); ck != nil && bytes.HasPrefix(ck, prefix); ck, chunk = pc.Next() {
				for i := 0; i+4 <= len(chunk); i += 4 {
					if set.has(binary.BigEndian.Uint32(chunk[i:])) {
						hits++
						if few {
							break scan
						}
					}
				}
			}
			if hits > 0 && hits < size {
				out = append(out, string(k))
			}
		}
		return nil
	})
	return out, err
}

// Query lists the files matching e, by name then ID. A tag that does not
// exist matches no file.
func (s *Store) Query(ctx context.Context, e graph.Expr) ([]graph.File, error) {
	m, err := logic.NewMatcher(e)
	if err != nil {
		return nil, fmt.Errorf("boltstore: query: %w", err)
	}
	var out []graph.File
	err = s.view(ctx, "query", func(tx *bolt.Tx) error {
		type cand struct {
			name string
			bits logic.Bits
		}
		cands := map[graph.FileID]*cand{}
		tk := ticker{ctx: ctx}
		for i, t := range m.Tags {
			rec, ok, err := getTag(tx, t)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			prefix := u32(rec.id)
			c := tx.Bucket(bPostings).Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if err := tk.tick(); err != nil {
					return err
				}
				id := postingID(k)
				cd := cands[id]
				if cd == nil {
					cd = &cand{name: postingFile(k).Name}
					cands[id] = cd
				}
				cd.bits.Set(i)
			}
		}
		if m.MatchesUntagged {
			c := tx.Bucket(bFiles).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if err := tk.tick(); err != nil {
					return err
				}
				id := graph.FileID(binary.BigEndian.Uint64(k))
				if cands[id] == nil {
					f, err := decodeFile(id, v)
					if err != nil {
						return err
					}
					cands[id] = &cand{name: f.name}
				}
			}
		}
		for id, cd := range cands {
			if m.Match(&cd.bits) {
				out = append(out, graph.File{ID: id, Name: cd.name})
			}
		}
		logic.SortFiles(out)
		return nil
	})
	return out, err
}

// Related ranks the files sharing tags with id: the sum over shared tags of
// log(1+N/df), best first, ties by ID.
func (s *Store) Related(ctx context.Context, id graph.FileID, limit int) ([]graph.Scored, error) {
	var out []graph.Scored
	err := s.view(ctx, "related", func(tx *bolt.Tx) error {
		ts, err := tagsOf(tx, id)
		if err != nil || len(ts) == 0 {
			return err
		}
		self, ok, err := getFile(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("file %d has tags but no record: %w", id, ErrCorrupt)
		}
		meta := tx.Bucket(bMeta)
		n := int(getU64(meta, kNFiles))
		recs := make([]tagRec, len(ts))
		postings := 0
		for i, t := range ts {
			rec, ok, err := getTag(tx, t.name)
			if err != nil {
				return err
			}
			if !ok || rec.id != t.id {
				return fmt.Errorf("tag %q of file %d has no matching record: %w", t.name, id, ErrCorrupt)
			}
			recs[i] = rec
			postings += int(rec.count)
		}
		sc := s.getScores(int(getU32(meta, kNextOrd)))
		defer s.putScores(sc)
		// When the tags' members cover a good part of the files, the scores
		// are read back (and cleared) by passes over the array in ordinal
		// order instead of through the list of entries in use, which the
		// inner loop then need not keep.
		sc.dense = postings >= len(sc.v)/4
		// Add up the weights in an array indexed by ordinal, tag by tag in
		// name order (the order the sums are defined in, so that equal sets
		// of shared tags give bit-equal scores).
		c := tx.Bucket(bPlists).Cursor()
		for i, t := range ts {
			if err := ctx.Err(); err != nil {
				return err
			}
			w := logic.IDF(n, int(recs[i].count))
			prefix := u32(recs[i].id)
			v, touched := sc.v, sc.touched
			// The inner loops of Related: kept free of calls.
			for k, chunk := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, chunk = c.Next() {
				if len(chunk)%4 != 0 {
					return fmt.Errorf("malformed chunk %x: %w", k, ErrCorrupt)
				}
				if sc.dense {
					for i := 0; i+4 <= len(chunk); i += 4 {
						o := binary.BigEndian.Uint32(chunk[i:])
						if int(o) >= len(v) {
							return fmt.Errorf("posting list of %q holds an ordinal past the last one: %w", t.name, ErrCorrupt)
						}
						v[o] += w
					}
					continue
				}
				for i := 0; i+4 <= len(chunk); i += 4 {
					o := binary.BigEndian.Uint32(chunk[i:])
					if int(o) >= len(v) {
						return fmt.Errorf("posting list of %q holds an ordinal past the last one: %w", t.name, ErrCorrupt)
					}
					if v[o] == 0 {
						touched = append(touched, o)
					}
					v[o] += w
				}
			}
			sc.touched = touched
		}
		sc.v[self.ord] = 0
		out, err = topOrds(tx, sc, limit)
		return err
	})
	return out, err
}

// scores is a score array indexed by ordinal (as long as there are
// ordinals) and the entries in use.
type scores struct {
	v       []float64
	touched []uint32
	// dense: the whole array may be in use, and touched is not kept.
	dense bool
}

func (s *Store) getScores(n int) *scores {
	sc, _ := s.scratch.Get().(*scores)
	if sc == nil {
		sc = &scores{}
	}
	if cap(sc.v) < n {
		sc.v = make([]float64, n)
	}
	sc.v = sc.v[:n]
	sc.touched = sc.touched[:0]
	return sc
}

func (s *Store) putScores(sc *scores) {
	if sc.dense {
		clear(sc.v)
	} else {
		for _, o := range sc.touched {
			sc.v[o] = 0
		}
	}
	sc.touched = sc.touched[:0]
	sc.dense = false
	s.scratch.Put(sc)
}

// topOrds returns the limit best scores (all when limit <= 0) by score,
// then file ID, with the files' IDs, names and parents. It finds the
// limit-th best score first, so that only the files scoring at least that
// are resolved.
func topOrds(tx *bolt.Tx, sc *scores, limit int) ([]graph.Scored, error) {
	threshold := 0.0
	if limit > 0 {
		// A score enters the heap if it beats floor: 0 until the heap is
		// full, then its smallest. One comparison, false for nearly every
		// entry once the heap holds good scores (a branch the processor
		// predicts, unlike "is this entry in use").
		h := make(minFloats, 0, limit)
		floor := 0.0
		if sc.dense {
			for _, v := range sc.v {
				if v > floor {
					floor = h.offer(v, limit)
				}
			}
		} else {
			for _, o := range sc.touched {
				if v := sc.v[o]; v > floor {
					floor = h.offer(v, limit)
				}
			}
		}
		threshold = floor
	}
	ords := tx.Bucket(bOrds)
	var out []graph.Scored
	add := func(o uint32, v float64) error {
		fid := ords.Get(u32(o))
		if len(fid) != 8 {
			return fmt.Errorf("ordinal %d has no file: %w", o, ErrCorrupt)
		}
		out = append(out, graph.Scored{File: graph.File{ID: graph.FileID(binary.BigEndian.Uint64(fid))}, Score: v})
		return nil
	}
	if sc.dense {
		for o, v := range sc.v {
			if v >= threshold && v > 0 {
				if err := add(uint32(o), v); err != nil {
					return nil, err
				}
			}
		}
	} else {
		for _, o := range sc.touched {
			if v := sc.v[o]; v >= threshold && v > 0 {
				if err := add(o, v); err != nil {
					return nil, err
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return logic.Better(out[i], out[j]) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	files := tx.Bucket(bFiles)
	for i := range out {
		out[i].File = indexedFile(files, out[i].File.ID)
	}
	return out, nil
}

// minFloats is a min-heap of float64.
type minFloats []float64

func (h minFloats) Len() int           { return len(h) }
func (h minFloats) Less(i, j int) bool { return h[i] < h[j] }
func (h minFloats) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *minFloats) Push(x any)        { *h = append(*h, x.(float64)) }

// offer keeps v if it is among the limit largest seen, and returns what a
// value must beat from now on: 0 while fewer than limit are kept, else the
// smallest kept.
func (h *minFloats) offer(v float64, limit int) float64 {
	switch {
	case len(*h) < limit:
		heap.Push(h, v)
	case v > (*h)[0]:
		(*h)[0] = v
		heap.Fix(h, 0)
	}
	if len(*h) < limit {
		return 0
	}
	return (*h)[0]
}

func (h *minFloats) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// CoAccessed ranks the files opened together with id by decayed weight.
func (s *Store) CoAccessed(ctx context.Context, id graph.FileID, limit int, halfLife time.Duration, now time.Time) ([]graph.Scored, error) {
	var out []graph.Scored
	err := s.view(ctx, "co-accessed", func(tx *bolt.Tx) error {
		prefix := fileKey(id)
		scores := map[graph.FileID]float64{}
		c := tx.Bucket(bCoAccess).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(v) != 16 {
				return fmt.Errorf("corrupt co-access edge %x", k)
			}
			w := math.Float64frombits(binary.BigEndian.Uint64(v))
			at := time.Unix(0, int64(binary.BigEndian.Uint64(v[8:])))
			scores[graph.FileID(binary.BigEndian.Uint64(k[8:]))] = logic.Decay(w, at, now, halfLife)
		}
		out = logic.Top(scores, limit)
		files := tx.Bucket(bFiles)
		for i := range out {
			out[i].File = indexedFile(files, out[i].File.ID)
		}
		return nil
	})
	return out, err
}
