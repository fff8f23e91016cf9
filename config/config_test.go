package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

func TestParseBytes(t *testing.T) {
	cases := []struct {
		in      string
		unit    byte
		want    uint64
		wantErr bool
	}{
		{"100", 'M', 100 << 20, false},
		{"0", 'M', 0, false},
		{"10G", 'M', 10 << 30, false},
		{"10GiB", 'M', 10 << 30, false},
		{"10GB", 'M', 10 << 30, false},
		{"1.5K", 'B', 1536, false},
		{"4M", 'K', 4 << 20, false},
		{"64", 'K', 64 << 10, false},
		{" 2T ", 'M', 2 << 40, false},
		{"", 'M', 0, true},
		{"ten", 'M', 0, true},
		{"10X", 'M', 0, true},
		{"-1", 'M', 0, true},
	}
	for _, c := range cases {
		got, err := ParseBytes(c.in, c.unit)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("ParseBytes(%q, %c) = %d, %v; want %d, error %v", c.in, c.unit, got, err, c.want, c.wantErr)
		}
	}
}

func TestApplyPrecedence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("meta: redis://file/1\ncache-size: 5G\nbackground: true\noptions: [a, b]\nmeta-password: from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	meta := fs.String("meta", "", "")
	size := fs.String("cache-size", "100G", "")
	bg := fs.Bool("background", false, "")
	opts := fs.StringSlice("options", nil, "")
	logp := fs.String("log", "default", "")
	if err := fs.Parse([]string{"--meta", "redis://flag/1"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DISGRAFS_CACHE_SIZE", "7G")
	t.Setenv("META_PASSWORD", "")
	os.Unsetenv("META_PASSWORD")
	if err := Apply(fs, f); err != nil {
		t.Fatal(err)
	}
	if *meta != "redis://flag/1" {
		t.Errorf("flag lost to lower sources: %q", *meta)
	}
	if *size != "7G" {
		t.Errorf("env lost to the file: %q", *size)
	}
	if !*bg || len(*opts) != 2 || (*opts)[1] != "b" {
		t.Errorf("file values not applied: bg %v opts %v", *bg, *opts)
	}
	if *logp != "default" {
		t.Errorf("default changed: %q", *logp)
	}
	if os.Getenv("META_PASSWORD") != "from-file" {
		t.Errorf("meta-password from the file not exported")
	}
	os.Unsetenv("META_PASSWORD")
}

func TestApplyErrors(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Int("threads", 1, "")
	if err := Apply(fs, File{"threads": "many"}); err == nil {
		t.Fatal("a bad value in the config file must be an error")
	}
	t.Setenv("DISGRAFS_THREADS", "x")
	fs2 := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs2.Int("threads", 1, "")
	if err := Apply(fs2, File{}); err == nil {
		t.Fatal("a bad value in the environment must be an error")
	}
}

func TestLoad(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), false); err != nil {
		t.Errorf("a missing default config file is not an error: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), true); err == nil {
		t.Error("a missing explicit config file is an error")
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("meta: [unclosed"), 0o600)
	if _, err := Load(bad, true); err == nil {
		t.Error("malformed YAML is an error")
	}
}
