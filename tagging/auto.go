package tagging

import (
	"bytes"
	"context"
	"errors"
	"image"
	_ "image/gif" // register decoders for image dimension tags
	_ "image/jpeg"
	_ "image/png"
	"log/slog"
	"net/http"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/disgrafs/disgrafs/graph"
)

// Content is what the auto-tagger reads of a file.
type Content interface {
	// Head returns up to n bytes from the start of the file.
	Head(ctx context.Context, ino uint64, n int) ([]byte, error)
	// Path returns one path of the file relative to the volume root ("/a/b.png").
	Path(ctx context.Context, ino uint64) (string, error)
}

// AutoOptions configure automatic tags.
type AutoOptions struct {
	// DirLevels is how many of the nearest parent directory names become tags
	// (train/cat/001.png gets "train" and "cat" with 2); 0 turns them off.
	DirLevels int
	// Kind adds the file's kind (image, video, audio, text, archive, pdf).
	Kind bool
	// ImageSize adds image-small/-medium/-large from the image's dimensions.
	ImageSize bool
	// Keywords is how many top keywords of a text file become tags ("kw:word").
	Keywords int
	// TextMax is the largest text file read for keywords.
	TextMax int
	// Command, when set, is run with the file's path (under Mountpoint) and
	// prints tags, one per line or comma separated.
	Command        string
	CommandTimeout time.Duration
	Mountpoint     string
	// Queue bounds the files waiting; past it new files are not auto-tagged.
	Queue int
}

// DefaultAutoOptions is what a mount uses unless configured otherwise.
func DefaultAutoOptions() AutoOptions {
	return AutoOptions{DirLevels: 2, Kind: true, ImageSize: true, Keywords: 3, TextMax: 1 << 20,
		CommandTimeout: 10 * time.Second, Queue: 100000}
}

// AutoTagger tags files in the background after they are written.
type AutoTagger struct {
	svc   *Service
	src   Content
	opts  AutoOptions
	log   *slog.Logger
	queue chan uint64
	idle  atomic.Pointer[func() bool]

	Done    atomic.Uint64 // files auto-tagged
	Failed  atomic.Uint64 // files whose auto-tagging failed
	Dropped atomic.Uint64 // files not queued because the queue was full
}

// NewAutoTagger returns a tagger; call Run to start it.
func NewAutoTagger(svc *Service, src Content, opts AutoOptions, log *slog.Logger) *AutoTagger {
	if opts.Queue <= 0 {
		opts.Queue = 100000
	}
	return &AutoTagger{svc: svc, src: src, opts: opts, log: log, queue: make(chan uint64, opts.Queue)}
}

// SetIdle gives the tagger a test for an idle mount; it then tags only while
// the mount is idle (or, under endless load, one file every maxYield).
func (a *AutoTagger) SetIdle(idle func() bool) { a.idle.Store(&idle) }

const maxYield = 10 * time.Second

func (a *AutoTagger) waitIdle(ctx context.Context) {
	p := a.idle.Load()
	if p == nil {
		return
	}
	deadline := time.Now().Add(maxYield)
	for !(*p)() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Enqueue asks for a file to be tagged; it never blocks.
func (a *AutoTagger) Enqueue(ino uint64) {
	select {
	case a.queue <- ino:
	default:
		a.Dropped.Add(1)
	}
}

// Queued is the number of files waiting.
func (a *AutoTagger) Queued() int { return len(a.queue) }

// Run tags queued files until ctx ends.
func (a *AutoTagger) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ino := <-a.queue:
			a.waitIdle(ctx)
			if err := a.tag(ctx, ino); err != nil {
				a.Failed.Add(1)
				a.log.Debug("auto-tagging failed", "ino", ino, "error", err)
			}
		}
	}
}

func (a *AutoTagger) tag(ctx context.Context, ino uint64) error {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CommandTimeout+30*time.Second)
	defer cancel()
	p, err := a.src.Path(ctx, ino)
	if err != nil {
		return err // deleted meanwhile
	}
	head, err := a.src.Head(ctx, ino, max(a.opts.TextMax, 512))
	if err != nil {
		return err
	}
	tags := Rules(a.opts, p, head)
	if a.opts.Command != "" {
		extra, err := a.runCommand(ctx, filepath.Join(a.opts.Mountpoint, p))
		if err != nil {
			a.log.Warn("external tagger failed", "path", p, "error", err)
		}
		tags = append(tags, extra...)
	}
	if len(tags) == 0 {
		return nil
	}
	if _, err := a.svc.Modify(ctx, ino, tags, nil); err != nil {
		return err
	}
	a.Done.Add(1)
	return nil
}

func (a *AutoTagger) runCommand(ctx context.Context, file string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CommandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", a.opts.Command+` "$1"`, "tagger", file).Output()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil, errors.New("timed out after " + a.opts.CommandTimeout.String())
	}
	if err != nil {
		return nil, err
	}
	var tags []string
	for _, f := range strings.FieldsFunc(string(out), func(r rune) bool { return r == ',' || r == '\n' }) {
		t := strings.TrimSpace(f)
		if graph.ValidTag(t) == nil {
			tags = append(tags, t)
		}
	}
	return tags, nil
}

// Rules computes the automatic tags of a file from its path and first bytes.
func Rules(o AutoOptions, p string, head []byte) []string {
	var tags []string
	add := func(t string) {
		if graph.ValidTag(t) == nil && !contains(tags, t) {
			tags = append(tags, t)
		}
	}
	if o.DirLevels > 0 {
		dirs := strings.Split(strings.Trim(path.Dir(p), "/"), "/")
		if len(dirs) > o.DirLevels {
			dirs = dirs[len(dirs)-o.DirLevels:]
		}
		for _, d := range dirs {
			if d != "" && d != "." {
				add(d)
			}
		}
	}
	kind := Kind(p, head)
	if o.Kind && kind != "" {
		add(kind)
	}
	if o.ImageSize && kind == "image" {
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(head)); err == nil {
			add(sizeClass(cfg.Width, cfg.Height))
		}
	}
	if o.Keywords > 0 && kind == "text" && len(head) <= o.TextMax {
		for _, k := range Keywords(head, o.Keywords) {
			add("kw:" + k)
		}
	}
	return tags
}

func contains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

var extKinds = map[string]string{
	".png": "image", ".jpg": "image", ".jpeg": "image", ".gif": "image", ".bmp": "image", ".webp": "image", ".tif": "image", ".tiff": "image",
	".mp4": "video", ".mkv": "video", ".avi": "video", ".mov": "video", ".webm": "video", ".h264": "video",
	".mp3": "audio", ".wav": "audio", ".flac": "audio", ".ogg": "audio", ".m4a": "audio",
	".txt": "text", ".md": "text", ".csv": "text", ".json": "text", ".xml": "text", ".yaml": "text", ".yml": "text", ".log": "text",
	".zip": "archive", ".tar": "archive", ".gz": "archive", ".tgz": "archive", ".bz2": "archive", ".xz": "archive", ".zst": "archive", ".7z": "archive",
	".pdf": "pdf",
}

// Kind guesses a file's kind from its content, then its extension.
func Kind(p string, head []byte) string {
	if len(head) > 0 {
		ct := http.DetectContentType(head)
		switch {
		case strings.HasPrefix(ct, "image/"):
			return "image"
		case strings.HasPrefix(ct, "video/"):
			return "video"
		case strings.HasPrefix(ct, "audio/"):
			return "audio"
		case ct == "application/pdf":
			return "pdf"
		case ct == "application/zip", ct == "application/x-gzip", ct == "application/x-rar-compressed", ct == "application/vnd.rar":
			return "archive"
		}
		if k := extKinds[strings.ToLower(path.Ext(p))]; k != "" {
			return k
		}
		if strings.HasPrefix(ct, "text/") {
			return "text"
		}
		return ""
	}
	return extKinds[strings.ToLower(path.Ext(p))]
}

func sizeClass(w, h int) string {
	m := max(w, h)
	switch {
	case m <= 256:
		return "image-small"
	case m <= 1024:
		return "image-medium"
	}
	return "image-large"
}

var stopwords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`about above after again against also because been before being below between both
	cannot could does doing down during each from further have having here hers herself himself into itself just more most
	myself once only other ought ours ourselves over same shall should some such than that their theirs them themselves then
	there these they this those through under until very were what when where which while whom with would your yours yourself
	yourselves will into onto upon also like make made many much must need none nothing what`) {
		stopwords[w] = true
	}
}

// Keywords returns the n most frequent words (4+ letters, not stopwords,
// seen at least twice) of a text, most frequent first.
func Keywords(text []byte, n int) []string {
	counts := map[string]int{}
	for _, w := range strings.FieldsFunc(strings.ToLower(string(text)), func(r rune) bool { return !unicode.IsLetter(r) }) {
		if len([]rune(w)) >= 4 && len(w) <= 40 && !stopwords[w] {
			counts[w]++
		}
	}
	type wc struct {
		w string
		c int
	}
	var all []wc
	for w, c := range counts {
		if c >= 2 {
			all = append(all, wc{w, c})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].c != all[j].c {
			return all[i].c > all[j].c
		}
		return all[i].w < all[j].w
	})
	out := make([]string, 0, n)
	for i := 0; i < len(all) && i < n; i++ {
		out = append(out, all[i].w)
	}
	return out
}
