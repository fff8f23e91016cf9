//go:build linux && amd64

package bpf

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// eachPerCPU visits every entry once, with every CPU's value, across
// several batches, as the iterator does.
func TestEachPerCPU(t *testing.T) {
	need(t, os.Geteuid() == 0, "needs root to create BPF maps")
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, perCPUBatch, 2*perCPUBatch + 17} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 8, ValueSize: 16, MaxEntries: uint32(3 * perCPUBatch)})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		for k := range uint64(n) {
			vals := make([]readsProcStats, ncpu)
			for c := range vals {
				vals[c] = readsProcStats{Calls: k, Bytes: uint64(c) + 1}
			}
			if err := m.Put(k, vals); err != nil {
				t.Fatal(err)
			}
		}
		for name, read := range map[string]func(*ebpf.Map, func(uint64, []readsProcStats)) error{
			"batch": eachPerCPU[uint64, readsProcStats], "iterator": iterPerCPU[uint64, readsProcStats],
		} {
			seen := map[uint64]int{}
			err := read(m, func(k uint64, vals []readsProcStats) {
				seen[k]++
				var calls, bytes uint64
				for _, v := range vals {
					calls += v.Calls
					bytes += v.Bytes
				}
				if len(vals) != ncpu || calls != k*uint64(ncpu) || bytes != uint64(ncpu*(ncpu+1)/2) {
					t.Errorf("%s, %d entries: key %d: %d values summing to %d calls, %d bytes", name, n, k, len(vals), calls, bytes)
				}
			})
			if err != nil {
				t.Fatalf("%s, %d entries: %v", name, n, err)
			}
			if len(seen) != n {
				t.Fatalf("%s: %d of %d entries seen", name, len(seen), n)
			}
			for k, c := range seen {
				if c != 1 {
					t.Fatalf("%s: key %d seen %d times", name, k, c)
				}
			}
		}
	}
}
