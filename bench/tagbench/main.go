// Command tagbench measures the tag layer on a real mount: listing and walking
// a tag directory of N files (ls -f, find), tagging N files with 20 tags each
// through setxattr, and the latency of related-file queries through the
// daemon. It runs against the embedded bbolt index and, when given a Bolt
// server, against that too (at a size the server can take).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/disgrafs/disgrafs/control"
)

type config struct {
	bin        string
	work       string
	files      int
	boltFiles  int
	boltURL    string
	boltUser   string
	boltPass   string
	vocabulary int
	perFile    int
	queries    int
	runs       int
	out        string
}

func main() {
	var c config
	flag.StringVar(&c.bin, "disgrafs", "bin/disgrafs", "the disgrafs binary")
	flag.StringVar(&c.work, "workdir", "/var/tmp/disgrafs-tagbench", "work directory (wiped)")
	flag.IntVar(&c.files, "files", 100000, "files in the bbolt run")
	flag.IntVar(&c.boltFiles, "bolt-files", 2000, "files in the Bolt server run (0 skips it)")
	flag.StringVar(&c.boltURL, "bolt", os.Getenv("DISGRAFS_TEST_BOLT"), "Bolt server URL")
	flag.StringVar(&c.boltUser, "bolt-user", envOr("DISGRAFS_TEST_BOLT_USER", "admin"), "Bolt user")
	flag.StringVar(&c.boltPass, "bolt-password", os.Getenv("DISGRAFS_TEST_BOLT_PASSWORD"), "Bolt password")
	flag.IntVar(&c.vocabulary, "vocabulary", 1000, "distinct tags for the 20-tags-per-file set")
	flag.IntVar(&c.perFile, "tags-per-file", 20, "tags per file")
	flag.IntVar(&c.queries, "queries", 500, "related queries")
	flag.IntVar(&c.runs, "runs", 3, "repetitions of the listing measurements (median)")
	flag.StringVar(&c.out, "out", "", "also write the report here")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var rows []row
	r, err := runBackend(ctx, c, "bbolt", c.files, nil)
	rows = append(rows, r...)
	if err == nil && c.boltFiles > 0 {
		if c.boltURL == "" {
			fmt.Fprintln(os.Stderr, "tagbench: no Bolt server (-bolt or DISGRAFS_TEST_BOLT): skipping that backend")
		} else {
			r, err = runBackend(ctx, c, "bolt", c.boltFiles, []string{"--graph", c.boltURL, "--graph-user", c.boltUser})
			rows = append(rows, r...)
		}
	}
	report := render(c, rows)
	fmt.Print(report)
	if c.out != "" {
		_ = os.WriteFile(c.out, []byte(report), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tagbench:", err)
		os.Exit(1)
	}
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

type row struct {
	backend, what string
	n             int
	value         string
}

// mount starts a foreground daemon and returns a stop function.
func mount(ctx context.Context, c config, dir, data string, extra []string) (func(), error) {
	args := append([]string{"mount", "--metrics", "off", "--auto-tag=false", "--data-dir", data}, extra...)
	args = append(args, dir)
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), "DISGRAFS_CONFIG=none", "DISGRAFS_GRAPH_PASSWORD="+c.boltPass)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var tail []string
		for sc.Scan() {
			if strings.Contains(sc.Text(), "disgrafs: serving") {
				ready <- nil
			}
			tail = append(tail, sc.Text())
			if len(tail) > 20 {
				tail = tail[1:]
			}
		}
		ready <- fmt.Errorf("daemon exited: %s", strings.Join(tail, "\n"))
	}()
	select {
	case err := <-ready:
		if err != nil {
			return nil, err
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		return nil, errors.New("daemon did not start")
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return nil, ctx.Err()
	}
	return func() {
		_ = exec.Command(c.bin, "umount", dir).Run()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
		}
	}, nil
}

func runBackend(ctx context.Context, c config, backend string, n int, extra []string) ([]row, error) {
	base := filepath.Join(c.work, backend)
	_ = os.RemoveAll(base)
	dir, data := filepath.Join(base, "mnt"), filepath.Join(base, "data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stop, err := mount(ctx, c, dir, data, extra)
	if err != nil {
		return nil, fmt.Errorf("%s: mount: %w", backend, err)
	}
	defer stop()
	fmt.Fprintf(os.Stderr, "tagbench %s: creating %d files\n", backend, n)
	paths, err := createFiles(ctx, dir, n)
	if err != nil {
		return nil, err
	}
	var rows []row
	add := func(what, v string) {
		rows = append(rows, row{backend, what, n, v})
		fmt.Fprintf(os.Stderr, "tagbench %s: %s: %s\n", backend, what, v)
	}

	// One tag on every file: a flat tag directory of n files.
	took, err := tagAll(ctx, paths, func(int) string { return "flat" })
	if err != nil {
		return rows, err
	}
	add("tag every file with one tag (setxattr)", rate(n, took))
	flat := filepath.Join(dir, ".tags", "flat")
	var lsTimes, findTimes []time.Duration
	for i := 0; i < c.runs; i++ {
		d, cnt, err := timeCmd(ctx, "ls", "-f", flat)
		if err != nil {
			return rows, err
		}
		if cnt != n+2 {
			return rows, fmt.Errorf("ls -f listed %d entries, want %d", cnt, n+2)
		}
		lsTimes = append(lsTimes, d)
		d, cnt, err = timeCmd(ctx, "find", flat)
		if err != nil {
			return rows, err
		}
		if cnt != n+1 {
			return rows, fmt.Errorf("find listed %d entries, want %d", cnt, n+1)
		}
		findTimes = append(findTimes, d)
	}
	add("ls -f of the tag directory", fmt.Sprintf("%.3f s", median(lsTimes).Seconds()))
	add("find over the tag directory", fmt.Sprintf("%.3f s", median(findTimes).Seconds()))

	// 20 tags per file from a vocabulary, replacing the flat tag.
	rng := rand.New(rand.NewPCG(1, 2))
	lists := make([]string, n)
	for i := range lists {
		set := map[int]bool{}
		var tags []string
		for len(tags) < c.perFile {
			t := rng.IntN(c.vocabulary)
			if !set[t] {
				set[t] = true
				tags = append(tags, fmt.Sprintf("t%04d", t))
			}
		}
		lists[i] = strings.Join(tags, ",")
	}
	took, err = tagAll(ctx, paths, func(i int) string { return lists[i] })
	if err != nil {
		return rows, err
	}
	add(fmt.Sprintf("tag every file with %d tags (setxattr)", c.perFile), rate(n, took))

	lat, err := relatedLatency(ctx, dir, paths, c.queries)
	if err != nil {
		return rows, err
	}
	add("related query p50 (control API, 20 results)", fmt.Sprintf("%.2f ms", ms(lat[len(lat)/2])))
	add("related query p99 (control API, 20 results)", fmt.Sprintf("%.2f ms", ms(lat[len(lat)*99/100])))
	return rows, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func rate(n int, d time.Duration) string {
	return fmt.Sprintf("%.0f files/s (%.1f s)", float64(n)/d.Seconds(), d.Seconds())
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// createFiles makes n small files in 100 directories, in parallel.
func createFiles(ctx context.Context, dir string, n int) ([]string, error) {
	paths := make([]string, n)
	for i := range paths {
		paths[i] = filepath.Join(dir, "data", fmt.Sprintf("d%02d", i%100), fmt.Sprintf("f%06d.bin", i))
	}
	for i := 0; i < 100 && i < n; i++ {
		if err := os.MkdirAll(filepath.Dir(paths[i]), 0o755); err != nil {
			return nil, err
		}
	}
	err := parallel(ctx, n, func(i int) error {
		return os.WriteFile(paths[i], []byte(paths[i]), 0o644)
	})
	return paths, err
}

func tagAll(ctx context.Context, paths []string, list func(int) string) (time.Duration, error) {
	start := time.Now()
	err := parallel(ctx, len(paths), func(i int) error {
		if err := unix.Setxattr(paths[i], "user.xdg.tags", []byte(list(i)), 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", paths[i], err)
		}
		return nil
	})
	return time.Since(start), err
}

func parallel(ctx context.Context, n int, fn func(int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < 2*runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// timeCmd runs a listing command and counts its output lines.
func timeCmd(ctx context.Context, name string, args ...string) (time.Duration, int, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	lines := 0
	br := bufio.NewReaderSize(out, 1<<20)
	for {
		_, err := br.ReadSlice('\n')
		if err == nil {
			lines++
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		return 0, 0, err
	}
	if err := cmd.Wait(); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", name, err)
	}
	return time.Since(start), lines, nil
}

func relatedLatency(ctx context.Context, dir string, paths []string, q int) ([]time.Duration, error) {
	cl := control.Dial(control.PathsFor(dir).Socket)
	rng := rand.New(rand.NewPCG(3, 4))
	lat := make([]time.Duration, 0, q)
	for i := 0; i < q; i++ {
		p := paths[rng.IntN(len(paths))]
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return nil, err
		}
		var res []control.FoundFile
		start := time.Now()
		if err := cl.Call(ctx, "POST", "related", control.RelatedRequest{Ino: st.Ino, Limit: 20}, &res); err != nil {
			return nil, fmt.Errorf("related: %w", err)
		}
		lat = append(lat, time.Since(start))
		if len(res) == 0 {
			return nil, fmt.Errorf("related of %s returned nothing", p)
		}
	}
	slices.Sort(lat)
	return lat, nil
}

func render(c config, rows []row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Tags (%s, %d cores, %s)\n\n", time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), kernel())
	fmt.Fprintf(&b, "Command: `%s`\n\n", strings.Join(os.Args, " "))
	b.WriteString("| backend | files | measurement | result |\n| --- | ---: | --- | ---: |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", r.backend, r.n, r.what, r.value)
	}
	b.WriteString("\n")
	return b.String()
}

func kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "linux"
	}
	return "Linux " + unix.ByteSliceToString(u.Release[:])
}
