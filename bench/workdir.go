package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

// workDir is the benchmark's directory: one subdirectory per target, the
// binary under test and the logs. It is locked for the length of a run.
type workDir struct {
	root string
	logs string
	lock *os.File
}

// prepareWorkDir locks the work directory and clears what a previous run left,
// refusing to touch anything while a file system is mounted beneath it.
func prepareWorkDir(cfg *config) (*workDir, error) {
	root, err := filepath.Abs(cfg.workDir)
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	// Mount points in /proc/self/mountinfo are resolved paths.
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	if root == "/" {
		return nil, errors.New("work directory: refusing to use /")
	}
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock the work directory: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another benchmark is running in %s (lock: %w)", root, err)
	}
	wd := &workDir{root: root, logs: filepath.Join(root, "logs"), lock: lock}
	mounted, err := benchkit.MountsUnder(root)
	if err != nil {
		wd.close()
		return nil, err
	}
	if len(mounted) > 0 {
		var pts []string
		for _, m := range mounted {
			pts = append(pts, m.String())
		}
		wd.close()
		return nil, fmt.Errorf("file systems are still mounted under %s: %s; unmount them first (disgrafs umount / juicefs umount / umount -l)",
			root, strings.Join(pts, ", "))
	}
	// Only what a run creates: the work directory may hold other things.
	old, err := filepath.Glob(filepath.Join(root, targetDisgrafs+"-*"))
	if err != nil {
		wd.close()
		return nil, fmt.Errorf("clear %s: %w", root, err)
	}
	for _, name := range append([]string{"logs", "bin"}, knownTargets()...) {
		old = append(old, filepath.Join(root, name))
	}
	for _, p := range old {
		if err := os.RemoveAll(p); err != nil {
			wd.close()
			return nil, fmt.Errorf("clear %s: %w", p, err)
		}
	}
	if err := os.MkdirAll(wd.logs, 0o755); err != nil {
		wd.close()
		return nil, fmt.Errorf("log directory: %w", err)
	}
	return wd, nil
}

func (w *workDir) close() error {
	if w.lock == nil {
		return nil
	}
	err := w.lock.Close()
	w.lock = nil
	return err
}
