//go:build linux && amd64

package bpf

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkPread is the per-call cost of the accounting: a 4 KiB pread of a
// warm file through a real FUSE mount (page cache), without the programs,
// with them, and with them but no per-process counters.
func BenchmarkPread(b *testing.B) {
	backing := b.TempDir()
	if err := os.WriteFile(filepath.Join(backing, "cached-one"), make([]byte, 4096), 0o644); err != nil {
		b.Fatal(err)
	}
	mnt := mountLoopback(b, backing)
	dev, _ := devOf(b, mnt)
	f, err := os.Open(filepath.Join(mnt, "cached-one"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	loop := func(b *testing.B) {
		for b.Loop() {
			if _, err := unix.Pread(int(f.Fd()), buf, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("off", loop)
	for _, tc := range []struct {
		name string
		o    Options
	}{{"on", Options{Dev: dev}}, {"on-no-per-process", Options{Dev: dev, NoPerProcess: true}}} {
		tr, err := Load(context.Background(), tc.o)
		if err != nil {
			b.Skipf("cannot load: %v", err)
		}
		b.Run(tc.name, loop)
		d, err := tr.Drain()
		if err != nil {
			b.Fatal(err)
		}
		if len(d.Inodes) != 1 {
			b.Errorf("%s: want 1 inode counted, got %+v", tc.name, d.Inodes)
		}
		tr.Close()
	}
	b.Run("off-again", loop)
}
