package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/vfs"

	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/fusefs"
	"github.com/disgrafs/disgrafs/prealloc"
)

// PreallocConfig configures file pre-allocation.
type PreallocConfig struct {
	// Dirs are directories of the volume (paths from its root) whose creates
	// are answered from a pool; empty turns pre-allocation off.
	Dirs []string
	// Pool is the number of ready files per directory.
	Pool int
	// NoSync skips the journal's fsync.
	NoSync bool
	// AsyncClose answers closes of files created in the directories before
	// their data is committed (prealloc/asyncclose.go).
	AsyncClose bool
	// RenameDelay holds background renames until files are this old.
	RenameDelay time.Duration
	// NegativeTTL answers lookups of missing names from a background listing.
	NegativeTTL time.Duration
}

// startPrealloc opens the journal, replays it and starts the pools.
func (d *Daemon) startPrealloc(ctx context.Context, fo *fusefs.Options) error {
	pc := d.cfg.Prealloc
	dirs := map[uint64]string{}
	for _, p := range pc.Dirs {
		ino, clean, err := ensureVolumeDir(ctx, d.vol.VFS, p)
		if err != nil {
			return fmt.Errorf("--prealloc %s: %w", p, err)
		}
		dirs[ino] = clean
	}
	dir := d.stateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	m, err := prealloc.Open(ctx, prealloc.Options{
		JournalPath: filepath.Join(dir, "prealloc.db"),
		NoSync:      pc.NoSync,
		AsyncClose:  pc.AsyncClose,
		Dirs:        dirs,
		PoolSize:    pc.Pool,
		RenameDelay: pc.RenameDelay,
		NegativeTTL: pc.NegativeTTL,
		Volume:      d.vol.PreallocVolume(),
		Registerer:  d.reg.Subsystem("prealloc"),
		Log:         d.log,
	})
	if err != nil {
		return err
	}
	d.pre = m
	fo.Prealloc = m
	d.log.Info("pre-allocation on", "dirs", pc.Dirs, "pool", pc.Pool, "node", m.Node(), "async_close", pc.AsyncClose)
	return nil
}

// ensureVolumeDir resolves a path from the volume's root, making missing
// directories.
func ensureVolumeDir(ctx context.Context, v *vfs.VFS, p string) (uint64, string, error) {
	clean := filepath.Clean("/" + p)
	if clean == "/" {
		return 0, "", fmt.Errorf("the volume's root cannot be a pre-allocation directory")
	}
	mctx := vfs.NewLogContext(meta.WrapWithoutCancel(ctx, uint32(os.Getpid()), 0, []uint32{0}))
	ino := meta.Ino(1)
	for _, name := range strings.Split(strings.TrimPrefix(clean, "/"), "/") {
		if name == prealloc.HiddenDir {
			return 0, "", fmt.Errorf("%s is the pre-allocation pools' own directory", prealloc.HiddenDir)
		}
		e, st := v.Lookup(mctx, ino, name)
		if st == syscall.ENOENT {
			e, st = v.Mkdir(mctx, ino, name, 0o755, 0o022)
			if st == syscall.EEXIST {
				e, st = v.Lookup(mctx, ino, name)
			}
		}
		if st != 0 {
			return 0, "", fmt.Errorf("%s: %w", name, st)
		}
		if e.Attr.Typ != meta.TypeDirectory {
			return 0, "", fmt.Errorf("%s is not a directory", clean)
		}
		ino = e.Inode
	}
	return uint64(ino), clean, nil
}

// closePrealloc lands pending renames and closes before the volume closes.
func (d *Daemon) closePrealloc() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.pre.Close(ctx)
}

func (d *Daemon) preallocInfo() *control.PreallocInfo {
	if d.pre == nil {
		return nil
	}
	s := d.pre.Stats()
	info := &control.PreallocInfo{Node: s.Node, Journal: s.Journal, PoolSize: s.PoolSize, PoolFiles: s.PoolFiles,
		PoolByDir: s.Dirs, Hits: s.Hits, Misses: s.Misses, Pending: s.Pending, Landed: s.Landed,
		RenameRetries: s.RenameRetries, Conflicts: s.Conflicts, Lost: s.Lost, Errors: s.Errors,
		AsyncClose: s.AsyncClose, ClosesPending: s.ClosesPending, ClosesLanded: s.ClosesLanded, CloseErrors: s.CloseErrors, ClosesLost: s.ClosesLost}
	for _, c := range s.RecentConflict {
		info.Recent = append(info.Recent, control.PreallocEvent{Ino: c.Ino, Parent: c.Parent, Name: c.Name, LandedAs: c.Landed, Reason: c.Reason, At: c.At})
	}
	return info
}
