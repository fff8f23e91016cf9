package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// counterPrefixes are the metrics a pass reports: what the caches did.
var counterPrefixes = []string{
	"disgrafs_cache", "disgrafs_prefetch", "disgrafs_passthrough",
	"disgrafs_fuse_ops_total", "disgrafs_fuse_op_duration_seconds_sum",
	"juicefs_blockcache_hit", "juicefs_blockcache_miss",
	"juicefs_object_request_durations_histogram_seconds_count",
}

// scrapeCounters reads a Prometheus text endpoint and keeps the samples whose
// names start with one of counterPrefixes (histogram buckets left out).
func scrapeCounters(ctx context.Context, port int) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:"+strconv.Itoa(port)+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	return parseCounters(bufio.NewScanner(resp.Body))
}

func parseCounters(sc *bufio.Scanner) (map[string]float64, error) {
	out := map[string]float64{}
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.Contains(line, "_bucket{") {
			continue
		}
		if !slices.ContainsFunc(counterPrefixes, func(p string) bool { return strings.HasPrefix(line, p) }) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[trimLabels(line[:i])] += v
	}
	return out, sc.Err()
}

// counterDelta renders after-before for the counters that moved, sorted.
func counterDelta(before, after map[string]float64) string {
	var parts []string
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			parts = append(parts, k+"="+strconv.FormatFloat(d, 'f', -1, 64))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// noiseLabels identify the mount, not what the sample counts.
var noiseLabels = []string{"instance", "juicefs_version", "mp", "vol_name", "storage_class"}

// trimLabels drops the labels that only name the mount: name{a="1",mp="/x"}
// becomes name{a="1"}, and name{mp="/x"} becomes name.
func trimLabels(s string) string {
	name, labels, ok := strings.Cut(s, "{")
	if !ok {
		return s
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
		k, _, _ := strings.Cut(l, "=")
		if l != "" && !slices.Contains(noiseLabels, k) {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return name
	}
	return name + "{" + strings.Join(keep, ",") + "}"
}
