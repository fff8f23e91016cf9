package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

// Workload keys, in report order.
const (
	largeWrite    = "large-write"
	largeReadCold = "large-read-cold"
	largeReadWarm = "large-read-warm"
	smallWrite    = "small-write"
	smallReadCold = "small-read-cold"
	smallReadWarm = "small-read-warm"
	smallDelete   = "small-delete"
)

// workload describes one measured quantity.
type workload struct {
	key, title, unit string
}

func workloads(cfg *config) []workload {
	large := fmt.Sprintf("%d MiB file", cfg.largeMiB)
	if cfg.largeMiB%1024 == 0 {
		large = fmt.Sprintf("%d GiB file", cfg.largeMiB/1024)
	}
	small := fmt.Sprintf("%d files of %d-%d KiB", cfg.smallFiles, cfg.smallMinKiB, cfg.smallMaxKiB)
	return []workload{
		{largeWrite, large + ": sequential write (incl. fsync + close)", "MB/s"},
		{largeReadCold, large + ": sequential read, cold (after drop_caches)", "MB/s"},
		{largeReadWarm, large + ": sequential read, warm (read again at once)", "MB/s"},
		{smallWrite, small + ": write (create + write + close each)", "files/s"},
		{smallReadCold, small + ": read and verify, cold (after drop_caches)", "files/s"},
		{smallReadWarm, small + ": read and verify, warm (read again at once)", "files/s"},
		{smallDelete, small + ": delete (unlink each)", "files/s"},
	}
}

// sample is one measurement of one target.
type sample struct {
	value   float64       // in the workload's unit
	elapsed time.Duration // wall time of the measurement
	cpu     float64       // daemon CPU seconds during the measurement
}

// results holds every sample by workload and target.
type results struct {
	targets []string
	samples map[string]map[string][]sample
}

func newResults(targets []string) *results {
	return &results{targets: targets, samples: map[string]map[string][]sample{}}
}

func (r *results) add(workload, target string, s sample) {
	if r.samples[workload] == nil {
		r.samples[workload] = map[string][]sample{}
	}
	r.samples[workload][target] = append(r.samples[workload][target], s)
}

func (r *results) get(workload, target string) []sample { return r.samples[workload][target] }

// dataSet is the deterministic content of every file: slices of one random
// pool, so that reads can be checked byte for byte without hashing.
type dataSet struct {
	pool []byte
	// Large file: block i holds pool[largeOff[i]:largeOff[i]+size of block i].
	ioSize    int
	largeSize int64
	largeOff  []int
	// Small files, in write (and read) order.
	small     []smallFile
	smallDirs int
	maxSmall  int
}

type smallFile struct {
	rel       string // path below the set's directory
	off, size int
}

const poolSize = 64 << 20

func newDataSet(cfg *config) (*dataSet, error) {
	ds := &dataSet{
		ioSize:    cfg.ioKiB << 10,
		largeSize: int64(cfg.largeMiB) << 20,
		smallDirs: cfg.smallDirs,
		maxSmall:  cfg.smallMaxKiB << 10,
	}
	ds.pool = make([]byte, poolSize+max(ds.ioSize, ds.maxSmall))
	var seed [32]byte
	for i := range 8 {
		seed[i] = byte(cfg.seed >> (8 * i))
	}
	if _, err := rand.NewChaCha8(seed).Read(ds.pool); err != nil {
		return nil, fmt.Errorf("generate data: %w", err)
	}
	rng := rand.New(rand.NewPCG(cfg.seed, 0x6469736772616673))
	for off := int64(0); off < ds.largeSize; off += int64(ds.ioSize) {
		ds.largeOff = append(ds.largeOff, rng.IntN(poolSize))
	}
	minB, maxB := cfg.smallMinKiB<<10, cfg.smallMaxKiB<<10
	perDir := (cfg.smallFiles + cfg.smallDirs - 1) / cfg.smallDirs
	for i := range cfg.smallFiles {
		size := minB + rng.IntN(maxB-minB+1)
		ds.small = append(ds.small, smallFile{
			rel:  fmt.Sprintf("d%03d/f%06d", i/perDir, i),
			off:  rng.IntN(poolSize),
			size: size,
		})
	}
	return ds, nil
}

func (ds *dataSet) largeBlock(i int) []byte {
	n := int64(ds.ioSize)
	if rest := ds.largeSize - int64(i)*n; rest < n {
		n = rest
	}
	return ds.pool[ds.largeOff[i] : ds.largeOff[i]+int(n)]
}

// rotate returns the targets starting at the rep-th one, so that every target
// takes every position in turn across repetitions.
func rotate(ts []*target, rep int) []*target {
	out := make([]*target, 0, len(ts))
	for i := range ts {
		out = append(out, ts[(i+rep)%len(ts)])
	}
	return out
}

// settle writes back dirty data of earlier steps so that no measurement pays
// for another's writeback.
func settle() { syscall.Sync() }

// measure runs every repetition. The large file is measured one target after
// the other (rotating the order every run). The small files are measured in
// chunks: every target does a chunk of files in turn, so that changes in the
// machine's background load over a pass are shared by all targets instead of
// falling on whichever target happened to run then.
func measure(ctx context.Context, cfg *config, targets []*target, ds *dataSet, res *results, logf func(string, ...any)) (err error) {
	buf := make([]byte, max(ds.ioSize, ds.maxSmall)+1)
	tn := newTurns(targets)
	defer func() {
		if rerr := tn.restore(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	record := func(t *target, rep int, key string, units float64, elapsed time.Duration, cpu float64) {
		s := sample{value: units / elapsed.Seconds(), elapsed: elapsed, cpu: cpu}
		res.add(key, t.name, s)
		logf("run %d/%d %-8s %-16s %10.1f %s/s  (%.2f s, daemon CPU %.2f s)", rep+1, cfg.runs, t.name, key, s.value, unitOf(key), elapsed.Seconds(), s.cpu)
	}
	timed := func(t *target, rep int, key string, units float64, f func() error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := tn.activate(t); err != nil {
			return err
		}
		cpu0 := t.cpuSeconds()
		start := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("%s, run %d, %s: %w", key, rep+1, t.name, err)
		}
		elapsed := time.Since(start)
		record(t, rep, key, units, elapsed, t.cpuSeconds()-cpu0)
		return nil
	}
	// interleaved runs op on every small file of every target, chunk by chunk,
	// and records each target's total time.
	interleaved := func(rep int, key string, roots map[*target]string, op func(root string, f smallFile) error) error {
		elapsed := make(map[*target]time.Duration, len(targets))
		cpu0 := make(map[*target]float64, len(targets))
		for _, t := range targets {
			cpu0[t] = t.cpuSeconds()
		}
		chunk := cfg.chunkFiles
		for c, first := 0, 0; first < len(ds.small); c, first = c+1, first+chunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			files := ds.small[first:min(first+chunk, len(ds.small))]
			for _, t := range rotate(targets, rep+c) {
				if err := tn.activate(t); err != nil {
					return err
				}
				root := roots[t]
				start := time.Now()
				for _, f := range files {
					if err := op(root, f); err != nil {
						return fmt.Errorf("%s, run %d, %s: %w", key, rep+1, t.name, err)
					}
				}
				elapsed[t] += time.Since(start)
			}
		}
		for _, t := range targets {
			record(t, rep, key, float64(len(ds.small)), elapsed[t], t.cpuSeconds()-cpu0[t])
		}
		return nil
	}
	mb := float64(ds.largeSize) / 1e6
	for rep := range cfg.runs {
		order := rotate(targets, rep)
		largePath := func(t *target) string { return filepath.Join(t.dir, fmt.Sprintf("large-r%d.bin", rep)) }

		for _, t := range order {
			settle()
			if err := timed(t, rep, largeWrite, mb, func() error { return writeLarge(ctx, largePath(t), ds) }); err != nil {
				return err
			}
		}
		for _, t := range order {
			if err := benchkit.DropCaches(); err != nil {
				return err
			}
			if err := timed(t, rep, largeReadCold, mb, func() error { return readLarge(ctx, largePath(t), ds, buf) }); err != nil {
				return err
			}
			if err := timed(t, rep, largeReadWarm, mb, func() error { return readLarge(ctx, largePath(t), ds, buf) }); err != nil {
				return err
			}
		}
		for _, t := range order {
			if err := os.Remove(largePath(t)); err != nil {
				return fmt.Errorf("remove the large file: %w", err)
			}
		}

		roots := make(map[*target]string, len(targets))
		for _, t := range targets {
			roots[t] = filepath.Join(t.dir, fmt.Sprintf("small-r%d", rep))
			if err := makeDirs(roots[t], ds); err != nil {
				return err
			}
		}
		settle()
		write := func(root string, f smallFile) error { return writeSmallFile(root, f, ds.pool) }
		if err := interleaved(rep, smallWrite, roots, write); err != nil {
			return err
		}
		if err := benchkit.DropCaches(); err != nil {
			return err
		}
		read := func(root string, f smallFile) error { return readSmallFile(root, f, ds.pool, buf) }
		if err := interleaved(rep, smallReadCold, roots, read); err != nil {
			return err
		}
		if err := interleaved(rep, smallReadWarm, roots, read); err != nil {
			return err
		}
		if err := interleaved(rep, smallDelete, roots, unlinkSmallFile); err != nil {
			return err
		}
		for _, t := range order {
			if err := os.RemoveAll(roots[t]); err != nil {
				return fmt.Errorf("remove the small files' directories: %w", err)
			}
		}
	}
	return nil
}

func unitOf(key string) string {
	switch key {
	case smallWrite, smallReadCold, smallReadWarm, smallDelete:
		return "files"
	}
	return "MB"
}

// The workloads call the system directly (open/read/write/fsync/close, as a C
// program would) rather than through os.File, which would register FUSE files
// (they support poll) with the Go runtime's poller and add system calls that a
// regular file on ext4 does not get.

// readFull fills p, stopping early only at end of file; it returns the bytes read.
func readFull(fd int, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := syscall.Read(fd, p[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func closeFile(fd int, path string) error {
	// close is not retried on EINTR: the descriptor is gone either way.
	if err := syscall.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

// writeLarge writes the large file sequentially and makes it durable.
func writeLarge(ctx context.Context, path string, ds *dataSet) error {
	fd, err := benchkit.OpenFile(path, syscall.O_CREAT|syscall.O_WRONLY|syscall.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	for i := range ds.largeOff {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				syscall.Close(fd)
				return err
			}
		}
		if err := benchkit.WriteFull(fd, ds.largeBlock(i)); err != nil {
			syscall.Close(fd)
			return fmt.Errorf("write block %d: %w", i, err)
		}
	}
	if err := syscall.Fsync(fd); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return closeFile(fd, path)
}

// readLarge reads the large file sequentially and checks every byte.
func readLarge(ctx context.Context, path string, ds *dataSet, buf []byte) error {
	fd, err := benchkit.OpenFile(path, syscall.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var off int64
	for i := range ds.largeOff {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		want := ds.largeBlock(i)
		n, err := readFull(fd, buf[:len(want)])
		if err != nil {
			return fmt.Errorf("read %s at %d: %w", path, off, err)
		}
		if n < len(want) {
			return fmt.Errorf("%s: ends at %d, wrote %d bytes", path, off+int64(n), ds.largeSize)
		}
		if !bytes.Equal(buf[:n], want) {
			return fmt.Errorf("%s: wrong bytes in [%d, %d)", path, off, off+int64(n))
		}
		off += int64(n)
	}
	if n, err := readFull(fd, buf[:1]); n != 0 || err != nil {
		return fmt.Errorf("%s: longer than %d bytes (%v)", path, ds.largeSize, err)
	}
	return nil
}

func makeDirs(root string, ds *dataSet) error {
	seen := map[string]bool{}
	for _, f := range ds.small {
		d := filepath.Dir(filepath.Join(root, f.rel))
		if seen[d] {
			continue
		}
		seen[d] = true
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	return nil
}

// writeSmallFile creates one small file: create, write, close.
func writeSmallFile(root string, sf smallFile, pool []byte) error {
	p := root + "/" + sf.rel
	fd, err := benchkit.OpenFile(p, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := benchkit.WriteFull(fd, pool[sf.off:sf.off+sf.size]); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("write %s: %w", p, err)
	}
	return closeFile(fd, p)
}

// readSmallFile reads one small file to its end and checks its length and
// bytes. buf must be larger than the file, so that one read more sees the end.
func readSmallFile(root string, sf smallFile, pool, buf []byte) error {
	p := root + "/" + sf.rel
	fd, err := benchkit.OpenFile(p, syscall.O_RDONLY, 0)
	if err != nil {
		return err
	}
	n, err := readFull(fd, buf)
	if cerr := closeFile(fd, p); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	if n != sf.size {
		return fmt.Errorf("%s: read %d bytes, wrote %d", p, n, sf.size)
	}
	if !bytes.Equal(buf[:n], pool[sf.off:sf.off+sf.size]) {
		return fmt.Errorf("%s: wrong bytes", p)
	}
	return nil
}

// unlinkSmallFile deletes one small file.
func unlinkSmallFile(root string, sf smallFile) error {
	p := root + "/" + sf.rel
	for {
		err := syscall.Unlink(p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "unlink", Path: p, Err: err}
		}
		return nil
	}
}
