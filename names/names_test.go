package names

import (
	"slices"
	"testing"
)

func TestIndex(t *testing.T) {
	type want struct {
		parent uint64
		name   string
		ino    uint64 // 0: absent
	}
	cases := []struct {
		name   string
		run    func(x *Index)
		names  []want
		inoOf  map[uint64][]Dentry
		genMin uint64
	}{
		{"add", func(x *Index) { x.Add(1, "a", 10) },
			[]want{{1, "a", 10}}, map[uint64][]Dentry{10: {{1, "a"}}}, 0},
		{"hard links", func(x *Index) { x.Add(1, "a", 10); x.Add(2, "b", 10) },
			[]want{{1, "a", 10}, {2, "b", 10}}, map[uint64][]Dentry{10: {{1, "a"}, {2, "b"}}}, 0},
		{"name reused for another inode", func(x *Index) { x.Add(1, "a", 10); x.Add(1, "a", 11) },
			[]want{{1, "a", 11}}, map[uint64][]Dentry{10: nil, 11: {{1, "a"}}}, 0},
		{"remove", func(x *Index) { x.Add(1, "a", 10); x.Remove(1, "a") },
			[]want{{1, "a", 0}}, map[uint64][]Dentry{10: nil}, 1},
		{"rename over", func(x *Index) { x.Add(1, "a", 10); x.Add(2, "b", 11); x.Renamed(1, "a", 2, "b", false) },
			[]want{{1, "a", 0}, {2, "b", 10}}, map[uint64][]Dentry{10: {{2, "b"}}, 11: nil}, 1},
		{"exchange", func(x *Index) { x.Add(1, "a", 10); x.Add(2, "b", 11); x.Renamed(1, "a", 2, "b", true) },
			[]want{{1, "a", 11}, {2, "b", 10}}, map[uint64][]Dentry{10: {{2, "b"}}, 11: {{1, "a"}}}, 1},
		{"bounded", func(x *Index) {
			for i := uint64(0); i < 5; i++ {
				x.Add(1, string(rune('a'+i)), 100+i)
			}
		}, []want{{1, "a", 0}, {1, "b", 0}, {1, "e", 104}}, map[uint64][]Dentry{100: nil, 104: {{1, "e"}}}, 0},
		{"forget only if unchanged", func(x *Index) { x.Add(1, "a", 10); x.Forget(Dentry{1, "a"}, 11) },
			[]want{{1, "a", 10}}, nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := New(3)
			tc.run(x)
			for _, w := range tc.names {
				got, ok := x.Ino(w.parent, w.name)
				if (w.ino == 0 && ok) || (w.ino != 0 && got != w.ino) {
					t.Errorf("Ino(%d, %q) = %d, %v; want %d", w.parent, w.name, got, ok, w.ino)
				}
			}
			for ino, want := range tc.inoOf {
				if got := x.Names(ino); !slices.Equal(got, want) {
					t.Errorf("Names(%d) = %v, want %v", ino, got, want)
				}
			}
			if x.Gen() < tc.genMin {
				t.Errorf("Gen() = %d, want at least %d", x.Gen(), tc.genMin)
			}
		})
	}
}

func TestNilIndex(t *testing.T) {
	var x *Index
	x.Add(1, "a", 2)
	x.Remove(1, "a")
	x.Renamed(1, "a", 1, "b", false)
	if _, ok := x.Ino(1, "a"); ok {
		t.Fatal("a nil index answered")
	}
	if _, ok := x.Name(2); ok || x.Len() != 0 || x.Gen() != 0 {
		t.Fatal("a nil index holds something")
	}
}
