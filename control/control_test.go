package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoundTripAndErrors(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "sub", "c.sock")
	s := NewServer()
	s.Ready()
	s.Handle("GET", "status", func(ctx context.Context, _ []byte) (any, error) {
		return Status{Volume: "v", APIVersion: APIVersion}, nil
	})
	s.Handle("POST", "fail", func(ctx context.Context, body []byte) (any, error) {
		return nil, BadRequest{Err: errors.New("bad thing: " + string(body))}
	})
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	if d, _ := os.Stat(filepath.Dir(sock)); d.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory mode %v; want 0700", d.Mode().Perm())
	}
	c := Dial(sock)
	var got Status
	if err := c.Call(context.Background(), "GET", "status", nil, &got); err != nil || got.Volume != "v" {
		t.Fatalf("status: %+v %v", got, err)
	}
	err = c.Call(context.Background(), "POST", "fail", map[string]int{"x": 1}, nil)
	if err == nil || !strings.Contains(err.Error(), "bad thing") {
		t.Fatalf("error not carried: %v", err)
	}
	if err := c.Call(context.Background(), "GET", "nope", nil, nil); err == nil {
		t.Fatal("unknown endpoint must fail")
	}
	// A second server on a live socket is refused.
	if err := NewServer().Listen(sock); err == nil {
		t.Fatal("a socket in use must not be taken over")
	}
}

func TestNoDaemon(t *testing.T) {
	c := Dial(filepath.Join(t.TempDir(), "none.sock"))
	err := c.Call(context.Background(), "GET", "status", nil, nil)
	if !errors.Is(err, ErrNoDaemon) {
		t.Fatalf("want ErrNoDaemon, got %v", err)
	}
}

func TestPathsStable(t *testing.T) {
	a, b := PathsFor("/mnt/a"), PathsFor("/mnt/b")
	if a.Socket == b.Socket || PathsFor("/mnt/a") != a {
		t.Fatal("paths must be stable per mountpoint and differ between mountpoints")
	}
}

func TestRequestsWaitForReady(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	s := NewServer()
	s.Handle("GET", "status", func(ctx context.Context, _ []byte) (any, error) { return Status{Volume: "v"}, nil })
	if err := s.Listen(sock); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	cl := Dial(sock)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var st Status
	if err := cl.Call(ctx, "GET", "status", nil, &st); err == nil {
		t.Fatal("a request was answered before the daemon was ready")
	}
	done := make(chan error, 1)
	go func() { done <- cl.Call(context.Background(), "GET", "status", nil, &st) }()
	time.Sleep(50 * time.Millisecond)
	s.Ready()
	if err := <-done; err != nil || st.Volume != "v" {
		t.Fatalf("after Ready: %v %+v", err, st)
	}
}
