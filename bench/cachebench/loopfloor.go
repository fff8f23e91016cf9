package main

// The floor one OPEN request allows: a go-fuse loopback of a native
// directory whose OPEN is answered from memory (no file opened, no system
// call) with FOPEN_KEEP_CACHE and FOPEN_NOFLUSH, and whose entries and
// attributes the kernel keeps for an hour. With the page cache warm an epoch
// over it costs one OPEN and one RELEASE per file and nothing else: what the
// default disgrafs mount is measured against ("cachebench loopfloor DIR MNT"
// serves it until SIGTERM).

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// floorNode is a loopback node whose opens cost no system call.
type floorNode struct {
	*fs.LoopbackNode
}

var (
	_ fs.NodeOpener      = (*floorNode)(nil)
	_ fs.NodeReader      = (*floorNode)(nil)
	_ fs.NodeWrapChilder = (*floorNode)(nil)
)

// WrapChild makes every node below the root a floorNode too.
func (n *floorNode) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &floorNode{LoopbackNode: ops.(*fs.LoopbackNode)}
}

// Open answers from memory: reads (page cache misses only) open the file.
func (n *floorNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
}

// Read serves a page cache miss from the underlying file.
func (n *floorNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	p := filepath.Join(n.RootData.Path, n.Path(n.Root()))
	f, err := os.Open(p)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	defer f.Close()
	k, err := f.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func loopfloorMain(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: cachebench loopfloor DIR MNT")
		return 2
	}
	var st syscall.Stat_t
	if err := syscall.Stat(args[0], &st); err != nil {
		fmt.Fprintln(os.Stderr, "loopfloor:", err)
		return 1
	}
	root := &fs.LoopbackRoot{Path: args[0], Dev: uint64(st.Dev)}
	hour := time.Hour
	server, err := fs.Mount(args[1], &floorNode{LoopbackNode: &fs.LoopbackNode{RootData: root}}, &fs.Options{
		EntryTimeout: &hour, AttrTimeout: &hour,
		MountOptions: fuse.MountOptions{FsName: "loopfloor", Name: "loopfloor", AllowOther: true, MaxReadAhead: 1 << 20},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "loopfloor:", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { // owner: main; ends with the process
		<-sig
		_ = server.Unmount()
	}()
	server.Wait()
	return 0
}
