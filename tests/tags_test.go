package tests

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// shOut runs a command and returns its output and error without failing.
func shOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func lsNames(t *testing.T, dir string) []string {
	t.Helper()
	out := sh(t, 30*time.Second, "ls", "-1A", dir)
	names := strings.Fields(out)
	slices.Sort(names)
	return names
}

func wantNames(t *testing.T, dir string, want ...string) {
	t.Helper()
	slices.Sort(want)
	// The kernel may cache a directory listing for up to a second.
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := lsNames(t, dir)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ls %s = %v, want %v", dir, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func getTags(t *testing.T, path string) string {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Getxattr(path, "user.xdg.tags", buf)
	if err == unix.ENODATA {
		return ""
	}
	if err != nil {
		t.Fatalf("getxattr %s: %v", path, err)
	}
	return string(buf[:n])
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestTagDirectories drives the virtual tag tree with the tools users have:
// setfattr, getfattr, ls, ln, mv, rm, mkdir, rmdir, find.
func TestTagDirectories(t *testing.T) {
	needTool(t, "setfattr")
	m := startMount(t, MountOpts{Extra: []string{"--auto-tag=false"}})
	mk := func(rel, content string) string {
		p := m.Path(rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := mk("pets/a.txt", "A")
	b := mk("pets/b.txt", "B")
	c := mk("wild/c.txt", "C")
	dup1 := mk("x/same.txt", "1")
	dup2 := mk("y/same.txt", "2")

	sh(t, 10*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "cat,dog", a)
	sh(t, 10*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "cat", b)
	sh(t, 10*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "bird", c)
	tags := m.Path(".tags")

	t.Run("tags and files listed", func(t *testing.T) {
		wantNames(t, tags, "bird", "cat", "dog")
		wantNames(t, filepath.Join(tags, "cat"), "a.txt", "b.txt", "dog")
		wantNames(t, filepath.Join(tags, "cat", "dog"), "a.txt")
		// dog's files all carry cat: cat does not narrow dog, so no subdirectory.
		wantNames(t, filepath.Join(tags, "dog"), "a.txt")
		if got := getTags(t, a); got != "cat,dog" {
			t.Fatalf("xattr %q", got)
		}
	})

	t.Run("entries are the real files", func(t *testing.T) {
		e := filepath.Join(tags, "cat", "a.txt")
		if inode(t, e) != inode(t, a) {
			t.Fatal("tag entry has another inode")
		}
		if err := os.WriteFile(e, []byte("A2"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(a); string(got) != "A2" {
			t.Fatalf("write through the tag entry: %q", got)
		}
	})

	t.Run("ln tags, rm untags, mv retags", func(t *testing.T) {
		sh(t, 10*time.Second, "ln", c, filepath.Join(tags, "cat")+"/")
		if got := getTags(t, c); got != "bird,cat" {
			t.Fatalf("after ln: %q", got)
		}
		wantNames(t, filepath.Join(tags, "cat"), "a.txt", "b.txt", "c.txt", "bird", "dog")
		sh(t, 10*time.Second, "rm", filepath.Join(tags, "cat", "c.txt"))
		if got := getTags(t, c); got != "bird" {
			t.Fatalf("after rm: %q", got)
		}
		if _, err := os.Stat(c); err != nil {
			t.Fatalf("rm in a tag directory deleted the file: %v", err)
		}
		sh(t, 10*time.Second, "mkdir", filepath.Join(tags, "fish"))
		wantNames(t, tags, "bird", "cat", "dog", "fish")
		sh(t, 10*time.Second, "mv", filepath.Join(tags, "cat", "b.txt"), filepath.Join(tags, "fish")+"/")
		if got := getTags(t, b); got != "fish" {
			t.Fatalf("after mv: %q", got)
		}
		wantNames(t, filepath.Join(tags, "fish"), "b.txt")
	})

	t.Run("mkdir and rmdir tags", func(t *testing.T) {
		sh(t, 10*time.Second, "mkdir", filepath.Join(tags, "empty"))
		sh(t, 10*time.Second, "rmdir", filepath.Join(tags, "empty"))
		out, err := shOut("rmdir", filepath.Join(tags, "cat"))
		if err == nil || !strings.Contains(out, "not empty") {
			t.Fatalf("rmdir of a used tag: %v %s", err, out)
		}
		if _, err := os.Stat(filepath.Join(tags, "empty")); !os.IsNotExist(err) {
			t.Fatalf("removed tag still there: %v", err)
		}
	})

	t.Run("queries", func(t *testing.T) {
		wantNames(t, m.Path(".query", "cat and not dog"))
		sh(t, 10*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "cat", dup1)
		sh(t, 10*time.Second, "setfattr", "-n", "user.xdg.tags", "-v", "cat", dup2)
		got := lsNames(t, m.Path(".query", "cat and not dog"))
		want := []string{fmt.Sprintf("same@%d.txt", inode(t, dup1)), fmt.Sprintf("same@%d.txt", inode(t, dup2))}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("query with colliding names: %v, want %v", got, want)
		}
		wantNames(t, m.Path(".query", "bird or fish"), "b.txt", "c.txt")
		out, err := shOut("ls", m.Path(".query", "cat and (dog"))
		if err == nil || !strings.Contains(out, "Invalid argument") {
			t.Fatalf("bad query: %v %s", err, out)
		}
		deep := strings.Repeat("(", 40) + "cat" + strings.Repeat(")", 40)
		if out, err := shOut("ls", m.Path(".query", deep)); err == nil || !strings.Contains(out, "Invalid argument") {
			t.Fatalf("query nested 40 deep: %v %s", err, out)
		}
		// Queries longer than a file name work (FUSE passes them on); past
		// 4096 bytes the parser refuses.
		if out, err := shOut("ls", m.Path(".query", strings.Repeat("cat or ", 40)+"dog")); err != nil || !strings.Contains(out, "a.txt") {
			t.Fatalf("a 283-byte query: %v %s", err, out)
		}
		if out, err := run(t, "find", "--mount", m.Dir, strings.Repeat("cat or ", 700)+"dog"); err == nil || !strings.Contains(out, "4096") {
			t.Fatalf("a 4.9 KB query: %v %s", err, out)
		}
		if !strings.Contains(m.Log(), "bad query expression") {
			t.Fatal("the daemon did not log why the query was bad")
		}
	})

	t.Run("find terminates", func(t *testing.T) {
		out := sh(t, 60*time.Second, "find", tags)
		if strings.Count(out, "\n") < 8 {
			t.Fatalf("find .tags:\n%s", out)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, v := range []string{"a/b", ".hidden", strings.Repeat("x", 256), "ctl\x01", "ok,.bad"} {
			out, err := shOut("setfattr", "-n", "user.xdg.tags", "-v", v, a)
			if err == nil {
				t.Errorf("tag %q accepted: %s", v, out)
			}
		}
		if got := getTags(t, a); got != "cat,dog" {
			t.Fatalf("a refused tag changed the xattr: %q", got)
		}
		big := strings.Repeat("abcdefgh,", 8000)
		if err := unix.Setxattr(a, "user.xdg.tags", []byte(big), 0); err == nil {
			t.Error("a tag list over the xattr limit was accepted")
		}
		for _, name := range []string{".x", "a,b"} {
			if out, err := shOut("mkdir", filepath.Join(tags, name)); err == nil {
				t.Errorf("mkdir .tags/%q accepted: %s", name, out)
			}
		}
		if _, err := os.Stat(filepath.Join(tags, "nosuchtag")); !os.IsNotExist(err) {
			t.Errorf("unknown tag: %v", err)
		}
		if out, err := shOut("touch", filepath.Join(tags, "cat", "new")); err == nil {
			t.Errorf("creating a file in a tag directory worked: %s", out)
		}
		if out, err := shOut("mkdir", m.Path(".tags-not")); err != nil {
			t.Errorf("a real name near the virtual one: %v %s", err, out)
		}
		if out, err := shOut("touch", m.Path(".tags")); err == nil {
			t.Errorf("shadowing .tags with a real file worked: %s", out)
		}
		// The mount keeps working.
		if err := os.WriteFile(m.Path("after-bad-input"), []byte("ok"), 0o644); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("renames and deletes follow", func(t *testing.T) {
		moved := m.Path("pets", "renamed.txt")
		if err := os.Rename(a, moved); err != nil {
			t.Fatal(err)
		}
		wantNames(t, filepath.Join(tags, "dog"), "renamed.txt")
		if got := getTags(t, moved); got != "cat,dog" {
			t.Fatalf("tags did not travel with the rename: %q", got)
		}
		if err := os.Remove(moved); err != nil {
			t.Fatal(err)
		}
		wantNames(t, filepath.Join(tags, "dog"))
	})

	t.Run("CLI", func(t *testing.T) {
		p := mk("cli/d.txt", "the quick brown fox")
		if out, err := run(t, "tag", "add", p, "red", "blue"); err != nil {
			t.Fatalf("tag add: %v %s", err, out)
		}
		out, err := run(t, "tag", "ls", p)
		if err != nil || !strings.Contains(out, "red,blue") {
			t.Fatalf("tag ls: %v %s", err, out)
		}
		if out, err := run(t, "tag", "rm", p, "red"); err != nil {
			t.Fatalf("tag rm: %v %s", err, out)
		}
		if got := getTags(t, p); got != "blue" {
			t.Fatalf("after tag rm: %q", got)
		}
		out, err = run(t, "tags", m.Dir)
		if err != nil || !strings.Contains(out, "blue") || !strings.Contains(out, "cat") {
			t.Fatalf("tags: %v %s", err, out)
		}
		out, err = run(t, "find", "--mount", m.Dir, "blue or bird")
		if err != nil || !strings.Contains(out, p) || !strings.Contains(out, c) {
			t.Fatalf("find: %v %s", err, out)
		}
		if out, err := run(t, "find", "--mount", m.Dir, "blue and ("); err == nil {
			t.Fatalf("a bad expression was accepted: %s", out)
		}
		if out, err := run(t, "tag", "add", p, "bad/tag"); err == nil {
			t.Fatalf("a bad tag was accepted: %s", out)
		}
	})
}

// TestRelated ranks files by shared tags, rarer tags weighing more.
func TestRelated(t *testing.T) {
	m := startMount(t, MountOpts{Extra: []string{"--auto-tag=false"}})
	set := func(name, tags string) string {
		p := m.Path(name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.xdg.tags", []byte(tags), 0); err != nil {
			t.Fatal(err)
		}
		return p
	}
	q := set("query", "common,rare")
	set("shares-rare", "rare")
	set("shares-common", "common")
	for i := 0; i < 10; i++ {
		set(fmt.Sprintf("filler%d", i), "common")
	}
	out, err := run(t, "related", "--limit", "3", q)
	if err != nil {
		t.Fatalf("related: %v %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "shares-rare") {
		t.Fatalf("the file sharing the rare tag must rank first:\n%s", out)
	}
}

// TestTagsPersistAndReindex: tags survive a remount, and a lost index is
// rebuilt from the xattrs by reindex.
func TestTagsPersistAndReindex(t *testing.T) {
	m := startMount(t, MountOpts{Extra: []string{"--auto-tag=false"}})
	for i := 0; i < 50; i++ {
		p := m.Path(fmt.Sprintf("f%02d", i))
		if err := os.WriteFile(p, []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.xdg.tags", []byte(fmt.Sprintf("all,mod%d", i%3)), 0); err != nil {
			t.Fatal(err)
		}
	}
	// A file whose xattr was set behind the index's back is picked up by reindex.
	m.Restart()
	wantCount := func(tag string, n int) {
		t.Helper()
		got := lsNames(t, m.Path(".tags", tag))
		files := 0
		for _, g := range got {
			if strings.HasPrefix(g, "f") {
				files++
			}
		}
		if files != n {
			t.Fatalf(".tags/%s has %d files, want %d: %v", tag, files, n, got)
		}
	}
	wantCount("all", 50)
	wantCount("mod0", 17)
	m.Unmount()
	if err := os.Remove(filepath.Join(m.DataDir, "graph.db")); err != nil {
		t.Fatalf("delete the index: %v", err)
	}
	m.Restart()
	if _, err := os.Stat(m.Path(".tags", "all")); !os.IsNotExist(err) {
		t.Fatalf("a fresh index should not know the tags yet: %v", err)
	}
	out, err := run(t, "reindex", m.Dir)
	if err != nil || !strings.Contains(out, "50 tagged") {
		t.Fatalf("reindex: %v\n%s", err, out)
	}
	wantCount("all", 50)
	wantCount("mod2", 16)
	st, err := run(t, "status", m.Dir)
	if err != nil || !strings.Contains(st, "Tag index:") || !strings.Contains(st, "available") {
		t.Fatalf("status: %v\n%s", err, st)
	}
}

// TestCorruptIndex: a garbage index file refuses the mount with a clear message
// and leaves the file alone.
func TestCorruptIndex(t *testing.T) {
	data := t.TempDir()
	garbage := bytes.Repeat([]byte("not a bbolt file "), 1000)
	if err := os.WriteFile(filepath.Join(data, "graph.db"), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := tryMount(t, MountOpts{DataDir: data})
	if err == nil || !strings.Contains(err.Error(), "reindex") {
		t.Fatalf("want a clear refusal naming reindex, got %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(data, "graph.db")); !bytes.Equal(got, garbage) {
		t.Fatal("the corrupt index was modified")
	}
}

// TestAutoTags: a written file gets its kind, directory names and image size.
func TestAutoTags(t *testing.T) {
	m := startMount(t, MountOpts{})
	dir := m.Path("train", "cat")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 640, 480))); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "001.png")
	if err := os.WriteFile(img, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	txt := m.Path("notes.txt")
	if err := os.WriteFile(txt, []byte("graph graph graph storage storage filesystem filesystem the the the"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantTags := func(p string, want ...string) {
		t.Helper()
		// The auto-tagger waits for 250 ms without requests: poll slower than that.
		deadline := time.Now().Add(40 * time.Second)
		for {
			got := strings.Split(getTags(t, p), ",")
			ok := true
			for _, w := range want {
				ok = ok && slices.Contains(got, w)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s tags %v, want %v", p, got, want)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	wantTags(img, "train", "cat", "image", "image-medium")
	wantTags(txt, "text", "kw:graph", "kw:storage", "kw:filesystem")
	// Every train file is an image: "image" does not narrow "train", so it is
	// no subdirectory there, but a query finds it.
	wantNames(t, m.Path(".tags", "train"), "001.png") // one file: no tag narrows it
	wantNames(t, m.Path(".query", "train and image"), "001.png")
}

// TestIndexRebuiltAfterCrash: index changes still queued in memory are lost
// with a killed daemon, their xattrs are not; the next start notices the
// unclean stop and rebuilds the index from the xattrs.
func TestIndexRebuiltAfterCrash(t *testing.T) {
	needRoot(t)
	dataDir, dir := t.TempDir(), t.TempDir()
	m := startMount(t, MountOpts{Dir: dir, DataDir: dataDir, Extra: []string{"--auto-tag=false"}})
	for i := 0; i < 20; i++ {
		p := m.Path(fmt.Sprintf("f%02d", i))
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Setxattr(p, "user.xdg.tags", []byte("crashed"), 0); err != nil {
			t.Fatal(err)
		}
	}
	m.Kill9()
	if out, err := run(t, "umount", dir); err != nil {
		t.Fatalf("umount of the dead mount: %v\n%s", err, out)
	}
	m2 := startMount(t, MountOpts{Dir: dir, DataDir: dataDir, Extra: []string{"--auto-tag=false"}})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(m2.Log(), "tag index rebuilt after an unclean stop") {
		if time.Now().After(deadline) {
			t.Fatalf("no rebuild after a killed daemon:\n%s", m2.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	ents, err := os.ReadDir(m2.Path(".tags", "crashed"))
	if err != nil || len(ents) != 20 {
		t.Fatalf(".tags/crashed after the rebuild: %d entries, %v", len(ents), err)
	}
	// A clean stop leaves nothing to rebuild.
	m2.Restart()
	time.Sleep(500 * time.Millisecond)
	if n := strings.Count(m2.Log(), "did not stop cleanly"); n != 1 { // the log spans both runs
		t.Fatalf("%d rebuilds, want only the one after the crash:\n%s", n, m2.Log())
	}
}
