package tagging

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegisterMetrics(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := New(nil, nil, log, 0)
	for _, tc := range []struct {
		name string
		auto *AutoTagger
		want string
	}{
		{"tags without the auto-tagger", nil, `
# HELP disgrafs_tagger_index_pending Index changes waiting to reach the graph store.
# TYPE disgrafs_tagger_index_pending gauge
disgrafs_tagger_index_pending 0
`},
		{"with the auto-tagger", NewAutoTagger(svc, nil, AutoOptions{Queue: 8}, log), `
# HELP disgrafs_tagger_index_pending Index changes waiting to reach the graph store.
# TYPE disgrafs_tagger_index_pending gauge
disgrafs_tagger_index_pending 0
# HELP disgrafs_tagger_queue_capacity How many files the automatic tagger's queue holds.
# TYPE disgrafs_tagger_queue_capacity gauge
disgrafs_tagger_queue_capacity 8
# HELP disgrafs_tagger_queue_length Files waiting for the automatic tagger.
# TYPE disgrafs_tagger_queue_length gauge
disgrafs_tagger_queue_length 3
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			if err := RegisterMetrics(prometheus.WrapRegistererWithPrefix("disgrafs_tagger_", reg), svc, tc.auto); err != nil {
				t.Fatal(err)
			}
			names := []string{"disgrafs_tagger_index_pending"}
			if tc.auto != nil {
				// Three files written, nothing running the tagger: they wait.
				for ino := range uint64(3) {
					tc.auto.Enqueue(ino + 10)
				}
				names = append(names, "disgrafs_tagger_queue_length", "disgrafs_tagger_queue_capacity")
				if n, err := testutil.GatherAndCount(reg, "disgrafs_tagger_files_tagged_total", "disgrafs_tagger_failures_total", "disgrafs_tagger_dropped_total"); err != nil || n != 3 {
					t.Fatalf("auto-tagger counters: %d, %v", n, err)
				}
			} else if n, _ := testutil.GatherAndCount(reg, "disgrafs_tagger_queue_length"); n != 0 {
				t.Fatal("a queue length without an auto-tagger")
			}
			if err := testutil.GatherAndCompare(reg, strings.NewReader(tc.want), names...); err != nil {
				t.Fatal(err)
			}
		})
	}
}
