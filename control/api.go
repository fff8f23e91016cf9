package control

import "time"

// Status is the reply of GET /v1/status.
type Status struct {
	APIVersion  int               `json:"api_version"`
	Version     string            `json:"version"`
	Pid         int               `json:"pid"`
	Mountpoint  string            `json:"mountpoint"`
	Volume      string            `json:"volume"`
	Embedded    bool              `json:"embedded"`
	MetaURL     string            `json:"meta_url"`
	StorageURL  string            `json:"storage_url"`
	CacheDir    string            `json:"cache_dir"`
	CacheBytes  int64             `json:"cache_bytes"`
	CacheBlocks int64             `json:"cache_blocks"`
	CacheSize   uint64            `json:"cache_size"`
	MetricsAddr string            `json:"metrics_addr,omitempty"`
	LogPath     string            `json:"log_path,omitempty"`
	StartedAt   time.Time         `json:"started_at"`
	Uptime      float64           `json:"uptime_seconds"`
	Ops         map[string]uint64 `json:"ops"`
}

// UnmountRequest is the body of POST /v1/unmount.
type UnmountRequest struct {
	// Lazy detaches the mount even while files are open; the daemon serves
	// them until they are closed, then exits.
	Lazy bool `json:"lazy"`
}
