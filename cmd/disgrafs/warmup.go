package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/disgrafs/disgrafs/cache"
	"github.com/disgrafs/disgrafs/control"
)

func newWarmup() *cobra.Command {
	var req control.WarmupRequest
	var check, evict bool
	cmd := &cobra.Command{
		Use:   "warmup [--tag TAG | --query EXPR] [PATH...]",
		Short: "Copy files into the local whole-file cache (by tag, query or path), check or evict them",
		Long: `Warmup copies whole files into this node's cache so that reads are served
without the daemon (FUSE passthrough or the page cache). With --tag or --query the
files come from the tag index and PATH (default: the current directory) only
names the mount; otherwise every regular file under the PATHs is warmed.
An interrupted warmup resumes where it stopped when run again: files already
cached at their current version are skipped.`,
		Example: `  disgrafs warmup --tag train /mnt/dg
  disgrafs warmup --query 'train and not broken' --threads 16 /mnt/dg
  disgrafs warmup /mnt/dg/datasets/imagenet
  disgrafs warmup --check --tag train /mnt/dg
  disgrafs warmup --evict --tag train /mnt/dg`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if check && evict {
				return errors.New("--check and --evict exclude each other")
			}
			if req.Tag != "" && req.Query != "" {
				return errors.New("give --tag or --query, not both")
			}
			switch {
			case check:
				req.Mode = string(cache.ModeCheck)
			case evict:
				req.Mode = string(cache.ModeEvict)
			default:
				req.Mode = string(cache.ModeWarm)
			}
			if req.Threads < 0 || req.Threads > 1024 {
				return fmt.Errorf("--threads %d: must be between 1 and 1024", req.Threads)
			}
			if len(args) == 0 {
				args = []string{"."}
			}
			mp, cl, err := mountOf(args[0])
			if err != nil {
				return err
			}
			if req.Tag == "" && req.Query == "" {
				inos, err := collectFiles(args, mp)
				if err != nil {
					return err
				}
				if len(inos) == 0 {
					return fmt.Errorf("no regular files under %v", args)
				}
				req.Inos = inos
			}
			resp, err := cl.Do(cmd.Context(), "POST", "warmup", req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			return followWarmup(cmd.Context(), resp.Body, req, os.Stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Tag, "tag", "", "warm the files carrying this tag")
	fl.StringVar(&req.Query, "query", "", "warm the files matching this tag expression")
	fl.IntVar(&req.Threads, "threads", 8, "files copied at once")
	fl.BoolVar(&check, "check", false, "report how much is cached instead of warming")
	fl.BoolVar(&evict, "evict", false, "drop the files from the cache instead of warming")
	fl.BoolVar(&req.Background, "background", false, "return at once and let the daemon warm in the background ('disgrafs status' shows progress)")
	return cmd
}

// collectFiles returns the inodes of the regular files under paths, which
// must all be inside the mount mp.
func collectFiles(paths []string, mp string) ([]uint64, error) {
	var inos []uint64
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		if rel, err := filepath.Rel(mp, abs); err != nil || rel == ".." || (len(rel) > 2 && rel[:3] == "../") {
			return nil, fmt.Errorf("%s is not inside the mount %s", p, mp)
		}
		err = filepath.WalkDir(abs, func(path string, de fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("warmup: %w", err)
			}
			if de.IsDir() && path != abs && (de.Name() == ".tags" || de.Name() == ".query") && filepath.Dir(path) == mp {
				return filepath.SkipDir // the virtual trees list the same files again
			}
			if !de.Type().IsRegular() {
				return nil
			}
			info, err := de.Info()
			if err != nil {
				return fmt.Errorf("warmup: %w", err)
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				inos = append(inos, st.Ino)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return inos, nil
}

// followWarmup shows the daemon's progress: a bar (files, bytes, rate, ETA)
// on a terminal, plain lines otherwise.
func followWarmup(ctx context.Context, r io.Reader, req control.WarmupRequest, w *os.File) error {
	tty := isatty.IsTerminal(w.Fd())
	var bar *progressbar.ProgressBar
	sc := bufio.NewScanner(r)
	var last cache.Progress
	lastLine := time.Time{}
	for sc.Scan() {
		var msg struct {
			cache.Progress
			Err string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			return fmt.Errorf("warmup progress: %w", err)
		}
		last = msg.Progress
		last.Error = msg.Err
		if req.Background || req.Mode != string(cache.ModeWarm) {
			continue
		}
		if tty && last.TotalBytes > 0 {
			if bar == nil {
				bar = progressbar.NewOptions64(last.TotalBytes,
					progressbar.OptionSetWriter(w),
					progressbar.OptionShowBytes(true),
					progressbar.OptionSetPredictTime(true),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionClearOnFinish())
			}
			bar.Describe(fmt.Sprintf("warming %d/%d files", last.Files, last.Total))
			_ = bar.Set64(last.Bytes)
		} else if !tty && (time.Since(lastLine) >= time.Second || last.Done) {
			lastLine = time.Now()
			fmt.Fprintf(w, "warmup: %d/%d files, %s/%s, %.1f s\n", last.Files, last.Total,
				humanize.IBytes(uint64(max(last.Bytes, 0))), humanize.IBytes(uint64(max(last.TotalBytes, 0))), last.Elapsed)
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("warmup progress: %w", err)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("warmup interrupted after %d of %d files; run it again to resume", last.Files, last.Total)
	}
	if req.Background {
		fmt.Printf("warming %d files in the background; 'disgrafs status' shows progress\n", last.Total)
		return nil
	}
	if !last.Done {
		return errors.New("warmup: the daemon stopped before finishing (see its log)")
	}
	switch cache.WarmupMode(req.Mode) {
	case cache.ModeCheck:
		pct := 100.0
		if last.TotalBytes > 0 {
			pct = 100 * float64(last.CachedBytes) / float64(last.TotalBytes)
		}
		fmt.Printf("cached: %d of %d files, %s of %s (%.1f%%)\n", last.Cached, last.Total-last.Gone,
			humanize.IBytes(uint64(last.CachedBytes)), humanize.IBytes(uint64(last.TotalBytes)), pct)
	case cache.ModeEvict:
		fmt.Printf("evicted: %d files, %s\n", last.Evicted, humanize.IBytes(uint64(max(last.Bytes, 0))))
	default:
		rate := 0.0
		if last.Elapsed > 0 {
			rate = float64(last.Bytes-last.CachedBytes) / last.Elapsed
		}
		fmt.Printf("warmed: %d files copied, %d already cached, %d failed, %d gone; %s in %.1f s (%s/s)\n",
			last.Fetched, last.Cached, last.Failed, last.Gone, humanize.IBytes(uint64(max(last.Bytes, 0))), last.Elapsed,
			humanize.IBytes(uint64(rate)))
	}
	if last.Error != "" {
		return fmt.Errorf("warmup: %s", last.Error)
	}
	return nil
}
