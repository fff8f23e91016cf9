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
	Tags        *TagInfo          `json:"tags,omitempty"`
	Prealloc    *PreallocInfo     `json:"prealloc,omitempty"`
}

// PreallocInfo is the pre-allocation part of the status.
type PreallocInfo struct {
	Node          string            `json:"node"`
	Journal       string            `json:"journal"`
	PoolSize      int               `json:"pool_size"`
	PoolFiles     int               `json:"pool_files"`
	PoolByDir     map[string]int    `json:"pool_files_by_dir"`
	Hits          uint64            `json:"hits"`
	Misses        uint64            `json:"misses"`
	Pending       int               `json:"pending_renames"`
	Landed        uint64            `json:"renames_landed"`
	RenameRetries uint64            `json:"rename_retries"`
	Conflicts     uint64            `json:"conflicts"`
	Lost          uint64            `json:"lost"`
	Recent        []PreallocEvent   `json:"recent_conflicts,omitempty"`
	Errors        map[string]string `json:"errors,omitempty"`
}

// PreallocEvent is a file that could not take its name.
type PreallocEvent struct {
	Ino      uint64    `json:"ino"`
	Parent   uint64    `json:"parent"`
	Name     string    `json:"name"`
	LandedAs string    `json:"landed_as"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// TagInfo is the tags part of the status.
type TagInfo struct {
	Backend      string `json:"backend"`
	Location     string `json:"location"`
	Available    bool   `json:"available"`
	Error        string `json:"error,omitempty"`
	Tagged       uint64 `json:"tag_changes"`
	IndexPending int64  `json:"index_pending"`
	IndexErrors  uint64 `json:"index_errors"`
	AutoDone     uint64 `json:"auto_tagged"`
	AutoQueued   int    `json:"auto_queued"`
	AutoFailed   uint64 `json:"auto_failed"`
	AutoDropped  uint64 `json:"auto_dropped"`
}

// FoundFile is one result of find (POST /v1/find) and related (POST /v1/related).
type FoundFile struct {
	Path  string  `json:"path"`
	Ino   uint64  `json:"ino"`
	Score float64 `json:"score,omitempty"`
}

// FindRequest is the body of POST /v1/find.
type FindRequest struct {
	Expr string `json:"expr"`
}

// RelatedRequest is the body of POST /v1/related.
type RelatedRequest struct {
	Ino   uint64 `json:"ino"`
	Limit int    `json:"limit"`
}

// UnmountRequest is the body of POST /v1/unmount.
type UnmountRequest struct {
	// Lazy detaches the mount even while files are open; the daemon serves
	// them until they are closed, then exits.
	Lazy bool `json:"lazy"`
}
