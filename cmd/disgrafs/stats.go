package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/spf13/cobra"

	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/daemon"
)

func newStats() *cobra.Command {
	var interval time.Duration
	var count, topOps int
	cmd := &cobra.Command{
		Use:   "stats MOUNTPOINT",
		Short: "Show a mount's activity live: FUSE ops and latency, bytes, metadata, cache, graph, tag queue",
		Long: `Show a mount's activity live, one line per interval, like 'juicefs stats'.

The numbers are the daemon's Prometheus metrics (the same ones it serves on
--metrics), read over the mount's control socket, so this works with
--metrics off too. Rates are per second over the last interval; latencies are
the mean over it.

Columns: fuse ops/s, mean latency, bytes read and written per second through
the daemon (reads served by the whole-file cache bypass it); files: opens
served by the whole-file cache and opens that missed it, per second; meta
ops/s and latency (metadata engine); blocks: JuiceFS block cache hits and
misses (bytes/s); object storage get/put (bytes/s); graph calls/s,
latency and availability; tag queue (files waiting for the auto-tagger) and
index changes waiting for the graph; cpu and memory of the daemon; the
busiest FUSE operations.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval < 100*time.Millisecond {
				return fmt.Errorf("--interval %s: at least 100ms", interval)
			}
			cl, abs, err := dialMount(args[0])
			if err != nil {
				return err
			}
			return runStats(cmd.Context(), os.Stdout, cl, abs, interval, count, topOps)
		},
	}
	cmd.Flags().DurationVarP(&interval, "interval", "i", time.Second, "time between lines")
	cmd.Flags().IntVarP(&count, "count", "c", 0, "stop after this many lines (0: until interrupted)")
	cmd.Flags().IntVar(&topOps, "top", 4, "how many of the busiest FUSE operations to list")
	return cmd
}

// statsSample is what one scrape says, summed over all series of a name.
type statsSample struct {
	at       time.Time
	ops      map[string]float64
	fuseN    float64 // timed FUSE requests
	fuseSum  float64 // their total seconds
	readB    float64
	writeB   float64
	fhit     float64 // opens served by the whole-file cache
	fmiss    float64
	fcache   float64 // -1: no whole-file cache
	metaN    float64
	metaSum  float64
	hitB     float64
	missB    float64
	getB     float64
	putB     float64
	graphN   float64
	graphSum float64
	graphUp  float64 // -1: no graph
	queue    float64 // -1: no auto-tagger
	pending  float64 // -1: no tags
	cpu      float64
	rss      float64
}

func scrapeStats(ctx context.Context, cl *control.Client) (statsSample, error) {
	resp, err := cl.Do(ctx, "GET", "metrics", nil)
	if err != nil {
		return statsSample{}, err
	}
	defer resp.Body.Close()
	var p expfmt.TextParser
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return statsSample{}, fmt.Errorf("parse the daemon's metrics: %w", err)
	}
	return sampleFrom(mfs, time.Now()), nil
}

// sampleFrom reads the numbers 'stats' shows from parsed metric families.
func sampleFrom(mfs map[string]*dto.MetricFamily, at time.Time) statsSample {
	s := statsSample{at: at, ops: map[string]float64{}}
	if mf := mfs["disgrafs_fuse_ops_total"]; mf != nil {
		for _, m := range mf.GetMetric() {
			s.ops[labelOf(m, "op")] += m.GetCounter().GetValue()
		}
	}
	s.fuseN, s.fuseSum = histSum(mfs, "disgrafs_fuse_op_duration_seconds")
	_, s.readB = histSum(mfs, "juicefs_fuse_read_size_bytes")
	_, s.writeB = histSum(mfs, "juicefs_fuse_written_size_bytes")
	s.fcache = -1
	if mfs["disgrafs_cache_hit_files_total"] != nil {
		s.fcache = 0
		s.fhit = valueSum(mfs, "disgrafs_cache_hit_files_total", "", "")
		s.fmiss = valueSum(mfs, "disgrafs_cache_miss_files_total", "", "")
	}
	s.metaN, s.metaSum = histSum(mfs, "juicefs_meta_ops_durations_histogram_seconds")
	s.hitB = valueSum(mfs, "juicefs_blockcache_hit_bytes", "", "")
	s.missB = valueSum(mfs, "juicefs_blockcache_miss_bytes", "", "")
	s.getB = valueSum(mfs, "juicefs_object_request_data_bytes", "method", "GET")
	s.putB = valueSum(mfs, "juicefs_object_request_data_bytes", "method", "PUT")
	s.graphN, s.graphSum = histSum(mfs, "disgrafs_graph_query_duration_seconds")
	s.graphUp, s.queue, s.pending = -1, -1, -1
	if mfs["disgrafs_graph_available"] != nil {
		s.graphUp = valueSum(mfs, "disgrafs_graph_available", "", "")
	}
	if mfs["disgrafs_tagger_queue_length"] != nil {
		s.queue = valueSum(mfs, "disgrafs_tagger_queue_length", "", "")
	}
	if mfs["disgrafs_tagger_index_pending"] != nil {
		s.pending = valueSum(mfs, "disgrafs_tagger_index_pending", "", "")
	}
	s.cpu = valueSum(mfs, "process_cpu_seconds_total", "", "")
	s.rss = valueSum(mfs, "process_resident_memory_bytes", "", "")
	return s
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// valueSum adds up a counter, gauge or untyped family, optionally only the
// series whose label equals value.
func valueSum(mfs map[string]*dto.MetricFamily, name, label, value string) float64 {
	var sum float64
	for _, m := range mfs[name].GetMetric() {
		if label != "" && labelOf(m, label) != value {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}

// histSum adds up the sample counts and sums of a histogram family.
func histSum(mfs map[string]*dto.MetricFamily, name string) (count, sum float64) {
	for _, m := range mfs[name].GetMetric() {
		if h := m.GetHistogram(); h != nil {
			count += float64(h.GetSampleCount())
			sum += h.GetSampleSum()
		}
	}
	return count, sum
}

const statsHeader = "    time | fuse: ops/s   lat   read/s  write/s | files: hit/s miss/s | meta: ops/s   lat | blocks: hit/s miss/s | object: get/s  put/s | graph: q/s    lat up | tags: queue pend |  cpu    mem | busiest ops/s"

func runStats(ctx context.Context, w io.Writer, cl *control.Client, mp string, interval time.Duration, count, topOps int) error {
	first := func() (statsSample, error) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return scrapeStats(cctx, cl)
	}
	prev, err := first()
	if err != nil {
		if errors.Is(err, control.ErrNoDaemon) {
			if daemon.IsMounted(mp) {
				return fmt.Errorf("%s is mounted but its daemon does not answer (dead?): 'disgrafs umount %s' cleans it up", mp, mp)
			}
			return fmt.Errorf("%s is not mounted by disgrafs", mp)
		}
		return err
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for line := 0; count == 0 || line < count; line++ {
		if line%20 == 0 {
			fmt.Fprintln(w, statsHeader)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err := first()
		if err != nil {
			return fmt.Errorf("the daemon of %s stopped answering: %w", mp, err)
		}
		fmt.Fprintln(w, formatStats(prev, cur, topOps))
		prev = cur
	}
	return nil
}

// formatStats renders the change between two samples as one line.
func formatStats(a, b statsSample, topOps int) string {
	dt := b.at.Sub(a.at).Seconds()
	if dt <= 0 {
		dt = 1
	}
	rate := func(x, y float64) float64 { return max(y-x, 0) / dt }
	lat := func(n0, s0, n1, s1 float64) string {
		if n1-n0 <= 0 {
			return "    -"
		}
		return fmtMs((s1 - s0) / (n1 - n0))
	}
	var opsTotal float64
	type opr struct {
		op string
		r  float64
	}
	var busy []opr
	for op, v := range b.ops {
		r := rate(a.ops[op], v)
		opsTotal += r
		if r > 0 {
			busy = append(busy, opr{op, r})
		}
	}
	sort.Slice(busy, func(i, j int) bool {
		if busy[i].r != busy[j].r {
			return busy[i].r > busy[j].r
		}
		return busy[i].op < busy[j].op
	})
	if len(busy) > topOps {
		busy = busy[:topOps]
	}
	top := make([]string, len(busy))
	for i, o := range busy {
		top[i] = fmt.Sprintf("%s %.0f", o.op, o.r)
	}
	graph := "    -      -  -"
	if b.graphUp >= 0 {
		up := "no"
		if b.graphUp > 0 {
			up = "ok"
		}
		graph = fmt.Sprintf("%5.0f %6s %2s", rate(a.graphN, b.graphN), lat(a.graphN, a.graphSum, b.graphN, b.graphSum), up)
	}
	files := "      -      -"
	if b.fcache >= 0 {
		files = fmt.Sprintf("%6.0f %6.0f", rate(a.fhit, b.fhit), rate(a.fmiss, b.fmiss))
	}
	tags := "    -    -"
	if b.pending >= 0 {
		q := "-"
		if b.queue >= 0 {
			q = fmt.Sprintf("%.0f", b.queue)
		}
		tags = fmt.Sprintf("%5s %4.0f", q, b.pending)
	}
	return fmt.Sprintf("%s |   %7.0f %5s %8s %8s |      %s |   %7.0f %5s |    %7s %6s |    %7s %6s |     %s |    %s | %3.0f%% %6s | %s",
		b.at.Format("15:04:05"),
		opsTotal, lat(a.fuseN, a.fuseSum, b.fuseN, b.fuseSum), bytesRate(rate(a.readB, b.readB)), bytesRate(rate(a.writeB, b.writeB)),
		files,
		rate(a.metaN, b.metaN), lat(a.metaN, a.metaSum, b.metaN, b.metaSum),
		bytesRate(rate(a.hitB, b.hitB)), bytesRate(rate(a.missB, b.missB)),
		bytesRate(rate(a.getB, b.getB)), bytesRate(rate(a.putB, b.putB)),
		graph, tags,
		100*rate(a.cpu, b.cpu), strings.ReplaceAll(humanize.IBytes(uint64(b.rss)), " ", ""),
		strings.Join(top, " "))
}

// fmtMs prints seconds as milliseconds in five columns.
func fmtMs(sec float64) string {
	ms := sec * 1000
	switch {
	case ms < 10:
		return fmt.Sprintf("%5.2f", ms)
	case ms < 1000:
		return fmt.Sprintf("%5.1f", ms)
	}
	return fmt.Sprintf("%5.0f", ms)
}

func bytesRate(b float64) string {
	if b < 1 {
		return "0"
	}
	return strings.ReplaceAll(humanize.IBytes(uint64(b)), " ", "")
}
