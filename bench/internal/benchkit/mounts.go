// Package benchkit holds what the benchmark programs share: mount table
// reading, page cache dropping, raw file I/O, statistics, report helpers and
// signal handling.
package benchkit

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Point, FSType, Source string
}

// String is "POINT (FSTYPE)".
func (m Mount) String() string { return m.Point + " (" + m.FSType + ")" }

// ReadMounts reads this process's mount table.
func ReadMounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 2 {
			continue
		}
		out = append(out, Mount{Point: UnescapeMount(pf[4]), FSType: qf[0], Source: UnescapeMount(qf[1])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return out, nil
}

// UnescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func UnescapeMount(s string) string {
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

// MountedAt reports the (topmost) mount at exactly path.
func MountedAt(path string) (Mount, bool, error) {
	ms, err := ReadMounts()
	if err != nil {
		return Mount{}, false, err
	}
	var found Mount
	ok := false
	for _, m := range ms {
		if m.Point == path {
			found, ok = m, true
		}
	}
	return found, ok, nil
}

// MountsUnder lists the mounts at dir or beneath it.
func MountsUnder(dir string) ([]Mount, error) {
	ms, err := ReadMounts()
	if err != nil {
		return nil, err
	}
	var out []Mount
	for _, m := range ms {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m)
		}
	}
	return out, nil
}

// FilesystemOf returns the mount that holds path (the longest matching mount point).
func FilesystemOf(path string) (Mount, error) {
	ms, err := ReadMounts()
	if err != nil {
		return Mount{}, err
	}
	var best Mount
	for _, m := range ms {
		if (path == m.Point || m.Point == "/" || strings.HasPrefix(path, m.Point+"/")) && len(m.Point) >= len(best.Point) {
			best = m
		}
	}
	if best.Point == "" {
		return best, fmt.Errorf("no mount holds %s", path)
	}
	return best, nil
}
