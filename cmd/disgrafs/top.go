package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/disgrafs/disgrafs/control"
)

func newTop() *cobra.Command {
	var (
		interval time.Duration
		count    int
	)
	cmd := &cobra.Command{
		Use:   "top MOUNTPOINT",
		Short: "Live view of reads by source, the hottest files and FUSE requests (needs eBPF)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval < 100*time.Millisecond {
				return fmt.Errorf("--interval %s: at least 100ms", interval)
			}
			cl, abs, err := dialMount(args[0])
			if err != nil {
				return err
			}
			clear := term.IsTerminal(int(os.Stdout.Fd())) && count != 1
			for i := 0; count == 0 || i < count; i++ {
				if i > 0 {
					select {
					case <-cmd.Context().Done():
						return nil
					case <-time.After(interval):
					}
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				var t control.BPFTop
				err := cl.Call(ctx, "GET", "bpf/top", nil, &t)
				cancel()
				if err != nil {
					return fmt.Errorf("%s: %w", abs, err)
				}
				if !t.Enabled {
					return fmt.Errorf("%s: eBPF accounting is off (%s); 'disgrafs top' needs it", abs, t.Reason)
				}
				if clear {
					fmt.Print("\033[H\033[2J")
				}
				printTop(os.Stdout, abs, t)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "refresh interval")
	cmd.Flags().IntVar(&count, "count", 0, "frames to print (0: until interrupted)")
	return cmd
}

func printTop(w io.Writer, mp string, t control.BPFTop) {
	secs := t.Interval
	if secs <= 0 {
		secs = 1
	}
	rate := func(n uint64) string { return humanize.IBytes(uint64(float64(n)/secs)) + "/s" }
	total := t.Passthrough + t.PageCache + t.Daemon
	hit := "-"
	if t.PageCache+t.Daemon > 0 {
		hit = fmt.Sprintf("%.1f%%", 100*float64(t.PageCache)/float64(t.PageCache+t.Daemon))
	}
	fmt.Fprintf(w, "disgrafs top %s (last %.1fs, %s)\n", mp, secs, time.Now().Format("15:04:05"))
	fmt.Fprintf(w, "reads %.0f/s, %s: passthrough %s, page cache %s, daemon %s; kernel cache hits %s; opens %.0f/s\n\n",
		float64(t.ReadCalls)/secs, rate(total), rate(t.Passthrough), rate(t.PageCache), rate(t.Daemon), hit, float64(t.Opens)/secs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOTTEST FILES\treads/s\tread/s\tpassthrough\tpage cache\tdaemon")
	for _, f := range t.Files {
		name := f.Path
		if name == "" {
			name = fmt.Sprintf("inode %d", f.Ino)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\n", name, float64(f.Calls)/secs,
			rate(f.Passthrough+f.PageCache+f.Daemon), rate(f.Passthrough), rate(f.PageCache), rate(f.Daemon))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "FUSE REQUESTS\tops/s\tavg latency\terrors/s")
	for _, op := range t.Fuse {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.0f\n", op.Op, float64(op.Count)/secs,
			time.Duration(op.AvgSecs*float64(time.Second)).Round(time.Microsecond), float64(op.Errors)/secs)
	}
	tw.Flush()
}
