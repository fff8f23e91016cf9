package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/tagging"
)

// mountOf finds the disgrafs mount that contains path (or cwd when empty).
func mountOf(path string) (string, *control.Client, error) {
	if path == "" {
		path = "."
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", nil, err
	}
	for dir := abs; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(control.PathsFor(dir).Socket); err == nil {
			return dir, control.Dial(control.PathsFor(dir).Socket), nil
		}
		if dir == "/" {
			return "", nil, fmt.Errorf("%s is not inside a disgrafs mount (give --mount or a path in one)", abs)
		}
	}
}

func newTag() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tag",
		Short: "Add, remove or list the tags of files",
		Long: `Tags live in each file's user.xdg.tags extended attribute; the daemon keeps the
graph index in step. These commands work through the mount, so any user who may
write a file may tag it.`,
	}
	var flagTags []string
	split := func(args []string) (paths, tags []string, err error) {
		i := 0
		for ; i < len(args); i++ {
			if _, err := os.Lstat(args[i]); err != nil {
				break
			}
		}
		paths, tags = args[:i], append(args[i:len(args):len(args)], flagTags...)
		if len(paths) == 0 {
			return nil, nil, fmt.Errorf("no existing file among the arguments: %s", strings.Join(args, " "))
		}
		for _, t := range tags {
			if err := graph.ValidTag(t); err != nil {
				return nil, nil, fmt.Errorf("%q: %w (or %q is a file that does not exist)", t, err, t)
			}
		}
		if len(tags) == 0 {
			return nil, nil, errors.New("no tags given")
		}
		return paths, tags, nil
	}
	modify := func(add bool) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			paths, tags, err := split(args)
			if err != nil {
				return err
			}
			var errs []error
			for _, p := range paths {
				if err := modifyXattr(p, tags, add); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", p, err))
				}
			}
			return errors.Join(errs...)
		}
	}
	add := &cobra.Command{Use: "add PATH... TAG...", Short: "Add tags to files", Args: cobra.MinimumNArgs(1), RunE: modify(true),
		Example: "  disgrafs tag add img/001.png img/002.png cat cute\n  disgrafs tag add -t cat img/*.png"}
	add.Flags().StringSliceVarP(&flagTags, "tag", "t", nil, "tags (comma separated or repeated), besides trailing arguments")
	rm := &cobra.Command{Use: "rm PATH... TAG...", Short: "Remove tags from files", Args: cobra.MinimumNArgs(1), RunE: modify(false)}
	rm.Flags().StringSliceVarP(&flagTags, "tag", "t", nil, "tags (comma separated or repeated), besides trailing arguments")
	ls := &cobra.Command{Use: "ls PATH...", Short: "List the tags of files", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, p := range args {
				tags, err := readTags(p)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", p, err))
					continue
				}
				fmt.Printf("%s: %s\n", p, strings.Join(tags, ","))
			}
			return errors.Join(errs...)
		}}
	cmd.AddCommand(add, rm, ls)
	return cmd
}

func readTags(p string) ([]string, error) {
	buf := make([]byte, graph.MaxTagListBytes)
	n, err := unix.Getxattr(p, tagging.XattrName, buf)
	if errors.Is(err, unix.ENODATA) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return graph.ParseTagList(buf[:n])
}

func modifyXattr(p string, tags []string, add bool) error {
	old, err := readTags(p)
	if err != nil {
		return err
	}
	var out []string
	for _, t := range old {
		if add || !contains(tags, t) {
			out = append(out, t)
		}
	}
	if add {
		for _, t := range tags {
			if !contains(out, t) {
				out = append(out, t)
			}
		}
	}
	if len(out) == 0 {
		if err := unix.Removexattr(p, tagging.XattrName); err != nil && !errors.Is(err, unix.ENODATA) {
			return err
		}
		return nil
	}
	return unix.Setxattr(p, tagging.XattrName, graph.FormatTagList(out), 0)
}

func contains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

func newTags() *cobra.Command {
	return &cobra.Command{
		Use:   "tags [MOUNTPOINT]",
		Short: "List every tag with its number of files",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, cl, err := mountOf(firstArg(args))
			if err != nil {
				return err
			}
			var tags []graph.TagCount
			if err := cl.Call(cmd.Context(), "GET", "tags", nil, &tags); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			for _, t := range tags {
				fmt.Fprintf(tw, "%s\t%d\n", t.Tag, t.Files)
			}
			return tw.Flush()
		},
	}
}

func firstArg(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	return ""
}

func newFind() *cobra.Command {
	var mnt string
	cmd := &cobra.Command{
		Use:     "find [--mount MOUNTPOINT] EXPR",
		Short:   "List the files matching a tag expression",
		Example: `  disgrafs find 'cat and (dog or not bird)'`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := graph.Parse(args[0]); err != nil {
				return fmt.Errorf("bad expression: %w", err)
			}
			_, cl, err := mountOf(mnt)
			if err != nil {
				return err
			}
			var files []control.FoundFile
			if err := cl.Call(cmd.Context(), "POST", "find", control.FindRequest{Expr: args[0]}, &files); err != nil {
				return err
			}
			for _, f := range files {
				fmt.Println(f.Path)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&mnt, "mount", "", "the mount to search (default: the one containing the current directory)")
	return cmd
}

func newRelated() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "related [--limit N] PATH",
		Short: "List the files most related to a file (shared tags, rarer tags weigh more)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var st syscall.Stat_t
			if err := syscall.Stat(args[0], &st); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			_, cl, err := mountOf(args[0])
			if err != nil {
				return err
			}
			var files []control.FoundFile
			if err := cl.Call(cmd.Context(), "POST", "related", control.RelatedRequest{Ino: st.Ino, Limit: limit}, &files); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			for _, f := range files {
				fmt.Fprintf(tw, "%.3f\t%s\n", f.Score, f.Path)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "how many files")
	return cmd
}

func newReindex() *cobra.Command {
	return &cobra.Command{
		Use:   "reindex MOUNTPOINT",
		Short: "Rebuild the tag index from the files' xattrs (after a lost graph, or a backend switch)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, abs, err := dialMount(args[0])
			if err != nil {
				return err
			}
			var sfs unix.Statfs_t
			total := int64(-1)
			if unix.Statfs(abs, &sfs) == nil && sfs.Files > sfs.Ffree {
				total = int64(sfs.Files - sfs.Ffree) // inodes in use: an upper bound on files
			}
			resp, err := cl.Do(cmd.Context(), "POST", "reindex", nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			return followReindex(cmd.Context(), resp.Body, total, os.Stderr)
		},
	}
}

// followReindex shows the daemon's progress: a bar on a terminal, plain lines
// otherwise.
func followReindex(ctx context.Context, r io.Reader, total int64, w *os.File) error {
	tty := isatty.IsTerminal(w.Fd())
	var bar *progressbar.ProgressBar
	if tty {
		bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("reindexing"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("files"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	sc := bufio.NewScanner(r)
	var last tagging.Progress
	for sc.Scan() {
		var msg struct {
			tagging.Progress
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			return fmt.Errorf("reindex progress: %w", err)
		}
		if msg.Error != "" {
			return fmt.Errorf("reindex: %s", msg.Error)
		}
		last = msg.Progress
		if bar != nil {
			if total >= 0 && last.Scanned > total {
				bar.ChangeMax64(last.Scanned)
			}
			_ = bar.Set64(last.Scanned)
		} else {
			fmt.Fprintf(w, "reindex: %d files scanned, %d tagged\n", last.Scanned, last.Tagged)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reindex progress: %w", err)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	if !last.Done {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("reindex: the daemon stopped before finishing (see its log)")
	}
	fmt.Printf("reindexed: %d files scanned, %d tagged, %d unreadable tag lists, %d stale index entries dropped\n",
		last.Scanned, last.Tagged, last.Invalid, last.Forgotten)
	return nil
}
