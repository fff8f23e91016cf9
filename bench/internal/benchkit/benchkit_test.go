package benchkit

import (
	"os"
	"testing"
)

func TestUnescapeMount(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/mnt/plain", "/mnt/plain"},
		{`/mnt/with\040space`, "/mnt/with space"},
		{`/mnt/tab\011x`, "/mnt/tab\tx"},
		{`/mnt/bad\9`, `/mnt/bad\9`},
	} {
		if got := UnescapeMount(c.in); got != c.want {
			t.Errorf("UnescapeMount(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{[]string{"ls", "-l", "/tmp"}, "ls -l /tmp"},
		{[]string{"echo", "a b", "it's", ""}, `echo 'a b' 'it'\''s' ''`},
	} {
		if got := ShellQuote(c.in); got != c.want {
			t.Errorf("ShellQuote(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestMountsOfThisProcess(t *testing.T) {
	ms, err := ReadMounts()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := MountedAt("/"); err != nil || !ok {
		t.Fatalf("no mount at / among %d mounts: %v", len(ms), err)
	}
	wd, _ := os.Getwd()
	if m, err := FilesystemOf(wd); err != nil || m.Point == "" {
		t.Fatalf("FilesystemOf(%s) = %v, %v", wd, m, err)
	}
}
