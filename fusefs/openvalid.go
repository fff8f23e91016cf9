package fusefs

import (
	"context"
	"sync"
	"time"

	"github.com/juicedata/juicefs/pkg/meta"
)

// An open must see what another node closed before it (close-to-open), so
// JuiceFS reads the file's attributes from the metadata engine at every
// open: one round trip. When the kernel had no dentry for the file, the same
// open() system call first sent a LOOKUP, which has just read the same
// attributes from the engine. Like NFS, which counts a LOOKUP made during the
// open's path walk as the open's revalidation, the open then uses them
// instead of asking again: one round trip per file instead of two.
//
// The kernel does not say which system call a request belongs to. A LOOKUP
// answered for the same thread and inode at most OpenCheckWindow before the
// OPEN is taken to be its path walk; a thread that stat()s a file and opens
// it within that window reads the version the stat saw, as if the open had
// happened at the stat.

// lookupSlots is how many recent lookups are remembered. A lookup followed
// by an open of the same file by the same thread within the window is what
// counts, so a small table overwritten in place is enough; a slot lost to a
// collision only costs the round trip this saves.
const lookupSlots = 1024

type lookupRecord struct {
	ino  meta.Ino
	pid  uint32
	at   time.Time
	attr meta.Attr
}

// lookupMemo holds the attributes of recent lookups, for the opens that
// follow them.
type lookupMemo struct {
	window time.Duration
	mu     sync.Mutex
	slots  [lookupSlots]lookupRecord
}

func newLookupMemo(window time.Duration) *lookupMemo {
	if window <= 0 {
		return nil
	}
	return &lookupMemo{window: window}
}

// forget drops what a lookup recorded of ino: it changed on another node.
func (m *lookupMemo) forget(ino uint64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	if r := &m.slots[ino%lookupSlots]; uint64(r.ino) == ino {
		*r = lookupRecord{}
	}
	m.mu.Unlock()
}

// invalidateAllChunks is JuiceFS's index for every chunk of a file
// (pkg/meta/openfile.go).
const invalidateAllChunks = 0xFFFFFFFF

// forgetRemote drops what the base layer and JuiceFS remember of a file
// another node changed: the lookup memo, and the slice lists JuiceFS keeps
// across opens while the file's mtime is unchanged (an overwrite that keeps
// the mtime would otherwise read the old slices).
func (b *baseFS) forgetRemote(ino uint64) {
	b.lookups.forget(ino)
	b.v.Meta.InvalidateChunkCache(meta.Background(), meta.Ino(ino), invalidateAllChunks)
}

// listDir returns a directory's names and inodes from the metadata engine.
func (b *baseFS) listDir(_ context.Context, dir uint64) (map[string]uint64, error) {
	var ents []*meta.Entry
	if errno := b.v.Meta.Readdir(meta.Background(), meta.Ino(dir), 0, &ents); errno != 0 {
		return nil, errno
	}
	out := make(map[string]uint64, len(ents))
	for _, e := range ents {
		out[string(e.Name)] = uint64(e.Inode)
	}
	return out, nil
}

// note records the attributes a lookup has just read from the engine.
func (m *lookupMemo) note(pid uint32, ino meta.Ino, attr *meta.Attr) {
	if m == nil || attr == nil || attr.Typ != meta.TypeFile || !attr.Full {
		return
	}
	m.mu.Lock()
	m.slots[uint64(ino)%lookupSlots] = lookupRecord{ino: ino, pid: pid, at: time.Now(), attr: *attr}
	m.mu.Unlock()
}

// take returns the attributes of a lookup of ino by the same thread within
// the window, once: a second open must ask the engine again.
func (m *lookupMemo) take(pid uint32, ino meta.Ino) (meta.Attr, bool) {
	if m == nil {
		return meta.Attr{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := &m.slots[uint64(ino)%lookupSlots]
	if r.ino != ino || r.pid != pid || time.Since(r.at) > m.window {
		return meta.Attr{}, false
	}
	attr := r.attr
	*r = lookupRecord{}
	return attr, true
}

// ValidatedAttr hands JuiceFS the attributes this open's own LOOKUP read
// (volume.ValidatedAttrs: the volume's metadata client asks for them).
func (c *reqContext) ValidatedAttr(ino meta.Ino) (*meta.Attr, bool) {
	if c.validated == nil || c.validatedIno != ino {
		return nil, false
	}
	return c.validated, true
}
