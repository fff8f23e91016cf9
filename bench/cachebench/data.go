package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

// Kinds of files in the data set.
const (
	kindSmall = "small"
	kindLarge = "large"
)

// Tags the data set carries: the small files are the training set the issue
// names; the large files get a tag of their own so that the prefetcher's
// "same tag" edges do not pull 1 GiB files while small files are read.
const (
	tagSmall = "train"
	tagLarge = "train-large"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fileSpec is one file of the data set and how to check it.
type fileSpec struct {
	kind string
	rel  string // path below the data set's root
	size int64
	crc  uint32 // CRC-32C of the whole content
	// content: pool[off:off+size] for small files; large files are made of
	// blockSize pieces taken from pool at offs[i].
	off  int
	offs []int
}

// dataSpec is the deterministic description of the data set.
type dataSpec struct {
	seed       uint64
	smallFiles int
	minKiB     int
	maxKiB     int
	largeFiles int
	largeMiB   int
}

const (
	poolSize  = 64 << 20
	blockSize = 1 << 20 // large files are written and read in 1 MiB calls
)

// dataSet holds every file's description and the random pool their bytes
// come from. Only the generator needs the pool; readers check CRCs.
type dataSet struct {
	spec  dataSpec
	pool  []byte
	files []fileSpec
}

func (ds *dataSet) byKind(kind string) []fileSpec {
	var out []fileSpec
	for _, f := range ds.files {
		if f.kind == kind {
			out = append(out, f)
		}
	}
	return out
}

func (ds *dataSet) bytesOf(kind string) int64 {
	var n int64
	for _, f := range ds.files {
		if f.kind == kind {
			n += f.size
		}
	}
	return n
}

// smallRel spreads the small files over a two-level tree of at most 16x16
// directories, about 80 files in each at full size.
func smallRel(i, n int) string {
	perDir := max(1, (n+255)/256)
	d := i / perDir
	return fmt.Sprintf("small/a%02d/b%02d/f%06d.bin", d/16, d%16, i)
}

func newDataSet(spec dataSpec) (*dataSet, error) {
	ds := &dataSet{spec: spec, pool: make([]byte, poolSize+max(blockSize, spec.maxKiB<<10))}
	var seed [32]byte
	for i := range 8 {
		seed[i] = byte(spec.seed >> (8 * i))
	}
	if _, err := rand.NewChaCha8(seed).Read(ds.pool); err != nil {
		return nil, fmt.Errorf("generate data: %w", err)
	}
	rng := rand.New(rand.NewPCG(spec.seed, 0x6361636865626e63))
	minB, maxB := spec.minKiB<<10, spec.maxKiB<<10
	for i := range spec.smallFiles {
		f := fileSpec{kind: kindSmall, rel: smallRel(i, spec.smallFiles),
			size: int64(minB + rng.IntN(maxB-minB+1)), off: rng.IntN(poolSize)}
		f.crc = crc32.Checksum(ds.pool[f.off:f.off+int(f.size)], castagnoli)
		ds.files = append(ds.files, f)
	}
	for i := range spec.largeFiles {
		f := fileSpec{kind: kindLarge, rel: fmt.Sprintf("large/big%02d.bin", i), size: int64(spec.largeMiB) << 20}
		var crc uint32
		for off := int64(0); off < f.size; off += blockSize {
			o := rng.IntN(poolSize)
			f.offs = append(f.offs, o)
			crc = crc32.Update(crc, castagnoli, ds.pool[o:o+int(min(blockSize, f.size-off))])
		}
		f.crc = crc
		ds.files = append(ds.files, f)
	}
	return ds, nil
}

// writeManifest stores what the reader needs: kind, path, size and CRC.
func writeManifest(path string, files []fileSpec) error {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "%s\t%s\t%d\t%08x\n", f.kind, f.rel, f.size, f.crc)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write the manifest: %w", err)
	}
	return nil
}

func readManifest(path, kind string) ([]fileSpec, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the manifest: %w", err)
	}
	defer fh.Close()
	var out []fileSpec
	sc := bufio.NewScanner(fh)
	for n := 1; sc.Scan(); n++ {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) != 4 {
			return nil, fmt.Errorf("manifest %s line %d: want 4 fields", path, n)
		}
		if fs[0] != kind {
			continue
		}
		size, err1 := strconv.ParseInt(fs[2], 10, 64)
		crc, err2 := strconv.ParseUint(fs[3], 16, 32)
		if err := errors.Join(err1, err2); err != nil || size < 0 {
			return nil, fmt.Errorf("manifest %s line %d: %v", path, n, err)
		}
		out = append(out, fileSpec{kind: fs[0], rel: fs[1], size: size, crc: uint32(crc)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the manifest: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("manifest %s has no %s files", path, kind)
	}
	return out, nil
}

// writeTree writes every file of the data set below root with the given
// number of parallel writers, tagging each file through its user.xdg.tags
// xattr when tag is set (the mount stores it; the native directory does not
// need tags). A non-zero mtime is set on every file afterwards. progress is
// called now and then with files written.
func writeTree(ctx context.Context, root string, ds *dataSet, writers int, tag bool, mtime time.Time, progress func(done, total int)) error {
	dirs := map[string]bool{}
	for _, f := range ds.files {
		dirs[filepath.Dir(f.rel)] = true
	}
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	var next, done atomic.Int64
	errc := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ds.files) || ctx.Err() != nil {
					return
				}
				f := ds.files[i]
				path := filepath.Join(root, f.rel)
				if err := writeOne(path, f, ds.pool, tag); err != nil {
					errc <- err
					return
				}
				if !mtime.IsZero() {
					if err := os.Chtimes(path, mtime, mtime); err != nil {
						errc <- fmt.Errorf("date %s: %w", path, err)
						return
					}
				}
				if n := done.Add(1); progress != nil && (n%2000 == 0 || f.kind == kindLarge) {
					progress(int(n), len(ds.files))
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	return ctx.Err()
}

func writeOne(path string, f fileSpec, pool []byte, tag bool) error {
	fd, err := benchkit.OpenFile(path, syscall.O_CREAT|syscall.O_WRONLY|syscall.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if f.kind == kindSmall {
		err = benchkit.WriteFull(fd, pool[f.off:f.off+int(f.size)])
	} else {
		for i, o := range f.offs {
			n := min(blockSize, f.size-int64(i)*blockSize)
			if err = benchkit.WriteFull(fd, pool[o:o+int(n)]); err != nil {
				break
			}
		}
	}
	if err != nil {
		syscall.Close(fd)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syscall.Close(fd); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if tag {
		t := tagSmall
		if f.kind == kindLarge {
			t = tagLarge
		}
		if err := syscall.Setxattr(path, "user.xdg.tags", []byte(t), 0); err != nil {
			return fmt.Errorf("tag %s: %w", path, err)
		}
	}
	return nil
}

// The readers and writers call the system directly (as a C program would):
// os.File would register FUSE files with the runtime poller and add calls a
// file on ext4 does not get.
