// Package metrics builds the one Prometheus registry of a daemon and serves it.
// JuiceFS's collectors are registered under the prefix juicefs_ (as the juicefs
// CLI does, so existing dashboards keep working) and ours under disgrafs_; every
// series carries the volume name and mountpoint as labels.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is where the juicefs CLI serves its metrics too.
const DefaultAddr = "127.0.0.1:9567"

// Registry is a daemon's registry with registerers for each namespace.
type Registry struct {
	*prometheus.Registry
	// JuiceFS is handed to JuiceFS's constructors; names get the juicefs_ prefix.
	JuiceFS prometheus.Registerer
	// DisGraFS is for our own collectors; names get the disgrafs_ prefix.
	DisGraFS prometheus.Registerer
}

// New returns a registry whose series are labelled with the volume and mountpoint.
func New(volume, mountpoint string) *Registry {
	reg := prometheus.NewRegistry()
	labelled := prometheus.WrapRegistererWith(prometheus.Labels{"vol_name": volume, "mp": mountpoint}, reg)
	labelled.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Registry{
		Registry: reg,
		JuiceFS:  prometheus.WrapRegistererWithPrefix("juicefs_", labelled),
		DisGraFS: prometheus.WrapRegistererWithPrefix("disgrafs_", labelled),
	}
}

// Server serves /metrics until its context ends.
type Server struct {
	Addr string // the address actually bound
	srv  *http.Server
}

// Listen binds addr. When addr is the default and already taken (another
// daemon on this node), the next free port of the following ten is used, as
// the juicefs CLI does; an address given explicitly must be free.
func Listen(addr string, reg *prometheus.Registry) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil && addr == DefaultAddr && errors.Is(err, syscall.EADDRINUSE) {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		for i := 1; i <= 10 && err != nil; i++ {
			ln, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p+i)))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil, Registry: reg}))
	s := &Server{Addr: ln.Addr().String(), srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server.
func (s *Server) Close(ctx context.Context) error { return s.srv.Shutdown(ctx) }
