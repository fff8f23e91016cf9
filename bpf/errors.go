package bpf

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Reason says why the programs could not load.
type Reason string

const (
	ReasonUnsupported Reason = "unsupported platform"
	ReasonPermission  Reason = "no permission (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)"
	ReasonNoBTF       Reason = "no kernel BTF (/sys/kernel/btf/vmlinux)"
	ReasonLockdown    Reason = "kernel lockdown forbids it"
	ReasonKernel      Reason = "kernel too old or lacks a needed feature"
	ReasonOther       Reason = "load failed"
)

// LoadError is returned by Load when eBPF accounting is unavailable.
type LoadError struct {
	Reason Reason
	Err    error
}

func (e *LoadError) Error() string {
	if e.Err == nil {
		return "eBPF unavailable: " + string(e.Reason)
	}
	return fmt.Sprintf("eBPF unavailable: %s: %v", e.Reason, e.Err)
}

func (e *LoadError) Unwrap() error { return e.Err }

// classify wraps err, returned while loading or attaching, in a LoadError.
func classify(err error, what string) error {
	err = fmt.Errorf("%s: %w", what, err)
	switch {
	case errors.Is(err, btf.ErrNotSupported):
		return &LoadError{Reason: ReasonNoBTF, Err: err}
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		if lockedDown() {
			return &LoadError{Reason: ReasonLockdown, Err: err}
		}
		return &LoadError{Reason: ReasonPermission, Err: err}
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.ENOENT),
		errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.E2BIG):
		return &LoadError{Reason: ReasonKernel, Err: err}
	}
	return &LoadError{Reason: ReasonOther, Err: err}
}

// lockedDown reports lockdown=confidentiality, which forbids reading kernel
// memory from BPF (integrity mode allows tracing programs of this kind).
func lockedDown() bool {
	b, err := os.ReadFile("/sys/kernel/security/lockdown")
	return err == nil && strings.Contains(string(b), "[confidentiality]")
}
