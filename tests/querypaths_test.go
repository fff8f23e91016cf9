package tests

// The paths of query answers (related, find): right after this node renames
// or removes a file or a directory, and within the path cache's few seconds
// when another node of a shared volume does.

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/boltstore"
)

// answerPathTTL is how long the daemon may show a path another node changed
// (its path cache keeps one for 5 s), plus slack for a loaded machine.
const answerPathTTL = 8 * time.Second

type answers struct {
	t  *testing.T
	m  *Mount
	cl *control.Client
}

func newAnswers(t *testing.T, m *Mount) *answers {
	return &answers{t: t, m: m, cl: control.Dial(control.PathsFor(m.Dir).Socket)}
}

// related returns the paths related to rel (relative to the mount), sorted.
func (a *answers) related(rel string) []string {
	a.t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(a.m.Path(rel), &st); err != nil {
		a.t.Fatalf("stat %s: %v", rel, err)
	}
	var res []control.FoundFile
	if err := a.cl.Call(context.Background(), "POST", "related", control.RelatedRequest{Ino: st.Ino, Limit: 100}, &res); err != nil {
		a.t.Fatalf("related %s: %v", rel, err)
	}
	return a.rel(res)
}

// find returns the paths matching expr, sorted.
func (a *answers) find(expr string) []string {
	a.t.Helper()
	var res []control.FoundFile
	if err := a.cl.Call(context.Background(), "POST", "find", control.FindRequest{Expr: expr}, &res); err != nil {
		a.t.Fatalf("find %s: %v", expr, err)
	}
	return a.rel(res)
}

func (a *answers) rel(res []control.FoundFile) []string {
	a.t.Helper()
	out := make([]string, 0, len(res))
	for _, f := range res {
		r, err := filepath.Rel(a.m.Dir, f.Path)
		if err != nil || strings.HasPrefix(r, "..") {
			a.t.Fatalf("answer %s is outside the mount %s", f.Path, a.m.Dir)
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

func tagFile(t *testing.T, m *Mount, rel, tags string) {
	t.Helper()
	p := m.Path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(rel), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.xdg.tags", []byte(tags), 0); err != nil {
		t.Fatal(err)
	}
}

func mustRename(t *testing.T, m *Mount, from, to string) {
	t.Helper()
	if err := os.Rename(m.Path(from), m.Path(to)); err != nil {
		t.Fatal(err)
	}
}

// TestQueryAnswerPaths: after this node renames or removes files and
// directories, the next answer shows the new paths.
func TestQueryAnswerPaths(t *testing.T) {
	m := startMount(t, MountOpts{Extra: []string{"--auto-tag=false"}})
	a := newAnswers(t, m)
	tagFile(t, m, "q", "common")
	files := []string{"a/b/x", "a/b/y", "a/c/z", "a/c/d/w", "top"}
	for _, f := range files {
		tagFile(t, m, f, "common")
	}
	check := func(step string, want ...string) {
		t.Helper()
		slices.Sort(want)
		if got := a.related("q"); !slices.Equal(got, want) {
			t.Fatalf("%s: related = %q, want %q", step, got, want)
		}
		if got, all := a.find("common"), append(slices.Clone(want), "q"); !slices.Equal(got, sorted(all)) {
			t.Fatalf("%s: find = %q, want %q", step, got, sorted(all))
		}
	}
	check("tagged", files...)
	mustRename(t, m, "a/b", "a/e")
	check("directory renamed", "a/e/x", "a/e/y", "a/c/z", "a/c/d/w", "top")
	mustRename(t, m, "a/e/x", "a/c/x2")
	check("file moved and renamed", "a/c/x2", "a/e/y", "a/c/z", "a/c/d/w", "top")
	mustRename(t, m, "a/c/z", "a/c/z2")
	check("file renamed", "a/c/x2", "a/e/y", "a/c/z2", "a/c/d/w", "top")
	mustRename(t, m, "a", "f")
	check("parent of several renamed", "f/c/x2", "f/e/y", "f/c/z2", "f/c/d/w", "top")
	mustRename(t, m, "f/c/d", "d")
	check("directory moved up", "f/c/x2", "f/e/y", "f/c/z2", "d/w", "top")
	if err := os.Remove(m.Path("f/c/z2")); err != nil {
		t.Fatal(err)
	}
	check("file removed", "f/c/x2", "f/e/y", "d/w", "top")
	if err := os.Link(m.Path("top"), m.Path("d/top-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.Path("top")); err != nil {
		t.Fatal(err)
	}
	check("only a hard link left", "f/c/x2", "f/e/y", "d/w", "d/top-link")

	// The index keeps each file's directory: after a remount (cold caches)
	// the answers are the same.
	m.Restart()
	a = newAnswers(t, m)
	check("remounted", "f/c/x2", "f/e/y", "d/w", "d/top-link")

	// The directories the index keeps are the files' current ones, moved
	// files included.
	dirs := map[uint64]uint64{}
	for _, f := range []string{"f/c/x2", "f/e/y", "d/w"} {
		var st, dst unix.Stat_t
		if unix.Stat(m.Path(f), &st) != nil || unix.Stat(m.Path(filepath.Dir(f)), &dst) != nil {
			t.Fatalf("stat %s", f)
		}
		dirs[st.Ino] = dst.Ino
	}
	var qst unix.Stat_t
	if err := unix.Stat(m.Path("q"), &qst); err != nil {
		t.Fatal(err)
	}
	m.Unmount()
	s, err := boltstore.Open(filepath.Join(m.DataDir, "graph.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rel, err := s.Related(context.Background(), graph.FileID(qst.Ino), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rel {
		if want, ok := dirs[uint64(r.File.ID)]; ok {
			if uint64(r.File.Parent) != want {
				t.Errorf("the index puts %s (inode %d) in directory %d, want %d", r.File.Name, r.File.ID, r.File.Parent, want)
			}
			delete(dirs, uint64(r.File.ID))
		}
	}
	if len(dirs) > 0 {
		t.Errorf("files %v missing from the index's answer %v", dirs, rel)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestQueryAnswerPathsOtherNode: renames and removals by another node of a
// shared volume show in this node's answers once its path cache expires, and
// a path is never made up.
func TestQueryAnswerPathsOtherNode(t *testing.T) {
	meta, _ := formatShared(t, "answer-paths")
	opts := MountOpts{Meta: meta, Extra: []string{"--auto-tag=false"}}
	local, other := startMount(t, opts), startMount(t, opts)
	a := newAnswers(t, local)
	tagFile(t, local, "q", "common")
	for _, f := range []string{"a/b/x", "a/b/y", "a/c/z"} {
		tagFile(t, local, f, "common")
	}
	eventually := func(step string, want ...string) {
		t.Helper()
		slices.Sort(want)
		deadline := time.Now().Add(answerPathTTL)
		for {
			got := a.related("q")
			// Whatever it shows must exist, or have existed within the
			// cache's lifetime: every path shown is one of the old or new ones.
			if slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: related = %q, want %q within %s", step, got, want, answerPathTTL)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	eventually("tagged", "a/b/x", "a/b/y", "a/c/z")
	mustRename(t, other, "a/b", "a/e")
	eventually("directory renamed by the other node", "a/e/x", "a/e/y", "a/c/z")
	mustRename(t, other, "a/e/x", "a/c/x2")
	eventually("file moved and renamed by the other node", "a/c/x2", "a/e/y", "a/c/z")
	if err := os.Remove(other.Path("a/c/z")); err != nil {
		t.Fatal(err)
	}
	// This node's index still lists the removed file: the answer must drop
	// it, not show a path that no longer exists.
	eventually("file removed by the other node", "a/c/x2", "a/e/y")
}
