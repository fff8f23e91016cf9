// Package metrics builds the one Prometheus registry of a daemon and serves it.
//
// Every series carries the node labels vol_name (the volume's name), mp (the
// mountpoint) and instance (the node's host name), as the juicefs CLI labels
// its own series, so one Prometheus can watch every node of a cluster and an
// existing JuiceFS dashboard keeps working.
//
// Namespaces:
//   - juicefs_*: JuiceFS's own collectors (Registry.JuiceFS is handed to its
//     constructors), and juicefs_uptime, juicefs_cpu_usage and juicefs_memory
//     as the juicefs CLI exports them;
//   - disgrafs_<subsystem>_*: ours; each subsystem gets its registerer from
//     Registry.Subsystem;
//   - go_* and process_*: the Go runtime and process collectors.
//
// How a subsystem adds metrics (fuse, graph, tagger, cache, prealloc, bpf...):
// every DisGraFS collector is registered on the registerer of its subsystem,
// Registry.Subsystem(name), with a name relative to it. A package with one
// subsystem takes that registerer:
//
//	func (c *Cache) RegisterMetrics(r prometheus.Registerer) error // r = reg.Subsystem("cache")
//
// and registers client_golang collectors named "hits_total",
// "read_duration_seconds"...; they come out as disgrafs_cache_hits_total
// with the node labels. A package whose collectors belong to several
// subsystems (package cache: cache, prefetch, warmup, coaccess; package bpf:
// bpf, read, fuse) takes the method value reg.Subsystem, a
// func(subsystem string) prometheus.Registerer, and registers each collector
// on its subsystem's. Nothing registers on Registry.DisGraFS directly.
// Rules:
//   - counters end in _total, units are in the name (_bytes, _seconds);
//   - latencies are histograms (seconds), never summaries;
//   - labels have a small fixed set of values (op, backend, result...):
//     never a path, inode or other per-file value;
//   - nothing on a hot path allocates or locks: resolve vector children once
//     (WithLabelValues at start-up) and keep the Counter/Observer, or keep
//     atomic counters and export them at scrape time with a Collector or
//     NewCounterFunc / NewGaugeFunc.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is where the juicefs CLI serves its metrics too.
const DefaultAddr = "127.0.0.1:9567"

// Namespace prefixes DisGraFS's own metric names.
const Namespace = "disgrafs"

// Node label names carried by every series.
const (
	LabelVolume     = "vol_name"
	LabelMountpoint = "mp"
	LabelInstance   = "instance"
)

// Registry is a daemon's registry with registerers for each namespace.
type Registry struct {
	*prometheus.Registry
	// JuiceFS is handed to JuiceFS's constructors; names get the juicefs_ prefix.
	JuiceFS prometheus.Registerer
	// DisGraFS is the parent of the subsystems' registerers: names get
	// the disgrafs_ prefix. Collectors register through Subsystem.
	DisGraFS prometheus.Registerer
	// Labels are the node labels on every series.
	Labels prometheus.Labels

	node prometheus.Registerer // the registry, with the node labels
}

// Hostname is the instance label of this node: the host name, or "unknown".
func Hostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "unknown"
}

// New returns a registry whose series are labelled with the volume, the
// mountpoint and this node's host name, with the Go and process collectors.
func New(volume, mountpoint string) *Registry {
	return NewWithInstance(volume, mountpoint, Hostname())
}

// NewWithInstance is New with an explicit instance label.
func NewWithInstance(volume, mountpoint, instance string) *Registry {
	reg := prometheus.NewRegistry()
	labels := prometheus.Labels{LabelVolume: volume, LabelMountpoint: mountpoint, LabelInstance: instance}
	labelled := prometheus.WrapRegistererWith(labels, reg)
	labelled.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	jfs := prometheus.WrapRegistererWithPrefix("juicefs_", labelled)
	registerJuiceFSProcess(jfs, time.Now())
	return &Registry{
		Registry: reg,
		JuiceFS:  jfs,
		DisGraFS: prometheus.WrapRegistererWithPrefix(Namespace+"_", labelled),
		Labels:   labels,
		node:     labelled,
	}
}

// Subsystem returns the registerer of one subsystem: a collector named
// "ops_total" registered on Subsystem("fuse") is exported as
// disgrafs_fuse_ops_total, with the node labels.
func (r *Registry) Subsystem(name string) prometheus.Registerer {
	return prometheus.WrapRegistererWithPrefix(name+"_", r.DisGraFS)
}

// Handler serves the registry in the Prometheus exposition formats.
func (r *Registry) Handler() http.Handler {
	// Errors while encoding a scrape are counted, with the node labels
	// (promhttp_metric_handler_errors_total).
	return promhttp.HandlerFor(r.Registry, promhttp.HandlerOpts{Registry: r.node})
}

// Server serves /metrics until it is closed.
type Server struct {
	Addr string // the address actually bound
	srv  *http.Server
}

// Listen binds addr. When addr is the default and already taken (another
// daemon on this node), the next free port of the following ten is used, as
// the juicefs CLI does; an address given explicitly must be free.
func Listen(addr string, reg *Registry) (*Server, error) {
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
	mux.Handle("/metrics", reg.Handler())
	s := &Server{Addr: ln.Addr().String(), srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server.
func (s *Server) Close(ctx context.Context) error { return s.srv.Shutdown(ctx) }
