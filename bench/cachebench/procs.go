package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/disgrafs/disgrafs/bench/internal/benchkit"
)

// proc is a long-running child process started by the benchmark: in a
// process group of its own (a terminal's Ctrl-C reaches only the benchmark,
// which then stops everything in order) and killed by the kernel if the
// benchmark dies (Pdeathsig).
type proc struct {
	name    string
	cmd     *exec.Cmd
	log     *os.File
	logPath string
	exited  chan struct{}
	waitErr error
}

func startProc(name string, argv, env []string, logPath string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	fmt.Fprintf(lf, "### %s %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &proc{name: name, cmd: cmd, log: lf, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *proc) waitExit(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

// terminate stops the process group: SIGTERM, then SIGKILL.
func (p *proc) terminate() error {
	defer p.log.Close()
	if !p.running() {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	if p.waitExit(20 * time.Second) {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if !p.waitExit(10 * time.Second) {
		return fmt.Errorf("%s (pid %d) does not exit", p.name, p.cmd.Process.Pid)
	}
	return nil
}

// runLogged runs a short command, appending its output to the log file.
func runLogged(ctx context.Context, timeout time.Duration, logPath string, argv ...string) error {
	_, err := runOutput(ctx, timeout, logPath, argv...)
	return err
}

// runOutput runs a short command and returns its output, also appended to the log.
func runOutput(ctx context.Context, timeout time.Duration, logPath string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", fmt.Errorf("log file: %w", err)
	}
	defer lf.Close()
	fmt.Fprintf(lf, "### %s %s\n", time.Now().Format(time.RFC3339), strings.Join(argv, " "))
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = io.MultiWriter(lf, &out)
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w (see %s):\n%s", strings.Join(argv, " "), err, logPath, lastLines(out.String(), 10))
	}
	return out.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func portInUse(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 300*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// startRedis runs a private redis-server without persistence on port.
func startRedis(ctx context.Context, bin string, port int, dir, logPath string) (*proc, error) {
	if portInUse(port) {
		return nil, fmt.Errorf("port %d is in use: the benchmark starts its own redis-server there (pick another with -redis-port)", port)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis directory: %w", err)
	}
	p, err := startProc("redis-server", []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--protected-mode", "no"}, nil, logPath)
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if redisPing(port) == nil {
			return p, nil
		}
		if !p.running() || time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.terminate()
			return nil, fmt.Errorf("redis-server on port %d did not come up (%v); log %s:\n%s", port, p.waitErr, logPath, tailFile(logPath, 10))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// redisCommand sends one inline command and returns the first reply line.
func redisCommand(port int, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func redisPing(port int) error {
	line, err := redisCommand(port, "PING")
	if err != nil {
		return err
	}
	if line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// toxiproxy drives a toxiproxy server through its HTTP API.
type toxiproxy struct {
	api  string // http://127.0.0.1:PORT
	proc *proc
}

const proxyName = "cachebench-redis"

func startToxiproxy(ctx context.Context, bin string, apiPort int, logPath string) (*toxiproxy, error) {
	if portInUse(apiPort) {
		return nil, fmt.Errorf("toxiproxy API port %d is in use (pick another with -toxiproxy-api-port)", apiPort)
	}
	p, err := startProc("toxiproxy", []string{bin, "-host", "127.0.0.1", "-port", strconv.Itoa(apiPort)}, nil, logPath)
	if err != nil {
		return nil, fmt.Errorf("%w (install it with scripts/toxiproxy.sh install)", err)
	}
	t := &toxiproxy{api: "http://127.0.0.1:" + strconv.Itoa(apiPort), proc: p}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, err := t.call(ctx, "GET", "/version", nil); err == nil {
			return t, nil
		}
		if !p.running() || time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.terminate()
			return nil, fmt.Errorf("toxiproxy did not come up on port %d (%v); log %s:\n%s", apiPort, p.waitErr, logPath, tailFile(logPath, 10))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (t *toxiproxy) call(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, t.api+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("toxiproxy %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return out, fmt.Errorf("toxiproxy %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// createProxy makes toxiproxy listen on listenPort and forward to upstreamPort.
func (t *toxiproxy) createProxy(ctx context.Context, listenPort, upstreamPort int) error {
	if portInUse(listenPort) {
		return fmt.Errorf("proxy port %d is in use (pick another with -proxy-port)", listenPort)
	}
	_, err := t.call(ctx, "POST", "/proxies", map[string]any{
		"name":     proxyName,
		"listen":   net.JoinHostPort("127.0.0.1", strconv.Itoa(listenPort)),
		"upstream": net.JoinHostPort("127.0.0.1", strconv.Itoa(upstreamPort)),
		"enabled":  true,
	})
	return err
}

// setLatency replaces the proxy's latency toxic: every reply from Redis is
// held back by d (0 removes the toxic). Toxics apply to open connections too.
func (t *toxiproxy) setLatency(ctx context.Context, d time.Duration) error {
	body, err := t.call(ctx, "GET", "/proxies/"+proxyName+"/toxics", nil)
	if err != nil {
		return err
	}
	var toxics []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &toxics); err != nil {
		return fmt.Errorf("toxiproxy toxics: %w", err)
	}
	for _, x := range toxics {
		if x.Name == "latency" {
			if _, err := t.call(ctx, "DELETE", "/proxies/"+proxyName+"/toxics/latency", nil); err != nil {
				return err
			}
		}
	}
	if d <= 0 {
		return nil
	}
	_, err = t.call(ctx, "POST", "/proxies/"+proxyName+"/toxics", map[string]any{
		"name": "latency", "type": "latency", "stream": "downstream", "toxicity": 1.0,
		"attributes": map[string]any{"latency": d.Milliseconds(), "jitter": 0},
	})
	return err
}

// mountSpec describes a FUSE daemon that runs in the foreground.
type mountSpec struct {
	name    string
	argv    []string
	env     []string
	mnt     string
	fstype  string
	logPath string
	umount  []string
	timeout time.Duration
}

// mounted is a running FUSE daemon started by us.
type mounted struct {
	spec mountSpec
	p    *proc
}

// startMount starts the daemon and waits until its mount serves. A started
// daemon is returned even with an error, so that the caller can stop it.
func startMount(ctx context.Context, s mountSpec) (*mounted, error) {
	if e, ok, err := benchkit.MountedAt(s.mnt); err != nil {
		return nil, err
	} else if ok {
		return nil, fmt.Errorf("%s is already mounted (%s)", s.mnt, e.FSType)
	}
	if err := os.MkdirAll(s.mnt, 0o755); err != nil {
		return nil, fmt.Errorf("mountpoint: %w", err)
	}
	p, err := startProc(s.name, s.argv, s.env, s.logPath)
	if err != nil {
		return nil, err
	}
	m := &mounted{spec: s, p: p}
	deadline := time.NewTimer(s.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return m, ctx.Err()
		case <-p.exited:
			return m, fmt.Errorf("%s exited before its mount came up (%v); log %s:\n%s", s.name, p.waitErr, s.logPath, tailFile(s.logPath, 20))
		case <-deadline.C:
			return m, fmt.Errorf("%s did not mount %s within %s; log %s:\n%s", s.name, s.mnt, s.timeout, s.logPath, tailFile(s.logPath, 20))
		case <-tick.C:
			e, ok, err := benchkit.MountedAt(s.mnt)
			if err != nil {
				return m, err
			}
			if !ok {
				continue
			}
			if e.FSType != s.fstype {
				return m, fmt.Errorf("%s is mounted as %s, expected %s", s.mnt, e.FSType, s.fstype)
			}
			var st syscall.Statfs_t
			if syscall.Statfs(s.mnt, &st) == nil {
				return m, nil
			}
		}
	}
}

// stop unmounts through the daemon's own command, waits for the daemon to
// exit, and falls back to signals and a lazy unmount.
func (m *mounted) stop() error {
	var errs []error
	if !m.p.running() {
		errs = append(errs, fmt.Errorf("%s had exited before it was stopped (%v); see %s", m.spec.name, m.p.waitErr, m.spec.logPath))
	}
	if _, ok, _ := benchkit.MountedAt(m.spec.mnt); ok {
		if err := runLogged(context.Background(), 2*time.Minute, m.spec.logPath, m.spec.umount...); err != nil {
			errs = append(errs, err)
		}
	}
	if m.p.running() && !m.p.waitExit(time.Minute) {
		errs = append(errs, fmt.Errorf("%s did not exit after unmounting", m.spec.name))
	}
	if err := m.p.terminate(); err != nil {
		errs = append(errs, err)
	}
	if _, ok, _ := benchkit.MountedAt(m.spec.mnt); ok {
		if err := syscall.Unmount(m.spec.mnt, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("lazy unmount of %s: %w", m.spec.mnt, err))
		} else {
			errs = append(errs, fmt.Errorf("%s had to be detached lazily", m.spec.mnt))
		}
	}
	return errors.Join(errs...)
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return lastLines(string(b), n)
}
