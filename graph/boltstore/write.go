package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/internal/logic"
)

// writer applies changes within one write transaction. Tag records, the
// counters and the posting-list edits stay in memory until flush.
type writer struct {
	tx       *bolt.Tx
	tags     map[string]*tagState
	nfiles   int64 // change to the number of tagged files
	nextOrd  uint32
	ordsRead bool
	plists   plistEdits
	files    *bolt.Bucket
	ords     *bolt.Bucket
	filetags *bolt.Bucket
	postings *bolt.Bucket
}

type tagState struct {
	rec   tagRec
	dirty bool
}

func newWriter(tx *bolt.Tx) *writer {
	return &writer{
		tx:       tx,
		tags:     map[string]*tagState{},
		plists:   plistEdits{},
		files:    tx.Bucket(bFiles),
		ords:     tx.Bucket(bOrds),
		filetags: tx.Bucket(bFileTags),
		postings: tx.Bucket(bPostings),
	}
}

// tag returns a tag's record, creating the tag when create is set; nil if it
// does not exist and create is not set.
func (w *writer) tag(name string, create bool) (*tagState, error) {
	if st, ok := w.tags[name]; ok {
		return st, nil
	}
	rec, ok, err := getTag(w.tx, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		if !create {
			return nil, nil
		}
		meta := w.tx.Bucket(bMeta)
		next := getU32(meta, kNextTag)
		if next == math.MaxUint32 {
			return nil, errors.New("tag ids exhausted")
		}
		if err := meta.Put(kNextTag, u32(next+1)); err != nil {
			return nil, err
		}
		st := &tagState{rec: tagRec{id: next}, dirty: true}
		w.tags[name] = st
		return st, nil
	}
	st := &tagState{rec: rec}
	w.tags[name] = st
	return st, nil
}

// newOrd hands out the next file ordinal.
func (w *writer) newOrd() (uint32, error) {
	if !w.ordsRead {
		w.nextOrd = getU32(w.tx.Bucket(bMeta), kNextOrd)
		w.ordsRead = true
	}
	if w.nextOrd == math.MaxUint32 {
		return 0, errors.New("file ordinals exhausted (rebuild the index)")
	}
	o := w.nextOrd
	w.nextOrd++
	return o, nil
}

func (w *writer) flush() error {
	b := w.tx.Bucket(bTags)
	for name, st := range w.tags {
		if st.dirty {
			if err := b.Put([]byte(name), st.rec.encode()); err != nil {
				return err
			}
		}
	}
	meta := w.tx.Bucket(bMeta)
	if w.nfiles != 0 {
		n := int64(getU64(meta, kNFiles)) + w.nfiles
		if n < 0 {
			return fmt.Errorf("tagged file count would become %d: %w", n, ErrCorrupt)
		}
		if err := meta.Put(kNFiles, u64(uint64(n))); err != nil {
			return err
		}
	}
	if w.ordsRead {
		if err := meta.Put(kNextOrd, u32(w.nextOrd)); err != nil {
			return err
		}
	}
	return w.plists.apply(w.tx.Bucket(bPlists))
}

func (w *writer) untag(id graph.FileID, f fileRec, t fileTag) error {
	st, err := w.tag(t.name, false)
	if err != nil {
		return err
	}
	if st == nil || st.rec.id != t.id {
		return fmt.Errorf("file %d has tag %q with no matching tag record: %w", id, t.name, ErrCorrupt)
	}
	if err := w.filetags.Delete(fileTagKey(id, t.name)); err != nil {
		return err
	}
	if err := w.postings.Delete(postingKey(t.id, f.name, id)); err != nil {
		return err
	}
	w.plists.set(t.id, f.ord, false)
	if st.rec.count > 0 {
		st.rec.count--
	}
	st.dirty = true
	return nil
}

// apply applies one change.
func (w *writer) apply(ch graph.Change) error {
	id := ch.File.ID
	old, exists, err := getFile(w.tx, id)
	if err != nil {
		return err
	}
	cur, err := tagsOf(w.tx, id)
	if err != nil {
		return err
	}
	curNames := make([]string, len(cur))
	for i, t := range cur {
		curNames[i] = t.name
	}
	next := logic.Apply(curNames, ch)
	if len(next) == 0 {
		return w.drop(id, old, cur, exists)
	}
	f := old
	if ch.File.Name != "" {
		f.name = ch.File.Name
	}
	if ch.File.Parent != 0 {
		f.parent = ch.File.Parent
	}
	if !exists {
		if f.ord, err = w.newOrd(); err != nil {
			return err
		}
		if err := w.ords.Put(u32(f.ord), fileKey(id)); err != nil {
			return err
		}
		w.nfiles++
	}
	if !exists || f.name != old.name || f.parent != old.parent {
		if err := w.files.Put(fileKey(id), f.encode()); err != nil {
			return err
		}
	}
	keep := make(map[string]bool, len(next))
	for _, t := range next {
		keep[t] = true
	}
	have := make(map[string]bool, len(cur))
	for _, t := range cur {
		have[t.name] = true
		switch {
		case !keep[t.name]:
			if err := w.untag(id, old, t); err != nil {
				return err
			}
		case f.name != old.name:
			if err := w.postings.Delete(postingKey(t.id, old.name, id)); err != nil {
				return err
			}
			if err := w.postings.Put(postingKey(t.id, f.name, id), u32(f.ord)); err != nil {
				return err
			}
		}
	}
	for _, t := range next {
		if have[t] {
			continue
		}
		st, err := w.tag(t, true)
		if err != nil {
			return err
		}
		if err := w.filetags.Put(fileTagKey(id, t), u32(st.rec.id)); err != nil {
			return err
		}
		if err := w.postings.Put(postingKey(st.rec.id, f.name, id), u32(f.ord)); err != nil {
			return err
		}
		w.plists.set(st.rec.id, f.ord, true)
		st.rec.count++
		st.dirty = true
	}
	return nil
}

// drop removes a file from the tag index (its co-access edges stay).
func (w *writer) drop(id graph.FileID, f fileRec, cur []fileTag, exists bool) error {
	for _, t := range cur {
		if err := w.untag(id, f, t); err != nil {
			return err
		}
	}
	if !exists {
		if len(cur) > 0 {
			return fmt.Errorf("file %d has tags but no record: %w", id, ErrCorrupt)
		}
		return nil
	}
	if err := w.files.Delete(fileKey(id)); err != nil {
		return err
	}
	if err := w.ords.Delete(u32(f.ord)); err != nil {
		return err
	}
	w.nfiles--
	return nil
}

// Update applies changes in one transaction; nothing is written if any
// change is invalid.
func (s *Store) Update(ctx context.Context, changes []graph.Change) error {
	if err := logic.CheckChanges(changes); err != nil {
		return fmt.Errorf("boltstore: update: %w", err)
	}
	if len(changes) == 0 {
		return nil
	}
	return s.update(ctx, "update", len(changes) <= 64, func(tx *bolt.Tx) error {
		w := newWriter(tx)
		tk := ticker{ctx: ctx}
		for _, ch := range changes {
			if err := tk.tick(); err != nil {
				return err
			}
			if err := w.apply(ch); err != nil {
				return fmt.Errorf("file %d: %w", ch.File.ID, err)
			}
		}
		return w.flush()
	})
}

// Forget removes files from the index and their co-access edges.
func (s *Store) Forget(ctx context.Context, ids []graph.FileID) error {
	if len(ids) == 0 {
		return nil
	}
	return s.update(ctx, "forget", len(ids) <= 64, func(tx *bolt.Tx) error {
		w := newWriter(tx)
		co := tx.Bucket(bCoAccess)
		tk := ticker{ctx: ctx}
		for _, id := range ids {
			if err := tk.tick(); err != nil {
				return err
			}
			f, exists, err := getFile(tx, id)
			if err != nil {
				return err
			}
			cur, err := tagsOf(tx, id)
			if err != nil {
				return err
			}
			if err := w.drop(id, f, cur, exists); err != nil {
				return fmt.Errorf("file %d: %w", id, err)
			}
			prefix := fileKey(id)
			var peers []graph.FileID
			c := co.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				peers = append(peers, graph.FileID(binary.BigEndian.Uint64(k[8:])))
			}
			for _, p := range peers {
				if err := co.Delete(coKey(id, p)); err != nil {
					return err
				}
				if err := co.Delete(coKey(p, id)); err != nil {
					return err
				}
			}
		}
		return w.flush()
	})
}

// CreateTag makes tag exist; an existing tag is left as it is.
func (s *Store) CreateTag(ctx context.Context, tag string) error {
	if err := graph.ValidTag(tag); err != nil {
		return fmt.Errorf("boltstore: create tag: %w", err)
	}
	return s.update(ctx, "create tag", true, func(tx *bolt.Tx) error {
		w := newWriter(tx)
		if _, err := w.tag(tag, true); err != nil {
			return err
		}
		return w.flush()
	})
}

// DeleteTag removes a tag no file carries.
func (s *Store) DeleteTag(ctx context.Context, tag string) error {
	return s.update(ctx, "delete tag", true, func(tx *bolt.Tx) error {
		rec, ok, err := getTag(tx, tag)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%q: %w", tag, graph.ErrNoTag)
		}
		if rec.count > 0 {
			return fmt.Errorf("%q has %d files: %w", tag, rec.count, graph.ErrNotEmpty)
		}
		return tx.Bucket(bTags).Delete([]byte(tag))
	})
}

// AddCoAccess adds weight to co-access edges, both directions. An edge's
// time becomes the latest of its updates (a zero At means now).
func (s *Store) AddCoAccess(ctx context.Context, edges []graph.CoAccess) error {
	if err := logic.CheckCoAccess(edges); err != nil {
		return fmt.Errorf("boltstore: add co-access: %w", err)
	}
	if len(edges) == 0 {
		return nil
	}
	now := time.Now()
	return s.update(ctx, "add co-access", len(edges) <= 64, func(tx *bolt.Tx) error {
		co := tx.Bucket(bCoAccess)
		for _, e := range edges {
			if e.A == e.B {
				continue
			}
			at := e.At
			if at.IsZero() {
				at = now
			}
			for _, k := range [][]byte{coKey(e.A, e.B), coKey(e.B, e.A)} {
				w, last := 0.0, int64(math.MinInt64)
				if v := co.Get(k); len(v) == 16 {
					w = math.Float64frombits(binary.BigEndian.Uint64(v))
					last = int64(binary.BigEndian.Uint64(v[8:]))
				}
				w += e.Weight
				last = max(last, at.UnixNano())
				v := make([]byte, 16)
				binary.BigEndian.PutUint64(v, math.Float64bits(w))
				binary.BigEndian.PutUint64(v[8:], uint64(last))
				if err := co.Put(k, v); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
