package neo4jstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/disgrafs/disgrafs/graph"
	"github.com/disgrafs/disgrafs/graph/graphtest"
)

// server is the Bolt server the tests use: $DISGRAFS_TEST_BOLT (e.g.
// bolt://127.0.0.1:7687) as $DISGRAFS_TEST_BOLT_USER with
// $DISGRAFS_TEST_BOLT_PASSWORD. Without it the tests skip, unless
// DISGRAFS_REQUIRE_ALL=1, when they fail.
type server struct{ url, user, password string }

func testServer(t testing.TB) server {
	t.Helper()
	s := server{os.Getenv("DISGRAFS_TEST_BOLT"), os.Getenv("DISGRAFS_TEST_BOLT_USER"), os.Getenv("DISGRAFS_TEST_BOLT_PASSWORD")}
	if s.url == "" {
		const why = "DISGRAFS_TEST_BOLT is not set (start one with scripts/nornicdb.sh start)"
		if os.Getenv("DISGRAFS_REQUIRE_ALL") == "1" {
			t.Fatal(why + " and DISGRAFS_REQUIRE_ALL=1")
		}
		t.Skip(why)
	}
	if s.user == "" {
		s.user = "neo4j"
	}
	return s
}

// newVolume is a volume key no other test uses.
func newVolume(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return "test-" + name + "-" + hex.EncodeToString(b[:])
}

// openStore opens a store on a fresh volume, dropped when the test ends.
func openStore(t testing.TB, opts Options) *Store {
	t.Helper()
	srv := testServer(t)
	vol := newVolume(t)
	ctx := context.Background()
	s, err := Open(ctx, srv.url, srv.user, srv.password, vol, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		// Drop through a new store: the test may have closed s.
		d, err := Open(ctx, srv.url, srv.user, srv.password, vol, opts)
		if err != nil {
			t.Errorf("reopen to drop the volume: %v", err)
			return
		}
		defer d.Close()
		if err := d.DropVolume(ctx); err != nil {
			t.Errorf("DropVolume: %v", err)
		}
	})
	return s
}

func TestSuite(t *testing.T) {
	testServer(t)
	graphtest.Run(t, func(t *testing.T) graph.Store { return openStore(t, Options{BatchRows: 500, Timeout: 5 * time.Minute}) })
}

func TestVolumesAreSeparate(t *testing.T) {
	ctx := context.Background()
	a, b := openStore(t, Options{}), openStore(t, Options{})
	if err := a.Update(ctx, []graph.Change{{File: graph.File{ID: 1, Name: "in-a"}, Add: []string{"x"}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(ctx, []graph.Change{{File: graph.File{ID: 1, Name: "in-b"}, Add: []string{"y"}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddCoAccess(ctx, []graph.CoAccess{{A: 1, B: 2, Weight: 1, At: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s    *Store
		want string
	}{{a, "x"}, {b, "y"}} {
		tags, err := tc.s.Tags(ctx)
		if err != nil || len(tags) != 1 || tags[0].Tag != tc.want {
			t.Errorf("volume %s: Tags = %v, %v; want only %s", tc.s.Volume(), tags, err, tc.want)
		}
		got, err := tc.s.TagsOf(ctx, 1)
		if err != nil || len(got) != 1 || got[0] != tc.want {
			t.Errorf("volume %s: TagsOf(1) = %v, %v", tc.s.Volume(), got, err)
		}
	}
	if co, err := b.CoAccessed(ctx, 1, 0, 0, time.Now()); err != nil || len(co) != 0 {
		t.Errorf("co-access leaked across volumes: %v, %v", co, err)
	}
}

func TestWrongPassword(t *testing.T) {
	srv := testServer(t)
	_, err := Open(context.Background(), srv.url, srv.user, srv.password+"-wrong", newVolume(t), Options{})
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("Open with a wrong password: %v, want an authentication error", err)
	}
	if errors.Is(err, graph.ErrUnavailable) {
		t.Errorf("wrong password reported as unavailable: %v", err)
	}
}

func TestSchemeNeo4j(t *testing.T) {
	srv := testServer(t)
	url := strings.Replace(srv.url, "bolt://", "neo4j://", 1)
	s, err := Open(context.Background(), url, srv.user, srv.password, newVolume(t), Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	defer s.Close()
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping via %s: %v", url, err)
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnavailable(t *testing.T) {
	start := time.Now()
	_, err := Open(context.Background(), "bolt://"+closedPort(t), "neo4j", "password", "v", Options{ConnectTimeout: time.Second, Timeout: 2 * time.Second})
	if !errors.Is(err, graph.ErrUnavailable) {
		t.Fatalf("Open on a closed port: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open on a closed port took %v", d)
	}
	t.Logf("closed port: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
}

// A server that accepts connections and never answers must time out.
func TestUnresponsive(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	_, err = Open(context.Background(), "bolt://"+l.Addr().String(), "neo4j", "password", "v", Options{ConnectTimeout: time.Second, Timeout: 2 * time.Second})
	if !errors.Is(err, graph.ErrUnavailable) {
		t.Fatalf("Open on a silent server: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("Open on a silent server took %v", d)
	}
	t.Logf("silent server: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
}

// The server goes away under an open store: calls fail with ErrUnavailable
// within the timeout.
func TestServerGone(t *testing.T) {
	srv := testServer(t)
	// A proxy we can cut, in front of the real server.
	target := strings.TrimPrefix(strings.TrimPrefix(srv.url, "bolt://"), "neo4j://")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns = append(conns, c, u)
			go pipe(c, u)
			go pipe(u, c)
		}
	}()
	s, err := Open(context.Background(), "bolt://"+l.Addr().String(), srv.user, srv.password, newVolume(t), Options{ConnectTimeout: time.Second, Timeout: 3 * time.Second})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	l.Close()
	<-done
	for _, c := range conns {
		c.Close()
	}
	start := time.Now()
	_, err = s.Tags(context.Background())
	if !errors.Is(err, graph.ErrUnavailable) {
		t.Fatalf("Tags with the server gone: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("Tags with the server gone took %v", d)
	}
	t.Logf("server gone: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
}

func pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}
