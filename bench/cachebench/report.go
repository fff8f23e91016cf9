package main

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

// runInfo describes the machine and the run for the report.
type runInfo struct {
	date             time.Time
	duration         time.Duration
	nproc            int
	kernel           string
	memory           string
	loadStart        string
	loadEnd          string
	commandLine      string
	juicefsVersion   string
	disgrafsVersion  string
	toxiproxyVersion string
	format           string
	smallBytes       int64
	largeBytes       int64
	writeVolume      time.Duration
	writeNative      time.Duration
	warmup           map[string]time.Duration
	warmCheck        map[string]string
	targetConfig     map[string]string
}

func gatherInfo(root string) *runInfo {
	_ = root
	return &runInfo{
		date:         time.Now(),
		nproc:        runtime.NumCPU(),
		kernel:       benchkit.FirstLine("/proc/sys/kernel/osrelease"),
		memory:       benchkit.MeminfoTotal(),
		loadStart:    benchkit.FirstLine("/proc/loadavg"),
		warmup:       map[string]time.Duration{},
		warmCheck:    map[string]string{},
		targetConfig: map[string]string{},
	}
}

// summary is the median of one quantity over the runs of one target.
type summary struct {
	ok                     bool
	filesPerSec, mbPerSec  float64
	epoch                  float64
	partial                bool // some run was cut at the time limit
	filesValues, mbsValues []float64
}

func summarize(rs []passResult) summary {
	if len(rs) == 0 {
		return summary{}
	}
	s := summary{ok: true}
	var ep []float64
	for _, r := range rs {
		s.filesValues = append(s.filesValues, r.filesPerSec())
		s.mbsValues = append(s.mbsValues, r.mbPerSec())
		ep = append(ep, r.epoch())
		s.partial = s.partial || r.Partial
	}
	s.filesPerSec, s.mbPerSec, s.epoch = benchkit.Median(s.filesValues), benchkit.Median(s.mbsValues), benchkit.Median(ep)
	return s
}

// ageDesc says how old the data set's files were made.
func ageDesc(age time.Duration) string {
	if age <= 0 {
		return "when written (-data-age 0)"
	}
	return age.String() + " before the run (-data-age), as a data set written earlier"
}

func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func latencyName(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + " ms" }

func threadsName(n int) string {
	if n == 1 {
		return "1 thread"
	}
	return strconv.Itoa(n) + " threads"
}

// ratioSpec is a ratio the issue sets a goal for: num/den of a speed.
type ratioSpec struct {
	name     string
	kind     string
	num, den string
	goal     float64
	goalText string
	only     time.Duration // the goal holds at this latency only (0: every latency)
}

func ratioSpecs() []ratioSpec {
	return []ratioSpec{
		{"small files: disgrafs warm / juicefs warm (d/b)", kindSmall, tDgWarm, tJuiceWarm, 2, ">= 2", 0},
		{"small files: disgrafs warm / native (d/e)", kindSmall, tDgWarm, tNative, 0.5, ">= 0.5", 0},
		{"small files: disgrafs cold / juicefs cold (c/a)", kindSmall, tDgCold, tJuiceCold, 3, ">= 3 at 10 ms", 10 * time.Millisecond},
		{"large files: disgrafs warm / native (d/e)", kindLarge, tDgWarm, tNative, 0.9, ">= 0.9", 0},
		{"large files: disgrafs cold / juicefs cold (c/a)", kindLarge, tDgCold, tJuiceCold, 0, "(no goal)", 0},
		{"small files: embedded volume warm / native (f/e)", kindSmall, tDgLocal, tNative, 0, "(no goal)", 0},
		{"small files: embedded volume --read-only / native (h/e)", kindSmall, tDgLocalRO, tNative, 0.9, ">= 0.9 (page cache warm)", 0},
		{"small files: embedded volume, no open check / open check (f/g)", kindSmall, tDgLocal, tDgLocalCheck, 0, "(no goal)", 0},
		{"large files: embedded volume warm / native (f/e)", kindLarge, tDgLocal, tNative, 0, "(no goal)", 0},
		{"small files: disgrafs warm / loopback floor (d/i)", kindSmall, tDgWarm, tLoopFloor, 0, "(no goal: how close one OPEN gets)", 0},
		{"small files: loopback floor / native (i/e)", kindSmall, tLoopFloor, tNative, 0, "(no goal)", 0},
	}
}

func renderReport(cfg *config, info *runInfo, res results) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	smallDesc := fmt.Sprintf("%s files of %d-%d KiB (%.0f MB) tagged `%s`", formatCount(int64(cfg.data.smallFiles)), cfg.data.minKiB, cfg.data.maxKiB, float64(info.smallBytes)/1e6, tagSmall)
	largeDesc := fmt.Sprintf("%d files of %d MiB tagged `%s`", cfg.data.largeFiles, cfg.data.largeMiB, tagLarge)
	p("## Graph-aware cache: remote object storage behind toxiproxy\n\n")
	p("Command: `%s`, %s, %d run(s) per pass, %s.\n\n", info.commandLine, info.date.UTC().Format("2006-01-02 15:04 UTC"), cfg.runs, info.duration.Round(time.Second))
	p("Machine: %d cores, %s, Linux %s; load average %s at the start, %s at the end.\n\n", info.nproc, info.memory, info.kernel, info.loadStart, info.loadEnd)
	p("Volume: `%s` (block size 4 MiB, no compression): metadata in Redis db 0 and objects in db 1 of a private redis-server, reached through toxiproxy (%s) whose latency toxic holds back every reply by the latency of the table. Data set: %s and %s, written through a juicefs CLI mount with no latency (%.1f s) and into the native directory (%.1f s); tags are `user.xdg.tags` xattrs; files dated %s.\n\n",
		info.format, info.toxiproxyVersion, smallDesc, largeDesc, info.writeVolume.Seconds(), info.writeNative.Seconds(), ageDesc(cfg.dataAge))
	p("Targets:\n")
	for _, t := range cfg.targets {
		p("- (%s) **%s**: %s", targetLetter(t), t, strings.TrimSuffix(info.targetConfig[t], "."))
		if d, ok := info.warmup[t]; ok {
			p(". Warmup took %.1f s with no latency; its check said: %s", d.Seconds(), info.warmCheck[t])
		}
		p("\n")
	}
	p("- juicefs: %s; disgrafs: %s.\n\n", info.juicefsVersion, orUnknown(info.disgrafsVersion))
	p("Every pass reads every file of its kind once, in an order shuffled per run (the same order for every target), with N threads taking the next file; each file's length and CRC-32C are checked.")
	if cfg.pageCache == "drop" {
		p(" The page cache is dropped (`echo 3 > /proc/sys/vm/drop_caches`) before every pass: warm means warm on local disk, not in memory.")
	} else {
		p(" Page cache: cold targets are dropped (`echo 3 > /proc/sys/vm/drop_caches`) and remounted before every pass; warm targets and native read every file once, unmeasured and in the same order (with twice the pass limit), right before their pass (`-page-cache second-epoch`: the next epoch of a training job, kernel caches warm).")
	}
	if cfg.passLimit > 0 {
		p(" A pass stops after %s; a value marked `*` comes from a pass cut there (rate over the files read, epoch time extrapolated).", cfg.passLimit)
	}
	p(" Medians of %d run(s); ratios are of speeds (above 1: the first is faster).\n\n", cfg.runs)

	for _, lat := range cfg.latencies {
		p("### %s latency\n\n", latencyName(lat))
		p("Small files (%s), one epoch:\n\n", smallDesc)
		p("| target |")
		for _, th := range cfg.threads {
			p(" %s: epoch s | files/s | MB/s |", threadsName(th))
		}
		p("\n|---|")
		for range cfg.threads {
			p("--:|--:|--:|")
		}
		p("\n")
		for _, t := range cfg.targets {
			p("| (%s) %s |", targetLetter(t), targetTitle(t))
			for _, th := range cfg.threads {
				s := summarize(res[passKey{lat, kindSmall, th, t}])
				if !s.ok {
					p(" - | - | - |")
					continue
				}
				mark := ""
				if s.partial {
					mark = "*"
				}
				p(" %s%s | %s%s | %s%s |", benchkit.FormatValue(s.epoch), mark, benchkit.FormatValue(s.filesPerSec), mark, benchkit.FormatValue(s.mbPerSec), mark)
			}
			p("\n")
		}
		if cfg.data.largeFiles > 0 {
			p("\nLarge files (%s), MB/s:\n\n| target |", largeDesc)
			for _, th := range cfg.threads {
				p(" %s |", threadsName(th))
			}
			p("\n|---|")
			for range cfg.threads {
				p("--:|")
			}
			p("\n")
			for _, t := range cfg.targets {
				p("| (%s) %s |", targetLetter(t), targetTitle(t))
				for _, th := range cfg.threads {
					s := summarize(res[passKey{lat, kindLarge, th, t}])
					switch {
					case !s.ok:
						p(" - |")
					case s.partial:
						p(" %s* |", benchkit.FormatValue(s.mbPerSec))
					default:
						p(" %s |", benchkit.FormatValue(s.mbPerSec))
					}
				}
				p("\n")
			}
		}
		p("\n")
	}

	p("### Ratios against the goals\n\n| ratio | goal |")
	for _, lat := range cfg.latencies {
		for _, th := range cfg.threads {
			p(" %s, %s |", latencyName(lat), threadsName(th))
		}
	}
	p("\n|---|---|")
	for range len(cfg.latencies) * len(cfg.threads) {
		p("--:|")
	}
	p("\n")
	for _, r := range ratioSpecs() {
		if r.kind == kindLarge && cfg.data.largeFiles == 0 {
			continue
		}
		p("| %s | %s |", r.name, r.goalText)
		for _, lat := range cfg.latencies {
			for _, th := range cfg.threads {
				num := summarize(res[passKey{lat, r.kind, th, r.num}])
				den := summarize(res[passKey{lat, r.kind, th, r.den}])
				p(" %s |", ratioCell(r, lat, num, den))
			}
		}
		p("\n")
	}
	p("\nA ratio in bold misses its goal.\n\n")

	p("<details><summary>Every run</summary>\n\n| latency | files | threads | target | files/s per run | MB/s per run |\n|---|---|--:|---|---|---|\n")
	for _, lat := range cfg.latencies {
		for _, kind := range []string{kindSmall, kindLarge} {
			for _, th := range cfg.threads {
				for _, t := range cfg.targets {
					rs := res[passKey{lat, kind, th, t}]
					if len(rs) == 0 {
						continue
					}
					var fs, ms []string
					for _, r := range rs {
						m := ""
						if r.Partial {
							m = "*"
						}
						fs = append(fs, benchkit.FormatValue(r.filesPerSec())+m)
						ms = append(ms, benchkit.FormatValue(r.mbPerSec())+m)
					}
					p("| %s | %s | %d | %s | %s | %s |\n", latencyName(lat), kind, th, t, strings.Join(fs, ", "), strings.Join(ms, ", "))
				}
			}
		}
	}
	p("\n</details>\n")
	var cs []string
	for _, lat := range cfg.latencies {
		for _, kind := range []string{kindSmall, kindLarge} {
			for _, th := range cfg.threads {
				for _, t := range cfg.targets {
					rs := res[passKey{lat, kind, th, t}]
					if len(rs) > 0 && rs[len(rs)-1].counters != "" {
						cs = append(cs, fmt.Sprintf("| %s | %s | %d | %s | %s |\n", latencyName(lat), kind, th, t, rs[len(rs)-1].counters))
					}
				}
			}
		}
	}
	var cpuRows []string
	for _, lat := range cfg.latencies {
		for _, th := range cfg.threads {
			for _, t := range cfg.targets {
				if row := cpuRow(res[passKey{lat, kindSmall, th, t}]); row != "" {
					cpuRows = append(cpuRows, fmt.Sprintf("| %s | %d | %s | %s |\n", latencyName(lat), th, t, row))
				}
			}
		}
	}
	if len(cpuRows) > 0 {
		p("\nCPU per small file read, in ms (medians over the runs): the reader child, the target's mount daemon, Redis, toxiproxy, the rest of the machine (kernel threads, other processes), and how busy the machine's %d CPUs were over the pass.\n\n", runtime.NumCPU())
		p("| latency | threads | target | %s | other | machine busy |\n|---|--:|---|%s--:|--:|\n%s", strings.Join(cpuRoles, " | "), strings.Repeat("--:|", len(cpuRoles)), strings.Join(cpuRows, ""))
	}
	if len(cs) > 0 {
		p("\n<details><summary>Cache counters of the last run (change over the pass)</summary>\n\n| latency | files | threads | target | counters |\n|---|---|--:|---|---|\n%s\n</details>\n", strings.Join(cs, ""))
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "not measured"
	}
	return s
}

// ratioCell renders num/den of the speed, in bold when it misses the goal.
func ratioCell(r ratioSpec, lat time.Duration, num, den summary) string {
	if !num.ok || !den.ok {
		return "n/a"
	}
	a, b := num.filesPerSec, den.filesPerSec
	if r.kind == kindLarge {
		a, b = num.mbPerSec, den.mbPerSec
	}
	if b == 0 {
		return "n/a"
	}
	v := a / b
	s := strconv.FormatFloat(v, 'f', 2, 64)
	if num.partial || den.partial {
		s += "*"
	}
	if r.goal > 0 && (r.only == 0 || r.only == lat) && v < r.goal {
		return "**" + s + "**"
	}
	return s
}

// cpuRow renders the median CPU milliseconds per file of each role over a
// cell's runs, the rest of the machine's busy time, and its busy share.
func cpuRow(rs []passResult) string {
	var cells []string
	median := func(f func(passResult) (float64, bool)) string {
		var vs []float64
		for _, r := range rs {
			if v, ok := f(r); ok {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			return "-"
		}
		slices.Sort(vs)
		return strconv.FormatFloat(vs[len(vs)/2], 'f', 2, 64)
	}
	seen := false
	for _, role := range cpuRoles {
		cells = append(cells, median(func(r passResult) (float64, bool) {
			d, ok := r.cpu.Roles[role]
			if !ok || r.Files == 0 {
				return 0, false
			}
			seen = true
			return ms(d) / float64(r.Files), true
		}))
	}
	if !seen {
		return ""
	}
	cells = append(cells, median(func(r passResult) (float64, bool) {
		if r.Files == 0 || r.cpu.Total == 0 {
			return 0, false
		}
		var known time.Duration
		for _, d := range r.cpu.Roles {
			known += d
		}
		return ms(max(0, r.cpu.Busy-known)) / float64(r.Files), true
	}), median(func(r passResult) (float64, bool) {
		if r.cpu.Total == 0 {
			return 0, false
		}
		return 100 * float64(r.cpu.Busy) / float64(r.cpu.Total), true
	})+"%")
	return strings.Join(cells, " | ")
}
