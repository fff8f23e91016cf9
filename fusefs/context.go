package fusefs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/juicedata/juicefs/pkg/meta"
)

// reqContext carries the caller's credentials and the kernel's interrupt
// channel of one FUSE request into JuiceFS (it implements vfs.LogContext).
type reqContext struct {
	context.Context
	start    time.Time
	uid      uint32
	gid      uint32
	pid      uint32
	cancel   <-chan struct{}
	canceled bool
	// listing: the request replies with entries of a directory listing
	// that JuiceFS may have read at an earlier request of its handle.
	listing bool
	// validated holds attributes of validatedIno that this request's own
	// path walk has just read from the metadata engine (see openvalid.go).
	validated    *meta.Attr
	validatedIno meta.Ino
}

func newContext(cancel <-chan struct{}, h *fuse.InHeader) *reqContext {
	return &reqContext{
		Context: context.Background(),
		start:   time.Now(),
		uid:     h.Uid,
		gid:     h.Gid,
		pid:     h.Pid,
		cancel:  cancel,
	}
}

func (c *reqContext) Uid() uint32    { return c.uid }
func (c *reqContext) Gid() uint32    { return c.gid }
func (c *reqContext) Gids() []uint32 { return []uint32{c.gid} }
func (c *reqContext) Pid() uint32    { return c.pid }

// CheckPermission is false: the mount uses the kernel's default_permissions,
// which checks mode bits with the caller's full credentials (supplementary
// groups included) before a request reaches us.
func (c *reqContext) CheckPermission() bool   { return false }
func (c *reqContext) Duration() time.Duration { return time.Since(c.start) }
func (c *reqContext) Cancel()                 { c.canceled = true }
func (c *reqContext) Err() error              { return syscall.EINTR }

// interruptGrace is how long a request runs before the kernel's interrupt
// cancels it. Threads blocked in a system call on the mount get signals that
// are not meant to stop it (the Go runtime preempts with SIGURG); the kernel
// forwards each as an INTERRUPT, and honouring it at once would fail a quick
// removexattr or rename with EINTR that the caller never asked for. A request
// blocked longer (the metadata engine down) is still interrupted.
const interruptGrace = time.Second

func (c *reqContext) Canceled() bool {
	if c.canceled {
		return true
	}
	select {
	case <-c.cancel:
		return time.Since(c.start) >= interruptGrace
	default:
		return false
	}
}

func (c *reqContext) WithValue(k, v interface{}) meta.Context {
	wc := *c
	wc.Context = context.WithValue(c.Context, k, v)
	return &wc
}
