package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// A tag's posting list of ordinals is stored in chunks: key tag id | first
// ordinal, value the chunk's ordinals, sorted, 4 bytes each. Chunks cover
// disjoint ranges in key order, and a chunk's key is its smallest ordinal.
const (
	chunkMax   = 2048 // a chunk grown past this is split
	chunkSplit = 1024 // into chunks of this many
)

func plistKey(tid, ord uint32) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint32(k, tid)
	binary.BigEndian.PutUint32(k[4:], ord)
	return k
}

// plistEdits collects, per tag, which ordinals must end up present (true) or
// absent (false); applied once per transaction.
type plistEdits map[uint32]map[uint32]bool

func (e plistEdits) set(tid, ord uint32, present bool) {
	m := e[tid]
	if m == nil {
		m = map[uint32]bool{}
		e[tid] = m
	}
	m[ord] = present
}

// apply writes the edits into the plists bucket.
func (e plistEdits) apply(b *bolt.Bucket) error {
	for tid, m := range e {
		ords := make([]uint32, 0, len(m))
		for o := range m {
			ords = append(ords, o)
		}
		slices.Sort(ords)
		for len(ords) > 0 {
			n, err := applyChunk(b, tid, ords, m)
			if err != nil {
				return fmt.Errorf("posting list of tag id %d: %w", tid, err)
			}
			ords = ords[n:]
		}
	}
	return nil
}

// applyChunk applies the leading edits of ords (sorted) that fall in one
// chunk and returns how many it applied.
func applyChunk(b *bolt.Bucket, tid uint32, ords []uint32, present map[uint32]bool) (int, error) {
	prefix := u32(tid)
	c := b.Cursor()
	// The chunk for ords[0]: the last one whose key is <= it, else the
	// first one of the tag, else none.
	var key, val []byte
	seek := plistKey(tid, ords[0])
	k, v := c.Seek(seek)
	switch {
	case k != nil && bytes.Equal(k, seek):
		key, val = k, v
	default:
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		if k != nil && bytes.HasPrefix(k, prefix) {
			key, val = k, v
		} else if k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
			key, val = k, v
		}
	}
	// The chunk ends where the next one begins.
	limit := uint64(1) << 32
	if key != nil {
		if k, _ := c.Next(); k != nil && bytes.HasPrefix(k, prefix) && len(k) == 8 {
			limit = uint64(binary.BigEndian.Uint32(k[4:]))
		}
		if len(val)%4 != 0 || len(key) != 8 {
			return 0, fmt.Errorf("malformed chunk %x: %w", key, ErrCorrupt)
		}
	}
	cur := make([]uint32, len(val)/4)
	for i := range cur {
		cur[i] = binary.BigEndian.Uint32(val[4*i:])
	}
	n := 0
	for n < len(ords) && uint64(ords[n]) < limit {
		n++
	}
	next := mergeEdits(cur, ords[:n], present)
	if key != nil {
		// Copy the key: it points into the page that Delete may change.
		if err := b.Delete(bytes.Clone(key)); err != nil {
			return 0, err
		}
	}
	for len(next) > 0 {
		size := len(next)
		if size > chunkMax {
			size = chunkSplit
		}
		v := make([]byte, 4*size)
		for i, o := range next[:size] {
			binary.BigEndian.PutUint32(v[4*i:], o)
		}
		if err := b.Put(plistKey(tid, next[0]), v); err != nil {
			return 0, err
		}
		next = next[size:]
	}
	return n, nil
}

// mergeEdits returns cur (sorted) with each ordinal of edits (sorted) added
// or removed as present says.
func mergeEdits(cur, edits []uint32, present map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(cur)+len(edits))
	i := 0
	for _, o := range edits {
		for i < len(cur) && cur[i] < o {
			out = append(out, cur[i])
			i++
		}
		if i < len(cur) && cur[i] == o {
			i++
		}
		if present[o] {
			out = append(out, o)
		}
	}
	return append(out, cur[i:]...)
}

// eachOrd calls fn for every ordinal in tag tid's posting list, in order.
func eachOrd(c *bolt.Cursor, tid uint32, fn func(ord uint32)) error {
	prefix := u32(tid)
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(v)%4 != 0 {
			return fmt.Errorf("malformed chunk %x: %w", k, ErrCorrupt)
		}
		for i := 0; i < len(v); i += 4 {
			fn(binary.BigEndian.Uint32(v[i:]))
		}
	}
	return nil
}
