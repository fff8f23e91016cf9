// Package bpf accounts reads of one FUSE mount with eBPF, including the reads
// the daemon never sees (FUSE passthrough and the page cache), and times the
// FUSE requests the kernel sends to the daemon.
//
// The programs (reads.c, built with bpf2go; the objects are committed) attach
// to BTF tracepoints only, which work where kprobes and fentry do not:
//
//   - tp_btf/sys_enter and tp_btf/sys_exit: read, pread64, readv, preadv and
//     preadv2 are resolved at entry (fd -> struct file -> inode; kept only when
//     the inode's superblock is the mount's device) and counted at exit with
//     the returned size, per inode and per (inode, process). openat, openat2,
//     open and creat exits of files on the mount become open events.
//   - tp_btf/fuse_request_send and tp_btf/fuse_request_end: count and latency
//     per opcode for requests of this mount's connection, and the bytes of each
//     FUSE READ reply per inode (node ids are mapped to inode numbers as
//     reads see them; for DisGraFS they are equal).
//
// Counters live in per-CPU maps and open events go into a ring buffer submitted
// without wake-ups: nothing reaches user space per read. [Tracer.Drain] reads
// them on the caller's interval and returns deltas; what the kernel side had
// to drop (full maps, a full ring) is counted in [Lost]. [Tracer.Close]
// detaches and frees everything; the links are not pinned, so a killed
// process leaves nothing behind either.
//
// The daemon (package daemon, --bpf) drains every second. Every [Drained]
// goes first to the consumers registered with Daemon.AddBPFSink: the cache
// (recency and hits of files read through passthrough: the Passthrough counts
// per inode) and the prefetcher (co-access: the reads, per process), then to
// [Metrics.Observe], so that the counters never show a read the cache has
// not seen.
//
// # Where a read's bytes came from
//
// At entry each read is classified from the open file (struct fuse_file):
// [Passthrough] when the file has a passthrough backing file (no FUSE READ is
// ever sent), [Direct] when it was opened with FOPEN_DIRECT_IO (every byte
// comes from the daemon), [Cached] otherwise (the page cache; misses become
// FUSE READ requests). A FUSE READ sent by a thread that is inside a Cached
// read of the same inode (a miss, or the synchronous readahead it starts) is
// charged to that read, up to the read's size: [InodeCounts.MissBytes].
// [InodeCounts.Split] then gives bytes by source: passthrough = Passthrough
// bytes, daemon = Direct bytes + MissBytes, page cache = Cached bytes -
// MissBytes. A read that waits for a page another thread's (or an earlier
// asynchronous) readahead is still fetching counts as page cache; a read that
// starts asynchronous readahead and sees its reply before it returns counts
// (up to its size) as daemon. Every FUSE
// READ reply is in FuseReads/FuseReadBytes whoever caused it (readahead,
// mmap faults). A caller that knows more (the daemon counts what it serves
// itself, the cache knows which inodes it opened through passthrough) can
// use the raw counts instead.
//
// Not counted: mmap page faults (no system call; their FUSE READs do show in
// FuseReadBytes), io_uring reads, sendfile, splice and copy_file_range, and
// 32-bit (compat) system calls. The objects are built for amd64 only; on other
// architectures Load reports [ReasonUnsupported].
package bpf
