package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

// runInfo describes the machine and the run for the report.
type runInfo struct {
	date         time.Time
	duration     time.Duration
	nproc        int
	kernel       string
	cpuModel     string
	memory       string
	loadStart    string
	loadEnd      string
	filesystem   string
	goVersion    string
	workDir      string
	targetConfig map[string]string
}

func gatherInfo(wd *workDir) *runInfo {
	info := &runInfo{
		workDir:      wd.root,
		date:         time.Now(),
		nproc:        runtime.NumCPU(),
		kernel:       benchkit.FirstLine("/proc/sys/kernel/osrelease"),
		cpuModel:     cpuinfoField("model name"),
		memory:       benchkit.MeminfoTotal(),
		loadStart:    benchkit.FirstLine("/proc/loadavg"),
		goVersion:    runtime.Version(),
		targetConfig: map[string]string{},
	}
	if m, err := benchkit.FilesystemOf(wd.root); err == nil {
		info.filesystem = fmt.Sprintf("%s on %s (mounted at %s)", m.FSType, m.Source, m.Point)
	} else {
		info.filesystem = "unknown: " + err.Error()
	}
	return info
}

func cpuinfoField(name string) string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// stats are the medians of one target in one workload.
type stats struct {
	ok     bool
	value  float64
	cpu    float64
	values []float64
}

func statsOf(samples []sample) stats {
	if len(samples) == 0 {
		return stats{}
	}
	var vs, cs []float64
	for _, s := range samples {
		vs = append(vs, s.value)
		cs = append(cs, s.cpu)
	}
	return stats{ok: true, value: benchkit.Median(vs), cpu: benchkit.Median(cs), values: vs}
}

// ratio renders a/b, or "n/a" when a side is missing.
func ratio(a, b stats) string {
	if !a.ok || !b.ok || b.value == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a.value/b.value)
}

// verdict marks a disgrafs/juicefs ratio below the 0.9 bar.
func verdict(a, b stats) string {
	if !a.ok || !b.ok || b.value == 0 {
		return "n/a"
	}
	if a.value/b.value >= 0.9 {
		return "ok"
	}
	return "**below 0.9**"
}

// renderReport writes the markdown report: how the run was made, a summary and
// one table per workload.
func renderReport(cfg *config, info *runInfo, res *results) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	ws := workloads(cfg)

	p("## disgrafs benchmark, %s\n\n", info.date.Format("2006-01-02 15:04 MST"))
	p("- command: `%s`\n", cfg.commandLine)
	p("- machine: %d CPUs (%s), %s RAM, kernel %s, load average at start %s, at end %s\n", info.nproc, info.cpuModel, info.memory, info.kernel, info.loadStart, info.loadEnd)
	p("- work directory: %s, %s\n", info.workDir, info.filesystem)
	p("- bench built with %s; duration %s\n", info.goVersion, info.duration.Round(time.Second))
	p("- %d run(s) per measurement; values are medians. The large file is measured one target after the other (order rotated every run); the small files in chunks of %d files, the targets taking turns chunk by chunk (order rotated every chunk), so that background load falls on all targets alike. While a target is measured, the other daemons' threads run at nice 19 in the idle I/O class, so that background work a daemon does after its turn (JuiceFS's jobs, disgrafs's auto-tagger) is not charged to another target\n", cfg.runs, cfg.chunkFiles)
	p("- large file: %d MiB written and read with %d KiB calls; small files: %d files of %d-%d KiB (uniform random sizes, seed %d) in %d directories, read in the order written\n",
		cfg.largeMiB, cfg.ioKiB, cfg.smallFiles, cfg.smallMinKiB, cfg.smallMaxKiB, cfg.seed, cfg.smallDirs)
	p("- every byte read is compared with what was written; `sync` before every measurement, `echo 3 > /proc/sys/vm/drop_caches` before every cold read\n")
	p("- MB = 10^6 bytes; ratios are disgrafs / other, so above 1 means disgrafs is faster; daemon CPU is the user+system time of the FUSE daemon's processes during the measurement\n\n")
	p("Targets:\n\n")
	for _, t := range cfg.targets {
		p("- **%s**: %s\n", t, info.targetConfig[t])
	}
	p("\n")

	isDisgrafs := func(t string) bool { return t == targetDisgrafs || strings.HasPrefix(t, targetDisgrafs+"-") }
	p("### Summary (medians)\n\n")
	p("| workload | unit |")
	for _, t := range cfg.targets {
		p(" %s |", t)
	}
	p(" disgrafs/juicefs | disgrafs/native | bar (>= 0.9 of juicefs) |")
	for _, v := range cfg.variants {
		p(" %s/juicefs |", v.target())
	}
	p("\n|---|---|%s--:|--:|---|%s\n", strings.Repeat("--:|", len(cfg.targets)), strings.Repeat("--:|", len(cfg.variants)))
	for _, w := range ws {
		d := statsOf(res.get(w.key, targetDisgrafs))
		j := statsOf(res.get(w.key, targetJuiceFS))
		n := statsOf(res.get(w.key, targetNative))
		p("| %s | %s |", w.title, w.unit)
		for _, t := range cfg.targets {
			p(" %s |", cell(statsOf(res.get(w.key, t))))
		}
		p(" %s | %s | %s |", ratio(d, j), ratio(d, n), verdict(d, j))
		for _, v := range cfg.variants {
			p(" %s |", ratio(statsOf(res.get(w.key, v.target())), j))
		}
		p("\n")
	}
	p("\n")

	for _, w := range ws {
		j := statsOf(res.get(w.key, targetJuiceFS))
		n := statsOf(res.get(w.key, targetNative))
		p("### %s\n\n", w.title)
		p("| target | median (%s) | runs | daemon CPU s (median) | disgrafs/juicefs | disgrafs/native |\n", w.unit)
		p("|---|--:|---|--:|--:|--:|\n")
		for _, t := range cfg.targets {
			s := statsOf(res.get(w.key, t))
			var runs []string
			for _, v := range s.values {
				runs = append(runs, benchkit.FormatValue(v))
			}
			cpu := "-"
			if t != targetNative && s.ok {
				cpu = fmt.Sprintf("%.2f", s.cpu)
			}
			// Every disgrafs row (variants too) gets its own ratios.
			rj, rn := "", ""
			if isDisgrafs(t) {
				rj, rn = ratio(s, j), ratio(s, n)
			}
			p("| %s | %s | %s | %s | %s | %s |\n", t, cell(s), strings.Join(runs, ", "), cpu, rj, rn)
		}
		p("\n")
	}
	return b.String()
}

func cell(s stats) string {
	if !s.ok {
		return "-"
	}
	return benchkit.FormatValue(s.value)
}
