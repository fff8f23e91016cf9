// Package config fills command-line flags from environment variables and a
// YAML config file, so that every setting (secrets included) can be given
// without appearing on a command line. Precedence: flag, environment
// (DISGRAFS_<FLAG>, dashes as underscores), config file, default.
//
// We bind flags by hand instead of using viper: the binding is a loop over the
// flag set, while viper would add dozens of dependencies and a second source of
// truth for every flag's type and default.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable that sets a flag.
const EnvPrefix = "DISGRAFS_"

// DefaultPath is the config file read when --config is not given.
func DefaultPath() string {
	if os.Geteuid() == 0 {
		return "/etc/disgrafs/config.yaml"
	}
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "disgrafs", "config.yaml")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".config", "disgrafs", "config.yaml")
}

// EnvName is the environment variable for a flag.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// File is a parsed config file: flag names to values.
type File map[string]any

// Load reads a config file. A missing file at the default path is not an error;
// a missing file that was asked for is.
func Load(path string, explicit bool) (File, error) {
	if path == "" {
		return File{}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !explicit {
			return File{}, nil
		}
		return nil, fmt.Errorf("config file: %w", err)
	}
	f := File{}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return f, nil
}

// Apply sets every flag of fs that was not given on the command line from the
// environment or the file. Secret keys of the file (meta-password,
// secret-key, graph-password) are exported to the environment variables
// JuiceFS and our clients read, never turned into flags.
func Apply(fs *pflag.FlagSet, f File) error {
	for key, env := range secretEnv {
		if v, ok := f[key]; ok && os.Getenv(env) == "" {
			if err := os.Setenv(env, fmt.Sprint(v)); err != nil {
				return err
			}
		}
	}
	var errs []error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed {
			return
		}
		if v, ok := os.LookupEnv(EnvName(fl.Name)); ok {
			if err := fl.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(fl.Name), v, err))
			}
			fl.Changed = true
			return
		}
		if v, ok := f[fl.Name]; ok {
			s, err := scalar(v)
			if err == nil {
				err = fl.Value.Set(s)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("config key %q: %w", fl.Name, err))
			}
			fl.Changed = true
		}
	})
	return errors.Join(errs...)
}

var secretEnv = map[string]string{
	"meta-password":  "META_PASSWORD",
	"secret-key":     "SECRET_KEY",
	"access-key":     "ACCESS_KEY",
	"graph-password": "DISGRAFS_GRAPH_PASSWORD",
}

func scalar(v any) (string, error) {
	switch t := v.(type) {
	case string:
		return t, nil
	case bool:
		return strconv.FormatBool(t), nil
	case int:
		return strconv.Itoa(t), nil
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), nil
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			s, err := scalar(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("unsupported value %v", v)
}

// ParseBytes reads a size the way juicefs does: binary units (K, M, G, T, with
// optional "i" and "B"), and a bare number in defaultUnit. go-humanize reads
// "10G" as decimal, which would surprise users coming from juicefs.
func ParseBytes(s string, defaultUnit byte) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty size")
	}
	num := strings.TrimRightFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	unit := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s[len(num):]), "B"), "i"))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	if unit == "" {
		unit = string(defaultUnit)
	}
	shift := map[string]uint{"B": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}
	sh, ok := shift[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, unit)
	}
	return uint64(v * float64(uint64(1)<<sh)), nil
}
