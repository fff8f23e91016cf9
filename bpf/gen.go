package bpf

// The generated loaders and objects are committed, so building needs no clang.
// 'make generate' installs the toolchain if missing and regenerates vmlinux.h and them.
//go:generate sh ./generate.sh
