package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// CheckMountpoint returns the absolute mountpoint, or an error that says what is
// wrong with it.
func CheckMountpoint(mp string) (string, error) {
	abs, err := filepath.Abs(mp)
	if err != nil {
		return "", fmt.Errorf("mountpoint %q: %w", mp, err)
	}
	if abs == "/" {
		return "", errors.New("refusing to mount on /")
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return "", fmt.Errorf("mountpoint %s is a dead mount whose daemon is gone: run 'disgrafs umount %s' first", abs, abs)
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("mountpoint %s does not exist: create it with 'mkdir -p %s'", abs, abs)
	case err != nil:
		return "", fmt.Errorf("mountpoint %s: %w", abs, err)
	case !st.IsDir():
		return "", fmt.Errorf("mountpoint %s is not a directory", abs)
	}
	if IsMounted(abs) {
		return "", fmt.Errorf("mountpoint %s is already a mount point (see 'disgrafs status %s' or 'disgrafs umount %s')", abs, abs, abs)
	}
	f, err := os.Open(abs)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", abs, err)
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err == nil {
		return "", fmt.Errorf("mountpoint %s is not empty: mount on an empty directory so no files are hidden", abs)
	} else if !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("mountpoint %s: %w", abs, err)
	}
	return abs, nil
}

// IsMounted reports whether path is listed in /proc/self/mountinfo.
func IsMounted(path string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == path {
			return true
		}
	}
	return false
}

// unescapeMount decodes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CheckFuse makes sure this process can mount a FUSE file system.
func CheckFuse(devPath string) error {
	if _, err := os.Stat(devPath); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no %s: this machine has no FUSE (load the module with 'modprobe fuse', or in a container pass --device /dev/fuse)", devPath)
		}
		return fmt.Errorf("%s: %w", devPath, err)
	}
	if os.Geteuid() == 0 {
		f, err := os.OpenFile(devPath, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("cannot open %s: %w", devPath, err)
		}
		f.Close()
		return nil
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			return errors.New("no permission to mount: not root and no fusermount3 (install the fuse3 package or run as root)")
		}
	}
	return nil
}
