//go:build !(linux && amd64)

package bpf

import (
	"context"
	"errors"
	"runtime"
)

// Tracer is unavailable on this platform.
type Tracer struct{}

// Load reports that the programs are built for linux/amd64 only.
func Load(ctx context.Context, o Options) (*Tracer, error) {
	return nil, &LoadError{Reason: ReasonUnsupported, Err: errors.New("the BPF objects are built for linux/amd64, this is " + runtime.GOOS + "/" + runtime.GOARCH)}
}

// Drain is never reached: Load fails.
func (t *Tracer) Drain() (Drained, error) { return Drained{}, errors.New("bpf: unsupported platform") }

// Close does nothing.
func (t *Tracer) Close() error { return nil }

// ProgramIDs is empty: nothing is loaded.
func (t *Tracer) ProgramIDs() []uint32 { return nil }
