package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/disgrafs/disgrafs/control"
	"github.com/disgrafs/disgrafs/daemon"
)

// seccompExecEnv makes this test binary, when started with it set, forbid the
// bpf(2) system call for itself and its children (a seccomp filter answering
// EPERM, which is what the kernel answers a process without CAP_BPF) and then
// exec the command line that follows "--". Capabilities cannot express this
// here: the mount itself needs CAP_SYS_ADMIN, which also allows BPF.
const seccompExecEnv = "DISGRAFS_TEST_DENY_BPF_EXEC"

func init() {
	if os.Getenv(seccompExecEnv) != "1" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	if err := denyBPF(); err != nil {
		fmt.Fprintln(os.Stderr, "deny bpf:", err)
		os.Exit(111)
	}
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, seccompExecEnv+"=") {
			env = append(env, e)
		}
	}
	err := syscall.Exec(args[0], args, env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(112)
}

// denyBPF installs a seccomp filter: bpf(2) fails with EPERM, the rest runs.
func denyBPF() error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("the filter is written for amd64")
	}
	runtime.LockOSThread()
	const (
		auditArchX86_64 = 0xc000003e
		retAllow        = 0x7fff0000
		retErrno        = 0x00050000
		offNr           = 0
		offArch         = 4
	)
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offArch},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: auditArchX86_64},
		{Code: unix.BPF_RET | unix.BPF_K, K: retAllow},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offNr},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_BPF},
		{Code: unix.BPF_RET | unix.BPF_K, K: retErrno | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: retAllow},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	// SECCOMP_FILTER_FLAG_TSYNC: every thread of the Go runtime gets it.
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, 1, 1, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}

func needBPF(t *testing.T) {
	t.Helper()
	needRoot(t)
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	need(t, err == nil, "no kernel BTF (/sys/kernel/btf/vmlinux): eBPF accounting cannot load")
	need(t, runtime.GOARCH == "amd64", "the BPF objects are built for amd64")
}

func scrapePort(t *testing.T, port int) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricSum adds the samples of name whose labels contain every of with.
func textMetricSum(text, name string, with ...string) (float64, bool) {
	var sum float64
	found := false
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`)
	for _, line := range strings.Split(text, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ok := true
		for _, w := range with {
			if !strings.Contains(m[1], w) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

func statusOf(t *testing.T, m *Mount) control.Status {
	t.Helper()
	out, err := run(t, "status", "--json", m.Dir)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var s control.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return s
}

// TestBPFReadAccounting mounts with --bpf=on, runs a known read workload and
// checks the counts and bytes in the metrics and the status, that a file
// outside the mount is not counted, the FUSE latency histograms, and that the
// programs are gone after the unmount.
func TestBPFReadAccounting(t *testing.T) {
	needBPF(t)
	const port = 9601
	m := startMount(t, MountOpts{Extra: []string{"--bpf", "on", "--metrics", fmt.Sprintf("127.0.0.1:%d", port)}})
	if !strings.Contains(m.Log(), "eBPF read accounting on") {
		t.Errorf("no 'eBPF read accounting on' in the log:\n%s", m.Log())
	}
	sizes := []int{4096, 10000, 65536, 300000}
	for i, n := range sizes {
		if err := os.WriteFile(m.Path(fmt.Sprintf("f%d", i)), randBytes(t, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, randBytes(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	base, _ := textMetricSum(scrapePort(t, port), "disgrafs_read_calls_total")
	baseBytes, _ := textMetricSum(scrapePort(t, port), "disgrafs_read_bytes_total")

	// 5 preads of 1000 bytes per file, then one read of the rest of the first 8000.
	var wantCalls, wantBytes float64
	for i := range sizes {
		f, err := os.Open(m.Path(fmt.Sprintf("f%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1000)
		for k := range 5 {
			// One pread(2) each (os.File.ReadAt would retry a short read).
			n, err := unix.Pread(int(f.Fd()), buf, int64(k)*1000)
			if err != nil {
				t.Fatal(err)
			}
			wantCalls++
			wantBytes += float64(n)
		}
		big := make([]byte, 3000)
		n, err := unix.Read(int(f.Fd()), big)
		if err != nil {
			t.Fatal(err)
		}
		wantCalls++
		wantBytes += float64(n)
		f.Close()
	}
	for range 5 {
		if _, err := os.ReadFile(outside); err != nil {
			t.Fatal(err)
		}
	}

	var text string
	var calls, bytes float64
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		text = scrapePort(t, port)
		calls, _ = textMetricSum(text, "disgrafs_read_calls_total")
		bytes, _ = textMetricSum(text, "disgrafs_read_bytes_total")
		if calls-base >= wantCalls && bytes-baseBytes >= wantBytes {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Two more drains: nothing else may show up (the outside file, stray reads).
	time.Sleep(2500 * time.Millisecond)
	text = scrapePort(t, port)
	calls, _ = textMetricSum(text, "disgrafs_read_calls_total")
	bytes, _ = textMetricSum(text, "disgrafs_read_bytes_total")
	if calls-base != wantCalls || bytes-baseBytes != wantBytes {
		t.Fatalf("want %v read calls and %v bytes, got %v and %v\n%s", wantCalls, wantBytes, calls-base, bytes-baseBytes, grepLines(text, "disgrafs_read_"))
	}
	if v, _ := textMetricSum(text, "disgrafs_bpf_enabled"); v != 1 {
		t.Errorf("disgrafs_bpf_enabled = %v, want 1", v)
	}
	for _, src := range []string{"passthrough", "page_cache", "daemon"} {
		if _, ok := textMetricSum(text, "disgrafs_read_bytes_total", `source="`+src+`"`); !ok {
			t.Errorf("no disgrafs_read_bytes_total{source=%q}", src)
		}
	}
	if v, _ := textMetricSum(text, "disgrafs_read_bytes_total", `source="daemon"`); v == 0 {
		t.Errorf("cold reads of new files were not served by the daemon:\n%s", grepLines(text, "disgrafs_read_"))
	}
	for _, op := range []string{"LOOKUP", "OPEN", "READ", "WRITE", "RELEASE"} {
		v, ok := textMetricSum(text, "disgrafs_fuse_request_duration_seconds_count", `opcode="`+op+`"`)
		inf, _ := textMetricSum(text, "disgrafs_fuse_request_duration_seconds_bucket", `opcode="`+op+`"`, `le="+Inf"`)
		if !ok || v == 0 || inf != v {
			t.Errorf("FUSE %s: count %v, +Inf bucket %v", op, v, inf)
		}
	}

	s := statusOf(t, m)
	if s.BPF == nil || !s.BPF.Enabled || s.BPF.Mode != "on" || len(s.BPF.ProgramIDs) != 4 {
		t.Fatalf("status: want eBPF on with 4 programs, got %+v", s.BPF)
	}
	if got := s.BPF.ReadBytes.Passthrough + s.BPF.ReadBytes.PageCache + s.BPF.ReadBytes.Daemon; float64(got) != bytes {
		t.Errorf("status read bytes %d, metrics %v", got, bytes)
	}
	if s.BPF.OpenEvents < uint64(len(sizes)) {
		t.Errorf("status: %d open events, want at least %d", s.BPF.OpenEvents, len(sizes))
	}
	out, _ := run(t, "status", m.Dir)
	if !strings.Contains(out, "eBPF:") || !strings.Contains(out, "on (--bpf=on)") {
		t.Errorf("status lacks the eBPF line:\n%s", out)
	}

	// After the unmount no program (and so no link or map of ours) is left.
	ids := s.BPF.ProgramIDs
	m.Unmount()
	for _, id := range ids {
		if progLoaded(t, id, 5*time.Second) {
			t.Errorf("program %d still loaded after the unmount", id)
		}
	}
}

// progLoaded reports whether the program id is still loaded after waiting up
// to d for the kernel to free it.
func progLoaded(t *testing.T, id uint32, d time.Duration) bool {
	bpftool := needTool(t, "bpftool")
	deadline := time.Now().Add(d)
	for {
		err := exec.Command(bpftool, "prog", "show", "id", strconv.Itoa(int(id))).Run()
		if err != nil {
			return false
		}
		if time.Now().After(deadline) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestBPFOff: --bpf=off runs without eBPF, says so, and the mount works.
func TestBPFOff(t *testing.T) {
	needRoot(t)
	const port = 9602
	m := startMount(t, MountOpts{Extra: []string{"--bpf", "off", "--metrics", fmt.Sprintf("127.0.0.1:%d", port)}})
	if err := os.WriteFile(m.Path("f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(m.Path("f")); err != nil || string(b) != "hello" {
		t.Fatalf("read back: %q %v", b, err)
	}
	text := scrapePort(t, port)
	if v, ok := textMetricSum(text, "disgrafs_bpf_enabled"); !ok || v != 0 {
		t.Errorf("disgrafs_bpf_enabled = %v (present %v), want 0", v, ok)
	}
	if _, ok := textMetricSum(text, "disgrafs_read_bytes_total"); ok {
		t.Errorf("read bytes exported without eBPF:\n%s", grepLines(text, "disgrafs_read"))
	}
	s := statusOf(t, m)
	if s.BPF == nil || s.BPF.Enabled || s.BPF.Mode != "off" || !strings.Contains(s.BPF.Reason, "--bpf=off") {
		t.Errorf("status: %+v", s.BPF)
	}
	if s.Ops["open"] == 0 {
		t.Errorf("the daemon did not count the opens it served: %v", s.Ops)
	}
	out, _ := run(t, "status", m.Dir)
	if !strings.Contains(out, "eBPF:") || !strings.Contains(out, "off (--bpf=off)") {
		t.Errorf("status lacks the eBPF line:\n%s", out)
	}
	if out, err := run(t, "top", "--count", "1", m.Dir); err == nil || !strings.Contains(out, "eBPF accounting is off") {
		t.Errorf("top without eBPF: want a clear error, got %v\n%s", err, out)
	}
	// A bad mode is refused before anything happens.
	out, err := run(t, "mount", "--bpf", "maybe", t.TempDir())
	if err == nil || !strings.Contains(out, `--bpf "maybe": must be off, auto or on`) {
		t.Errorf("--bpf maybe: %v\n%s", err, out)
	}
}

// TestBPFUnavailable: where bpf(2) is refused (as without CAP_BPF), --bpf=on
// fails the mount with the reason and leaves nothing mounted, and --bpf=auto
// mounts without eBPF and reports why.
func TestBPFUnavailable(t *testing.T) {
	needBPF(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Run the daemon through this test binary, which installs the filter.
	wrap := func(o MountOpts) MountOpts {
		o.Env = append(o.Env, seccompExecEnv+"=1")
		o.Wrapper = []string{self, "--"}
		return o
	}

	dir := t.TempDir()
	m, err := tryMount(t, wrap(MountOpts{Dir: dir, Extra: []string{"--bpf", "on"}}))
	if err == nil {
		m.Stop()
		t.Fatal("--bpf=on mounted although bpf(2) is refused")
	}
	if !strings.Contains(err.Error(), "--bpf=on: eBPF unavailable: no permission") {
		t.Errorf("--bpf=on: want the reason, got:\n%v", err)
	}
	if daemon.IsMounted(dir) {
		t.Errorf("%s is still mounted after the failed mount", dir)
	}

	const port = 9603
	m, err = tryMount(t, wrap(MountOpts{Extra: []string{"--bpf", "auto", "--metrics", fmt.Sprintf("127.0.0.1:%d", port)}}))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Path("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Log(), "eBPF read accounting unavailable") {
		t.Errorf("no warning in the log:\n%s", m.Log())
	}
	if v, _ := textMetricSum(scrapePort(t, port), "disgrafs_bpf_enabled"); v != 0 {
		t.Errorf("disgrafs_bpf_enabled = %v, want 0", v)
	}
	s := statusOf(t, m)
	if s.BPF == nil || s.BPF.Enabled || s.BPF.Mode != "auto" || !strings.Contains(s.BPF.Reason, "no permission") {
		t.Errorf("status: %+v", s.BPF)
	}
}

// TestBPFTop: 'disgrafs top' shows a file being read, by path.
func TestBPFTop(t *testing.T) {
	needBPF(t)
	m := startMount(t, MountOpts{Extra: []string{"--bpf", "on"}})
	if err := os.MkdirAll(m.Path("hot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Path("hot", "data.bin"), randBytes(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		f, err := os.Open(m.Path("hot", "data.bin"))
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		buf := make([]byte, 64<<10)
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := unix.Pread(int(f.Fd()), buf, int64(i%16)*int64(len(buf))); err != nil {
				done <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	out, err := run(t, "top", "--count", "3", "--interval", "1100ms", m.Dir)
	close(stop)
	if rerr := <-done; rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatalf("top: %v\n%s", err, out)
	}
	for _, want := range []string{"HOTTEST FILES", "/hot/data.bin", "FUSE REQUESTS", "page cache"} {
		if !strings.Contains(out, want) {
			t.Errorf("top output lacks %q:\n%s", want, out)
		}
	}
}
