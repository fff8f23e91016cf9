package tests

// Data integrity through the mount: fio writes checksummed blocks and reads
// them back (during the run, and again from a daemon that has never seen the
// data), and stress-ng's file system stressors hammer the metadata paths.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fioTimeout bounds one fio run; every run is sized to finish in seconds.
const fioTimeout = 2 * time.Minute

// fioWorkload is one fio job description; the files it writes are
// <name>.<job>.0 in the directory it runs in.
type fioWorkload struct {
	name    string
	jobs    int
	sizeMiB int      // per job
	args    []string // the I/O pattern
}

// fioWorkloads write 416 MiB in total per volume.
var fioWorkloads = []fioWorkload{
	// Large sequential O_DIRECT writes: every block goes to the daemon and every
	// verify read comes from it.
	{name: "seq", jobs: 4, sizeMiB: 48, args: []string{"--rw=write", "--bs=1M", "--direct=1"}},
	// Random offsets with block sizes from 4 KiB to 1 MiB: slices overlap JuiceFS
	// block and chunk boundaries in every way.
	{name: "rand", jobs: 4, sizeMiB: 24, args: []string{"--rw=randwrite", "--bsrange=4k-1M", "--direct=1"}},
	// Buffered, unaligned block sizes (not multiples of 512): partial pages.
	{name: "unaligned", jobs: 4, sizeMiB: 8, args: []string{"--rw=randwrite", "--bsrange=1k-300k", "--bs_unaligned=1"}},
	// Verify while writing: reads of blocks that may still sit in the daemon's
	// write buffers.
	{name: "backlog", jobs: 4, sizeMiB: 24, args: []string{"--rw=randwrite", "--bs=64k", "--direct=1", "--verify_backlog=64"}},
}

// fioResult is the part of fio's JSON output the tests look at.
type fioResult struct {
	Jobs []struct {
		Jobname string `json:"jobname"`
		Error   int    `json:"error"`
		Read    struct {
			IOBytes int64 `json:"io_bytes"`
		} `json:"read"`
		Write struct {
			IOBytes int64 `json:"io_bytes"`
		} `json:"write"`
	} `json:"jobs"`
}

// fioVerifyFailure matches what fio prints when a block does not verify.
var fioVerifyFailure = regexp.MustCompile(`(?i)verify: bad|verify failed|bad magic|bad header|crc32c: verify|fio: pid=\d+, err=`)

// runFio runs w in dir and returns the bytes each job wrote, fio's output
// (stdout, stderr and JSON) and an error describing any way in which the run
// failed. With written == nil it writes and verifies; otherwise it only
// re-reads and verifies what an earlier run wrote (written are that run's byte
// counts).
func runFio(t *testing.T, dir string, w fioWorkload, written []int64) ([]int64, string, error) {
	t.Helper()
	fio := needTool(t, "fio")
	jsonPath := filepath.Join(t.TempDir(), "fio.json")
	args := []string{
		"--name=" + w.name,
		"--directory=" + dir,
		fmt.Sprintf("--numjobs=%d", w.jobs),
		fmt.Sprintf("--size=%dM", w.sizeMiB),
		"--ioengine=psync",
		"--verify=crc32c",
		"--do_verify=1",
		"--verify_fatal=1",
		"--verify_state_save=0",
		"--randrepeat=1", // the same offsets and sizes again for --verify_only
		"--output-format=json",
		"--output=" + jsonPath,
	}
	args = append(args, w.args...)
	verifyOnly := written != nil
	if verifyOnly {
		args = append(args, "--verify_only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), fioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, fio, args...)
	cmd.Dir = t.TempDir() // fio may drop state files into its working directory
	start := time.Now()
	outB, runErr := cmd.CombinedOutput()
	out := string(outB)
	if js, err := os.ReadFile(jsonPath); err == nil {
		out += "\n--- fio JSON ---\n" + string(js)
	}
	t.Logf("fio %s (verify_only=%v): %s", w.name, verifyOnly, time.Since(start).Round(time.Millisecond))
	if ctx.Err() != nil {
		return nil, out, fmt.Errorf("fio %s did not finish within %s", w.name, fioTimeout)
	}
	if runErr != nil {
		return nil, out, fmt.Errorf("fio %s %s: %w", w.name, strings.Join(args, " "), runErr)
	}
	if m := fioVerifyFailure.FindString(out); m != "" {
		return nil, out, fmt.Errorf("fio %s exited 0 but reported %q", w.name, m)
	}
	js, err := os.ReadFile(jsonPath)
	if err != nil {
		return nil, out, fmt.Errorf("fio %s wrote no JSON: %w", w.name, err)
	}
	var res fioResult
	if err := json.Unmarshal(js, &res); err != nil {
		return nil, out, fmt.Errorf("parse fio %s JSON: %w", w.name, err)
	}
	if len(res.Jobs) != w.jobs {
		return nil, out, fmt.Errorf("fio %s: %d jobs in the JSON, want %d", w.name, len(res.Jobs), w.jobs)
	}
	size := int64(w.sizeMiB) << 20
	got := make([]int64, len(res.Jobs))
	for i, j := range res.Jobs {
		if j.Error != 0 {
			return nil, out, fmt.Errorf("fio %s job %d: error %d", w.name, i, j.Error)
		}
		want := j.Write.IOBytes
		if verifyOnly {
			want = written[i]
		} else if want < size*95/100 || want > size {
			// Random unaligned block sizes leave gaps smaller than a block.
			return nil, out, fmt.Errorf("fio %s job %d wrote %d bytes of a %d-byte file", w.name, i, want, size)
		}
		// Verification reads every byte written; a short read count means
		// fio skipped blocks and proved nothing about them.
		if j.Read.IOBytes != want {
			return nil, out, fmt.Errorf("fio %s job %d verified %d bytes, want %d", w.name, i, j.Read.IOBytes, want)
		}
		got[i] = want
	}
	return got, out, nil
}

// TestIntegrityFio writes checksummed data with fio, verifies it in the same
// run, and verifies it again from a daemon that has never seen it: the
// embedded volume after a remount, and a shared Redis volume from a second
// daemon with its own cache.
func TestIntegrityFio(t *testing.T) {
	needTool(t, "fio")
	cases := []struct {
		name string
		// setup returns the mount to write on and a function giving the
		// mount to re-verify on.
		setup func(t *testing.T) (writer *Mount, reader func() *Mount)
	}{
		{
			name: "embedded",
			setup: func(t *testing.T) (*Mount, func() *Mount) {
				m := startMount(t, MountOpts{})
				return m, func() *Mount { m.Restart(); return m }
			},
		},
		{
			name: "shared-redis",
			setup: func(t *testing.T) (*Mount, func() *Mount) {
				meta, _ := formatShared(t, "integrity-fio")
				m := startMount(t, MountOpts{Meta: meta})
				return m, func() *Mount { return startMount(t, MountOpts{Meta: meta}) }
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			writer, reader := c.setup(t)
			dir := writer.Path("fio")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("mkdir in the mount: %v", err)
			}
			written := make([][]int64, len(fioWorkloads))
			for i, w := range fioWorkloads {
				n, out, err := runFio(t, dir, w, nil)
				if err != nil {
					t.Fatalf("write+verify: %v\n%s\ndaemon log:\n%s", err, out, writer.Log())
				}
				written[i] = n
			}
			r := reader()
			rdir := r.Path("fio")
			for i, w := range fioWorkloads {
				if _, out, err := runFio(t, rdir, w, written[i]); err != nil {
					t.Fatalf("verify from a fresh daemon: %v\n%s\ndaemon log:\n%s", err, out, r.Log())
				}
			}
			if c.name != "embedded" {
				return
			}
			// The checks above must be able to fail: damage one block and
			// expect fio to notice.
			victim := filepath.Join(rdir, fioWorkloads[0].name+".1.0")
			f, err := os.OpenFile(victim, os.O_WRONLY, 0)
			if err != nil {
				t.Fatalf("open %s: %v", victim, err)
			}
			if _, err := f.WriteAt([]byte(strings.Repeat("\xff", 512)), 3<<20+4096); err != nil {
				t.Fatalf("corrupt %s: %v", victim, err)
			}
			if err := f.Close(); err != nil {
				t.Fatalf("close %s: %v", victim, err)
			}
			_, out, err := runFio(t, rdir, fioWorkloads[0], written[0])
			if err == nil {
				t.Fatalf("fio --verify_only passed on a file with a damaged block: the verification proves nothing\n%s", out)
			}
			if !fioVerifyFailure.MatchString(out) {
				t.Fatalf("fio failed on the damaged file, but not with a verify error (%v):\n%s", err, out)
			}
		})
	}
}

// stressTimeout is how long each stressor runs; stress-ng lets a bogo
// operation in progress finish, so a run may take somewhat longer.
const stressTimeout = 20 * time.Second

var stressBogoOps = regexp.MustCompile(`(?m)^\s*bogo-ops:\s*(\d+)`)

// stressProblem matches a stress-ng line that reports a failure or a skipped
// stressor: "fail:" and "error:" messages, "unsuccessful run", "skipping", and
// the non-zero "failed: N" / "skipped: N" summary lines of newer versions.
var stressProblem = regexp.MustCompile(`(?mi)^.*(stress-ng: (fail|error):|unsuccessful|skipping|\b(failed|skipped|untrustworthy): [1-9]).*$`)

// TestIntegrityStressNG runs stress-ng's file system stressors in the mount,
// each for a bounded time with verification where the stressor has it.
func TestIntegrityStressNG(t *testing.T) {
	stressNG := needTool(t, "stress-ng")
	m := startMount(t, MountOpts{})
	cases := []struct {
		name    string
		args    []string
		timeout time.Duration // 0: stressTimeout
	}{
		{"dentry", []string{"--dentry", "2"}, 0},
		{"dir", []string{"--dir", "2", "--dir-dirs", "512"}, 0}, // a bogo op over the default 8192 directories overruns the timeout by 15-20 s
		{"rename", []string{"--rename", "2"}, 0},
		{"link", []string{"--link", "2"}, 0},
		{"symlink", []string{"--symlink", "2"}, 0},
		// A bogo op sets, reads and removes thousands of attributes, each a
		// metadata transaction: 3.3 s here alone, and more than 20 s in one
		// CI run (0 ops in 20 s, a failure).
		{"xattr", []string{"--xattr", "2"}, time.Minute},
		{"fallocate", []string{"--fallocate", "2"}, 0},
		{"hdd", []string{"--hdd", "2", "--hdd-bytes", "256M"}, 0},
		{"hdd-random-fsync", []string{"--hdd", "2", "--hdd-bytes", "64M", "--hdd-opts", "wr-rnd,rd-rnd,fsync", "--hdd-write-size", "12k"}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := m.Path("stress-" + c.name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("mkdir in the mount: %v", err)
			}
			yaml := filepath.Join(t.TempDir(), "metrics.yaml")
			timeout := stressTimeout
			if c.timeout > 0 {
				timeout = c.timeout
			}
			args := append([]string{}, c.args...)
			args = append(args,
				"--timeout", fmt.Sprintf("%ds", int(timeout.Seconds())),
				"--verify",
				"--temp-path", dir,
				"--metrics-brief",
				"--yaml", yaml,
			)
			ctx, cancel := context.WithTimeout(context.Background(), timeout+2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, stressNG, args...)
			cmd.Dir = dir
			start := time.Now()
			outB, err := cmd.CombinedOutput()
			out := string(outB)
			t.Logf("stress-ng %s: %s", strings.Join(c.args, " "), time.Since(start).Round(time.Millisecond))
			if ctx.Err() != nil {
				t.Fatalf("stress-ng %s did not finish within %s:\n%s", c.name, timeout+2*time.Minute, out)
			}
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				t.Fatalf("stress-ng %s exited with status %d:\n%s\ndaemon log:\n%s", strings.Join(args, " "), exitErr.ExitCode(), out, m.Log())
			} else if err != nil {
				t.Fatalf("run stress-ng: %v", err)
			}
			if bad := stressProblem.FindString(out); bad != "" {
				t.Fatalf("stress-ng %s exited 0 but reported %q:\n%s\ndaemon log:\n%s", c.name, bad, out, m.Log())
			}
			if !strings.Contains(out, "successful run completed") {
				t.Fatalf("stress-ng %s did not report a successful run:\n%s", c.name, out)
			}
			y, err := os.ReadFile(yaml)
			if err != nil {
				t.Fatalf("stress-ng %s wrote no metrics: %v\n%s", c.name, err, out)
			}
			mm := stressBogoOps.FindSubmatch(y)
			if mm == nil {
				t.Fatalf("no bogo-ops in stress-ng's metrics:\n%s", y)
			}
			n, _ := strconv.Atoi(string(mm[1]))
			t.Logf("stress-ng %s: %d bogo ops", c.name, n)
			if n == 0 {
				t.Fatalf("stress-ng %s did no work (0 bogo ops):\n%s", c.name, out)
			}
		})
	}
}
