// Package boltstore is the embedded graph.Store: one bbolt file per volume.
//
// Layout (all integers big-endian):
//
//	meta      "schema" -> schemaID; "nexttag" -> uint32; "nfiles" -> uint64 (tagged files)
//	tags      tag name -> tag id uint32 | file count uint64
//	files     file id uint64 -> file name
//	filetags  file id uint64 | tag name -> tag id uint32
//	postings  tag id uint32 | file name | 0x00 | file id uint64 -> (empty)
//	coaccess  file id A uint64 | file id B uint64 -> weight float64 bits | last update unix ns int64
//
// A tag's postings are contiguous and already in listing order (name, then
// ID: names hold no NUL, so the 0x00 separator sorts a name before its
// extensions), so listing a tag is one sequential scan with no sort. filetags
// makes TagsOf a prefix scan and "does file f carry tag t" one lookup. Tag
// counts and the number of tagged files are maintained on every write.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/internal/logic"
)

const schemaID = "disgrafs-graph/1"

var (
	bMeta     = []byte("meta")
	bTags     = []byte("tags")
	bFiles    = []byte("files")
	bFileTags = []byte("filetags")
	bPostings = []byte("postings")
	bCoAccess = []byte("coaccess")

	kSchema  = []byte("schema")
	kNextTag = []byte("nexttag")
	kNFiles  = []byte("nfiles")
)

var allBuckets = [][]byte{bMeta, bTags, bFiles, bFileTags, bPostings, bCoAccess}

// Options tune a Store. The zero value is a safe default.
type Options struct {
	// LockTimeout bounds the wait for the file lock another process holds
	// (default 1s); Open then fails with an error saying the file is in use.
	LockTimeout time.Duration
	// NoSync skips fsync after each transaction: faster writes, and a crash
	// may lose recent updates (the index can be rebuilt from the xattrs).
	NoSync bool
	// BatchDelay, when positive, lets concurrent small Updates (up to 64
	// changes each) share one transaction, each waiting at most this long for
	// others (bbolt's DB.Batch). Zero runs every Update in its own transaction.
	BatchDelay time.Duration
}

// Store is a graph.Store on a bbolt file. It is safe for concurrent use: reads
// run in parallel, writes one at a time.
type Store struct {
	db   *bolt.DB
	opts Options
}

var _ graph.Store = (*Store)(nil)

// Open opens or creates the index at path (mode 0600).
func Open(path string, opts Options) (s *Store, err error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	// bbolt validates the meta pages of an existing file; guard against a
	// panic on a file damaged in a way it does not check.
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("boltstore: open %s: corrupt database (%v)", path, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoSync:         opts.NoSync,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("boltstore: open %s: the file is locked by another process (waited %v): %w", path, opts.LockTimeout, graph.ErrUnavailable)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
			return nil, fmt.Errorf("boltstore: open %s: not a valid bbolt database (corrupt or another format): %w", path, err)
		}
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	if opts.BatchDelay > 0 {
		db.MaxBatchDelay = opts.BatchDelay
	}
	if err := initSchema(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	return &Store{db: db, opts: opts}, nil
}

// initSchema creates the buckets of a new file, or checks an existing one is
// ours.
func initSchema(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if meta == nil {
			empty := true
			if err := tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil }); err != nil {
				return err
			}
			if !empty {
				return errors.New("the file is a bbolt database but not a disgrafs graph index")
			}
			for _, b := range allBuckets {
				if _, err := tx.CreateBucket(b); err != nil {
					return err
				}
			}
			return tx.Bucket(bMeta).Put(kSchema, []byte(schemaID))
		}
		if v := meta.Get(kSchema); string(v) != schemaID {
			return fmt.Errorf("unknown index schema %q (want %q)", v, schemaID)
		}
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("bucket %s is missing", b)
			}
		}
		return nil
	})
}

// Close releases the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltstore: close: %w", err)
	}
	return nil
}

// Path is the database file.
func (s *Store) Path() string { return s.db.Path() }

// Ping checks that the file is open.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, "ping", func(*bolt.Tx) error { return nil })
}

func (s *Store) view(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: %s: %w", op, err)
	}
	return wrap(op, s.db.View(fn))
}

func (s *Store) update(ctx context.Context, op string, small bool, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: %s: %w", op, err)
	}
	if small && s.opts.BatchDelay > 0 {
		return wrap(op, s.db.Batch(fn))
	}
	return wrap(op, s.db.Update(fn))
}

func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("boltstore: %s: store is closed: %w", op, graph.ErrUnavailable)
	}
	return fmt.Errorf("boltstore: %s: %w", op, err)
}

// ticker checks ctx every so many steps of a long loop.
type ticker struct {
	ctx context.Context
	n   int
}

func (t *ticker) tick() error {
	t.n++
	if t.n&4095 == 0 {
		return t.ctx.Err()
	}
	return nil
}

// Key helpers.

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func fileKey(id graph.FileID) []byte { return u64(uint64(id)) }

func fileTagKey(id graph.FileID, tag string) []byte {
	k := make([]byte, 8+len(tag))
	binary.BigEndian.PutUint64(k, uint64(id))
	copy(k[8:], tag)
	return k
}

func tagPrefix(tid uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], tid)
	return b[:]
}

func postingKey(tid uint32, name string, id graph.FileID) []byte {
	k := make([]byte, 4+len(name)+1+8)
	binary.BigEndian.PutUint32(k, tid)
	copy(k[4:], name)
	k[4+len(name)] = 0
	binary.BigEndian.PutUint64(k[5+len(name):], uint64(id))
	return k
}

// postingFile decodes a postings key.
func postingFile(k []byte) graph.File {
	return graph.File{
		ID:   graph.FileID(binary.BigEndian.Uint64(k[len(k)-8:])),
		Name: string(k[4 : len(k)-9]),
	}
}

func postingID(k []byte) graph.FileID { return graph.FileID(binary.BigEndian.Uint64(k[len(k)-8:])) }

func coKey(a, b graph.FileID) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, uint64(a))
	binary.BigEndian.PutUint64(k[8:], uint64(b))
	return k
}

type tagRec struct {
	id    uint32
	count uint64
}

func decodeTag(v []byte) (tagRec, error) {
	if len(v) != 12 {
		return tagRec{}, fmt.Errorf("corrupt tag record (%d bytes)", len(v))
	}
	return tagRec{id: binary.BigEndian.Uint32(v), count: binary.BigEndian.Uint64(v[4:])}, nil
}

func (r tagRec) encode() []byte {
	v := make([]byte, 12)
	binary.BigEndian.PutUint32(v, r.id)
	binary.BigEndian.PutUint64(v[4:], r.count)
	return v
}

func getTag(tx *bolt.Tx, name string) (tagRec, bool, error) {
	v := tx.Bucket(bTags).Get([]byte(name))
	if v == nil {
		return tagRec{}, false, nil
	}
	r, err := decodeTag(v)
	if err != nil {
		return tagRec{}, false, fmt.Errorf("tag %q: %w", name, err)
	}
	return r, true, nil
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// fileTag is one of a file's tags.
type fileTag struct {
	name string
	id   uint32
}

// tagsOf lists a file's tags from filetags, sorted by name.
func tagsOf(tx *bolt.Tx, id graph.FileID) ([]fileTag, error) {
	prefix := fileKey(id)
	var out []fileTag
	c := tx.Bucket(bFileTags).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(v) != 4 {
			return nil, fmt.Errorf("corrupt filetags entry for file %d", id)
		}
		out = append(out, fileTag{name: string(k[8:]), id: binary.BigEndian.Uint32(v)})
	}
	return out, nil
}

// writer applies changes within one write transaction, keeping tag records
// in memory until flush.
type writer struct {
	tx       *bolt.Tx
	tags     map[string]*tagState
	nfiles   int64 // change to the number of tagged files
	files    *bolt.Bucket
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
		files:    tx.Bucket(bFiles),
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
		next := uint32(0)
		if v := meta.Get(kNextTag); len(v) == 4 {
			next = binary.BigEndian.Uint32(v)
		}
		if next == math.MaxUint32 {
			return nil, errors.New("tag ids exhausted")
		}
		if err := meta.Put(kNextTag, tagPrefix(next+1)); err != nil {
			return nil, err
		}
		rec = tagRec{id: next}
		st := &tagState{rec: rec, dirty: true}
		w.tags[name] = st
		return st, nil
	}
	st := &tagState{rec: rec}
	w.tags[name] = st
	return st, nil
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
	if w.nfiles != 0 {
		meta := w.tx.Bucket(bMeta)
		n := int64(getU64(meta, kNFiles)) + w.nfiles
		if n < 0 {
			return fmt.Errorf("tagged file count would become %d", n)
		}
		if err := meta.Put(kNFiles, u64(uint64(n))); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) untag(id graph.FileID, name string, t fileTag) error {
	st, err := w.tag(t.name, false)
	if err != nil {
		return err
	}
	if st == nil || st.rec.id != t.id {
		return fmt.Errorf("index inconsistent: file %d has tag %q with no matching tag record", id, t.name)
	}
	if err := w.filetags.Delete(fileTagKey(id, t.name)); err != nil {
		return err
	}
	if err := w.postings.Delete(postingKey(t.id, name, id)); err != nil {
		return err
	}
	if st.rec.count > 0 {
		st.rec.count--
	}
	st.dirty = true
	return nil
}

// apply applies one change.
func (w *writer) apply(ch graph.Change) error {
	id := ch.File.ID
	old := w.files.Get(fileKey(id))
	exists := old != nil
	oldName := string(old)
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
		return w.drop(id, oldName, cur, exists)
	}
	name := oldName
	if ch.File.Name != "" {
		name = ch.File.Name
	}
	if !exists || name != oldName {
		if err := w.files.Put(fileKey(id), []byte(name)); err != nil {
			return err
		}
	}
	if !exists {
		w.nfiles++
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
			if err := w.untag(id, oldName, t); err != nil {
				return err
			}
		case name != oldName:
			if err := w.postings.Delete(postingKey(t.id, oldName, id)); err != nil {
				return err
			}
			if err := w.postings.Put(postingKey(t.id, name, id), []byte{}); err != nil {
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
		if err := w.filetags.Put(fileTagKey(id, t), tagPrefix(st.rec.id)); err != nil {
			return err
		}
		if err := w.postings.Put(postingKey(st.rec.id, name, id), []byte{}); err != nil {
			return err
		}
		st.rec.count++
		st.dirty = true
	}
	return nil
}

// drop removes a file from the tag index (its co-access edges stay).
func (w *writer) drop(id graph.FileID, name string, cur []fileTag, exists bool) error {
	for _, t := range cur {
		if err := w.untag(id, name, t); err != nil {
			return err
		}
	}
	if exists {
		if err := w.files.Delete(fileKey(id)); err != nil {
			return err
		}
		w.nfiles--
	}
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
			old := w.files.Get(fileKey(id))
			cur, err := tagsOf(tx, id)
			if err != nil {
				return err
			}
			if err := w.drop(id, string(old), cur, old != nil); err != nil {
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
func lookupTags(tx *bolt.Tx, tags []string) ([]fileTag, []tagRec, error) {
	if len(tags) == 0 {
		return nil, nil, errors.New("no tags given")
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
			return nil, nil, err
		}
		if !ok {
			return nil, nil, fmt.Errorf("%q: %w", t, graph.ErrNoTag)
		}
		rs = append(rs, rt{t, rec})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].rec.count < rs[j].rec.count })
	names := make([]fileTag, len(rs))
	recs := make([]tagRec, len(rs))
	for i, r := range rs {
		names[i] = fileTag{name: r.name, id: r.rec.id}
		recs[i] = r.rec
	}
	return names, recs, nil
}

// intersect calls fn, in listing order, for each file carrying every tag.
func intersect(ctx context.Context, tx *bolt.Tx, tags []string, fn func(graph.File) error) error {
	ts, _, err := lookupTags(tx, tags)
	if err != nil {
		return err
	}
	ft := tx.Bucket(bFileTags)
	prefix := tagPrefix(ts[0].id)
	rest := ts[1:]
	tk := ticker{ctx: ctx}
	c := tx.Bucket(bPostings).Cursor()
	var key []byte
outer:
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if err := tk.tick(); err != nil {
			return err
		}
		if len(rest) > 0 {
			id := postingID(k)
			for _, t := range rest {
				key = append(append(key[:0], u64(uint64(id))...), t.name...)
				if ft.Get(key) == nil {
					continue outer
				}
			}
		}
		if err := fn(postingFile(k)); err != nil {
			return err
		}
	}
	return nil
}

// Files lists the files carrying every one of tags, by name then ID.
func (s *Store) Files(ctx context.Context, tags []string) ([]graph.File, error) {
	var out []graph.File
	err := s.view(ctx, "files", func(tx *bolt.Tx) error {
		return intersect(ctx, tx, tags, func(f graph.File) error {
			out = append(out, f)
			return nil
		})
	})
	return out, err
}

// CoTags lists the tags that narrow Files(tags).
func (s *Store) CoTags(ctx context.Context, tags []string) ([]string, error) {
	var out []string
	err := s.view(ctx, "co-tags", func(tx *bolt.Tx) error {
		in := make(map[string]bool, len(tags))
		for _, t := range tags {
			in[t] = true
		}
		counts := map[string]int{}
		n := 0
		c := tx.Bucket(bFileTags).Cursor()
		err := intersect(ctx, tx, tags, func(f graph.File) error {
			n++
			prefix := fileKey(f.ID)
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if t := k[8:]; !in[string(t)] {
					counts[string(t)]++
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for t, c := range counts {
			if c < n {
				out = append(out, t)
			}
		}
		sort.Strings(out)
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
			prefix := tagPrefix(rec.id)
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
					cands[id] = &cand{name: string(v)}
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
// log(1+N/df), best first.
func (s *Store) Related(ctx context.Context, id graph.FileID, limit int) ([]graph.Scored, error) {
	var out []graph.Scored
	err := s.view(ctx, "related", func(tx *bolt.Tx) error {
		ts, err := tagsOf(tx, id)
		if err != nil || len(ts) == 0 {
			return err
		}
		n := int(getU64(tx.Bucket(bMeta), kNFiles))
		scores := make(map[graph.FileID]float64, 256)
		tk := ticker{ctx: ctx}
		c := tx.Bucket(bPostings).Cursor()
		for _, t := range ts {
			rec, ok, err := getTag(tx, t.name)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("index inconsistent: tag %q of file %d has no record", t.name, id)
			}
			w := logic.IDF(n, int(rec.count))
			prefix := tagPrefix(rec.id)
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if err := tk.tick(); err != nil {
					return err
				}
				if f := postingID(k); f != id {
					scores[f] += w
				}
			}
		}
		out = logic.Top(scores, limit)
		files := tx.Bucket(bFiles)
		for i := range out {
			out[i].File.Name = string(files.Get(fileKey(out[i].File.ID)))
		}
		return nil
	})
	return out, err
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
				if t := at.UnixNano(); t > last {
					last = t
				}
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
			out[i].File.Name = string(files.Get(fileKey(out[i].File.ID)))
		}
		return nil
	})
	return out, err
}

// Stats are counts kept by the index.
type Stats struct {
	Files, Tags, TagLinks, CoAccessEdges int
	SizeBytes                            int64
}

// Stats counts the index's entries (scans the buckets' statistics).
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.view(ctx, "stats", func(tx *bolt.Tx) error {
		st.Files = tx.Bucket(bFiles).Stats().KeyN
		st.Tags = tx.Bucket(bTags).Stats().KeyN
		st.TagLinks = tx.Bucket(bFileTags).Stats().KeyN
		st.CoAccessEdges = tx.Bucket(bCoAccess).Stats().KeyN
		st.SizeBytes = tx.Size()
		return nil
	})
	return st, err
}

// Check verifies the index's internal consistency (every entry has its
// mirror, counts match) in one read transaction, O(size of the index), and
// reports up to 20 problems.
func (s *Store) Check(ctx context.Context) error {
	var problems []string
	add := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	err := s.view(ctx, "check", func(tx *bolt.Tx) error {
		tk := ticker{ctx: ctx}
		byID := map[uint32]string{}
		counts := map[uint32]uint64{}
		err := tx.Bucket(bTags).ForEach(func(k, v []byte) error {
			r, err := decodeTag(v)
			if err != nil {
				add("tag %q: %v", k, err)
				return nil
			}
			if o, dup := byID[r.id]; dup {
				add("tags %q and %q share id %d", o, k, r.id)
			}
			byID[r.id] = string(k)
			counts[r.id] = r.count
			return nil
		})
		if err != nil {
			return err
		}
		files := tx.Bucket(bFiles)
		postings := tx.Bucket(bPostings)
		withTags := map[graph.FileID]bool{}
		links := 0
		err = tx.Bucket(bFileTags).ForEach(func(k, v []byte) error {
			if err := tk.tick(); err != nil {
				return err
			}
			links++
			if len(k) < 9 || len(v) != 4 {
				add("malformed filetags entry %x", k)
				return nil
			}
			id := graph.FileID(binary.BigEndian.Uint64(k))
			tag, tid := string(k[8:]), binary.BigEndian.Uint32(v)
			withTags[id] = true
			if byID[tid] != tag {
				add("file %d: tag %q has id %d, which belongs to %q", id, tag, tid, byID[tid])
			}
			name := files.Get(fileKey(id))
			if name == nil {
				add("file %d has tag %q but no file record", id, tag)
				return nil
			}
			if postings.Get(postingKey(tid, string(name), id)) == nil {
				add("file %d (%q) has tag %q but is missing from its postings", id, name, tag)
			}
			return nil
		})
		if err != nil {
			return err
		}
		seen := map[uint32]uint64{}
		npost := 0
		err = postings.ForEach(func(k, _ []byte) error {
			if err := tk.tick(); err != nil {
				return err
			}
			npost++
			if len(k) < 13 {
				add("malformed postings entry %x", k)
				return nil
			}
			tid := binary.BigEndian.Uint32(k)
			seen[tid]++
			f := postingFile(k)
			tag, ok := byID[tid]
			if !ok {
				add("postings for unknown tag id %d", tid)
				return nil
			}
			if string(files.Get(fileKey(f.ID))) != f.Name {
				add("postings of %q name file %d %q, its record says %q", tag, f.ID, f.Name, files.Get(fileKey(f.ID)))
			}
			if tx.Bucket(bFileTags).Get(fileTagKey(f.ID, tag)) == nil {
				add("postings of %q hold file %d, which lacks the tag", tag, f.ID)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if npost != links {
			add("%d postings but %d file-tag links", npost, links)
		}
		for tid, c := range counts {
			if seen[tid] != c {
				add("tag %q counts %d files but has %d", byID[tid], c, seen[tid])
			}
		}
		nf := 0
		err = files.ForEach(func(k, _ []byte) error {
			nf++
			if id := graph.FileID(binary.BigEndian.Uint64(k)); !withTags[id] {
				add("file %d is indexed with no tags", id)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n := getU64(tx.Bucket(bMeta), kNFiles); n != uint64(nf) {
			add("file count says %d, %d file records", n, nf)
		}
		co := tx.Bucket(bCoAccess)
		return co.ForEach(func(k, _ []byte) error {
			if err := tk.tick(); err != nil {
				return err
			}
			if len(k) != 16 {
				add("malformed co-access key %x", k)
				return nil
			}
			if co.Get(append(append([]byte{}, k[8:]...), k[:8]...)) == nil {
				add("co-access edge %x has no reverse", k)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("boltstore: check: index inconsistent: %v", problems)
	}
	return nil
}
