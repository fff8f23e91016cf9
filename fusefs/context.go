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

func (c *reqContext) Canceled() bool {
	if c.canceled {
		return true
	}
	select {
	case <-c.cancel:
		return true
	default:
		return false
	}
}

func (c *reqContext) WithValue(k, v interface{}) meta.Context {
	wc := *c
	wc.Context = context.WithValue(c.Context, k, v)
	return &wc
}
