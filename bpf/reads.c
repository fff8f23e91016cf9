//go:build ignore

// SPDX-License-Identifier: GPL-2.0
//
// Read-path accounting for one FUSE mount, attached to BTF-enabled tracepoints
// (tp_btf): sys_enter/sys_exit for the read and open system calls, and
// fuse_request_send/fuse_request_end for the requests the kernel sends to the
// daemon. Everything is filtered by the superblock's device number (target_dev,
// set by the loader), so files on other file systems cost one comparison.
//
// Nothing here wakes user space per event: counters live in per-CPU maps and
// open events go into a ring buffer submitted with BPF_RB_NO_WAKEUP; the
// daemon drains both on an interval.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

// Set by the loader before the programs load.
volatile const __u32 target_dev; // s_dev of the mount (the kernel's MKDEV encoding)
volatile const __u8 per_process = 1; // also count per (inode, process)

// Syscall numbers (x86_64; the object is built for amd64 only).
#define NR_READ 0
#define NR_PREAD64 17
#define NR_READV 19
#define NR_PREADV 295
#define NR_PREADV2 327
#define NR_OPEN 2
#define NR_CREAT 85
#define NR_OPENAT 257
#define NR_OPENAT2 437

#define FUSE_READ_OP 15
#define FOPEN_DIRECT_IO_FLAG 1
#define MAX_OPCODES 64
#define LAT_BUCKETS 27

// How a read reached the data: through a passthrough backing file, through
// the page cache (misses go to the daemon as FUSE READ), or with direct I/O
// (every byte from the daemon).
enum read_class {
	DG_CLASS_PASSTHROUGH = 0,
	DG_CLASS_CACHED = 1,
	DG_CLASS_DIRECT = 2,
	DG_NR_CLASSES = 3,
};

struct inode_stats {
	__u64 calls[DG_NR_CLASSES];
	__u64 bytes[DG_NR_CLASSES];
	__u64 miss_bytes;      // bytes of cached reads that waited for a FUSE READ they sent
	__u64 fuse_reads;      // FUSE READ requests answered for this node
	__u64 fuse_read_bytes; // bytes in those replies
};

struct proc_key {
	__u64 ino;
	__u32 tgid;
	__u32 pad;
};

struct proc_stats {
	__u64 calls;
	__u64 bytes;
};

struct open_event {
	__u64 ts_ns; // CLOCK_MONOTONIC (bpf_ktime_get_ns)
	__u64 ino;
	__u32 pid;  // thread id
	__u32 tgid; // process id
	__u32 uid;
	__u32 flags; // file->f_flags
	char comm[16];
};

struct fuse_op_stats {
	__u64 count;
	__u64 errors;
	__u64 sum_ns;
	__u64 buckets[LAT_BUCKETS]; // bucket b: duration < 2^(b+10) ns; the last one is open-ended
};

// The read system call a thread is in, kept in task-local storage (no hash
// lookup on the hot path).
struct pending_read {
	__u64 ino;
	__u64 nodeid;
	__u32 class;
	__u32 active; // between sys_enter and sys_exit of a read of ours
	__u32 sent;   // it sent a FUSE READ: see the fetched map
	__u32 seq;    // counts the thread's reads, to ignore late replies
};

struct fetch {
	__u64 bytes;
	__u32 seq;
	__u32 pad;
};

struct req_start {
	__u64 ns;
	__u64 pid_tgid; // the thread that sent the request
	__u32 reader;   // 1: sent by a read system call of the same node
	__u32 seq;      // that read's pending_read.seq
};

// Counter slots of the stats map.
enum {
	DG_STAT_INODE_FULL = 0,   // an inode could not be added: inode_reads is full
	DG_STAT_EVENTS_LOST = 1,  // the ring buffer was full
	DG_STAT_PENDING_FULL = 2, // too many reads in flight
	DG_STAT_REQS_FULL = 3,    // too many FUSE requests in flight
	DG_NR_STATS = 4,
};

// Not preallocated: a per-CPU value of every possible entry would take
// 65536 x 80 bytes per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct inode_stats);
} inode_reads SEC(".maps");

// LRU maps are preallocated: the loader shrinks this one on machines with
// many CPUs.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct proc_key);
	__type(value, struct proc_stats);
} proc_reads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_OPCODES);
	__type(key, __u32);
	__type(value, struct fuse_op_stats);
} fuse_ops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DG_NR_STATS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pending_read);
} pending SEC(".maps");

// FUSE READ reply bytes a thread's current read waited for (only threads
// whose read sent one: page cache misses).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); // pid_tgid
	__type(value, struct fetch);
} fetched SEC(".maps");

// Every request ends (aborted ones too), so a plain hash does not leak; it
// is much cheaper to update than an LRU hash.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); // struct fuse_req address
	__type(value, struct req_start);
} fuse_start SEC(".maps");

// FUSE node id -> inode number, for file systems where they differ (DisGraFS
// uses the inode number as node id, so this stays empty there).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} node_ino SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} open_events SEC(".maps");

// Keeps struct open_event in BTF so that bpf2go generates its Go type.
const struct open_event *unused_open_event __attribute__((unused));

static __always_inline void bump(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

// Loads through BTF pointers (tracepoint arguments, bpf_get_current_task_btf,
// bpf_rdonly_cast) compile to plain loads guarded by the exception table, far
// cheaper than a bpf_probe_read_kernel call each: on the read path every
// nanosecond is paid by every read system call of the machine.
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

// file_of returns the struct file behind fd in the current task, or NULL.
static __always_inline struct file *file_of(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	if (!fdt || fd < 0)
		return NULL;
	if ((unsigned long)fd >= fdt->max_fds)
		return NULL;
	struct file **fds = fdt->fd;
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	return bpf_rdonly_cast(f, bpf_core_type_id_kernel(struct file));
}

// ours returns the inode number of f if f is on the traced mount, else 0.
static __always_inline __u64 ours(struct file *f)
{
	if (!f)
		return 0;
	struct inode *inode = f->f_inode;
	if (!inode || inode->i_sb->s_dev != target_dev)
		return 0;
	return inode->i_ino;
}

// classify tells how reads of a FUSE file are served. private_data of a FUSE
// regular file is its struct fuse_file.
static __always_inline __u32 classify(struct file *f)
{
	void *pd = f->private_data;
	if (!pd)
		return DG_CLASS_CACHED;
	struct fuse_file *ff = bpf_rdonly_cast(pd, bpf_core_type_id_kernel(struct fuse_file));
	if (bpf_core_field_exists(ff->passthrough) && ff->passthrough)
		return DG_CLASS_PASSTHROUGH;
	if (ff->open_flags & FOPEN_DIRECT_IO_FLAG)
		return DG_CLASS_DIRECT;
	return DG_CLASS_CACHED;
}

#define TS_COMPAT_FLAG 0x0002 // x86: the task is in a 32-bit system call

// compat tells a 32-bit system call (other numbers and registers): not counted.
static __always_inline int compat(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	return bpf_core_field_exists(task->thread_info.status) && (task->thread_info.status & TS_COMPAT_FLAG);
}

static __always_inline int is_read(long nr)
{
	return nr == NR_READ || nr == NR_PREAD64 || nr == NR_READV || nr == NR_PREADV || nr == NR_PREADV2;
}

static __always_inline int is_open(long nr)
{
	return nr == NR_OPENAT || nr == NR_OPEN || nr == NR_OPENAT2 || nr == NR_CREAT;
}

// The file is resolved at entry, while the read holds its reference: at exit
// another thread may already have closed or reused the descriptor.
SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	if (!is_read(id) || compat())
		return 0;
	long fd = (long)(int)regs->di; // first argument (x86_64)
	struct file *f = file_of(fd);
	__u64 ino = ours(f);
	if (!ino)
		return 0;
	// struct fuse_inode starts with its struct inode.
	struct fuse_inode *fi = bpf_rdonly_cast(f->f_inode, bpf_core_type_id_kernel(struct fuse_inode));
	__u64 nodeid = fi->nodeid;
	if (nodeid != ino && nodeid)
		bpf_map_update_elem(&node_ino, &nodeid, &ino, BPF_ANY);
	struct pending_read *p = bpf_task_storage_get(&pending, bpf_get_current_task_btf(), 0,
						      BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!p) {
		bump(DG_STAT_PENDING_FULL);
		return 0;
	}
	p->ino = ino;
	p->nodeid = nodeid;
	p->class = classify(f);
	p->sent = 0;
	p->seq++;
	p->active = 1;
	return 0;
}

static __always_inline struct inode_stats *inode_entry(__u64 ino)
{
	struct inode_stats *s = bpf_map_lookup_elem(&inode_reads, &ino);
	if (s)
		return s;
	struct inode_stats zero = {};
	// EEXIST when another CPU added it first: the lookup below finds it.
	bpf_map_update_elem(&inode_reads, &ino, &zero, BPF_NOEXIST);
	s = bpf_map_lookup_elem(&inode_reads, &ino);
	if (!s)
		bump(DG_STAT_INODE_FULL);
	return s;
}

static __always_inline void account_read(long ret)
{
	struct pending_read *p = bpf_task_storage_get(&pending, bpf_get_current_task_btf(), 0, 0);
	if (!p || !p->active)
		return;
	p->active = 0;
	__u64 ino = p->ino;
	__u32 class = p->class;
	__u64 key = bpf_get_current_pid_tgid();
	__u64 got = 0;
	if (p->sent) {
		struct fetch *v = bpf_map_lookup_elem(&fetched, &key);
		if (v && v->seq == p->seq)
			got = v->bytes;
		bpf_map_delete_elem(&fetched, &key);
	}
	if (ret < 0 || class >= DG_NR_CLASSES)
		return;
	struct inode_stats *s = inode_entry(ino);
	if (got > (__u64)ret)
		got = ret;
	if (s) {
		__sync_fetch_and_add(&s->calls[class], 1);
		__sync_fetch_and_add(&s->bytes[class], ret);
		if (class == DG_CLASS_CACHED && got)
			__sync_fetch_and_add(&s->miss_bytes, got);
	}
	if (!per_process)
		return;
	struct proc_key pk = {.ino = ino, .tgid = key >> 32};
	struct proc_stats *ps = bpf_map_lookup_elem(&proc_reads, &pk);
	if (!ps) {
		struct proc_stats zero = {};
		bpf_map_update_elem(&proc_reads, &pk, &zero, BPF_NOEXIST);
		ps = bpf_map_lookup_elem(&proc_reads, &pk);
	}
	if (ps) {
		__sync_fetch_and_add(&ps->calls, 1);
		__sync_fetch_and_add(&ps->bytes, ret);
	}
}

static __always_inline void account_open(long ret)
{
	if (ret < 0)
		return;
	struct file *f = file_of(ret);
	__u64 ino = ours(f);
	if (!ino)
		return;
	struct open_event *e = bpf_ringbuf_reserve(&open_events, sizeof(*e), 0);
	if (!e) {
		bump(DG_STAT_EVENTS_LOST);
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->ino = ino;
	e->pid = (__u32)id;
	e->tgid = id >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->flags = f->f_flags;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;
	if (is_read(nr))
		account_read(ret); // only reads its sys_enter kept
	else if (is_open(nr) && !compat())
		account_open(ret);
	return 0;
}

static __always_inline int fuse_req_ours(const struct fuse_req *req)
{
	return req->fm->sb->s_dev == target_dev;
}

SEC("tp_btf/fuse_request_send")
int BPF_PROG(on_fuse_send, const struct fuse_req *req)
{
	if (!fuse_req_ours(req))
		return 0;
	__u64 key = (__u64)req;
	struct req_start st = {.ns = bpf_ktime_get_ns(), .pid_tgid = bpf_get_current_pid_tgid()};
	if (req->in.h.opcode == FUSE_READ_OP) {
		// Sent from inside a read system call of the same node: a miss, or
		// the readahead it started.
		struct pending_read *p = bpf_task_storage_get(&pending, bpf_get_current_task_btf(), 0, 0);
		if (p && p->active && p->nodeid == req->in.h.nodeid) {
			p->sent = 1;
			st.reader = 1;
			st.seq = p->seq;
		}
	}
	if (bpf_map_update_elem(&fuse_start, &key, &st, BPF_ANY))
		bump(DG_STAT_REQS_FULL);
	return 0;
}

static __always_inline __u32 lat_bucket(__u64 ns)
{
	// floor(log2(ns)) - 9, clamped to [0, LAT_BUCKETS-1]: bucket 0 holds < 1024 ns.
	__u32 r = 0;
	if (ns >= (1ULL << 32)) { ns >>= 32; r += 32; }
	if (ns >= (1ULL << 16)) { ns >>= 16; r += 16; }
	if (ns >= (1ULL << 8)) { ns >>= 8; r += 8; }
	if (ns >= (1ULL << 4)) { ns >>= 4; r += 4; }
	if (ns >= (1ULL << 2)) { ns >>= 2; r += 2; }
	if (ns >= (1ULL << 1)) { r += 1; }
	if (r < 10)
		return 0;
	r -= 9;
	if (r >= LAT_BUCKETS)
		r = LAT_BUCKETS - 1;
	return r;
}

SEC("tp_btf/fuse_request_end")
int BPF_PROG(on_fuse_end, const struct fuse_req *req)
{
	__u64 key = (__u64)req;
	struct req_start *start = bpf_map_lookup_elem(&fuse_start, &key);
	if (!start)
		return 0;
	__u64 dur = bpf_ktime_get_ns() - start->ns;
	__u64 sender = start->pid_tgid;
	__u32 reader = start->reader;
	__u32 seq = start->seq;
	bpf_map_delete_elem(&fuse_start, &key);

	__u32 op = req->in.h.opcode;
	int err = req->out.h.error;
	__u32 idx = op < MAX_OPCODES ? op : 0;
	struct fuse_op_stats *s = bpf_map_lookup_elem(&fuse_ops, &idx);
	if (s) {
		__u32 b = lat_bucket(dur);
		__sync_fetch_and_add(&s->count, 1);
		__sync_fetch_and_add(&s->sum_ns, dur);
		if (err)
			__sync_fetch_and_add(&s->errors, 1);
		if (b < LAT_BUCKETS)
			__sync_fetch_and_add(&s->buckets[b], 1);
	}
	if (op == FUSE_READ_OP && !err) {
		__u32 len = req->out.h.len;
		__u64 n = len > sizeof(struct fuse_out_header) ? len - sizeof(struct fuse_out_header) : 0;
		__u64 nodeid = req->in.h.nodeid;
		__u64 *mapped = bpf_map_lookup_elem(&node_ino, &nodeid);
		__u64 ino = mapped ? *mapped : nodeid;
		struct inode_stats *is = inode_entry(ino);
		if (is) {
			__sync_fetch_and_add(&is->fuse_reads, 1);
			__sync_fetch_and_add(&is->fuse_read_bytes, n);
		}
		// A read system call that sent this request (a miss, or the
		// synchronous readahead it started) and still waits for it.
		if (reader) {
			struct fetch *v = bpf_map_lookup_elem(&fetched, &sender);
			if (v && v->seq == seq) {
				__sync_fetch_and_add(&v->bytes, n);
			} else {
				// First reply for this read; an entry left by a reply
				// that came after its read returned is replaced.
				struct fetch f = {.bytes = n, .seq = seq};
				bpf_map_update_elem(&fetched, &sender, &f, BPF_ANY);
			}
		}
	}
	return 0;
}
