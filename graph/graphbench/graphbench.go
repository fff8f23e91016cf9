// Package graphbench measures a graph.Store at scale: tagging many files in
// batches, listing a tag that every file carries, and Related latency
// percentiles. The backends' benchmarks call it; so can the bench tool.
package graphbench

import (
	"context"
	"fmt"
	"math/rand"
	"sort"
	"time"

	"github.com/disgrafs/disgrafs/graph"
)

// Config describes the data set and the measurements.
type Config struct {
	// Files is the number of files tagged (default 100,000).
	Files int
	// TagsPerFile is the number of tags on each file, AllTag included
	// (default 20).
	TagsPerFile int
	// Vocabulary is the number of distinct tags besides AllTag (default
	// 1,000). Tags are drawn with a Zipf-like skew (a few very common tags,
	// a long tail of rare ones), as people tag.
	Vocabulary int
	// AllTag is a tag every file carries, the one listed (default "all").
	AllTag string
	// Batch is the number of changes per Update (default 1,000).
	Batch int
	// Lists is how many times the AllTag listing is timed (default 5).
	Lists int
	// Related is how many Related queries are timed, on random files
	// (default 1,000); RelatedLimit is their limit (default 20).
	Related      int
	RelatedLimit int
	// Seed makes the data set reproducible.
	Seed int64
	// Logf, when set, reports progress.
	Logf func(format string, args ...any)
}

func (c *Config) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Files, 100_000)
	def(&c.TagsPerFile, 20)
	def(&c.Vocabulary, 1_000)
	def(&c.Batch, 1_000)
	def(&c.Lists, 5)
	def(&c.Related, 1_000)
	def(&c.RelatedLimit, 20)
	if c.AllTag == "" {
		c.AllTag = "all"
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.TagsPerFile > c.Vocabulary+1 {
		c.TagsPerFile = c.Vocabulary + 1
	}
}

// Result holds the measurements.
type Result struct {
	Config Config
	// Tagging is the time to tag every file; TagRate files per second.
	Tagging time.Duration
	TagRate float64
	// List is the best and Median the median time of Files(AllTag), which
	// returns ListFiles files.
	ListBest, ListMedian time.Duration
	ListFiles            int
	// Related latency percentiles, and the mean number of results.
	RelatedP50, RelatedP90, RelatedP99, RelatedMax time.Duration
	RelatedMeanResults                             float64
}

func (r Result) String() string {
	c := r.Config
	return fmt.Sprintf("%d files x %d tags (vocabulary %d): tag in batches of %d: %v (%.0f files/s); "+
		"list %q (%d files): best %v, median %v; Related (limit %d, %d queries): p50 %v p90 %v p99 %v max %v",
		c.Files, c.TagsPerFile, c.Vocabulary, c.Batch, r.Tagging.Round(time.Millisecond), r.TagRate,
		c.AllTag, r.ListFiles, r.ListBest.Round(time.Microsecond), r.ListMedian.Round(time.Microsecond),
		c.RelatedLimit, c.Related, r.RelatedP50.Round(time.Microsecond), r.RelatedP90.Round(time.Microsecond),
		r.RelatedP99.Round(time.Microsecond), r.RelatedMax.Round(time.Microsecond))
}

// Changes builds the data set: file i+1 named "file-<i>" with AllTag and
// TagsPerFile-1 distinct Zipf-distributed tags "tag-<n>".
func Changes(cfg Config) []graph.Change {
	cfg.defaults()
	rng := rand.New(rand.NewSource(cfg.Seed))
	zipf := rand.NewZipf(rng, 1.1, 8, uint64(cfg.Vocabulary-1))
	changes := make([]graph.Change, cfg.Files)
	for i := range changes {
		tags := make([]string, 0, cfg.TagsPerFile)
		tags = append(tags, cfg.AllTag)
		seen := map[uint64]bool{}
		for len(tags) < cfg.TagsPerFile {
			n := zipf.Uint64()
			if seen[n] {
				// Past the head, fall back to uniform draws to finish.
				n = uint64(rng.Intn(cfg.Vocabulary))
				if seen[n] {
					continue
				}
			}
			seen[n] = true
			tags = append(tags, fmt.Sprintf("tag-%d", n))
		}
		changes[i] = graph.Change{File: graph.File{ID: graph.FileID(i + 1), Name: fmt.Sprintf("file-%07d", i)}, Add: tags}
	}
	return changes
}

// Run fills an empty store with the data set and measures it.
func Run(ctx context.Context, s graph.Store, cfg Config) (Result, error) {
	cfg.defaults()
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res := Result{Config: cfg}
	changes := Changes(cfg)
	start := time.Now()
	for i := 0; i < len(changes); i += cfg.Batch {
		if err := s.Update(ctx, changes[i:min(i+cfg.Batch, len(changes))]); err != nil {
			return res, fmt.Errorf("tagging files %d-: %w", i, err)
		}
		if n := i + cfg.Batch; n%(cfg.Files/10+1) < cfg.Batch {
			logf("tagged %d files in %v", min(n, cfg.Files), time.Since(start).Round(time.Millisecond))
		}
	}
	res.Tagging = time.Since(start)
	res.TagRate = float64(cfg.Files) / res.Tagging.Seconds()
	logf("tagged %d files in %v", cfg.Files, res.Tagging)

	lists := make([]time.Duration, cfg.Lists)
	for i := range lists {
		start := time.Now()
		files, err := s.Files(ctx, []string{cfg.AllTag})
		lists[i] = time.Since(start)
		if err != nil {
			return res, fmt.Errorf("listing %q: %w", cfg.AllTag, err)
		}
		res.ListFiles = len(files)
	}
	sort.Slice(lists, func(i, j int) bool { return lists[i] < lists[j] })
	res.ListBest, res.ListMedian = lists[0], lists[len(lists)/2]
	logf("listed %d files: best %v", res.ListFiles, res.ListBest)

	rng := rand.New(rand.NewSource(cfg.Seed + 1))
	lat := make([]time.Duration, cfg.Related)
	total := 0
	for i := range lat {
		id := graph.FileID(rng.Intn(cfg.Files) + 1)
		start := time.Now()
		rel, err := s.Related(ctx, id, cfg.RelatedLimit)
		lat[i] = time.Since(start)
		if err != nil {
			return res, fmt.Errorf("related %d: %w", id, err)
		}
		total += len(rel)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	res.RelatedP50, res.RelatedP90, res.RelatedP99, res.RelatedMax = pct(0.50), pct(0.90), pct(0.99), lat[len(lat)-1]
	res.RelatedMeanResults = float64(total) / float64(len(lat))
	logf("related: p50 %v p99 %v", res.RelatedP50, res.RelatedP99)
	return res, nil
}
