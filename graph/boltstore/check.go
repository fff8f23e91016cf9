package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/disgrafs/disgrafs/graph"
)

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
// mirrors, counts match) in one read transaction, O(size of the index), and
// reports up to 20 problems in an error wrapping ErrCorrupt.
func (s *Store) Check(ctx context.Context) error {
	var problems []string
	add := func(format string, args ...any) {
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	err := s.view(ctx, "check", func(tx *bolt.Tx) error {
		tk := ticker{ctx: ctx}
		meta := tx.Bucket(bMeta)
		nextTag, nextOrd := getU32(meta, kNextTag), getU32(meta, kNextOrd)
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
			if r.id >= nextTag {
				add("tag %q has id %d, not below the next id %d", k, r.id, nextTag)
			}
			byID[r.id] = string(k)
			counts[r.id] = r.count
			return nil
		})
		if err != nil {
			return err
		}
		// Files and their ordinals.
		recs := map[graph.FileID]fileRec{}
		ords := tx.Bucket(bOrds)
		err = tx.Bucket(bFiles).ForEach(func(k, v []byte) error {
			if err := tk.tick(); err != nil {
				return err
			}
			id := graph.FileID(binary.BigEndian.Uint64(k))
			f, err := decodeFile(id, v)
			if err != nil {
				add("%v", err)
				return nil
			}
			recs[id] = f
			if f.ord >= nextOrd {
				add("file %d has ordinal %d, not below the next one %d", id, f.ord, nextOrd)
			}
			if back := ords.Get(u32(f.ord)); len(back) != 8 || graph.FileID(binary.BigEndian.Uint64(back)) != id {
				add("ordinal %d of file %d maps back to %x", f.ord, id, back)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if n := ords.Stats().KeyN; n != len(recs) {
			add("%d ordinals for %d files", n, len(recs))
		}
		if n := getU64(meta, kNFiles); n != uint64(len(recs)) {
			add("file count says %d, %d file records", n, len(recs))
		}
		// File-tag links against files, tags and postings.
		postings := tx.Bucket(bPostings)
		withTags := map[graph.FileID]bool{}
		links := map[uint32]map[uint32]bool{} // tag id -> ordinals
		nlinks := 0
		err = tx.Bucket(bFileTags).ForEach(func(k, v []byte) error {
			if err := tk.tick(); err != nil {
				return err
			}
			nlinks++
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
			f, ok := recs[id]
			if !ok {
				add("file %d has tag %q but no file record", id, tag)
				return nil
			}
			if links[tid] == nil {
				links[tid] = map[uint32]bool{}
			}
			links[tid][f.ord] = true
			if postings.Get(postingKey(tid, f.name, id)) == nil {
				add("file %d (%q) has tag %q but is missing from its postings", id, f.name, tag)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for id := range recs {
			if !withTags[id] {
				add("file %d is indexed with no tags", id)
			}
		}
		seen := map[uint32]uint64{}
		npost := 0
		err = postings.ForEach(func(k, v []byte) error {
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
			if rec, ok := recs[f.ID]; !ok || rec.name != f.Name {
				add("postings of %q name file %d %q, its record says %q", tag, f.ID, f.Name, rec.name)
			} else if len(v) != 4 || binary.BigEndian.Uint32(v) != rec.ord {
				add("postings of %q give file %d ordinal %x, its record says %d", tag, f.ID, v, rec.ord)
			}
			if tx.Bucket(bFileTags).Get(fileTagKey(f.ID, tag)) == nil {
				add("postings of %q hold file %d, which lacks the tag", tag, f.ID)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if npost != nlinks {
			add("%d postings but %d file-tag links", npost, nlinks)
		}
		for tid, c := range counts {
			if seen[tid] != c {
				add("tag %q counts %d files but has %d", byID[tid], c, seen[tid])
			}
		}
		// Posting lists of ordinals: sorted, disjoint chunks, same members.
		type pos struct {
			tid  uint32
			last int64
		}
		prev := pos{tid: ^uint32(0), last: -1}
		plisted := map[uint32]int{}
		err = tx.Bucket(bPlists).ForEach(func(k, v []byte) error {
			if err := tk.tick(); err != nil {
				return err
			}
			if len(k) != 8 || len(v) == 0 || len(v)%4 != 0 || len(v) > 4*chunkMax {
				add("malformed posting-list chunk %x (%d bytes)", k, len(v))
				return nil
			}
			tid, first := binary.BigEndian.Uint32(k), binary.BigEndian.Uint32(k[4:])
			if tid != prev.tid {
				prev = pos{tid: tid, last: -1}
			}
			if binary.BigEndian.Uint32(v) != first {
				add("posting-list chunk %x does not start with its key", k)
			}
			for i := 0; i < len(v); i += 4 {
				o := binary.BigEndian.Uint32(v[i:])
				if int64(o) <= prev.last {
					add("posting list of tag id %d is out of order at %d", tid, o)
				}
				prev.last = int64(o)
				plisted[tid]++
				if !links[tid][o] {
					add("posting list of tag %q holds ordinal %d, whose file lacks the tag", byID[tid], o)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for tid, m := range links {
			if plisted[tid] != len(m) {
				add("posting list of tag %q has %d ordinals for %d files", byID[tid], plisted[tid], len(m))
			}
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
		return fmt.Errorf("boltstore: check: %w: %v", ErrCorrupt, problems)
	}
	return nil
}
