package volume

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMaskURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"redis://:secret@127.0.0.1:6379/1", "redis://:****@127.0.0.1:6379/1"},
		{"redis://user:secret@host:6379/1", "redis://user:****@host:6379/1"},
		{"redis://host:6379/1", "redis://host:6379/1"},
		{"sqlite3:///var/lib/disgrafs/meta.db", "sqlite3:///var/lib/disgrafs/meta.db"},
		{"https://ak:sk@s3.example.com/bucket", "https://ak:****@s3.example.com/bucket"},
		{"", ""},
	}
	for _, c := range cases {
		if got := MaskURL(c.in); got != c.want {
			t.Errorf("MaskURL(%q) = %q, want %q", c.in, got, c.want)
		}
		if strings.Contains(MaskURL(c.in), "secret") {
			t.Errorf("MaskURL(%q) leaks the password", c.in)
		}
	}
}

func TestNormalizeMetaURL(t *testing.T) {
	cases := []struct {
		in, want, errPart string
	}{
		{"127.0.0.1:6379/1", "redis://127.0.0.1:6379/1", ""},
		{"redis://h:6379/2", "redis://h:6379/2", ""},
		{"sqlite3:///tmp/x.db", "sqlite3:///tmp/x.db", ""},
		{"mysql://u@tcp(h)/db", "", "unsupported metadata engine"},
		{"tikv://h:2379", "", "unsupported metadata engine"},
		{"redis://", "", "no host"},
		{"", "", "empty"},
		{"redis://h:bad port/1", "", "bad metadata URL"},
	}
	for _, c := range cases {
		got, err := NormalizeMetaURL(c.in)
		if c.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), c.errPart) {
				t.Errorf("NormalizeMetaURL(%q) error %v, want %q", c.in, err, c.errPart)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("NormalizeMetaURL(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestRedisOptionsPasswordFromEnv(t *testing.T) {
	t.Setenv("META_PASSWORD", "envpw")
	o, err := RedisOptions("redis://127.0.0.1:6379/3")
	if err != nil || o.Password != "envpw" || o.DB != 3 {
		t.Fatalf("options %+v, %v", o, err)
	}
	o, err = RedisOptions("redis://:urlpw@127.0.0.1:6379/3")
	if err != nil || o.Password != "urlpw" {
		t.Fatalf("the URL's password wins: %+v, %v", o, err)
	}
}

func TestEmbeddedAt(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "objects"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url  string
		want bool
	}{
		{"sqlite3://" + filepath.Join(dir, "meta.db"), true},
		{"sqlite3://" + filepath.Join(dir, "meta.db") + "?_journal=WAL", true},
		{"sqlite3://" + filepath.Join(dir, "other.db"), false},
		{"sqlite3://" + filepath.Join(t.TempDir(), "meta.db"), false}, // no objects directory
		{"redis://127.0.0.1:6379/1", false},
	}
	for _, tt := range tests {
		e, ok := EmbeddedAt(tt.url)
		if ok != tt.want || (ok && e.Dir != dir) {
			t.Errorf("EmbeddedAt(%q) = %+v, %v; want %v", tt.url, e, ok, tt.want)
		}
	}
}
