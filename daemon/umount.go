package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/disgrafs/disgrafs/control"
)

// DetachMount lazily unmounts mp (MNT_DETACH): the name goes away now, open
// files keep working until closed.
func DetachMount(mp string) error {
	if os.Geteuid() == 0 {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("umount -l %s: %w", mp, err)
		}
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", "-z", mp).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u -z %s: %v: %s", mp, err, out)
	}
	return nil
}

func forceUnmount(mp string) error {
	if os.Geteuid() == 0 {
		if err := syscall.Unmount(mp, 0); err == nil {
			return nil
		}
		return DetachMount(mp)
	}
	if out, err := exec.Command("fusermount3", "-u", mp).CombinedOutput(); err != nil {
		if err2 := DetachMount(mp); err2 != nil {
			return fmt.Errorf("fusermount3 -u %s: %v: %s", mp, err, out)
		}
	}
	return nil
}

// Unmount asks the daemon of mp to flush and unmount, and waits until it has
// exited. When the daemon is dead, it removes the stale mount and its files.
// It returns a sentence describing what it did.
func Unmount(ctx context.Context, mp string, lazy bool, wait time.Duration) (string, error) {
	abs, err := filepath.Abs(mp)
	if err != nil {
		return "", err
	}
	paths := control.PathsFor(abs)
	var info control.Info
	if b, err := os.ReadFile(paths.Info); err == nil {
		_ = json.Unmarshal(b, &info)
	}
	cl := control.Dial(paths.Socket)
	err = cl.Call(ctx, "POST", "unmount", control.UnmountRequest{Lazy: lazy}, nil)
	switch {
	case err == nil:
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) {
			if info.Pid == 0 || !processAlive(info.Pid) {
				return fmt.Sprintf("unmounted %s", abs), nil
			}
			if lazy && !IsMounted(abs) {
				return fmt.Sprintf("detached %s; the daemon (pid %d) exits once its open files are closed", abs, info.Pid), nil
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		return "", fmt.Errorf("daemon pid %d did not exit within %s after unmounting %s", info.Pid, wait, abs)
	case errors.Is(err, control.ErrNoDaemon):
		if info.Pid != 0 && processAlive(info.Pid) {
			return "", fmt.Errorf("daemon pid %d of %s does not answer on %s", info.Pid, abs, paths.Socket)
		}
		cleanup := func() {
			_ = os.Remove(paths.Socket)
			_ = os.Remove(paths.Pid)
			_ = os.Remove(paths.Info)
		}
		if !IsMounted(abs) {
			cleanup()
			return "", fmt.Errorf("nothing is mounted at %s", abs)
		}
		if err := forceUnmount(abs); err != nil {
			return "", fmt.Errorf("clean up the dead mount at %s: %w", abs, err)
		}
		cleanup()
		return fmt.Sprintf("cleaned up %s, whose daemon had died", abs), nil
	default:
		return "", err
	}
}

// processAlive reports whether pid runs (a zombie does not count).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}
