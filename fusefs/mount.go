package fusefs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountConfig are the kernel-facing options of a mount.
type MountConfig struct {
	FsName     string
	AllowOther bool
	Debug      bool
	// Options are extra mount options (-o), passed to the kernel as they are.
	Options []string
	// LocalLocks leaves POSIX locks and flocks to the kernel (exact when
	// no other node can reach the volume); otherwise they are JuiceFS's,
	// shared by every node.
	LocalLocks bool
}

// Mount attaches fs at mountpoint and returns the server; call Serve on it.
func Mount(fs *FS, mountpoint string, c MountConfig) (*fuse.Server, error) {
	opts := &fuse.MountOptions{
		FsName:               c.FsName,
		Name:                 "disgrafs",
		AllowOther:           c.AllowOther,
		Debug:                c.Debug,
		MaxBackground:        64,
		MaxWrite:             1 << 20,
		MaxReadAhead:         1 << 20,
		EnableLocks:          !c.LocalLocks,
		EnableSymlinkCaching: true,
		DirectMount:          true,
		// Replies come from memory buffers, so splice saves nothing, and a
		// 1 MiB reply plus its header does not fit the default 1 MiB pipe:
		// go-fuse would log a fallback for every large O_DIRECT read.
		DisableSplice: true,
		// The kernel checks permissions with the caller's full credentials.
		Options: append([]string{"default_permissions"}, c.Options...),
	}
	srv, err := fuse.NewServer(fs.raw(), mountpoint, opts)
	if err != nil {
		return nil, explainMountError(err)
	}
	return srv, nil
}

// explainMountError turns the errors of mount(2) and fusermount into a sentence
// that says what to do.
func explainMountError(err error) error {
	var execErr *exec.Error
	if errors.As(err, &execErr) {
		return fmt.Errorf("cannot mount: not root and no fusermount3 found (install the fuse3 package or run as root): %w", err)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "fusermount exited"):
		return fmt.Errorf("no permission to mount as uid %d: fusermount3 refused (its reason is printed above); run as root, or give this user /dev/fuse and a mountpoint it owns: %w", os.Geteuid(), err)
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES),
		strings.Contains(msg, "Operation not permitted"), strings.Contains(msg, "Permission denied"):
		return fmt.Errorf("no permission to mount (run as root, or allow FUSE mounts for this user): %w", err)
	case errors.Is(err, os.ErrNotExist) && strings.Contains(msg, "/dev/fuse"):
		return fmt.Errorf("no /dev/fuse: load the fuse kernel module (modprobe fuse): %w", err)
	}
	return fmt.Errorf("mount: %w", err)
}
