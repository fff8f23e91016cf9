package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// dirSource serves files of a local directory named by inode number: the
// cache's contract with a volume, over real files.
type dirSource struct {
	dir string
	mu  sync.Mutex
	// cached records the Cached calls.
	cached []uint64
}

func (s *dirSource) path(ino uint64) string { return filepath.Join(s.dir, fmt.Sprint(ino)) }

func (s *dirSource) write(t *testing.T, ino uint64, data []byte) {
	t.Helper()
	if err := os.WriteFile(s.path(ino), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *dirSource) Stat(ctx context.Context, ino uint64) (Version, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(s.path(ino), &st); err != nil {
		return Version{}, err
	}
	return Version{Length: uint64(st.Size), Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}, nil
}

func (s *dirSource) Open(ctx context.Context, ino uint64) (Reader, Version, error) {
	v, err := s.Stat(ctx, ino)
	if err != nil {
		return nil, Version{}, err
	}
	f, err := os.Open(s.path(ino))
	if err != nil {
		return nil, Version{}, err
	}
	return f, v, nil
}

func (s *dirSource) Cached(ctx context.Context, ino uint64, length uint64) {
	s.mu.Lock()
	s.cached = append(s.cached, ino)
	s.mu.Unlock()
}

func newTestCache(t *testing.T, capacity int64) (*Cache, *dirSource, string) {
	t.Helper()
	dir := t.TempDir()
	src := &dirSource{dir: t.TempDir()}
	c, err := Open(Config{Dir: dir, Capacity: capacity})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, src, dir
}

func readHit(t *testing.T, h *Hit) []byte {
	t.Helper()
	defer h.File.Close()
	b, err := io.ReadAll(h.File)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGetValidates(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		damage func(t *testing.T, c *Cache, src *dirSource)
		hit    bool
	}{
		{"intact", func(*testing.T, *Cache, *dirSource) {}, true},
		{"source changed", func(t *testing.T, c *Cache, src *dirSource) { src.write(t, 1, []byte("new content")) }, false},
		{"copy truncated", func(t *testing.T, c *Cache, src *dirSource) {
			if err := os.Truncate(copyPath(c, 1), 3); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"copy corrupted in place", func(t *testing.T, c *Cache, src *dirSource) {
			f, err := os.OpenFile(copyPath(c, 1), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte("X"), 5); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"copy deleted", func(t *testing.T, c *Cache, src *dirSource) { _ = os.Remove(copyPath(c, 1)) }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, src, _ := newTestCache(t, 1<<20)
			want := []byte("the original content of file one")
			src.write(t, 1, want)
			if _, err := c.Fill(ctx, src, 1); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, c, src)
			v, err := src.Stat(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			h, ok := c.Get(1, v)
			if ok != tc.hit {
				t.Fatalf("hit = %v, want %v", ok, tc.hit)
			}
			if ok && !bytes.Equal(readHit(t, h), want) {
				t.Fatal("the copy differs from the source")
			}
			if !ok && c.Contains(1) {
				t.Fatal("a bad entry stayed in the cache")
			}
		})
	}
}

func TestBudgetEvictsLeastRecentlyUsed(t *testing.T) {
	ctx := context.Background()
	c, src, _ := newTestCache(t, 300)
	for ino := uint64(1); ino <= 3; ino++ {
		src.write(t, ino, bytes.Repeat([]byte{byte(ino)}, 100))
		if _, err := c.Fill(ctx, src, ino); err != nil {
			t.Fatal(err)
		}
	}
	c.Touch(1) // 2 is now the least recently used
	src.write(t, 4, bytes.Repeat([]byte{4}, 100))
	if _, err := c.Fill(ctx, src, 4); err != nil {
		t.Fatal(err)
	}
	for ino, want := range map[uint64]bool{1: true, 2: false, 3: true, 4: true} {
		if got := c.Contains(ino); got != want {
			t.Errorf("inode %d cached = %v, want %v", ino, got, want)
		}
	}
	if s := c.Stats(); s.Bytes > 300 {
		t.Errorf("cache holds %d bytes over a budget of 300", s.Bytes)
	}
	src.write(t, 5, make([]byte, 301))
	if _, err := c.Fill(ctx, src, 5); !errors.Is(err, ErrTooBig) {
		t.Errorf("a file over the budget: want ErrTooBig, got %v", err)
	}
}

func TestRestartKeepsAndChecks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := &dirSource{dir: t.TempDir()}
	c, err := Open(Config{Dir: dir, Capacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for ino := uint64(1); ino <= 3; ino++ {
		src.write(t, ino, []byte(strings.Repeat(fmt.Sprint(ino), 50)))
		if _, err := c.Fill(ctx, src, ino); err != nil {
			t.Fatal(err)
		}
	}
	copy2, copy3 := copyPath(c, 2), copyPath(c, 3)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Behind the cache's back: one copy truncated, one corrupted, a stray
	// file and a partial download left over.
	if err := os.Truncate(copy2, 10); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copy3, []byte(strings.Repeat("x", 50)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "files", "ff"), []byte("stray"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "7.123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Open(Config{Dir: dir, Capacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Contains(2) {
		t.Error("a truncated copy survived the start check")
	}
	for _, f := range []string{filepath.Join(dir, "files", "ff"), filepath.Join(dir, "tmp", "7.123")} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived the start check", f)
		}
	}
	v1, _ := src.Stat(ctx, 1)
	if h, ok := c.Get(1, v1); !ok {
		t.Error("an intact copy was lost across a restart")
	} else {
		readHit(t, h)
	}
	v3, _ := src.Stat(ctx, 3)
	if _, ok := c.Get(3, v3); ok {
		t.Error("a copy corrupted while the daemon was down was served")
	}
}

func TestCorruptIndexStartsEmpty(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.db"), []byte("not a bbolt file at all, just garbage bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Open(Config{Dir: dir, Capacity: 1 << 20})
	if err != nil {
		t.Fatalf("a corrupt index must not stop the cache: %v", err)
	}
	defer c.Close()
	if s := c.Stats(); s.Files != 0 {
		t.Fatalf("%d files after a corrupt index", s.Files)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "index.db.corrupt-*"))
	if len(matches) != 1 {
		t.Fatalf("the corrupt index was not kept aside: %v", matches)
	}
}

func TestWarmup(t *testing.T) {
	ctx := context.Background()
	c, src, _ := newTestCache(t, 1000)
	var inos []uint64
	for ino := uint64(1); ino <= 5; ino++ {
		src.write(t, ino, bytes.Repeat([]byte{byte(ino)}, 100))
		inos = append(inos, ino)
	}
	p, err := c.Warmup(ctx, src, append(inos, 99), ModeWarm, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Fetched != 5 || p.Gone != 1 || !p.Done {
		t.Fatalf("warmup: %+v", p)
	}
	if len(src.cached) != 5 {
		t.Errorf("the source was told of %d cached files, want 5", len(src.cached))
	}
	p, _ = c.Warmup(ctx, src, inos, ModeCheck, 2, nil)
	if p.Cached != 5 || p.CachedBytes != 500 {
		t.Fatalf("check: %+v", p)
	}
	p, _ = c.Warmup(ctx, src, inos, ModeWarm, 2, nil)
	if p.Fetched != 0 || p.Cached != 5 {
		t.Fatalf("a second warmup copied again: %+v", p)
	}
	src.write(t, 6, make([]byte, 600))
	if _, err := c.Warmup(ctx, src, append(inos, 6), ModeWarm, 2, nil); err == nil || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("warming more than the budget: want a refusal, got %v", err)
	}
	p, _ = c.Warmup(ctx, src, inos, ModeEvict, 2, nil)
	if p.Evicted != 5 || c.Stats().Files != 0 {
		t.Fatalf("evict: %+v, %d files left", p, c.Stats().Files)
	}
}

func TestDamagedIndexNeverStopsTheCache(t *testing.T) {
	ctx := context.Background()
	for _, off := range []int64{0, 4096, 4096*2 + 100, 4096*3 + 16, 4096 * 4} {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			dir := t.TempDir()
			src := &dirSource{dir: t.TempDir()}
			c, err := Open(Config{Dir: dir, Capacity: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			for ino := uint64(1); ino <= 50; ino++ {
				src.write(t, ino, []byte(fmt.Sprint("content ", ino)))
				if _, err := c.Fill(ctx, src, ino); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(filepath.Join(dir, "index.db"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, 512), off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			c, err = Open(Config{Dir: dir, Capacity: 1 << 20})
			if err != nil {
				t.Fatalf("a damaged index stopped the cache: %v", err)
			}
			defer c.Close()
			// Whatever survived is served only if intact; the cache works.
			for ino := uint64(1); ino <= 50; ino++ {
				v, _ := src.Stat(ctx, ino)
				if h, ok := c.Get(ino, v); ok {
					if got := readHit(t, h); string(got) != fmt.Sprint("content ", ino) {
						t.Fatalf("inode %d: served %q", ino, got)
					}
				}
			}
			if _, err := c.Fill(ctx, src, 1); err != nil {
				t.Fatalf("fill after a damaged index: %v", err)
			}
		})
	}
}

// gatedSource holds every Open until gate is closed.
type gatedSource struct {
	*dirSource
	gate chan struct{}
}

func (s gatedSource) Open(ctx context.Context, ino uint64) (Reader, Version, error) {
	<-s.gate
	return s.dirSource.Open(ctx, ino)
}

// An open that finds its file being copied in waits for the copy, up to its
// context's end, and returns at once when no copy is in flight.
func TestAwaitFill(t *testing.T) {
	c, src, _ := newTestCache(t, 1<<20)
	src.write(t, 7, []byte("seven"))
	if c.AwaitFill(context.Background(), 7, time.Minute) {
		t.Fatal("AwaitFill waited with no copy in flight")
	}
	gs := gatedSource{dirSource: src, gate: make(chan struct{})}
	filled := make(chan error, 1)
	go func() {
		_, err := c.Fill(context.Background(), gs, 7)
		filled <- err
	}()
	for {
		c.mu.Lock()
		inFlight := c.filling[7] != nil
		c.mu.Unlock()
		if inFlight {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if c.AwaitFill(context.Background(), 7, 20*time.Millisecond) {
		t.Fatal("AwaitFill reported the copy done while it was held")
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if c.AwaitFill(short, 7, time.Minute) {
		t.Fatal("AwaitFill reported the copy done when its context ended")
	}
	waited := make(chan bool, 1)
	go func() { waited <- c.AwaitFill(context.Background(), 7, time.Minute) }()
	select {
	case <-waited:
		t.Fatal("AwaitFill returned before the copy ended")
	case <-time.After(50 * time.Millisecond):
	}
	close(gs.gate)
	if !<-waited {
		t.Fatal("AwaitFill did not report the copy's end")
	}
	if err := <-filled; err != nil {
		t.Fatal(err)
	}
	v, err := src.Stat(context.Background(), 7)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Has(7, v) {
		t.Fatal("the file is not cached after the copy the open waited for")
	}
	if c.AwaitFill(context.Background(), 7, time.Minute) {
		t.Fatal("AwaitFill waited after the copy ended")
	}
}

// TestSpeculativeFillEvictsOnlyOlder: a prefetch may evict only files used
// less recently than the one it brings; a file the budget pushed out comes
// back only as a demand fill or into free room.
func TestSpeculativeFillEvictsOnlyOlder(t *testing.T) {
	ctx := context.Background()
	const size = 100
	// Budget for three files. Inode 1 is filled first, then 2, 3 and 4: the
	// fill of 4 evicts 1 (the least recently used), which becomes a ghost.
	setup := func(t *testing.T) (*Cache, *dirSource) {
		c, src, _ := newTestCache(t, 3*size)
		for ino := uint64(1); ino <= 6; ino++ {
			src.write(t, ino, bytes.Repeat([]byte{byte(ino)}, size))
		}
		for ino := uint64(1); ino <= 4; ino++ {
			if _, err := c.Fill(ctx, src, ino); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond) // distinct last uses
		}
		if c.Contains(1) {
			t.Fatal("inode 1 should have been evicted by the budget")
		}
		return c, src
	}
	cases := []struct {
		name    string
		prepare func(t *testing.T, c *Cache)
		ino     uint64
		mode    FillMode
		wantErr error
		evicted uint64 // 0: nothing evicted
	}{
		{"new file evicts the least recently used", nil, 5, Speculative, nil, 2},
		{"evicted file is refused", nil, 1, Speculative, ErrRecentlyUsed, 0},
		{"evicted file comes back on demand", nil, 1, Demand, nil, 2},
		{"evicted file fits in free room", func(t *testing.T, c *Cache) { c.Evict([]uint64{3}) }, 1, Speculative, nil, 0},
		{"ghost older than a file not used since it was filled", func(t *testing.T, c *Cache) {
			// A ghost's last use is older than every entry's, touched or not.
			c.Touch(2)
		}, 1, Speculative, ErrRecentlyUsed, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, src := setup(t)
			if tc.prepare != nil {
				tc.prepare(t, c)
			}
			before := map[uint64]bool{}
			for ino := uint64(1); ino <= 6; ino++ {
				before[ino] = c.Contains(ino)
			}
			_, err := c.FillUpTo(ctx, src, tc.ino, 0, tc.mode)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("fill of %d: error %v, want %v", tc.ino, err, tc.wantErr)
			}
			if got := c.Contains(tc.ino); got != (tc.wantErr == nil) {
				t.Fatalf("inode %d cached = %v after the fill", tc.ino, got)
			}
			for ino := uint64(1); ino <= 6; ino++ {
				if ino == tc.ino || !before[ino] {
					continue
				}
				if want := ino != tc.evicted; c.Contains(ino) != want {
					t.Errorf("inode %d cached = %v, want %v", ino, !want, want)
				}
			}
		})
	}
}

// copyPath is the file holding the copy of ino.
func copyPath(c *Cache, ino uint64) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.filePath(ino, c.entries[ino].seq)
}
