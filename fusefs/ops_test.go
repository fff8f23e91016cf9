package fusefs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A request answered from memory by a fake next layer, so these tests need
// no volume. The request is built once, as the FUSE server reads requests
// into buffers it reuses.
var virtualAccess = &fuse.AccessIn{InHeader: fuse.InHeader{NodeId: vBase + 1}}

func accessVirtual(raw fuse.RawFileSystem) fuse.Status {
	return raw.Access(nil, virtualAccess)
}

// okFS answers Access with OK and records nothing (it must not allocate).
type okFS struct{ fuse.RawFileSystem }

func (okFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status { return fuse.OK }

// stackOver is an FS whose only layer below the instrumentation is next.
func stackOver(next fuse.RawFileSystem) *FS {
	fs := &FS{ops: &opCounters{}, base: &baseFS{}}
	fs.RawFileSystem = &instrumented{RawFileSystem: next, ops: fs.ops}
	return fs
}

func newOKStack() *FS { return stackOver(okFS{fuse.NewDefaultRawFileSystem()}) }

func TestOpMetricsDoNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		register bool
	}{
		{"without metrics", false},
		{"with metrics", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newOKStack()
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
	fs := newOKStack()
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
// them, and the bare next layer.
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
			fs := newOKStack()
			if bc.register {
				if err := fs.RegisterMetrics(prometheus.NewRegistry()); err != nil {
					b.Fatal(err)
				}
			}
			var raw fuse.RawFileSystem = fs.RawFileSystem.(*instrumented).RawFileSystem
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

// TestEveryImplementedOpIsCounted: every FUSE operation the base layer
// implements is counted and timed by the instrumentation layer, so that an
// operation added later cannot silently go uncounted.
func TestEveryImplementedOpIsCounted(t *testing.T) {
	fset := token.NewFileSet()
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]map[string]bool{}
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || len(fd.Recv.List) != 1 || !fd.Name.IsExported() {
				continue
			}
			if se, ok := fd.Recv.List[0].Type.(*ast.StarExpr); ok {
				if id, ok := se.X.(*ast.Ident); ok {
					if methods[id.Name] == nil {
						methods[id.Name] = map[string]bool{}
					}
					methods[id.Name][fd.Name.Name] = true
				}
			}
		}
	}
	raw := reflect.TypeOf((*fuse.RawFileSystem)(nil)).Elem()
	uncounted := map[string]bool{"String": true, "SetDebug": true, "Init": true, "OnUnmount": true, "Forget": true}
	n := 0
	for i := 0; i < raw.NumMethod(); i++ {
		m := raw.Method(i).Name
		if !methods["baseFS"][m] || uncounted[m] {
			continue
		}
		n++
		if !methods["instrumented"][m] {
			t.Errorf("the base layer implements %s but the instrumentation layer does not count it", m)
		}
	}
	if n < 30 {
		t.Fatalf("found only %d operations implemented by the base layer", n)
	}
}

// TestTagsLayerKeepsVirtualInodes calls every RawFileSystem method that takes
// a node id or a handle with a virtual node id: the tags layer must answer
// each itself, and no virtual id may reach the layer below.
func TestTagsLayerKeepsVirtualInodes(t *testing.T) {
	const virtual = vFirstDynamic + 1000 // no such virtual directory
	next := &recordingFS{}
	l := newTagsLayer(next, TagOptions{}, nil)
	v := reflect.ValueOf(l)
	raw := reflect.TypeOf((*fuse.RawFileSystem)(nil)).Elem()
	skip := map[string]bool{"String": true, "SetDebug": true, "Init": true, "OnUnmount": true}
	for i := 0; i < raw.NumMethod(); i++ {
		m := raw.Method(i)
		if skip[m.Name] {
			continue
		}
		t.Run(m.Name, func(t *testing.T) {
			args := make([]reflect.Value, m.Type.NumIn())
			named := false
			for j := range args {
				pt := m.Type.In(j)
				switch {
				case pt.Kind() == reflect.Uint64 && j == 0: // Forget(nodeid, nlookup)
					args[j] = reflect.ValueOf(uint64(virtual))
					named = true
				case pt.Kind() == reflect.Pointer && pt.Elem().Kind() == reflect.Struct:
					a := reflect.New(pt.Elem())
					for _, f := range nodeFields {
						if fv := a.Elem().FieldByName(f); fv.IsValid() && fv.CanSet() && fv.Kind() == reflect.Uint64 {
							fv.SetUint(virtual)
							named = true
						}
					}
					args[j] = a
				case pt.Kind() == reflect.String:
					args[j] = reflect.ValueOf("name")
				case pt.Kind() == reflect.Slice && pt.Elem().Kind() == reflect.Uint8:
					args[j] = reflect.ValueOf(make([]byte, 64))
				default:
					args[j] = reflect.Zero(pt)
				}
			}
			if !named {
				t.Skip("takes no node id")
			}
			next.nodes = nil
			v.MethodByName(m.Name).Call(args)
			for _, n := range next.nodes {
				if isVirtual(n) {
					t.Fatalf("%s passed virtual node %d to the next layer", m.Name, n)
				}
			}
		})
	}
}
