package fusefs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A request that never reaches JuiceFS: Access on a virtual node answers from
// memory, so these tests need no volume. The request is built once, as the
// FUSE server reads requests into buffers it reuses.
var virtualAccess = &fuse.AccessIn{InHeader: fuse.InHeader{NodeId: vBase + 1}}

func accessVirtual(raw fuse.RawFileSystem) fuse.Status {
	return raw.Access(nil, virtualAccess)
}

func TestOpMetricsDoNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		register bool
	}{
		{"without metrics", false},
		{"with metrics", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := New(nil, DefaultOptions())
			if tc.register {
				if err := fs.RegisterMetrics(prometheus.NewRegistry()); err != nil {
					t.Fatal(err)
				}
			}
			raw := fs.raw()
			if got := accessVirtual(raw); got != fuse.OK {
				t.Fatalf("access: %v", got)
			}
			if n := testing.AllocsPerRun(1000, func() { accessVirtual(raw) }); n != 0 {
				t.Fatalf("an instrumented request allocates %.1f times", n)
			}
			// The recording itself, for every operation.
			if n := testing.AllocsPerRun(1000, func() {
				for o := range numOps {
					fs.ops.inc(o)
					fs.ops.done(o, fs.ops.start())
				}
			}); n != 0 {
				t.Fatalf("counting and timing allocate %.1f times", n)
			}
		})
	}
}

func TestOpMetricsExport(t *testing.T) {
	fs := New(nil, DefaultOptions())
	reg := prometheus.NewRegistry()
	if err := fs.RegisterMetrics(prometheus.WrapRegistererWithPrefix("disgrafs_fuse_", reg)); err != nil {
		t.Fatal(err)
	}
	raw := fs.raw()
	for range 3 {
		accessVirtual(raw)
	}
	n, err := testutil.GatherAndCount(reg, "disgrafs_fuse_ops_total")
	if err != nil || n != int(numOps) {
		t.Fatalf("ops_total: %d series (want one per op, %d), %v", n, numOps, err)
	}
	want := `
# HELP disgrafs_fuse_ops_total FUSE requests served, by operation.
# TYPE disgrafs_fuse_ops_total counter
`
	var b strings.Builder
	b.WriteString(want)
	for _, name := range opNames {
		v := "0"
		if name == "access" {
			v = "3"
		}
		b.WriteString("disgrafs_fuse_ops_total{op=\"" + name + "\"} " + v + "\n")
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(b.String()), "disgrafs_fuse_ops_total"); err != nil {
		t.Fatal(err)
	}
	// The histogram counted the same three requests.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, mf := range mfs {
		if mf.GetName() != "disgrafs_fuse_op_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "access" {
				found = true
				if c := m.GetHistogram().GetSampleCount(); c != 3 {
					t.Fatalf("access latency samples: %d, want 3", c)
				}
			}
		}
	}
	if !found {
		t.Fatal("no access latency series")
	}
	// Registering twice on one registry is refused, not silently doubled.
	if err := fs.RegisterMetrics(prometheus.WrapRegistererWithPrefix("disgrafs_fuse_", reg)); err == nil {
		t.Fatal("a second registration should fail")
	}
}

// The cost of a request's bookkeeping, on a request that does nothing else:
// what the FUSE server calls with metrics (count, clock, histogram), without
// them, and the bare FS method (count only).
func BenchmarkRequest(b *testing.B) {
	for _, bc := range []struct {
		name     string
		register bool
		wrapped  bool
	}{
		{"mounted-with-metrics", true, true},
		{"mounted-without-metrics", false, true},
		{"bare", false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fs := New(nil, DefaultOptions())
			if bc.register {
				if err := fs.RegisterMetrics(prometheus.NewRegistry()); err != nil {
					b.Fatal(err)
				}
			}
			var raw fuse.RawFileSystem = fs
			if bc.wrapped {
				raw = fs.raw()
			}
			b.ReportAllocs()
			for b.Loop() {
				accessVirtual(raw)
			}
		})
	}
}

// TestEveryCountedOpIsTimed: every FS method that counts a request (calls
// fs.ops.inc) has a timing wrapper in ops.go, so that a method added to
// fs.go later cannot silently go untimed.
func TestEveryCountedOpIsTimed(t *testing.T) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	counted := map[string]bool{}
	wrapped := map[string]bool{}
	recv := func(fd *ast.FuncDecl) string {
		if fd.Recv == nil || len(fd.Recv.List) != 1 {
			return ""
		}
		switch x := fd.Recv.List[0].Type.(type) {
		case *ast.StarExpr:
			if id, ok := x.X.(*ast.Ident); ok {
				return "*" + id.Name
			}
		case *ast.Ident:
			return x.Name
		}
		return ""
	}
	for _, p := range pkgs {
		for _, f := range p.Files {
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				switch recv(fd) {
				case "instrumented":
					wrapped[fd.Name.Name] = true
				case "*FS":
					if !fd.Name.IsExported() {
						continue
					}
					ast.Inspect(fd.Body, func(n ast.Node) bool {
						if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "inc" {
							if x, ok := sel.X.(*ast.SelectorExpr); ok && x.Sel.Name == "ops" {
								counted[fd.Name.Name] = true
							}
						}
						return true
					})
				}
			}
		}
	}
	if len(counted) < 30 {
		t.Fatalf("found only %d counted methods: %v", len(counted), counted)
	}
	for m := range counted {
		if !wrapped[m] {
			t.Errorf("FS.%s counts requests but has no timing wrapper in ops.go", m)
		}
	}
	// setLk is counted through SetLk/SetLkw; both are wrapped.
	for _, m := range []string{"SetLk", "SetLkw"} {
		if !wrapped[m] {
			t.Errorf("%s is not wrapped", m)
		}
	}
}
