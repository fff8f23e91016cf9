package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// WarmupMode says what a warmup does with its files.
type WarmupMode string

// Warmup modes.
const (
	ModeWarm  WarmupMode = "warm"
	ModeCheck WarmupMode = "check"
	ModeEvict WarmupMode = "evict"
)

// Progress reports a warmup. Files counts files processed out of Total;
// Bytes counts bytes processed out of TotalBytes.
type Progress struct {
	Mode        WarmupMode `json:"mode"`
	Files       int64      `json:"files"`
	Total       int64      `json:"total"`
	Bytes       int64      `json:"bytes"`
	TotalBytes  int64      `json:"total_bytes"`
	Cached      int64      `json:"cached"`       // files already cached (warm, check)
	CachedBytes int64      `json:"cached_bytes"` // their bytes
	Fetched     int64      `json:"fetched"`      // files copied in by this warmup
	Evicted     int64      `json:"evicted"`
	Failed      int64      `json:"failed"`
	Gone        int64      `json:"gone"` // files deleted since they were listed
	Elapsed     float64    `json:"elapsed_seconds"`
	Done        bool       `json:"done"`
	Error       string     `json:"error,omitempty"`
}

// Warmup warms, checks or evicts the given files with threads workers,
// calling report with progress (from one goroutine at a time). A warmup
// needing more than the budget fails before copying anything.
func (c *Cache) Warmup(ctx context.Context, src Source, inos []uint64, mode WarmupMode, threads int, report func(Progress)) (Progress, error) {
	start := time.Now()
	if threads <= 0 {
		threads = 8
	}
	if c.met != nil {
		c.met.warmupActive.Inc()
		defer c.met.warmupActive.Dec()
	}
	var mu sync.Mutex
	p := Progress{Mode: mode, Total: int64(len(inos))}
	emit := func(final bool) {
		p.Elapsed = time.Since(start).Seconds()
		p.Done = final
		if report != nil {
			report(p)
		}
	}
	if mode == ModeEvict {
		files, bytes := c.Evict(inos)
		p.Files, p.Evicted, p.Bytes, p.TotalBytes = p.Total, int64(files), bytes, bytes
		if c.met != nil {
			c.met.warmupFiles.Add(float64(len(inos)))
		}
		emit(true)
		return p, nil
	}

	// First learn every file's size: to refuse a warmup larger than the
	// budget before it thrashes, and for the progress bar.
	vers := make([]Version, len(inos))
	gone := make([]bool, len(inos))
	if err := parallel(ctx, inos, threads*4, func(i int, ino uint64) {
		v, err := src.Stat(ctx, ino)
		if err != nil {
			gone[i] = true
			return
		}
		vers[i] = v
	}); err != nil {
		return p, err
	}
	var need int64
	for i, ino := range inos {
		if gone[i] {
			p.Gone++
			continue
		}
		p.TotalBytes += int64(vers[i].Length)
		if c.Has(ino, vers[i]) {
			p.Cached++
			p.CachedBytes += int64(vers[i].Length)
		} else {
			need += int64(vers[i].Length)
		}
	}
	if mode == ModeCheck {
		p.Files = p.Total
		p.Bytes = p.TotalBytes
		emit(true)
		return p, nil
	}
	if total := p.TotalBytes; total > c.cfg.Capacity {
		err := fmt.Errorf("warming %d files of %s needs more than the cache budget of %s: raise --cache-size or warm a smaller set",
			len(inos)-int(p.Gone), human(total), human(c.cfg.Capacity))
		p.Error = err.Error()
		emit(true)
		return p, err
	}
	emit(false)

	var done, bytes atomic.Int64
	done.Store(p.Cached + p.Gone)
	bytes.Store(p.CachedBytes)
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				mu.Lock()
				p.Files, p.Bytes = done.Load(), bytes.Load()
				emit(false)
				mu.Unlock()
			}
		}
	}()
	var firstErr error
	err := parallel(ctx, inos, threads, func(i int, ino uint64) {
		if gone[i] || c.Has(ino, vers[i]) {
			return
		}
		n, err := c.Fill(ctx, src, ino)
		mu.Lock()
		switch {
		case err == nil:
			p.Fetched++
		case errors.Is(err, context.Canceled):
		default:
			p.Failed++
			if firstErr == nil {
				firstErr = fmt.Errorf("inode %d: %w", ino, err)
			}
		}
		mu.Unlock()
		done.Add(1)
		bytes.Add(int64(vers[i].Length))
		if c.met != nil {
			c.met.warmupFiles.Inc()
			c.met.warmupBytes.Add(float64(n))
		}
	})
	close(stop)
	mu.Lock()
	defer mu.Unlock()
	p.Files, p.Bytes = done.Load(), bytes.Load()
	if err != nil {
		p.Error = err.Error()
		emit(true)
		return p, err
	}
	if firstErr != nil {
		p.Error = fmt.Sprintf("%d files could not be cached; first: %v", p.Failed, firstErr)
	}
	emit(true)
	return p, nil
}

// parallel calls fn for each ino with n workers; it stops early when ctx ends.
func parallel(ctx context.Context, inos []uint64, n int, fn func(i int, ino uint64)) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(n, len(inos)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(inos) {
					return
				}
				fn(i, inos[i])
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
