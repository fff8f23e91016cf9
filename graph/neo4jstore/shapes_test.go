package neo4jstore

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/disgrafs/disgrafs/graph"
)

// TestShapes runs every statement the store uses, one by one, on known data
// and checks its results: Bolt servers other than Neo4j (NornicDB) accept
// some Cypher and silently return wrong results, so each shape is pinned here.
func TestShapes(t *testing.T) {
	s := openStore(t, Options{BatchRows: 2})
	ctx := context.Background()
	k := s.fileKey
	tk := s.tagKey

	// Every statement of the store must be run here at least once.
	used := map[string]bool{}
	defer func() {
		for name, q := range storeStatements(t) {
			if !used[q] {
				t.Errorf("statement %s is not checked by TestShapes: %s", name, q)
			}
		}
	}()

	// run runs one statement in its own write transaction and returns the
	// rows as sorted "col=value ..." strings.
	run := func(q string, params map[string]any) []string {
		t.Helper()
		used[q] = true
		var rows []string
		err := s.run(ctx, "shape", true, func(tx *tx) error {
			recs, err := tx.query(q, params)
			if err != nil {
				return err
			}
			rows = nil
			for _, r := range recs {
				var cols []string
				for i, key := range r.Keys {
					cols = append(cols, fmt.Sprintf("%s=%v", key, r.Values[i]))
				}
				rows = append(rows, strings.Join(cols, " "))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		sort.Strings(rows)
		return rows
	}
	check := func(q string, params map[string]any, want ...string) {
		t.Helper()
		got := run(q, params)
		sort.Strings(want)
		if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(got, want)) {
			t.Errorf("%s %v\n got  %q\n want %q", q, params, got, want)
		}
	}
	rows := func(r ...map[string]any) map[string]any {
		out := make([]any, len(r))
		for i := range r {
			out[i] = r[i]
		}
		return map[string]any{"rows": out}
	}
	keys := func(ks ...string) map[string]any {
		out := make([]any, len(ks))
		for i := range ks {
			out[i] = ks[i]
		}
		return map[string]any{"rows": out}
	}
	row := func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}

	// Files 1..3 (3 twice in one batch: MERGE must not duplicate), id 2^62
	// to check large integers round-trip.
	const big = int64(1) << 62
	check(qEnsureFiles, rows(row("key", k(1), "id", int64(1)), row("key", k(2), "id", int64(2)), row("key", k(3), "id", int64(3)), row("key", k(3), "id", int64(3)), row("key", k(graph.FileID(big)), "id", big)))
	check(qFileState, keys(k(1), k(2), k(99)), "fkey="+k(1)+" fname=<nil> fparent=<nil>", "fkey="+k(2)+" fname=<nil> fparent=<nil>")
	check(qSetFiles, rows(row("key", k(1), "name", "one", "parent", int64(7), "tagged", true), row("key", k(2), "name", "två", "parent", big, "tagged", true), row("key", k(3), "name", "", "parent", int64(0), "tagged", false), row("key", k(graph.FileID(big)), "name", "big", "parent", int64(1), "tagged", true)))
	check(qFileState, keys(k(1), k(2)), "fkey="+k(1)+" fname=one fparent=7", fmt.Sprintf("fkey=%s fname=två fparent=%d", k(2), big))
	check(qMergeTags, rows(row("key", tk("x"), "name", "x"), row("key", tk("y y"), "name", "y y"), row("key", tk("x"), "name", "x")))
	check(qTagNames, nil, "tname=x", "tname=y y")
	check(qAddTagged, rows(row("f", k(1), "t", tk("x")), row("f", k(1), "t", tk("y y")), row("f", k(2), "t", tk("x")), row("f", k(2), "t", tk("x")), row("f", k(graph.FileID(big)), "t", tk("x")), row("f", k(1), "t", tk("nope"))),
		"fkey="+k(1), "fkey="+k(1), "fkey="+k(2), "fkey="+k(2), "fkey="+k(graph.FileID(big)))
	check(qFileTags, keys(k(1), k(2), k(3)), "fkey="+k(1)+" tname=x", "fkey="+k(1)+" tname=y y", "fkey="+k(2)+" tname=x")
	check(qTagCounts, nil, "tname=x n=3", "tname=y y n=1")
	check(qTagsOf, map[string]any{"key": k(1)}, "tname=x", "tname=y y")
	check(qTagsExist, map[string]any{"rows": []any{tk("x"), tk("nope")}}, "tname=x")
	check(qPostings, map[string]any{"rows": []any{tk("y y"), tk("nope")}}, "fid=1 fname=one tname=y y")
	check(qTagDF, map[string]any{"rows": []any{tk("x"), tk("y y"), tk("nope")}}, "tname=x n=3", "tname=y y n=1")
	check(qMembers, map[string]any{"key": tk("x")}, "fid=1", "fid=2", fmt.Sprintf("fid=%d", big))
	check(qHasTag, map[string]any{"rows": []any{k(1), k(2), k(3), k(99)}, "tkey": tk("y y")}, "fid=1")
	check(qTaggedFiles, nil, "fid=1 fname=one", "fid=2 fname=två", fmt.Sprintf("fid=%d fname=big", big))
	check(qCountTagged, nil, "n=3")
	check(qNames, keys(k(1), k(3)), "fid=1 fname=one fparent=7 tagged=true", "fid=3 fname= fparent=0 tagged=false")
	check(qDelTagged, rows(row("f", k(2), "t", tk("x")), row("f", k(2), "t", tk("y y"))))
	check(qFileTags, keys(k(2)))
	check(qCountTag, map[string]any{"key": tk("x")}, "n=2")
	check(qCountTag, map[string]any{"key": tk("nope")}, "n=0")

	// Co-access: set, read back by pair, list by file.
	check(qSetCo, rows(row("a", k(1), "b", k(3), "w", 2.5, "at", int64(100)), row("a", k(3), "b", k(1), "w", 2.5, "at", int64(100))))
	check(qSetCo, rows(row("a", k(1), "b", k(3), "w", 4.0, "at", int64(200))))
	check(qCoEdges, rows(row("a", k(1), "b", k(3)), row("a", k(3), "b", k(1)), row("a", k(1), "b", k(2))),
		fmt.Sprintf("akey=%s bkey=%s w=4 at=200", k(1), k(3)), fmt.Sprintf("akey=%s bkey=%s w=2.5 at=100", k(3), k(1)))
	check(qCoOf, map[string]any{"key": k(1)}, "bid=3 bname= bparent=0 tagged=false w=4 at=200")
	check(qFilesWithCo, keys(k(1), k(2), k(3)), "fkey="+k(1), "fkey="+k(3))

	// Deletes.
	check(qCreateTag, map[string]any{"key": tk("empty"), "name": "empty"})
	check(qLockTag, map[string]any{"key": tk("empty")}, "tname=empty")
	check(qLockTag, map[string]any{"key": tk("nope")})
	check(qDeleteTag, map[string]any{"key": tk("empty")})
	check(qTagNames, nil, "tname=x", "tname=y y")
	check(qDeleteFiles, keys(k(3)))
	check(qCoOf, map[string]any{"key": k(1)})
	check(qFileState, keys(k(1), k(3)), "fkey="+k(1)+" fname=one fparent=7")
	check(qVolFileKeys, nil, "k="+k(1), "k="+k(2), "k="+k(graph.FileID(big)))
	check(qVolTagKeys, nil, "k="+tk("x"), "k="+tk("y y"))
	check(qDeleteTagKeys, keys(tk("y y")))
	check(qTagsOf, map[string]any{"key": k(1)}, "tname=x")

	// The statements of one Update, in one transaction, on nodes the
	// transaction creates.
	check(qEnsureFiles, rows(row("key", k(10), "id", int64(10)), row("key", k(11), "id", int64(11))))
	check(qMergeTags, rows(row("key", tk("new"), "name", "new")))
	err := s.run(ctx, "one transaction", true, func(tx *tx) error {
		steps := []struct {
			q      string
			params map[string]any
			want   int
		}{
			{qLockFiles, keys(k(10), k(11)), 2},
			{qAddTagged, rows(row("f", k(10), "t", tk("new")), row("f", k(11), "t", tk("new")), row("f", k(10), "t", tk("x"))), 3},
			{qSetFiles, rows(row("key", k(10), "name", "ten", "parent", int64(5), "tagged", true), row("key", k(11), "name", "eleven", "parent", int64(6), "tagged", true)), 0},
			{qFileTags, keys(k(10), k(11)), 3},
			{qPostings, map[string]any{"rows": []any{tk("new")}}, 2},
			{qSetCo, rows(row("a", k(10), "b", k(11), "w", 1.0, "at", int64(5)), row("a", k(11), "b", k(10), "w", 1.0, "at", int64(5))), 0},
			{qCoOf, map[string]any{"key": k(10)}, 1},
			{qDelTagged, rows(row("f", k(11), "t", tk("new"))), 0},
			{qFileTags, keys(k(10), k(11)), 2},
		}
		for _, st := range steps {
			used[st.q] = true
			recs, err := tx.query(st.q, st.params)
			if err != nil {
				return fmt.Errorf("%s: %w", st.q, err)
			}
			if len(recs) != st.want {
				t.Errorf("in one transaction: %s gave %d rows, want %d", st.q, len(recs), st.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check(qFileTags, keys(k(10), k(11)), "fkey="+k(10)+" tname=new", "fkey="+k(10)+" tname=x")
	check(qFileState, keys(k(10), k(11)), "fkey="+k(10)+" fname=ten fparent=5", "fkey="+k(11)+" fname=eleven fparent=6")
	check(qNames, keys(k(10), k(11)), "fid=10 fname=ten fparent=5 tagged=true", "fid=11 fname=eleven fparent=6 tagged=true")
	check(qCoOf, map[string]any{"key": k(11)}, "bid=10 bname=ten bparent=5 tagged=true w=1 at=5")
	// Untag and delete in one transaction (dropBare after an Update).
	err = s.run(ctx, "untag and delete", true, func(tx *tx) error {
		for _, q := range []struct {
			q      string
			params map[string]any
		}{
			{qLockFiles, keys(k(10))},
			{qDelTagged, rows(row("f", k(10), "t", tk("new")), row("f", k(10), "t", tk("x")))},
			{qSetFiles, rows(row("key", k(10), "name", "", "parent", int64(0), "tagged", false))},
			{qDeleteFiles, keys(k(10))},
		} {
			used[q.q] = true
			if _, err := tx.query(q.q, q.params); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check(qFileState, keys(k(10), k(11)), "fkey="+k(11)+" fname=eleven fparent=6")
	check(qPostings, map[string]any{"rows": []any{tk("new"), tk("x")}}, "fid=1 fname=one tname=x", fmt.Sprintf("fid=%d fname=big tname=x", big))
	check(qCoOf, map[string]any{"key": k(11)})
	check(qDeleteFiles, keys(k(11)))
	check(qDeleteTagKeys, keys(tk("new")))

	// A deleted tag comes back (created in a transaction of its own).
	check(qMergeTags, rows(row("key", tk("new"), "name", "new")))
	check(qAddTagged, rows(row("f", k(1), "t", tk("new"))), "fkey="+k(1))
	check(qPostings, map[string]any{"rows": []any{tk("new")}}, "fid=1 fname=one tname=new")
	check(qDelTagged, rows(row("f", k(1), "t", tk("new"))))
	check(qDeleteTagKeys, keys(tk("new")))

	// A failed transaction leaves nothing behind.
	boom := errors.New("boom")
	err = s.run(ctx, "rollback", true, func(tx *tx) error {
		if _, err := tx.query(qMergeTags, rows(row("key", tk("rolled back"), "name", "rolled back"))); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("rollback: %v", err)
	}
	check(qTagNames, nil, "tname=x")

	// Nothing leaked into other volumes' view.
	other := &Store{driver: s.driver, vol: s.vol + "-other", opts: s.opts}
	var n int
	if err := other.run(ctx, "other", false, func(tx *tx) error {
		recs, err := tx.query(qTagNames, nil)
		n = len(recs)
		return err
	}); err != nil || n != 0 {
		t.Errorf("another volume sees %d tags (%v)", n, err)
	}
}

// storeStatements finds the statement constants (named q...) in the
// package's source.
func storeStatements(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "neo4jstore.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || !strings.HasPrefix(name.Name, "q") || lit.Kind != token.STRING {
					continue
				}
				q, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out[name.Name] = q
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d statements in neo4jstore.go", len(out))
	}
	return out
}
