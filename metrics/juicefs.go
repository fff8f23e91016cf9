package metrics

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// registerJuiceFSProcess adds the three process gauges the juicefs CLI
// exports (juicefs_uptime, juicefs_cpu_usage, juicefs_memory) and JuiceFS
// dashboards and 'juicefs stats'-style tools read; the library leaves them to
// its CLI, which we do not embed.
func registerJuiceFSProcess(r prometheus.Registerer, started time.Time) {
	r.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "uptime", Help: "Total running time in seconds."},
			func() float64 { return time.Since(started).Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cpu_usage", Help: "Accumulated CPU usage in seconds."},
			func() float64 {
				var ru syscall.Rusage
				if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
					return 0
				}
				return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "memory", Help: "Used memory in bytes."},
			func() float64 { return float64(rss()) }),
	)
}

// rss is the resident set size of this process in bytes (0 if unknown).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
