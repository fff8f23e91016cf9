package control

import (
	"time"

	"github.com/disgrafs/disgrafs/cache"
)

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
	Cache       *CacheInfo        `json:"cache,omitempty"`
}

// CacheInfo is the whole-file cache part of the status.
type CacheInfo struct {
	Dir             string       `json:"dir"`
	Files           int          `json:"files"`
	Bytes           int64        `json:"bytes"`
	Budget          int64        `json:"budget"`
	Passthrough     bool         `json:"passthrough"`
	PassthroughNote string       `json:"passthrough_note"`
	Prefetch        bool         `json:"prefetch"`
	PrefetchQueue   int          `json:"prefetch_queue"`
	Warmups         []WarmupInfo `json:"warmups,omitempty"`
}

// WarmupRequest asks for a warmup (POST /v1/warmup): of the files of a tag,
// of a query, or of the given inodes. The reply is a stream of
// cache.Progress lines (NDJSON); with Background, one line and the warmup
// goes on in the daemon.
type WarmupRequest struct {
	Tag        string   `json:"tag,omitempty"`
	Query      string   `json:"query,omitempty"`
	Inos       []uint64 `json:"inos,omitempty"`
	Threads    int      `json:"threads,omitempty"`
	Mode       string   `json:"mode,omitempty"` // warm (default), check or evict
	Background bool     `json:"background,omitempty"`
}

// WarmupInfo describes a recent warmup.
type WarmupInfo struct {
	What      string         `json:"what"`
	StartedAt time.Time      `json:"started_at"`
	Progress  cache.Progress `json:"progress"`
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
