package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/juicedata/juicefs/pkg/chunk"
	"github.com/juicedata/juicefs/pkg/meta"
	"github.com/juicedata/juicefs/pkg/object"
	"github.com/juicedata/juicefs/pkg/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultName is the name of the embedded default volume.
const DefaultName = "disgrafs"

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]$`)

// FormatOptions describes a new volume.
type FormatOptions struct {
	MetaURL      string
	Name         string
	Storage      string // file, s3, redis, ...
	Bucket       string
	AccessKey    string // falls back to $ACCESS_KEY
	SecretKey    string // falls back to $SECRET_KEY
	BlockSizeKiB int    // 4096 when zero
	Compression  string // "none" when empty
	TrashDays    int
}

// ErrNotFormatted is returned by Connect for a metadata engine that holds no volume.
var ErrNotFormatted = errors.New("metadata engine holds no volume")

// Format creates a volume; formatting an already formatted engine with the same
// name and storage is a no-op that returns the existing format.
func Format(ctx context.Context, o FormatOptions) (*meta.Format, error) {
	if !validName.MatchString(o.Name) {
		return nil, fmt.Errorf("invalid volume name %q: use 3 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit", o.Name)
	}
	metaURL, err := NormalizeMetaURL(o.MetaURL)
	if err != nil {
		return nil, err
	}
	if o.Storage == "" {
		o.Storage = "file"
	}
	if o.Bucket == "" {
		return nil, errors.New("no bucket: give --bucket (a directory for file storage, a URL for s3 or redis)")
	}
	if o.AccessKey == "" {
		o.AccessKey = os.Getenv("ACCESS_KEY")
	}
	if o.SecretKey == "" {
		o.SecretKey = os.Getenv("SECRET_KEY")
	}
	if o.BlockSizeKiB == 0 {
		o.BlockSizeKiB = 4096
	}
	if o.Compression == "" {
		o.Compression = "none"
	}
	if err := CheckReachable(ctx, metaURL); err != nil {
		return nil, err
	}
	m := meta.NewClient(metaURL, meta.DefaultConf())
	defer func() { _ = m.Shutdown() }()
	if existing, err := m.Load(false); err == nil {
		if existing.Name != o.Name {
			return nil, fmt.Errorf("%s already holds volume %q; refusing to format it as %q", MaskURL(metaURL), existing.Name, o.Name)
		}
		return existing, nil
	} else if !strings.HasPrefix(err.Error(), "database is not formatted") {
		return nil, fmt.Errorf("load metadata from %s: %w", MaskURL(metaURL), err)
	}
	if o.Storage == "file" {
		p, err := filepath.Abs(o.Bucket)
		if err != nil {
			return nil, fmt.Errorf("bucket path %q: %w", o.Bucket, err)
		}
		o.Bucket = p + "/"
	}
	f := &meta.Format{
		Name:             o.Name,
		UUID:             uuid.New().String(),
		Storage:          o.Storage,
		Tiers:            object.NewTiers(""),
		Bucket:           o.Bucket,
		AccessKey:        o.AccessKey,
		SecretKey:        o.SecretKey,
		BlockSize:        o.BlockSizeKiB,
		Compression:      o.Compression,
		TrashDays:        o.TrashDays,
		DirStats:         true,
		MetaVersion:      meta.MaxVersion,
		MinClientVersion: "1.1.0-A",
	}
	blob, err := createStorage(*f)
	if err != nil {
		return nil, err
	}
	defer object.Shutdown(blob)
	if err := probeStorage(ctx, blob); err != nil {
		return nil, fmt.Errorf("object storage %s is not usable: %w", MaskURL(o.Bucket), err)
	}
	if err := blob.Put(ctx, "juicefs_uuid", strings.NewReader(f.UUID)); err != nil {
		return nil, fmt.Errorf("write volume id to %s: %w", MaskURL(o.Bucket), err)
	}
	if err := f.Encrypt(); err != nil {
		return nil, fmt.Errorf("encrypt secrets: %w", err)
	}
	if err := m.Init(f, false); err != nil {
		_ = blob.Delete(ctx, "juicefs_uuid")
		return nil, fmt.Errorf("format %s: %w", MaskURL(metaURL), err)
	}
	return f, nil
}

// createStorage opens the object storage of a volume, under the volume's prefix.
func createStorage(f meta.Format) (object.ObjectStorage, error) {
	if err := f.Decrypt(); err != nil {
		return nil, fmt.Errorf("decrypt storage secrets: %w", err)
	}
	blob, err := object.CreateStorage(strings.ToLower(f.Storage), f.Bucket, f.AccessKey, f.SecretKey, f.SessionToken)
	if err != nil {
		return nil, fmt.Errorf("object storage %s %s: %w", f.Storage, MaskURL(f.Bucket), err)
	}
	return object.WithPrefix(blob, f.Name+"/"), nil
}

// probeStorage writes, reads and deletes a small object so that a misconfigured
// bucket fails at format or mount time rather than as EIO in the middle of a job.
func probeStorage(ctx context.Context, blob object.ObjectStorage) error {
	key := "testing/disgrafs-probe-" + uuid.NewString()
	data := []byte("disgrafs storage probe")
	if err := blob.Put(ctx, key, bytes.NewReader(data)); err != nil {
		if cerr := blob.Create(ctx); cerr == nil {
			err = blob.Put(ctx, key, bytes.NewReader(data))
		}
		if err != nil {
			return fmt.Errorf("put: %w", err)
		}
	}
	defer func() { _ = blob.Delete(ctx, key) }()
	r, err := blob.Get(ctx, key, 0, -1)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("read back different bytes")
	}
	return nil
}

// Conn is a connection to a formatted volume's metadata engine.
type Conn struct {
	URL    string
	Meta   meta.Meta
	Format *meta.Format
}

// ConnectOptions tune the metadata client.
type ConnectOptions struct {
	Mountpoint string
	ReadOnly   bool
}

// Connect checks the metadata engine and loads the volume's format.
func Connect(ctx context.Context, metaURL string, o ConnectOptions) (*Conn, error) {
	metaURL, err := NormalizeMetaURL(metaURL)
	if err != nil {
		return nil, err
	}
	if err := CheckReachable(ctx, metaURL); err != nil {
		return nil, err
	}
	conf := meta.DefaultConf()
	conf.MountPoint = o.Mountpoint
	conf.ReadOnly = o.ReadOnly
	conf.Retries = 10
	conf.Heartbeat = 12 * time.Second
	conf.MaxDeletes = 10
	conf.SkipDirMtime = 100 * time.Millisecond
	conf.AtimeMode = meta.NoAtime
	m := meta.NewClient(metaURL, conf)
	f, err := m.Load(true)
	if err != nil {
		_ = m.Shutdown()
		if strings.HasPrefix(err.Error(), "database is not formatted") {
			return nil, fmt.Errorf("%s: %w: run 'disgrafs format --meta URL NAME' first", MaskURL(metaURL), ErrNotFormatted)
		}
		return nil, fmt.Errorf("load volume from %s: %w", MaskURL(metaURL), err)
	}
	return &Conn{URL: metaURL, Meta: m, Format: f}, nil
}

// Close releases a connection that was not turned into a Volume.
func (c *Conn) Close() error { return c.Meta.Shutdown() }

// Options configure an open volume.
type Options struct {
	Mountpoint      string
	CacheDir        string
	CacheSize       uint64 // bytes of JuiceFS block cache; 0 disables the disk cache
	FreeSpaceRatio  float64
	BufferSize      uint64 // bytes of read/write buffer
	AttrTimeout     time.Duration
	EntryTimeout    time.Duration
	DirEntryTimeout time.Duration
	// StatePath is where JuiceFS would look for the open-handle state of a
	// previous process (used by juicefs's own graceful upgrade). Point it at a
	// file in the daemon's state directory; it is never written by us.
	StatePath  string
	Registerer prometheus.Registerer
	Registry   *prometheus.Registry
}

// Volume is an open JuiceFS volume: metadata client, object storage, chunk store
// and the VFS layer the FUSE tree calls.
type Volume struct {
	URL    string
	Format *meta.Format
	Meta   meta.Meta
	VFS    *vfs.VFS
	Store  chunk.ChunkStore
	Conf   *vfs.Config
	blob   object.ObjectStorage
}

// Open turns a connection into a serving volume. On success the Conn belongs to
// the Volume.
func (c *Conn) Open(ctx context.Context, o Options) (*Volume, error) {
	f := c.Format
	blob, err := createStorage(*f)
	if err != nil {
		return nil, err
	}
	if err := probeStorage(ctx, blob); err != nil {
		object.Shutdown(blob)
		return nil, fmt.Errorf("object storage %s is not usable: %w", MaskURL(f.Bucket), err)
	}
	if o.BufferSize == 0 {
		o.BufferSize = 300 << 20
	}
	if o.FreeSpaceRatio == 0 {
		o.FreeSpaceRatio = 0.1
	}
	cc := chunk.Config{
		BlockSize:         f.BlockSize * 1024,
		Compress:          f.Compression,
		HashPrefix:        f.HashPrefix,
		GetTimeout:        60 * time.Second,
		PutTimeout:        60 * time.Second,
		MaxUpload:         20,
		MaxDownload:       200,
		MaxStageWrite:     1000,
		MaxRetries:        10,
		Prefetch:          1,
		BufferSize:        o.BufferSize,
		CacheDir:          o.CacheDir,
		CacheSize:         o.CacheSize,
		FreeSpace:         float32(o.FreeSpaceRatio),
		CacheMode:         0600,
		CacheFullBlock:    true,
		CacheChecksum:     "extend",
		CacheEviction:     "2-random",
		CacheScanInterval: time.Hour,
		OSCache:           true,
		AutoCreate:        true,
	}
	cc.Readahead = 8 * cc.BlockSize
	cc.SelfCheck(f.UUID)
	store := chunk.NewCachedStore(blob, cc, o.Registerer)
	c.Meta.OnMsg(meta.DeleteSlice, func(args ...interface{}) error {
		return store.Remove(args[0].(uint64), int(args[1].(uint32)))
	})
	c.Meta.OnMsg(meta.CompactChunk, func(args ...interface{}) error {
		return vfs.Compact(cc, store, args[0].([]meta.Slice), args[1].(uint64), args[2].(uint8))
	})
	if err := c.Meta.NewSession(true); err != nil {
		object.Shutdown(blob)
		return nil, fmt.Errorf("start metadata session: %w", err)
	}
	metaConf := meta.DefaultConf()
	metaConf.MountPoint = o.Mountpoint
	conf := &vfs.Config{
		Meta:            metaConf,
		Format:          *f,
		Chunk:           &cc,
		Security:        &vfs.SecurityConfig{},
		Port:            &vfs.Port{},
		Version:         "disgrafs",
		AttrTimeout:     o.AttrTimeout,
		EntryTimeout:    o.EntryTimeout,
		DirEntryTimeout: o.DirEntryTimeout,
		HideInternal:    true,
		UMask:           0xFFFF,
		Pid:             os.Getpid(),
		PPid:            os.Getppid(),
		Mountpoint:      o.Mountpoint,
		FuseOpts:        &vfs.FuseOptions{},
	}
	if o.StatePath != "" {
		// NewVFS reads the path from the environment only.
		_ = os.Setenv("_FUSE_STATE_PATH", o.StatePath)
	}
	c.Meta.InitMetrics(o.Registerer)
	vfs.InitMetrics(o.Registerer)
	v := vfs.NewVFS(conf, openWithAttrs{c.Meta}, store, o.Registerer, o.Registry)
	return &Volume{URL: c.URL, Format: f, Meta: c.Meta, VFS: v, Store: store, Conf: conf, blob: blob}, nil
}

// Close flushes buffered writes, ends the metadata session and closes storage.
func (v *Volume) Close() error {
	var errs []error
	if err := v.VFS.FlushAll(""); err != nil {
		errs = append(errs, fmt.Errorf("flush buffered data: %w", err))
	}
	if err := v.Meta.CloseSession(); err != nil {
		errs = append(errs, fmt.Errorf("close metadata session: %w", err))
	}
	object.Shutdown(v.blob)
	if err := v.Meta.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("close metadata client: %w", err))
	}
	return errors.Join(errs...)
}

// StorageURL is the object storage of the volume, password masked.
func (v *Volume) StorageURL() string {
	return v.Format.Storage + "://" + strings.TrimPrefix(MaskURL(v.Format.Bucket), v.Format.Storage+"://")
}

// Embedded describes the embedded default volume under a data directory.
type Embedded struct {
	Dir string
}

// DefaultDataDir is /var/lib/disgrafs for root and the XDG data directory
// ($XDG_DATA_HOME/disgrafs, ~/.local/share/disgrafs) for other users.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/disgrafs"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "disgrafs")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), fmt.Sprintf("disgrafs-%d", os.Geteuid()))
	}
	return filepath.Join(home, ".local", "share", "disgrafs")
}

// MetaURL is the SQLite metadata URL of the embedded volume.
func (e Embedded) MetaURL() string { return "sqlite3://" + filepath.Join(e.Dir, "meta.db") }

// Bucket is the local object directory of the embedded volume.
func (e Embedded) Bucket() string { return filepath.Join(e.Dir, "objects") }

// EmbeddedAt returns the embedded volume whose database a metadata URL names
// (sqlite3://DIR/meta.db of a directory laid out as an embedded volume), so
// that mounting it by URL takes the same lock as mounting it by default.
func EmbeddedAt(metaURL string) (Embedded, bool) {
	p, ok := strings.CutPrefix(metaURL, "sqlite3://")
	if !ok {
		return Embedded{}, false
	}
	p, _, _ = strings.Cut(p, "?")
	e := Embedded{Dir: filepath.Dir(filepath.Clean(p))}
	if filepath.Base(p) != "meta.db" {
		return Embedded{}, false
	}
	if fi, err := os.Stat(e.Bucket()); err != nil || !fi.IsDir() {
		return Embedded{}, false
	}
	return e, true
}

// LockPath is the file a daemon holds locked while it mounts the embedded volume.
func (e Embedded) LockPath() string { return filepath.Join(e.Dir, "mount.lock") }

// Ensure creates and formats the embedded volume on first use and returns its
// metadata URL.
func (e Embedded) Ensure(ctx context.Context) (string, error) {
	if err := os.MkdirAll(e.Dir, 0o700); err != nil {
		return "", fmt.Errorf("create data directory: %w", err)
	}
	if err := os.MkdirAll(e.Bucket(), 0o700); err != nil {
		return "", fmt.Errorf("create object directory: %w", err)
	}
	_, statErr := os.Stat(filepath.Join(e.Dir, "meta.db"))
	existed := statErr == nil
	// Format is idempotent for an engine that already holds this volume.
	if _, err := Format(ctx, FormatOptions{
		MetaURL:   e.MetaURL(),
		Name:      DefaultName,
		Storage:   "file",
		Bucket:    e.Bucket(),
		TrashDays: 0,
	}); err != nil {
		// Leave no half-formatted database behind (the next mount retries), but
		// never touch a database that was there before.
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if !existed {
				_ = os.Remove(filepath.Join(e.Dir, "meta.db"+suffix))
			}
		}
		return "", fmt.Errorf("create the embedded default volume in %s: %w", e.Dir, err)
	}
	return e.MetaURL(), nil
}
