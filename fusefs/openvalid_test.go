package fusefs

import (
	"testing"
	"time"

	"github.com/juicedata/juicefs/pkg/meta"
)

func TestLookupMemo(t *testing.T) {
	file := meta.Attr{Typ: meta.TypeFile, Full: true, Length: 42}
	dir := meta.Attr{Typ: meta.TypeDirectory, Full: true}
	partial := meta.Attr{Typ: meta.TypeFile, Length: 42}
	cases := []struct {
		name   string
		window time.Duration
		note   *meta.Attr
		pid    uint32 // the opening thread; the lookup's is 7
		ino    meta.Ino
		wait   time.Duration
		want   bool
	}{
		{"same thread and file", time.Second, &file, 7, 5, 0, true},
		{"another thread", time.Second, &file, 8, 5, 0, false},
		{"another file", time.Second, &file, 7, 6, 0, false},
		{"same slot, another file", time.Second, &file, 7, 5 + lookupSlots, 0, false},
		{"after the window", 5 * time.Millisecond, &file, 7, 5, 20 * time.Millisecond, false},
		{"a directory", time.Second, &dir, 7, 5, 0, false},
		{"attributes not read whole", time.Second, &partial, 7, 5, 0, false},
		{"off", 0, &file, 7, 5, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newLookupMemo(c.window)
			m.note(7, 5, c.note)
			time.Sleep(c.wait)
			got, ok := m.take(c.pid, c.ino)
			if ok != c.want {
				t.Fatalf("take = %v, want %v", ok, c.want)
			}
			if ok && got.Length != c.note.Length {
				t.Fatalf("took length %d, noted %d", got.Length, c.note.Length)
			}
			if ok {
				if _, again := m.take(c.pid, c.ino); again {
					t.Fatal("the same lookup validated a second open")
				}
			}
		})
	}
}
