// Package volume formats and opens JuiceFS volumes in-process: the embedded default
// (SQLite metadata, a local object directory) and shared volumes (Redis metadata,
// file, S3 or Redis object storage). It never shells out to a juicefs binary.
package volume

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaskURL hides the password of a URL (user:secret@host becomes user:****@host)
// so that it can be shown in logs, status output and metrics.
func MaskURL(raw string) string {
	if raw == "" {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		// Not a URL we can parse: mask anything between "://" and "@" after a ':'.
		if i := strings.Index(raw, "://"); i >= 0 {
			rest := raw[i+3:]
			if at := strings.LastIndex(rest, "@"); at >= 0 {
				if c := strings.Index(rest[:at], ":"); c >= 0 {
					return raw[:i+3] + rest[:c+1] + "****" + rest[at:]
				}
			}
		}
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "****")
		s := u.String()
		return strings.Replace(s, "%2A%2A%2A%2A", "****", 1)
	}
	return raw
}

// metaScheme returns the driver of a metadata URL, accepting the same
// shorthand as juicefs (a bare host:port means Redis).
func metaScheme(metaURL string) string {
	i := strings.Index(metaURL, "://")
	if i < 0 {
		return "redis"
	}
	return metaURL[:i]
}

// supportedMeta lists the metadata engines compiled into this binary (see the
// build tags in the Makefile).
var supportedMeta = map[string]bool{"redis": true, "rediss": true, "unix": true, "sqlite3": true}

// NormalizeMetaURL checks a metadata URL and returns it in canonical form.
func NormalizeMetaURL(metaURL string) (string, error) {
	if strings.TrimSpace(metaURL) == "" {
		return "", errors.New("empty metadata URL")
	}
	if !strings.Contains(metaURL, "://") {
		metaURL = "redis://" + metaURL
	}
	scheme := metaScheme(metaURL)
	if !supportedMeta[scheme] {
		return "", fmt.Errorf("unsupported metadata engine %q in %s: use redis://, rediss:// or sqlite3://", scheme, MaskURL(metaURL))
	}
	if scheme == "sqlite3" {
		return metaURL, nil
	}
	u, err := url.Parse(metaURL)
	if err != nil {
		return "", fmt.Errorf("bad metadata URL %s: %w", MaskURL(metaURL), unwrapURLError(err))
	}
	if scheme != "unix" && u.Host == "" {
		return "", fmt.Errorf("bad metadata URL %s: no host", MaskURL(metaURL))
	}
	return metaURL, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// CheckReachable makes sure the metadata engine answers before JuiceFS's client
// is created: its constructor calls log.Fatal on connection errors, which would
// kill the process without a useful message.
func CheckReachable(ctx context.Context, metaURL string) error {
	scheme := metaScheme(metaURL)
	switch scheme {
	case "sqlite3":
		path := strings.TrimPrefix(metaURL, "sqlite3://")
		if i := strings.Index(path, "?"); i >= 0 {
			path = path[:i]
		}
		dir := filepath.Dir(path)
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return fmt.Errorf("metadata database directory %s does not exist", dir)
		}
		return nil
	case "redis", "rediss", "unix":
		return pingRedis(ctx, metaURL)
	}
	return fmt.Errorf("unsupported metadata engine %q", scheme)
}

// RedisOptions parses a Redis URL the way JuiceFS does, including the
// META_PASSWORD / META_PASSWORD_FILE / REDIS_PASSWORD environment variables, so
// that passwords need not appear on a command line.
func RedisOptions(metaURL string) (*redis.Options, error) {
	u, err := url.Parse(metaURL)
	if err != nil {
		return nil, fmt.Errorf("bad metadata URL %s: %w", MaskURL(metaURL), unwrapURLError(err))
	}
	// JuiceFS accepts extra query options that go-redis does not know.
	u.RawQuery = ""
	if strings.Contains(u.Host, ",") { // sentinel or cluster lists: check the first
		u.Host = strings.Split(u.Host, ",")[0]
	}
	opt, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("bad metadata URL %s: %w", MaskURL(metaURL), err)
	}
	if opt.Password == "" {
		switch {
		case os.Getenv("REDIS_PASSWORD") != "":
			opt.Password = os.Getenv("REDIS_PASSWORD")
		case os.Getenv("META_PASSWORD") != "":
			opt.Password = os.Getenv("META_PASSWORD")
		case os.Getenv("META_PASSWORD_FILE") != "":
			b, err := os.ReadFile(os.Getenv("META_PASSWORD_FILE"))
			if err != nil {
				return nil, fmt.Errorf("read META_PASSWORD_FILE: %w", err)
			}
			opt.Password = strings.TrimSpace(string(b))
		}
	}
	return opt, nil
}

func pingRedis(ctx context.Context, metaURL string) error {
	opt, err := RedisOptions(metaURL)
	if err != nil {
		return err
	}
	opt.DialTimeout = 3 * time.Second
	opt.ReadTimeout = 3 * time.Second
	opt.MaxRetries = 1
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		var ne net.Error
		if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("metadata server %s is unreachable: %w", MaskURL(metaURL), err)
		}
		if strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "NOAUTH") || strings.Contains(err.Error(), "invalid password") {
			return fmt.Errorf("metadata server %s refused the credentials (set META_PASSWORD or put the password in the URL): %w", MaskURL(metaURL), err)
		}
		return fmt.Errorf("metadata server %s: %w", MaskURL(metaURL), err)
	}
	return nil
}
