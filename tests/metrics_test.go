package tests

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMetricsEndpoint scrapes a running daemon: JuiceFS's series (juicefs_),
// the Go and process collectors, all labelled with the volume and mountpoint.
func TestMetricsEndpoint(t *testing.T) {
	port := freePort(t)
	m := startMount(t, MountOpts{Extra: []string{"--metrics", fmt.Sprintf("127.0.0.1:%d", port)}})
	if err := os.WriteFile(m.Path("f"), randBytes(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(m.Path("f")); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	text := string(body)
	for _, want := range []string{
		"juicefs_fuse_ops_durations_histogram_seconds_bucket",
		"juicefs_fuse_written_size_bytes_sum",
		"juicefs_meta_ops_durations_histogram_seconds",
		"juicefs_object_request_durations_histogram_seconds",
		"go_goroutines",
		"process_resident_memory_bytes",
		`vol_name="disgrafs"`,
		fmt.Sprintf(`mp=%q`, m.Dir),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// A second daemon asking for the same explicit address fails clearly.
	_, err = tryMount(t, MountOpts{Extra: []string{"--metrics", fmt.Sprintf("127.0.0.1:%d", port)}})
	if err == nil || !strings.Contains(err.Error(), "metrics listener") {
		t.Fatalf("a taken metrics address: want a clear error, got %v", err)
	}
}
