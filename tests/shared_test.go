package tests

// Two daemons on this machine mount one shared volume (Redis metadata, file
// storage), each with its own mountpoint and block cache: what one does, the
// other sees.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crossNodeWait is how long a change on one node may take to show on the
// other: the kernel of the other node caches entries and attributes for 1 s
// each (the daemon's defaults), so 2 s suffice; 1 s more for a loaded machine.
const crossNodeWait = 3 * time.Second

// sharedEventually polls check until it succeeds or crossNodeWait has passed.
func sharedEventually(t *testing.T, what string, check func() error) {
	t.Helper()
	start := time.Now()
	var first error
	for {
		err := check()
		if err == nil {
			if first != nil {
				t.Logf("%s: visible after %s (first check: %v)", what, time.Since(start).Round(10*time.Millisecond), first)
			}
			return
		}
		if first == nil {
			first = err
		}
		if time.Since(start) > crossNodeWait {
			t.Fatalf("%s: not visible after %s: %v", what, crossNodeWait, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sharedRandom returns n random bytes.
func sharedRandom(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func sharedSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sharedReadSum reads a file and returns its size and SHA-256.
func sharedReadSum(path string) (int64, string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, "", err
	}
	sum, err := persistSHA256File(path)
	if err != nil {
		return 0, "", err
	}
	return fi.Size(), sum, nil
}

// sharedSnapshot describes every entry under root: type, size and content
// hash of files, symlink targets.
func sharedSnapshot(root string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		switch {
		case d.IsDir():
			out[rel] = "dir"
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "symlink -> " + target
		default:
			size, sum, err := sharedReadSum(p)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("file %d %s", size, sum)
		}
		return nil
	})
	return out, err
}

// sharedDiff describes how got differs from want, or returns nil.
func sharedDiff(got, want map[string]string) error {
	var d []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			d = append(d, "missing "+k)
		} else if g != w {
			d = append(d, fmt.Sprintf("%s: %s, want %s", k, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, "unexpected "+k)
		}
	}
	if len(d) == 0 {
		return nil
	}
	sort.Strings(d)
	return errors.New(strings.Join(d, "; "))
}

// TestSharedVolume mounts one shared volume twice and checks that files,
// directory trees, renames, deletions and xattrs made through one mount are
// seen through the other.
func TestSharedVolume(t *testing.T) {
	meta, _ := formatShared(t, "shared-nodes")
	// The auto-tagger would add user.xdg.tags to written files in the
	// background; the xattr checks below want exactly what was set.
	opts := MountOpts{Meta: meta, Extra: []string{"--auto-tag=false"}}
	nodes := [2]*Mount{startMount(t, opts), startMount(t, opts)}
	if nodes[0].cmd.Process.Pid == nodes[1].cmd.Process.Pid || nodes[0].Dir == nodes[1].Dir {
		t.Fatal("the two mounts are not two daemons on two mountpoints")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 7))
	// Directions: write on one node, observe on the other.
	dirs := []struct {
		name     string
		from, to *Mount
	}{
		{"a-to-b", nodes[0], nodes[1]},
		{"b-to-a", nodes[1], nodes[0]},
	}

	t.Run("files", func(t *testing.T) {
		sizes := []int{0, 1, 4095, 4096, 65537, 1 << 20, 4<<20 - 1, 4 << 20, 4<<20 + 1, 7<<20 + 12345, 20 << 20}
		for _, dir := range dirs {
			for _, size := range sizes {
				t.Run(fmt.Sprintf("%s/%d", dir.name, size), func(t *testing.T) {
					name := fmt.Sprintf("file-%s-%d", dir.name, size)
					data := sharedRandom(r, size)
					if err := os.WriteFile(dir.from.Path(name), data, 0o644); err != nil {
						t.Fatalf("write on %s: %v", dir.from.Dir, err)
					}
					// Close-to-open: a file closed on one node reads intact on
					// the other at once.
					gotSize, gotSum, err := sharedReadSum(dir.to.Path(name))
					if err != nil {
						t.Fatalf("read on the other node: %v", err)
					}
					if gotSize != int64(size) || gotSum != sharedSum(data) {
						t.Fatalf("other node reads %d bytes with SHA-256 %s, want %d bytes with %s", gotSize, gotSum, size, sharedSum(data))
					}
				})
			}
		}
	})

	t.Run("overwrite", func(t *testing.T) {
		// The reader has the old content in its page cache and attribute cache.
		cases := []struct {
			name          string
			before, after int
		}{
			{"same-size", 3 << 20, 3 << 20},
			{"grow", 100 << 10, 5<<20 + 3},
			{"shrink", 5 << 20, 4097},
			{"to-empty", 64 << 10, 0},
		}
		for _, dir := range dirs {
			for _, c := range cases {
				t.Run(dir.name+"/"+c.name, func(t *testing.T) {
					name := fmt.Sprintf("overwrite-%s-%s", dir.name, c.name)
					old := sharedRandom(r, c.before)
					if err := os.WriteFile(dir.from.Path(name), old, 0o644); err != nil {
						t.Fatalf("write: %v", err)
					}
					if got, err := os.ReadFile(dir.to.Path(name)); err != nil || !bytes.Equal(got, old) {
						t.Fatalf("other node reads the first version: %d bytes, %v", len(got), err)
					}
					neu := sharedRandom(r, c.after)
					if err := os.WriteFile(dir.from.Path(name), neu, 0o644); err != nil {
						t.Fatalf("overwrite: %v", err)
					}
					sharedEventually(t, "new content on the other node", func() error {
						got, err := os.ReadFile(dir.to.Path(name))
						if err != nil {
							return err
						}
						if !bytes.Equal(got, neu) {
							return fmt.Errorf("read %d bytes (SHA-256 %s), want %d bytes (%s)", len(got), sharedSum(got), len(neu), sharedSum(neu))
						}
						return nil
					})
				})
			}
		}
	})

	t.Run("tree", func(t *testing.T) {
		for _, dir := range dirs {
			t.Run(dir.name, func(t *testing.T) {
				root := "tree-" + dir.name
				if err := os.Mkdir(dir.from.Path(root), 0o755); err != nil {
					t.Fatalf("mkdir: %v", err)
				}
				// The other node lists the directory while it is still empty.
				sharedEventually(t, "empty directory on the other node", func() error {
					ents, err := os.ReadDir(dir.to.Path(root))
					if err == nil && len(ents) != 0 {
						err = fmt.Errorf("%d entries in a new directory", len(ents))
					}
					return err
				})
				want := map[string]string{}
				for i := range 4 {
					d := filepath.Join(fmt.Sprintf("d%d", i), fmt.Sprintf("sub%d", i%2), "leaf")
					if err := os.MkdirAll(dir.from.Path(root, d), 0o755); err != nil {
						t.Fatalf("mkdir -p: %v", err)
					}
					for p := d; p != "."; p = filepath.Dir(p) {
						want[p] = "dir"
					}
					for j := range 12 {
						rel := filepath.Join(d, fmt.Sprintf("f%02d", j))
						if j%3 == 0 {
							rel = filepath.Join(filepath.Dir(d), fmt.Sprintf("g%02d", j))
						}
						data := sharedRandom(r, r.IntN(200<<10))
						if err := os.WriteFile(dir.from.Path(root, rel), data, 0o644); err != nil {
							t.Fatalf("write: %v", err)
						}
						want[rel] = fmt.Sprintf("file %d %s", len(data), sharedSum(data))
					}
				}
				if err := os.Mkdir(dir.from.Path(root, "empty"), 0o700); err != nil {
					t.Fatalf("mkdir: %v", err)
				}
				want["empty"] = "dir"
				if err := os.Symlink("d0/sub0/leaf/f01", dir.from.Path(root, "link")); err != nil {
					t.Fatalf("symlink: %v", err)
				}
				want["link"] = "symlink -> d0/sub0/leaf/f01"
				sharedEventually(t, "directory tree on the other node", func() error {
					got, err := sharedSnapshot(dir.to.Path(root))
					if err != nil {
						return err
					}
					return sharedDiff(got, want)
				})
			})
		}
	})

	t.Run("rename-delete", func(t *testing.T) {
		type op struct {
			name string
			// setup creates names on the acting node; do changes them.
			setup func(p func(...string) string) error
			do    func(p func(...string) string) error
			// gone must vanish and present must appear (with content) on the
			// observer, who has looked them all up before.
			gone    []string
			present map[string]string
		}
		write := func(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }
		ops := []op{
			{
				name:    "rename-file",
				setup:   func(p func(...string) string) error { return write(p("old"), "rename-file") },
				do:      func(p func(...string) string) error { return os.Rename(p("old"), p("new")) },
				gone:    []string{"old"},
				present: map[string]string{"new": "rename-file"},
			},
			{
				name: "rename-across-dirs",
				setup: func(p func(...string) string) error {
					if err := os.MkdirAll(p("x", "y"), 0o755); err != nil {
						return err
					}
					return write(p("x", "f"), "across")
				},
				do:      func(p func(...string) string) error { return os.Rename(p("x", "f"), p("x", "y", "g")) },
				gone:    []string{"x/f"},
				present: map[string]string{"x/y/g": "across"},
			},
			{
				name: "rename-replace",
				setup: func(p func(...string) string) error {
					if err := write(p("src"), "the new content"); err != nil {
						return err
					}
					return write(p("dst"), "the old content, longer")
				},
				do:      func(p func(...string) string) error { return os.Rename(p("src"), p("dst")) },
				gone:    []string{"src"},
				present: map[string]string{"dst": "the new content"},
			},
			{
				name: "rename-dir",
				setup: func(p func(...string) string) error {
					if err := os.MkdirAll(p("d1", "inner"), 0o755); err != nil {
						return err
					}
					return write(p("d1", "inner", "f"), "in a renamed dir")
				},
				do:      func(p func(...string) string) error { return os.Rename(p("d1"), p("d2")) },
				gone:    []string{"d1", "d1/inner/f"},
				present: map[string]string{"d2/inner/f": "in a renamed dir"},
			},
			{
				name:  "unlink",
				setup: func(p func(...string) string) error { return write(p("victim"), "delete me") },
				do:    func(p func(...string) string) error { return os.Remove(p("victim")) },
				gone:  []string{"victim"},
			},
			{
				name: "remove-tree",
				setup: func(p func(...string) string) error {
					if err := os.MkdirAll(p("t", "a", "b"), 0o755); err != nil {
						return err
					}
					if err := write(p("t", "a", "f"), "f"); err != nil {
						return err
					}
					return write(p("t", "a", "b", "g"), "g")
				},
				do:   func(p func(...string) string) error { return os.RemoveAll(p("t")) },
				gone: []string{"t", "t/a", "t/a/b/g"},
			},
		}
		for _, dir := range dirs {
			for _, o := range ops {
				t.Run(dir.name+"/"+o.name, func(t *testing.T) {
					base := "ren-" + dir.name + "-" + o.name
					if err := os.Mkdir(dir.from.Path(base), 0o755); err != nil {
						t.Fatalf("mkdir: %v", err)
					}
					from := func(e ...string) string { return dir.from.Path(append([]string{base}, e...)...) }
					to := func(rel string) string { return dir.to.Path(base, rel) }
					if err := o.setup(from); err != nil {
						t.Fatalf("setup: %v", err)
					}
					// The observer looks everything up first, so that its kernel
					// caches the entries that are about to change.
					for _, g := range o.gone {
						sharedEventually(t, "setup of "+g, func() error { _, err := os.Stat(to(g)); return err })
					}
					for rel := range o.present {
						_, _ = os.ReadFile(to(rel)) // a replaced target's old content gets cached
					}
					if err := o.do(from); err != nil {
						t.Fatalf("%s: %v", o.name, err)
					}
					for _, g := range o.gone {
						sharedEventually(t, g+" gone on the other node", func() error {
							_, err := os.Lstat(to(g))
							if errors.Is(err, fs.ErrNotExist) {
								return nil
							}
							return fmt.Errorf("lstat: %v", err)
						})
					}
					for rel, content := range o.present {
						sharedEventually(t, rel+" on the other node", func() error {
							got, err := os.ReadFile(to(rel))
							if err != nil {
								return err
							}
							if string(got) != content {
								return fmt.Errorf("content %q, want %q", got, content)
							}
							return nil
						})
					}
				})
			}
		}
	})

	t.Run("xattrs", func(t *testing.T) {
		for _, dir := range dirs {
			t.Run(dir.name, func(t *testing.T) {
				f := "xattr-" + dir.name
				d := "xattr-dir-" + dir.name
				if err := os.WriteFile(dir.from.Path(f), []byte("tagged"), 0o644); err != nil {
					t.Fatalf("write: %v", err)
				}
				if err := os.Mkdir(dir.from.Path(d), 0o755); err != nil {
					t.Fatalf("mkdir: %v", err)
				}
				bin := sharedRandom(r, 300)
				bin[0] = 0
				want := map[string][]byte{
					"user.xdg.tags":    []byte("shared,cross-node," + dir.name),
					"user.xdg.comment": []byte("set on " + dir.from.Dir),
					"user.binary":      bin,
					"user.big":         sharedRandom(r, 32<<10),
					"user.empty":       {},
				}
				// Tags are for files; a directory gets the other attributes.
				wantDir := map[string][]byte{}
				for k, v := range want {
					if k != "user.xdg.tags" {
						wantDir[k] = v
					}
				}
				for target, want := range map[string]map[string][]byte{f: want, d: wantDir} {
					// The observer reads the (empty) attribute list first.
					sharedEventually(t, target+" on the other node", func() error {
						got, err := persistXattrs(dir.to.Path(target))
						if err == nil && len(got) != 0 {
							err = fmt.Errorf("new node has xattrs %v", got)
						}
						return err
					})
					for k, v := range want {
						if err := syscall.Setxattr(dir.from.Path(target), k, v, 0); err != nil {
							t.Fatalf("setxattr %s %s: %v", target, k, err)
						}
					}
					sharedEventually(t, "xattrs of "+target+" on the other node", func() error {
						got, err := persistXattrs(dir.to.Path(target))
						if err != nil {
							return err
						}
						return persistCompareXattrs(target, got, want)
					})
				}
				// Replace one value and remove another on the writing node.
				changed := map[string][]byte{}
				for k, v := range want {
					changed[k] = v
				}
				changed["user.xdg.tags"] = []byte("retagged")
				delete(changed, "user.binary")
				if err := syscall.Setxattr(dir.from.Path(f), "user.xdg.tags", changed["user.xdg.tags"], 0); err != nil {
					t.Fatalf("replace xattr: %v", err)
				}
				if err := syscall.Removexattr(dir.from.Path(f), "user.binary"); err != nil {
					t.Fatalf("removexattr: %v", err)
				}
				sharedEventually(t, "changed xattrs on the other node", func() error {
					got, err := persistXattrs(dir.to.Path(f))
					if err != nil {
						return err
					}
					return persistCompareXattrs(f, got, changed)
				})
				if _, err := syscall.Getxattr(dir.to.Path(f), "user.binary", make([]byte, 512)); !errors.Is(err, syscall.ENODATA) {
					t.Fatalf("getxattr of a removed attribute on the other node: %v, want ENODATA", err)
				}
			})
		}
	})
}
