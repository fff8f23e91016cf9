package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports (the kernel fixes it for the ABI).
const clockTicks = 100

// procCPU is the CPU time (user + system) a process has used so far, from
// /proc/PID/stat; all its threads are counted.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseProcStat(string(b))
}

// treeCPU is the CPU time of a process and all its descendants: the juicefs
// CLI's foreground mount serves FUSE from a child process it supervises.
func treeCPU(root int) (time.Duration, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	type procStat struct {
		ppid int
		cpu  time.Duration
	}
	procs := map[int]procStat{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		pp, err := parsePPID(string(b))
		if err != nil {
			continue
		}
		cpu, err := parseProcStat(string(b))
		if err != nil {
			continue
		}
		procs[pid] = procStat{pp, cpu}
	}
	r, ok := procs[root]
	if !ok {
		return 0, fmt.Errorf("process %d not found", root)
	}
	total := r.cpu
	for pid, ps := range procs {
		for p := ps.ppid; p > 1; p = procs[p].ppid {
			if p == root {
				total += procs[pid].cpu
				break
			}
		}
	}
	return total, nil
}

// statFields returns the fields of a /proc/PID/stat line that follow the
// command name (field 2), at least need of them: f[0] is field 3. The name
// may hold spaces and parentheses, so the fields are counted from its
// closing parenthesis.
func statFields(s string, need int) ([]string, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed stat line %q", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < need {
		return nil, fmt.Errorf("malformed stat line %q", s)
	}
	return f, nil
}

// parsePPID reads the parent pid (field 4) of a /proc/PID/stat line.
func parsePPID(s string) (int, error) {
	f, err := statFields(s, 2)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(f[1])
}

// parseProcStat reads utime and stime (fields 14 and 15) of a /proc/PID/stat
// line.
func parseProcStat(s string) (time.Duration, error) {
	f, err := statFields(s, 13)
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat line %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// machineCPU is the busy and the total CPU time of the machine so far, over
// all CPUs, from /proc/stat (iowait counts as idle).
func machineCPU() (busy, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseMachineStat(line)
}

func parseMachineStat(line string) (busy, total time.Duration, err error) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("malformed /proc/stat line %q", line)
	}
	var all, idle int64
	for i, v := range f[1:] {
		if i >= 8 { // guest times are already counted in user and nice
			break
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat line %q: %w", line, err)
		}
		all += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	tick := time.Second / clockTicks
	return time.Duration(all-idle) * tick, time.Duration(all) * tick, nil
}

// cpuWatch samples the CPU time of the processes a pass involves (each with
// its descendants).
type cpuWatch struct {
	pids        map[string]int // role -> pid
	before      map[string]time.Duration
	busy, total time.Duration
}

func startCPUWatch(pids map[string]int) *cpuWatch {
	w := &cpuWatch{pids: pids, before: map[string]time.Duration{}}
	for role, pid := range pids {
		if d, err := treeCPU(pid); err == nil {
			w.before[role] = d
		}
	}
	w.busy, w.total, _ = machineCPU()
	return w
}

// passCPU is where a pass's CPU went: per role, and the machine's busy and
// total CPU time over the pass.
type passCPU struct {
	Roles       map[string]time.Duration
	Busy, Total time.Duration
}

// stop returns the CPU each role used since the start; reader is the reader
// child's own time, known from its exit status.
func (w *cpuWatch) stop(reader time.Duration) passCPU {
	c := passCPU{Roles: map[string]time.Duration{"reader": reader}}
	for role, pid := range w.pids {
		b, ok := w.before[role]
		if !ok {
			continue
		}
		if d, err := treeCPU(pid); err == nil {
			c.Roles[role] = d - b
		}
	}
	if busy, total, err := machineCPU(); err == nil {
		c.Busy, c.Total = busy-w.busy, total-w.total
	}
	return c
}

// cpuRoles is the order the report lists them in.
var cpuRoles = []string{"reader", "mount", "redis", "toxiproxy"}

// perFile renders CPU milliseconds per file read, and how busy the machine was.
func (c passCPU) perFile(files int) string {
	if files == 0 || c.Total == 0 {
		return ""
	}
	var parts []string
	var known time.Duration
	for _, role := range cpuRoles {
		if d, ok := c.Roles[role]; ok {
			known += d
			parts = append(parts, fmt.Sprintf("%s %.2f", role, ms(d)/float64(files)))
		}
	}
	parts = append(parts, fmt.Sprintf("other %.2f", ms(max(0, c.Busy-known))/float64(files)),
		fmt.Sprintf("(machine %.0f%% busy)", 100*float64(c.Busy)/float64(c.Total)))
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
