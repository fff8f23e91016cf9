package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/juicedata/juicefs/pkg/utils"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/disgrafs/disgrafs/config"
	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/daemon"
	"github.com/disgrafs/disgrafs/version"
	"github.com/disgrafs/disgrafs/volume"
)

func newFormat(g *globals) *cobra.Command {
	var o volume.FormatOptions
	var blockSize string
	cmd := &cobra.Command{
		Use:   "format [flags] NAME",
		Short: "Create a shared volume (Redis metadata; file, s3 or redis object storage)",
		Example: `  disgrafs format --meta redis://127.0.0.1:6379/1 --storage file --bucket /srv/dg-objects dataset
  ACCESS_KEY=... SECRET_KEY=... disgrafs format --meta redis://10.0.0.5:6379/1 --storage s3 --bucket https://s3.example.com/dg dataset`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if o.MetaURL == "" {
				return errors.New("--meta is required: the metadata URL of the new volume (redis://host:port/db)")
			}
			bs, err := config.ParseBytes(blockSize, 'K')
			if err != nil {
				return fmt.Errorf("--block-size: %w", err)
			}
			if bs < 64<<10 || bs > 16<<20 || bs&(bs-1) != 0 {
				return fmt.Errorf("--block-size %s: must be a power of two between 64K and 16M", blockSize)
			}
			o.BlockSizeKiB = int(bs >> 10)
			quietJuiceFS(g)
			f, err := volume.Format(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Printf("volume %q is formatted: metadata %s, storage %s %s\n", f.Name, volume.MaskURL(o.MetaURL), f.Storage, volume.MaskURL(f.Bucket))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.MetaURL, "meta", "", "metadata URL (redis://[user@]host:port/db; password from META_PASSWORD)")
	fl.StringVar(&o.Storage, "storage", "file", "object storage type: file, s3, redis")
	fl.StringVar(&o.Bucket, "bucket", "", "bucket: a directory for file, an endpoint URL for s3, a redis:// URL for redis")
	fl.StringVar(&o.AccessKey, "access-key", "", "object storage access key (or ACCESS_KEY)")
	fl.StringVar(&o.SecretKey, "secret-key", "", "object storage secret key (prefer SECRET_KEY or the config file)")
	fl.StringVar(&blockSize, "block-size", "4M", "size of an object block")
	fl.StringVar(&o.Compression, "compress", "none", "compression of blocks: none, lz4, zstd")
	fl.IntVar(&o.TrashDays, "trash-days", 1, "days deleted files are kept in the volume's trash (0 disables it)")
	return cmd
}

// quietJuiceFS keeps JuiceFS's info lines out of short commands' output.
func quietJuiceFS(g *globals) {
	utils.DisableLogColor()
	if g.verbose {
		utils.SetLogLevel(logrus.DebugLevel)
	} else {
		utils.SetLogLevel(logrus.WarnLevel)
	}
}

func newUmount() *cobra.Command {
	var lazy bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Flush and unmount a mount (also cleans up a mount whose daemon died)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			msg, err := daemon.Unmount(cmd.Context(), args[0], lazy, wait)
			if err != nil {
				return err
			}
			fmt.Println(msg)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&lazy, "lazy", "l", false, "detach now even if files are open; the daemon exits when they are closed")
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for the daemon to flush and exit")
	return cmd
}

// dialMount returns a control client for the daemon of a mountpoint.
func dialMount(mp string) (*control.Client, string, error) {
	abs, err := filepath.Abs(mp)
	if err != nil {
		return nil, "", err
	}
	return control.Dial(control.PathsFor(abs).Socket), abs, nil
}

func newStatus() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status MOUNTPOINT",
		Short: "Show what the daemon of a mountpoint serves",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, abs, err := dialMount(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			var s control.Status
			if err := cl.Call(ctx, "GET", "status", nil, &s); err != nil {
				if errors.Is(err, control.ErrNoDaemon) {
					if daemon.IsMounted(abs) {
						return fmt.Errorf("%s is mounted but its daemon does not answer (dead?): 'disgrafs umount %s' cleans it up", abs, abs)
					}
					return fmt.Errorf("%s is not mounted by disgrafs", abs)
				}
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			printStatus(os.Stdout, s)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(w io.Writer, s control.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	kind := "shared"
	if s.Embedded {
		kind = "embedded default"
	}
	cacheSize := "disabled"
	if s.CacheSize > 0 {
		cacheSize = humanize.IBytes(s.CacheSize)
	}
	// The mount and the volume.
	fmt.Fprintf(tw, "Mountpoint:\t%s\n", s.Mountpoint)
	fmt.Fprintf(tw, "Volume:\t%s (%s)\n", s.Volume, kind)
	fmt.Fprintf(tw, "Metadata:\t%s\n", s.MetaURL)
	fmt.Fprintf(tw, "Storage:\t%s\n", s.StorageURL)
	fmt.Fprintf(tw, "Daemon:\tpid %d, version %s, up %s, on %s\n", s.Pid, s.Version, (time.Duration(s.Uptime) * time.Second).Round(time.Second), s.Instance)
	if s.MetricsAddr != "" {
		fmt.Fprintf(tw, "Metrics:\thttp://%s/metrics (instance=%q)\n", s.MetricsAddr, s.Instance)
	} else {
		fmt.Fprintf(tw, "Metrics:\toff (not served over HTTP; 'disgrafs stats' still reads them)\n")
	}
	if s.LogPath != "" {
		fmt.Fprintf(tw, "Log:\t%s\n", s.LogPath)
	}

	// Caches: the whole-file cache, JuiceFS's block cache, then preallocation.
	if c := s.Cache; c != nil {
		fmt.Fprintf(tw, "File cache:\t%s, %d files, %s of %s\n", c.Dir, c.Files, humanize.IBytes(uint64(max(c.Bytes, 0))), humanize.IBytes(uint64(max(c.Budget, 0))))
		fmt.Fprintf(tw, "Passthrough:\t%s\n", c.PassthroughNote)
		fmt.Fprintf(tw, "Open check:\t%s (%s); read-only opens: %d answered locally, %d asked the metadata engine\n",
			c.Coherence.Mode, c.Coherence.Detail, c.Coherence.LocalOpens, c.Coherence.CheckedOpens)
		if c.Prefetch {
			fmt.Fprintf(tw, "Prefetch:\ton, %d queued\n", c.PrefetchQueue)
		} else {
			fmt.Fprintf(tw, "Prefetch:\toff\n")
		}
		for _, wu := range c.Warmups {
			p := wu.Progress
			state := "running"
			if p.Done {
				state = "done"
			}
			if p.Error != "" {
				state += ": " + p.Error
			}
			fmt.Fprintf(tw, "Warmup:\t%s %s (%s): %d/%d files, %s/%s\n", p.Mode, wu.What, state, p.Files, p.Total,
				humanize.IBytes(uint64(max(p.Bytes, 0))), humanize.IBytes(uint64(max(p.TotalBytes, 0))))
		}
	} else {
		fmt.Fprintf(tw, "File cache:\toff\n")
	}
	fmt.Fprintf(tw, "Block cache:\t%s, %s in %d blocks (budget %s)\n", s.CacheDir, humanize.IBytes(uint64(max(s.CacheBytes, 0))), s.CacheBlocks, cacheSize)

	// The graph and the tagger.
	if t := s.Tags; t != nil {
		state := "available"
		if !t.Available {
			state = "UNAVAILABLE: " + t.Error
		}
		fmt.Fprintf(tw, "Tag index:\t%s %s (%s)\n", t.Backend, t.Location, state)
		if t.GraphCalls > 0 {
			fmt.Fprintf(tw, "Graph calls:\t%d, mean %.2f ms, %d failed\n", t.GraphCalls, t.GraphAvgLatencyMs, t.GraphErrors)
		}
		fmt.Fprintf(tw, "Tagging:\t%d changes, %d waiting for the index, %d index errors; auto-tagged %d (%d queued, %d failed, %d dropped)\n",
			t.Tagged, t.IndexPending, t.IndexErrors, t.AutoDone, t.AutoQueued, t.AutoFailed, t.AutoDropped)
		if t.AutoCapacity > 0 {
			fmt.Fprintf(tw, "Tag queue:\t%d of %d files waiting for the auto-tagger\n", t.AutoQueued, t.AutoCapacity)
		}
	} else {
		fmt.Fprintf(tw, "Tag index:\toff\n")
	}
	if p := s.Prealloc; p != nil {
		fmt.Fprintf(tw, "Pre-allocation:\tnode %s, journal %s\n", p.Node, p.Journal)
		fmt.Fprintf(tw, "Pre-allocated:\t%d files ready (pool %d per directory), %d hits, %d misses, %d renames pending, %d landed, %d retries, %d conflicts, %d lost\n",
			p.PoolFiles, p.PoolSize, p.Hits, p.Misses, p.Pending, p.Landed, p.RenameRetries, p.Conflicts, p.Lost)
		if p.AsyncClose {
			fmt.Fprintf(tw, "Async close:\ton, %d commits pending, %d landed, %d failed, %d lost in a crash\n",
				p.ClosesPending, p.ClosesLanded, p.CloseErrors, p.ClosesLost)
		}
		for _, c := range p.Recent {
			if c.LandedAs == c.Name {
				fmt.Fprintf(tw, "  file:\t%s (parent %d): %s\n", c.Name, c.Parent, c.Reason)
				continue
			}
			fmt.Fprintf(tw, "  conflict:\t%s (parent %d) kept as %s: %s\n", c.Name, c.Parent, c.LandedAs, c.Reason)
		}
		for k, v := range p.Errors {
			fmt.Fprintf(tw, "  error (%s):\t%s\n", k, v)
		}
	}
	if b := s.BPF; b != nil {
		if b.Enabled {
			fmt.Fprintf(tw, "eBPF:\ton (--bpf=%s); %d reads: %s passthrough, %s page cache, %s daemon; %d opens",
				b.Mode, b.ReadCalls, humanize.IBytes(b.ReadBytes.Passthrough), humanize.IBytes(b.ReadBytes.PageCache), humanize.IBytes(b.ReadBytes.Daemon), b.OpenEvents)
			if b.Lost > 0 {
				fmt.Fprintf(tw, ", %d lost", b.Lost)
			}
			if b.Error != "" {
				fmt.Fprintf(tw, "; last drain failed: %s", b.Error)
			}
			fmt.Fprintln(tw)
		} else {
			fmt.Fprintf(tw, "eBPF:\toff (--bpf=%s): %s\n", b.Mode, b.Reason)
		}
	}

	// FUSE traffic.
	names := make([]string, 0, len(s.Ops))
	var total uint64
	for n, c := range s.Ops {
		names = append(names, n)
		total += c
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, s.Ops[n]))
	}
	fmt.Fprintf(tw, "Operations:\t%d (%s)\n", total, strings.Join(parts, ", "))
	if f := s.FUSE; f != nil {
		if len(f.Rates) == 0 {
			fmt.Fprintf(tw, "Recent ops:\tidle for the last %.0f s\n", f.Window)
		} else {
			rates := make([]string, 0, len(f.Rates))
			for _, r := range f.Rates {
				if f.Timed {
					rates = append(rates, fmt.Sprintf("%s %.1f/s %.2f ms", r.Op, r.PerSecond, r.AvgLatencyMs))
				} else {
					rates = append(rates, fmt.Sprintf("%s %.1f/s", r.Op, r.PerSecond))
				}
			}
			fmt.Fprintf(tw, "Recent ops:\t%.1f/s over the last %.0f s (%s)\n", f.OpsPerSecond, f.Window, strings.Join(rates, ", "))
		}
	}

	// Parts that subsystems without a typed field added, in their order.
	for _, sec := range s.Sections {
		printSection(tw, sec)
	}
	tw.Flush()
}

// printSection prints a subsystem's part of the status: its title, then its lines.
func printSection(tw io.Writer, sec control.Section) {
	if len(sec.Lines) == 0 {
		fmt.Fprintf(tw, "%s:\t(no details)\n", sec.Title)
		return
	}
	for i, l := range sec.Lines {
		title := ""
		if i == 0 {
			title = sec.Title + ":"
		}
		fmt.Fprintf(tw, "%s\t%s\n", title, l)
	}
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Printf("disgrafs %s (JuiceFS %s)\n", version.Version, version.JuiceFS)
		},
	}
}
