#!/bin/sh
# Regenerates vmlinux.h from this kernel's BTF and the bpf2go loaders.
# Installs clang, llvm, libbpf-dev and bpftool with apt when they are missing.
set -eu
cd "$(dirname "$0")"
missing=""
command -v clang >/dev/null 2>&1 || missing="$missing clang"
command -v llvm-strip >/dev/null 2>&1 || missing="$missing llvm"
[ -f /usr/include/bpf/bpf_helpers.h ] || missing="$missing libbpf-dev"
command -v bpftool >/dev/null 2>&1 || [ -x /usr/sbin/bpftool ] || missing="$missing bpftool"
if [ -n "$missing" ]; then
	echo "installing$missing" >&2
	if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
	$SUDO apt-get install -y $missing
fi
BPFTOOL=$(command -v bpftool || echo /usr/sbin/bpftool)
if [ -r /sys/kernel/btf/vmlinux ]; then
	$BPFTOOL btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h.tmp
	mv vmlinux.h.tmp vmlinux.h
fi
exec go run github.com/cilium/ebpf/cmd/bpf2go -go-package bpf -target amd64 \
	-type inode_stats -type proc_key -type proc_stats -type open_event -type fuse_op_stats \
	reads reads.c -- -O2 -g -Wall -I/usr/include -I/usr/include/x86_64-linux-gnu
