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
	// Instance is the node label on every metric (the host name).
	Instance string `json:"instance"`
	// FUSE is what the mount served lately: request rates and latencies.
	FUSE *FUSEInfo `json:"fuse,omitempty"`
	// Sections are the parts that subsystems add for themselves, in the
	// order they registered. The cache, eBPF and preallocation have typed
	// parts (Cache, BPF, Prealloc); a new subsystem can start with a section.
	// A subsystem that is off or not built adds none.
	Sections []Section     `json:"sections,omitempty"`
	BPF      *BPFInfo      `json:"bpf,omitempty"`
	Prealloc *PreallocInfo `json:"prealloc,omitempty"`
}

// CacheInfo is the whole-file cache part of the status.
type CacheInfo struct {
	Dir             string        `json:"dir"`
	Files           int           `json:"files"`
	Bytes           int64         `json:"bytes"`
	Budget          int64         `json:"budget"`
	Passthrough     bool          `json:"passthrough"`
	PassthroughNote string        `json:"passthrough_note"`
	Prefetch        bool          `json:"prefetch"`
	PrefetchQueue   int           `json:"prefetch_queue"`
	Warmups         []WarmupInfo  `json:"warmups,omitempty"`
	Coherence       CoherenceInfo `json:"coherence"`
}

// CoherenceInfo says how opens of cached files learn that the copy is
// current: from a change channel (no metadata round trip) or by asking.
type CoherenceInfo struct {
	Mode         string `json:"mode"` // exclusive or check
	Trusted      bool   `json:"trusted"`
	Detail       string `json:"detail"`
	LocalOpens   uint64 `json:"local_opens"`
	CheckedOpens uint64 `json:"checked_opens"`
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

// Section is one subsystem's part of the status.
type Section struct {
	Name  string `json:"name"`
	Title string `json:"title"` // heading in 'disgrafs status'
	// Lines are printed under the heading, one "key: value" per line.
	Lines []string `json:"lines,omitempty"`
	// Data is the machine-readable form, for --json.
	Data any `json:"data,omitempty"`
}

// FUSEInfo sums up the mount's recent FUSE traffic.
type FUSEInfo struct {
	// Window is how many seconds the rates span (up to the last 10 s; less
	// just after the start).
	Window float64 `json:"window_seconds"`
	// Requests per second over the window, all operations together.
	OpsPerSecond float64 `json:"ops_per_second"`
	// Rates per operation with requests in the window, busiest first.
	Rates []OpRate `json:"rates"`
	// Timed is false when latencies are not measured (metrics off).
	Timed bool `json:"timed"`
}

// OpRate is one operation's share of FUSEInfo.
type OpRate struct {
	Op           string  `json:"op"`
	PerSecond    float64 `json:"per_second"`
	AvgLatencyMs float64 `json:"avg_latency_ms"`
	Total        uint64  `json:"total"`
}

// BPFInfo is the eBPF read accounting part of the status.
type BPFInfo struct {
	Mode    string `json:"mode"` // off, auto or on
	Enabled bool   `json:"enabled"`
	// Reason says why it is not enabled.
	Reason string `json:"reason,omitempty"`
	// Error is the last drain error, if the last drain failed.
	Error     string `json:"error,omitempty"`
	ReadCalls uint64 `json:"read_calls"`
	ReadBytes struct {
		Passthrough uint64 `json:"passthrough"`
		PageCache   uint64 `json:"page_cache"`
		Daemon      uint64 `json:"daemon"`
	} `json:"read_bytes"`
	OpenEvents uint64 `json:"open_events"`
	// Lost counts reads and events the kernel side had to drop (full maps).
	Lost uint64 `json:"lost"`
	// ProgramIDs are the kernel ids of the attached programs.
	ProgramIDs []uint32 `json:"program_ids,omitempty"`
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
	AsyncClose    bool              `json:"async_close"`
	ClosesPending int               `json:"async_closes_pending"`
	ClosesLanded  uint64            `json:"async_closes_landed"`
	CloseErrors   uint64            `json:"async_close_errors"`
	ClosesLost    uint64            `json:"async_closes_lost"`
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
	AutoCapacity int    `json:"auto_capacity,omitempty"`
	// Graph latency over the daemon's life, from the metrics decorator.
	GraphCalls        uint64  `json:"graph_calls,omitempty"`
	GraphErrors       uint64  `json:"graph_errors,omitempty"`
	GraphAvgLatencyMs float64 `json:"graph_avg_latency_ms,omitempty"`
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

// BPFTop is the reply of GET /v1/bpf/top: what the last eBPF drain interval saw.
type BPFTop struct {
	Enabled  bool    `json:"enabled"`
	Reason   string  `json:"reason,omitempty"`
	Interval float64 `json:"interval_seconds"` // length of the interval below
	// Bytes applications read in the interval, by source.
	Passthrough uint64 `json:"passthrough_bytes"`
	PageCache   uint64 `json:"page_cache_bytes"`
	Daemon      uint64 `json:"daemon_bytes"`
	ReadCalls   uint64 `json:"read_calls"`
	Opens       uint64 `json:"opens"`
	// Files by bytes read in the interval, hottest first.
	Files []BPFFile `json:"files"`
	// FUSE requests in the interval, by opcode.
	Fuse []BPFFuseOp `json:"fuse"`
}

// BPFFile is one file of BPFTop.
type BPFFile struct {
	Ino         uint64 `json:"ino"`
	Path        string `json:"path,omitempty"`
	Calls       uint64 `json:"calls"`
	Passthrough uint64 `json:"passthrough_bytes"`
	PageCache   uint64 `json:"page_cache_bytes"`
	Daemon      uint64 `json:"daemon_bytes"`
}

// BPFFuseOp is one opcode of BPFTop.
type BPFFuseOp struct {
	Op      string  `json:"op"`
	Count   uint64  `json:"count"`
	Errors  uint64  `json:"errors"`
	AvgSecs float64 `json:"avg_seconds"`
}
