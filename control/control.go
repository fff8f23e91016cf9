// Package control is the channel between the CLI and the daemon of a
// mountpoint: JSON over HTTP on a unix socket (0600, in a 0700 directory, and
// the peer's uid is checked), with versioned paths (/v1/...). Later subsystems
// add endpoints with Handle.
package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// APIVersion is the version of the control API; paths start with /v<APIVersion>/.
const APIVersion = 1

// Paths are the files through which the CLI finds the daemon of a mountpoint.
type Paths struct {
	Dir    string
	Socket string
	Pid    string
	Info   string
}

// RuntimeDir holds sockets and pid files: /run/disgrafs for root,
// $XDG_RUNTIME_DIR/disgrafs or /tmp/disgrafs-UID for others.
func RuntimeDir() string {
	if d := os.Getenv("DISGRAFS_RUNTIME_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/run/disgrafs"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "disgrafs")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("disgrafs-%d", os.Geteuid()))
}

// PathsFor returns the files of the daemon serving an absolute mountpoint.
func PathsFor(mountpoint string) Paths {
	sum := sha256.Sum256([]byte(mountpoint))
	id := hex.EncodeToString(sum[:8])
	dir := RuntimeDir()
	return Paths{
		Dir:    dir,
		Socket: filepath.Join(dir, id+".sock"),
		Pid:    filepath.Join(dir, id+".pid"),
		Info:   filepath.Join(dir, id+".json"),
	}
}

// Info is written next to the socket so that the CLI can clean up after a
// daemon that died.
type Info struct {
	Pid        int    `json:"pid"`
	Mountpoint string `json:"mountpoint"`
	LogPath    string `json:"log_path,omitempty"`
}

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}

// Server serves the control API.
type Server struct {
	mux   *http.ServeMux
	srv   *http.Server
	path  string
	ready chan struct{}
	once  sync.Once
}

type peerKey struct{}

// NewServer returns a server; register handlers, then call Listen. Requests
// wait until Ready is called: the daemon listens before it mounts, so that a
// mount is never visible without a daemon answering for it.
func NewServer() *Server {
	s := &Server{mux: http.NewServeMux(), ready: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerUID(c))
		},
	}
	return s
}

// peerUID returns the uid of the process at the other end, or -1.
func peerUID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	_ = raw.Control(func(fd uintptr) {
		cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		if err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

// ServeHTTP rejects callers other than the daemon's user and root.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.ready:
	case <-r.Context().Done():
		return
	}
	uid, _ := r.Context().Value(peerKey{}).(int)
	if uid != 0 && uid != os.Geteuid() {
		WriteError(w, http.StatusForbidden, fmt.Errorf("uid %d may not control this daemon", uid))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Handle registers a JSON endpoint: path is relative to /v1/. fn gets the
// request body (may be empty) and returns a value to encode.
func (s *Server) Handle(method, path string, fn func(ctx context.Context, body []byte) (any, error)) {
	s.mux.HandleFunc(method+" /v1/"+path, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			WriteError(w, http.StatusBadRequest, err)
			return
		}
		out, err := fn(r.Context(), body)
		if err != nil {
			code := http.StatusInternalServerError
			var be BadRequest
			if errors.As(err, &be) {
				code = http.StatusBadRequest
			}
			WriteError(w, code, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
}

// HandleRaw registers a handler that writes its own response (for streams).
func (s *Server) HandleRaw(method, path string, h http.HandlerFunc) {
	s.mux.HandleFunc(method+" /v1/"+path, h)
}

// BadRequest marks an error as the caller's fault (HTTP 400).
type BadRequest struct{ Err error }

func (b BadRequest) Error() string { return b.Err.Error() }
func (b BadRequest) Unwrap() error { return b.Err }

// WriteError writes an Error body.
func WriteError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(Error{Error: err.Error()})
}

// Listen creates the socket (replacing a stale one) and starts serving.
func (s *Server) Listen(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s is in use by another daemon", path)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	s.path = path
	go func() { _ = s.srv.Serve(ln) }()
	return nil
}

// Ready lets waiting and later requests through.
func (s *Server) Ready() { s.once.Do(func() { close(s.ready) }) }

// Close stops serving and removes the socket.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if s.path != "" {
		_ = os.Remove(s.path)
	}
	return err
}

// Client talks to one daemon.
type Client struct {
	hc *http.Client
}

// ErrNoDaemon means nothing answers on the socket.
var ErrNoDaemon = errors.New("no daemon answers")

// Dial returns a client for the socket at path.
func Dial(path string) *Client {
	return &Client{hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// Call sends in (if not nil) as JSON and decodes the reply into out (if not nil).
func (c *Client) Call(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.Do(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s reply: %w", path, err)
	}
	return nil
}

// Do sends a request and returns the successful response for streaming.
func (c *Client) Do(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://disgrafs/v1/"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return nil, fmt.Errorf("%w: %v", ErrNoDaemon, ne.Err)
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("control API %s: HTTP %d", path, resp.StatusCode)
	}
	return resp, nil
}
