package fusefs

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/juicedata/juicefs/pkg/meta"
)

// handle is one open file handle (a JuiceFS file handle number): one entry
// per handle, with a slot for each layer that keeps state per handle, as
// go-fuse's fs/ keeps one fileEntry per handle. The layer that obtained the
// JuiceFS handle adds the entry (the base layer for opens and creates, the
// pre-allocation layer for creates answered from its pool); the base layer
// removes it at RELEASE, before it releases the JuiceFS handle, whose number
// may then be handed to a new open. Slots are atomic: a layer writes its own
// after the entry is published and others may read it meanwhile.
type handle struct {
	fh, ino uint64
	// attr is the file's attributes as JuiceFS opened it (zero for a
	// create answered from the pre-allocation pool); validated: the kernel
	// received them in the reply to this open's own LOOKUP. These are set
	// before the entry is published and never change.
	attr      meta.Attr
	validated bool
	// vouched: attr came from the cache layer's trust (a copy known current
	// through the change channel), not from the metadata engine.
	vouched bool
	// wrote: opened for writing or created; the base layer calls the
	// written hook (the auto-tagger) after its release.
	wrote atomic.Bool
	// dirty: written through since its last flush or fsync (the cache
	// layer publishes the change to other nodes at the next one).
	dirty atomic.Bool
	// async: the pre-allocation layer may answer this handle's close early
	// (nil: an ordinary close).
	async atomic.Pointer[asyncHandle]
	// cached: how the cache layer serves this handle's reads (nil: the
	// cache layer is off, or has not seen the open, as for a create).
	cached atomic.Pointer[cachedHandle]
}

// handleTable holds every open file handle of the mount, by handle number and
// by inode.
type handleTable struct {
	mu   sync.Mutex
	byFh map[uint64]*handle
	// byIno lists each inode's handles. An inode nearly always has one, so
	// a slice: adding it to a new inode allocates nothing beyond the slice.
	byIno map[uint64][]*handle
}

func newHandleTable() *handleTable {
	return &handleTable{byFh: map[uint64]*handle{}, byIno: map[uint64][]*handle{}}
}

// add publishes h.
func (t *handleTable) add(h *handle) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byFh[h.fh] = h
	t.byIno[h.ino] = append(t.byIno[h.ino], h)
}

// get returns the handle fh, nil when it is not open.
func (t *handleTable) get(fh uint64) *handle {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byFh[fh]
}

// remove forgets fh and returns its entry (nil when it was not open).
func (t *handleTable) remove(fh uint64) *handle {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.byFh[fh]
	if h == nil {
		return nil
	}
	delete(t.byFh, fh)
	hs := t.byIno[h.ino]
	if i := slices.Index(hs, h); i >= 0 {
		hs = slices.Delete(hs, i, i+1)
	}
	if len(hs) == 0 {
		delete(t.byIno, h.ino)
	} else {
		t.byIno[h.ino] = hs
	}
	return h
}

// each calls fn with every open handle of ino. It holds the table's lock:
// fn must not block or call the table.
func (t *handleTable) each(ino uint64, fn func(*handle)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, h := range t.byIno[ino] {
		fn(h)
	}
}

// len is the number of open handles.
func (t *handleTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byFh)
}
