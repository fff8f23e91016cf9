package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/disgrafs/disgrafs/prealloc"
)

// preallocBursts is the seed's file switch in a kill -9 cycle: bursts of
// 200 creates in a pre-allocation directory (with async close), each file
// written and closed, every other one fsynced first. After the remount every
// fsynced file is under its real name with its bytes, every other file of the
// cycle holds a prefix of what was written (its unsynced data may be lost,
// never garbled), and the pool directory holds nothing but empty pool files.
type preallocBursts struct {
	dir     string
	mu      sync.Mutex
	durable map[string]int // path relative to the mount -> fsynced length
	created int
}

// preallocFaultArgs are the mount flags preallocBursts needs.
func (p *preallocBursts) args() []string {
	return []string{"--prealloc", p.dir, "--prealloc-pool", "256", "--prealloc-async-close"}
}

func (p *preallocBursts) name() string { return "prealloc creates" }

func (p *preallocBursts) setup(t *testing.T, m *Mount) {
	p.durable = map[string]int{}
	waitPreallocPool(t, m, 256)
}

func (p *preallocBursts) run(ctx context.Context, m *Mount, cycle int, killed func() bool) error {
	if err := p.bursts(ctx, m, cycle); err != nil && !killed() {
		return err
	}
	return nil
}

func (p *preallocBursts) bursts(ctx context.Context, m *Mount, cycle int) error {
	for burst := 0; ctx.Err() == nil; burst++ {
		for j := 0; j < 200 && ctx.Err() == nil; j++ {
			rel := filepath.Join(p.dir, fmt.Sprintf("c%03d-b%d-%03d", cycle, burst, j))
			data := stream(rel, 2048+j*16)
			f, err := os.OpenFile(m.Path(rel), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return fmt.Errorf("create %s: %w", rel, err)
			}
			p.mu.Lock()
			p.created++
			p.mu.Unlock()
			if _, err := f.Write(data); err != nil {
				f.Close()
				return fmt.Errorf("write %s: %w", rel, err)
			}
			synced := j%2 == 0
			if synced {
				if err := f.Sync(); err != nil {
					f.Close()
					return fmt.Errorf("fsync %s: %w", rel, err)
				}
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("close %s: %w", rel, err)
			}
			if synced {
				p.mu.Lock()
				p.durable[rel] = len(data)
				p.mu.Unlock()
			}
		}
	}
	return nil
}

func (p *preallocBursts) check(t *testing.T, m *Mount, cycle int, r *faultReport) {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := cycle < 0 || cycle%5 == 4
	mine := fmt.Sprintf("c%03d-", cycle)
	var files int
	var n int64
	for rel, size := range p.durable {
		if !all && !strings.HasPrefix(filepath.Base(rel), mine) {
			continue
		}
		got, err := os.ReadFile(m.Path(rel))
		switch {
		case err != nil:
			r.lose("%s (fsynced create): %v", rel, err)
		case !bytes.Equal(got, stream(rel, size)):
			r.lose("%s (fsynced create): %d bytes, %d fsynced, or different content", rel, len(got), size)
		default:
			files++
			n += int64(size)
		}
	}
	r.verified(files, n)
	if cycle < 0 {
		return
	}
	// Unsynced files of this cycle: a prefix of what was written.
	ents, err := os.ReadDir(m.Path(p.dir))
	if err != nil {
		t.Fatalf("list %s after the remount: %v", p.dir, err)
	}
	for _, e := range ents {
		rel := filepath.Join(p.dir, e.Name())
		if _, ok := p.durable[rel]; ok || !strings.HasPrefix(e.Name(), mine) {
			continue
		}
		got, err := os.ReadFile(m.Path(rel))
		if err != nil {
			r.lose("%s: listed but unreadable after the remount: %v", rel, err)
			continue
		}
		if want := stream(rel, len(got)); !bytes.Equal(got, want) {
			r.lose("%s: %d bytes that are not what was written", rel, len(got))
		}
	}
	st := preallocStatus(t, m)
	if st.Conflicts != 0 || st.Lost != 0 {
		r.lose("prealloc status after the remount: %d conflicts, %d in lost+found", st.Conflicts, st.Lost)
	}
	// Nothing leaks into the pool directory: only empty pool files, at most
	// a pool's worth plus what a kill left mid-refill.
	pools, err := os.ReadDir(filepath.Join(m.Dir, prealloc.HiddenDir, st.Node))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, pd := range pools {
		ents, err := os.ReadDir(filepath.Join(m.Dir, prealloc.HiddenDir, st.Node, pd.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Size() != 0 {
				r.lose("pool file %s/%s holds %d bytes (a create's data leaked)", pd.Name(), e.Name(), fi.Size())
			}
		}
	}
}
