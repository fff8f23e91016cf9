package boltstore

import (
	"math/rand"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Random edits to a few tags' posting lists, in transactions of random
// size, against a reference set; chunks must stay sorted, disjoint, keyed by
// their first ordinal and at most chunkMax long.
func TestPlists(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "p.db"), 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bPlists); return err }); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	want := map[uint32]map[uint32]bool{}
	for round := 0; round < 60; round++ {
		edits := plistEdits{}
		for i := rng.Intn(3000); i > 0; i-- {
			tid := uint32(rng.Intn(3))
			var o uint32
			switch rng.Intn(3) {
			case 0: // dense low range: many edits per chunk
				o = uint32(rng.Intn(5000))
			case 1: // appends at the end, as new files get new ordinals
				o = uint32(5000 + round*100 + rng.Intn(100))
			default:
				o = uint32(rng.Int31())
			}
			present := rng.Intn(3) > 0
			edits.set(tid, o, present)
			if want[tid] == nil {
				want[tid] = map[uint32]bool{}
			}
			if present {
				want[tid][o] = true
			} else {
				delete(want[tid], o)
			}
		}
		if err := db.Update(func(tx *bolt.Tx) error { return edits.apply(tx.Bucket(bPlists)) }); err != nil {
			t.Fatal(err)
		}
		err := db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bPlists)
			for tid := uint32(0); tid < 3; tid++ {
				var got []uint32
				if err := eachOrd(b.Cursor(), tid, func(o uint32) { got = append(got, o) }); err != nil {
					return err
				}
				var exp []uint32
				for o := range want[tid] {
					exp = append(exp, o)
				}
				slices.Sort(exp)
				if !slices.Equal(got, exp) {
					t.Fatalf("round %d tag %d: %d ordinals, want %d", round, tid, len(got), len(exp))
				}
			}
			return b.ForEach(func(k, v []byte) error {
				if len(v) == 0 || len(v) > 4*chunkMax || string(v[:4]) != string(k[4:]) {
					t.Fatalf("round %d: bad chunk %x (%d bytes)", round, k, len(v))
				}
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
