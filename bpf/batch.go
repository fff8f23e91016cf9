//go:build linux && amd64

package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// perCPUBatch is how many entries one BPF_MAP_LOOKUP_BATCH call reads.
const perCPUBatch = 1024

// eachPerCPU calls fn with every entry of a per-CPU hash map and its values,
// one per possible CPU. It reads the map with BPF_MAP_LOOKUP_BATCH, one
// system call per perCPUBatch entries, where the library's MapIterator makes
// two per entry (the next key, then the values): with the 16k-entry
// per-process map drained every second, the iterator took a third of the
// daemon's CPU in a warm 8-reader pass. Kernels without batch operations
// (before 5.6) get the iterator.
//
// Entries added while the map is read may be missed; the next call sees them.
func eachPerCPU[K any, V any](m *ebpf.Map, fn func(k K, vals []V)) error {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("possible CPUs: %w", err)
	}
	keys := make([]K, perCPUBatch)
	vals := make([]V, perCPUBatch*ncpu)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(keys[i], vals[i*ncpu:(i+1)*ncpu])
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil // the end of the map
		case errors.Is(err, ebpf.ErrNotSupported):
			if n > 0 {
				return fmt.Errorf("batch lookup stopped after %d entries: %w", n, err)
			}
			return iterPerCPU(m, fn)
		case err != nil:
			return err
		}
	}
}

func iterPerCPU[K any, V any](m *ebpf.Map, fn func(k K, vals []V)) error {
	var (
		key  K
		vals []V
	)
	it := m.Iterate()
	for it.Next(&key, &vals) {
		fn(key, vals)
	}
	return it.Err()
}
