package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// turns gives the machine to the target whose turn it is. A FUSE daemon keeps
// working after its requests are answered (JuiceFS's background jobs,
// disgrafs's auto-tagger); on a 2-core machine that work would slow whichever
// target is measured next. So while a target is measured, the threads of every
// other daemon run at nice 19 in the idle I/O class: they only get CPU and disk
// time nobody else wants. Their background work then falls into their own
// turns, as it would for a user running only that file system.
//
// Only priorities change, so a benchmark that dies midway leaves daemons that
// still work and unmount normally.
type turns struct {
	daemons []*target
	// orig holds the scheduling of every thread seen, by pid and thread id, to
	// give it back when its daemon's turn comes.
	orig map[int]map[int]schedPrio
	// leader is the scheduling of each daemon's main thread when first seen;
	// threads created later (which inherit whatever their creator had) get it.
	leader map[int]schedPrio
}

type schedPrio struct {
	nice   int
	ioprio int
}

const (
	ioprioWhoProcess = 1
	ioprioClassShift = 13
	ioprioClassIdle  = 3
	niceLowest       = 19
)

func newTurns(targets []*target) *turns {
	t := &turns{orig: map[int]map[int]schedPrio{}, leader: map[int]schedPrio{}}
	for _, tg := range targets {
		if tg.daemon != nil {
			t.daemons = append(t.daemons, tg)
		}
	}
	return t
}

// activate gives active its original priorities and lowers every other daemon.
// A nil active lowers them all.
func (t *turns) activate(active *target) error {
	for _, d := range t.daemons {
		if err := t.apply(d, d == active); err != nil {
			return err
		}
	}
	return nil
}

// restore gives every daemon its original priorities back.
func (t *turns) restore() error {
	for _, d := range t.daemons {
		if err := t.apply(d, true); err != nil {
			return err
		}
	}
	return nil
}

func (t *turns) apply(tg *target, original bool) error {
	for _, pid := range processTree(tg.daemon.cmd.Process.Pid) {
		seen := t.orig[pid]
		if seen == nil {
			seen = map[int]schedPrio{}
			t.orig[pid] = seen
			if p, err := getSched(pid); err == nil {
				t.leader[pid] = p
			}
		}
		tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			continue // exited
		}
		for _, e := range tids {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			p, known := seen[tid]
			if !known {
				if p, err = getSched(tid); err != nil {
					continue // exited
				}
				if p.nice == niceLowest && p.ioprio == ioprioClassIdle<<ioprioClassShift {
					// Created while lowered: it inherited our setting.
					p = t.leader[pid]
				}
				seen[tid] = p
			}
			want := schedPrio{nice: niceLowest, ioprio: ioprioClassIdle << ioprioClassShift}
			if original {
				want = p
			}
			if err := setSched(tid, want); err != nil && err != syscall.ESRCH {
				return fmt.Errorf("set the priority of %s's thread %d: %w", tg.name, tid, err)
			}
		}
	}
	return nil
}

func getSched(tid int) (schedPrio, error) {
	// The raw getpriority returns 20 - nice.
	raw, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid)
	if err != nil {
		return schedPrio{}, err
	}
	io, _, errno := syscall.Syscall(syscall.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if errno != 0 {
		return schedPrio{}, errno
	}
	return schedPrio{nice: 20 - raw, ioprio: int(io)}, nil
}

func setSched(tid int, p schedPrio) error {
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, p.nice); err != nil {
		return err
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), uintptr(p.ioprio)); errno != 0 {
		return errno
	}
	return nil
}

// processTree lists a process and its live descendants.
func processTree(pid int) []int {
	var out []int
	seen := map[int]bool{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, t := range tasks {
			c, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, t.Name()))
			if err != nil {
				continue
			}
			for _, w := range strings.Fields(string(c)) {
				if n, err := strconv.Atoi(w); err == nil {
					queue = append(queue, n)
				}
			}
		}
	}
	return out
}
