package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

// passResult is what one reader pass reports (as JSON on stdout when the
// reader runs as a child process).
type passResult struct {
	Files   int     `json:"files"`   // files read and verified
	Total   int     `json:"total"`   // files in the pass
	Bytes   int64   `json:"bytes"`   // bytes read and verified
	Seconds float64 `json:"seconds"` // wall time of the pass
	Partial bool    `json:"partial"` // stopped at the time limit before the end
	// counters: what the mount's cache metrics did during the pass (filled
	// in by the parent from the metrics endpoint).
	counters string
	// cpu: where the machine's CPU went during the pass (filled in by the
	// parent).
	cpu passCPU
}

func (r passResult) filesPerSec() float64 { return float64(r.Files) / r.Seconds }
func (r passResult) mbPerSec() float64    { return float64(r.Bytes) / 1e6 / r.Seconds }

// epoch is the time a whole pass over every file takes; for a pass cut at
// the time limit it is extrapolated from the rate so far.
func (r passResult) epoch() float64 {
	if !r.Partial || r.Files == 0 {
		return r.Seconds
	}
	return r.Seconds * float64(r.Total) / float64(r.Files)
}

// readerMain is the "read" subcommand: one pass over the files of a kind in
// shuffled order with N threads, every file checked against its CRC-32C.
// The parent runs it as a child process so that every pass starts with a
// fresh process (no warm Go heap or runtime poller state from the last one).
func readerMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cachebench read", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "", "directory holding the data set")
	manifest := fs.String("manifest", "", "manifest written by the benchmark")
	kind := fs.String("kind", kindSmall, "which files: small or large")
	threads := fs.Int("threads", 1, "reader threads")
	seed := fs.Uint64("seed", 1, "seed of the shuffled order")
	limit := fs.Duration("limit", 0, "stop after this long and report the rate so far (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *root == "" || *manifest == "" || *threads < 1 {
		fmt.Fprintln(stderr, "cachebench read: need -root, -manifest and -threads >= 1")
		return 2
	}
	files, err := readManifest(*manifest, *kind)
	if err != nil {
		fmt.Fprintln(stderr, "cachebench read:", err)
		return 1
	}
	res, err := readPass(context.Background(), *root, files, *threads, *seed, *limit)
	if err != nil {
		fmt.Fprintln(stderr, "cachebench read:", err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		fmt.Fprintln(stderr, "cachebench read:", err)
		return 1
	}
	return 0
}

// shuffled returns the files in an order given by seed.
func shuffled(files []fileSpec, seed uint64) []fileSpec {
	out := append([]fileSpec(nil), files...)
	rng := rand.New(rand.NewPCG(seed, 0x73687566666c65))
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// readPass reads every file once, threads at a time, and checks each one.
func readPass(ctx context.Context, root string, files []fileSpec, threads int, seed uint64, limit time.Duration) (passResult, error) {
	order := shuffled(files, seed)
	var next, nfiles, nbytes atomic.Int64
	var stopped atomic.Bool
	var deadline time.Time
	start := time.Now()
	if limit > 0 {
		deadline = start.Add(limit)
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, blockSize)
			for {
				if ctx.Err() != nil {
					return
				}
				if !deadline.IsZero() && time.Now().After(deadline) {
					stopped.Store(true)
					return
				}
				i := int(next.Add(1) - 1)
				if i >= len(order) {
					return
				}
				f := order[i]
				n, err := readAndCheck(filepath.Join(root, f.rel), f, buf, deadline, &nbytes)
				if errors.Is(err, errDeadline) {
					stopped.Store(true)
					return
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				nfiles.Add(1)
				if f.kind == kindSmall {
					nbytes.Add(n)
				}
			}
		}()
	}
	wg.Wait()
	res := passResult{Files: int(nfiles.Load()), Total: len(order), Bytes: nbytes.Load(),
		Seconds: time.Since(start).Seconds(), Partial: stopped.Load() && int(nfiles.Load()) < len(order)}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if res.Files == 0 {
		return res, fmt.Errorf("no file was read within %s", limit)
	}
	return res, nil
}

var errDeadline = errors.New("time limit reached")

// readAndCheck reads a file to its end and compares length and CRC-32C with
// the manifest. A large file adds its bytes to progress as they arrive, so
// that a pass cut at the deadline in the middle of one still counts them.
func readAndCheck(path string, f fileSpec, buf []byte, deadline time.Time, progress *atomic.Int64) (int64, error) {
	fd, err := benchkit.OpenFile(path, syscall.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer syscall.Close(fd)
	var total int64
	var crc uint32
	for blocks := 0; ; blocks++ {
		if f.kind == kindLarge && blocks%16 == 15 && !deadline.IsZero() && time.Now().After(deadline) {
			return 0, errDeadline
		}
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return total, fmt.Errorf("read %s at %d: %w", path, total, err)
		}
		if n == 0 {
			break
		}
		crc = crc32.Update(crc, castagnoli, buf[:n])
		total += int64(n)
		if f.kind == kindLarge {
			progress.Add(int64(n))
		}
		if total > f.size {
			return total, fmt.Errorf("%s: longer than the %d bytes written", path, f.size)
		}
	}
	if total != f.size {
		return total, fmt.Errorf("%s: read %d bytes, wrote %d", path, total, f.size)
	}
	if crc != f.crc {
		return total, fmt.Errorf("%s: content differs from what was written (CRC-32C %08x, want %08x)", path, crc, f.crc)
	}
	return total, nil
}
