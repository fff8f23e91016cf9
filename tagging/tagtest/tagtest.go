// Package tagtest holds a fake of tagging's own Files interface for the
// tests of the packages that use tagging.
package tagtest

import (
	"context"
	"strconv"
	"sync"
)

// MemFiles is a tagging.Files over memory. A file's name is "file" and the
// last digit of its inode.
type MemFiles struct {
	mu    sync.Mutex
	xattr map[uint64][]byte
}

// NewMemFiles returns files with no xattrs.
func NewMemFiles() *MemFiles { return &MemFiles{xattr: map[uint64][]byte{}} }

// Xattr returns what the tags xattr of ino holds.
func (m *MemFiles) Xattr(ino uint64) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return string(m.xattr[ino])
}

func (m *MemFiles) GetXattr(ctx context.Context, ino uint64, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.xattr[ino], nil
}

func (m *MemFiles) SetXattr(ctx context.Context, ino uint64, name string, v []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.xattr[ino] = append([]byte(nil), v...)
	return nil
}

func (m *MemFiles) RemoveXattr(ctx context.Context, ino uint64, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.xattr, ino)
	return nil
}

func (m *MemFiles) Name(ctx context.Context, ino uint64) (string, error) {
	return "file" + strconv.FormatUint(ino%10, 10), nil
}
