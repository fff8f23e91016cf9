#!/usr/bin/env bash
# Benchmarks disgrafs against the juicefs CLI v1.4.1 (the same JuiceFS code behind
# another FUSE front end) and a native directory, side by side in one run, and
# writes the markdown tables to bench-results/.
#
# Usage: scripts/bench.sh [bench flags...]        ('make bench' builds disgrafs first)
#   scripts/bench.sh -small-files 2000 -large-mib 128 -runs 1    # quick smoke run
# Environment:
#   BENCH_FLAGS    more bench flags (for 'make bench BENCH_FLAGS="-runs 1"')
#   JUICEFS_PEER   the juicefs CLI to compare with (default /var/tmp/bench/juicefs;
#                  built by scripts/build-juicefs-peer.sh when missing, ~12 min cold)
#   BENCH_WORKDIR  where volumes, mountpoints and the native directory go
#                  (default /var/tmp/disgrafs-bench; it should be on the disk to measure)
#   BENCH_TAGS=0   skip the tag benchmark; BENCH_CACHE=0 skip the cache benchmark;
#                  BENCH_RSS=0 skip the memory benchmark (RSSBENCH_FILES, default 100000);
#                  BENCH_WRITERWAIT=0 skip the writer-wait benchmark
#   CACHEBENCH_SMALL, CACHEBENCH_LARGE, CACHEBENCH_LARGE_MIB, CACHEBENCH_RUNS,
#   CACHEBENCH_PASS_LIMIT, CACHEBENCH_FLAGS   size of the cache benchmark (see below)
# The default run (1 GiB file, 20,000 small files, 3 runs) takes about 10-15 minutes
# on a 2-core machine, the tag and cache benchmarks about 30 more each. It needs root;
# sudo is used when run as another user.
set -euo pipefail
cd "$(dirname "$0")/.."

peer=${JUICEFS_PEER:-/var/tmp/bench/juicefs}
workdir=${BENCH_WORKDIR:-/var/tmp/disgrafs-bench}

if ! [ -x "$peer" ]; then
  echo "bench: building the juicefs CLI peer at $peer (about 12 minutes the first time)" >&2
fi
scripts/build-juicefs-peer.sh "$peer" >&2

if ! [ -x bin/disgrafs ]; then
  make build >&2
fi
# The bench program uses only the standard library: no build tags or cgo needed.
go build -o bin/bench ./bench

mkdir -p bench-results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench-results/bench-$stamp.md
log=bench-results/bench-$stamp.log

sudo=()
if [ "$(id -u)" != 0 ]; then
  sudo=(sudo)
fi
# shellcheck disable=SC2086 # BENCH_FLAGS is a list of flags
# tee ignores Ctrl-C so that the benchmark's messages while it unmounts still show.
"${sudo[@]}" bin/bench -workdir "$workdir" -disgrafs bin/disgrafs -juicefs "$peer" -out "$out" ${BENCH_FLAGS:-} "$@" 2> >(trap '' INT; exec tee "$log" >&2)
ln -sfn "bench-$stamp.md" bench-results/latest.md
echo "bench: results in $out (progress log $log)" >&2

# eBPF read accounting: the warm small-file loop with the programs attached,
# with empty programs on the syscall tracepoints, and with none (interleaved).
if [ "${BENCH_BPF:-1}" = 1 ]; then
  go build -o bin/bpfbench ./bench/bpfbench
  "${sudo[@]}" bin/bpfbench -disgrafs bin/disgrafs -workdir "$workdir/bpf" -files "${BPFBENCH_FILES:-20000}" \
    -passes "${BPFBENCH_PASSES:-10}" -out "bench-results/bpf-$stamp.md"
  echo "bench: eBPF overhead in bench-results/bpf-$stamp.md" >&2
fi

# The payoff of eBPF for the cache: a hot set read through passthrough keeps
# its place while warmups churn a small cache, with --bpf=on against off.
if [ "${BENCH_BPF:-1}" = 1 ]; then
  go build -o bin/recencybench ./bench/recencybench
  "${sudo[@]}" bin/recencybench -disgrafs bin/disgrafs -workdir "$workdir/recency" > "bench-results/recency-$stamp.md"
  echo "bench: eBPF recency payoff in bench-results/recency-$stamp.md" >&2
fi

# Memory: the daemon's RSS with 100,000 files in the whole-file cache.
if [ "${BENCH_RSS:-1}" = 1 ]; then
  go build -o bin/rssbench ./bench/rssbench
  "${sudo[@]}" bin/rssbench -disgrafs bin/disgrafs -workdir "$workdir/rss" -files "${RSSBENCH_FILES:-100000}" \
    -out "bench-results/rss-$stamp.md"
  echo "bench: daemon memory in bench-results/rss-$stamp.md" >&2
fi

# Tags: listing and walking a 100,000-file tag directory, tagging, related
# queries; bbolt at full size, the Bolt server (NornicDB) at a size it can take.
if [ "${BENCH_TAGS:-1}" = 1 ]; then
  go build -tags "$(sed -n 's/^TAGS := //p' Makefile)" -o bin/tagbench ./bench/tagbench
  tdir=$(mktemp -d /tmp/disgrafs-tagbench.XXXXXX)
  scripts/nornicdb.sh build >/dev/null
  scripts/nornicdb.sh start "$tdir/nornicdb" 17787 17788 disgrafs-bench >/dev/null
  trap 'scripts/nornicdb.sh stop "$tdir/nornicdb" >/dev/null 2>&1 || true' EXIT
  "${sudo[@]}" bin/tagbench -disgrafs bin/disgrafs -files "${TAGBENCH_FILES:-100000}" -bolt-files "${TAGBENCH_BOLT_FILES:-2000}" \
    -bolt bolt://127.0.0.1:17787 -bolt-user admin -bolt-password disgrafs-bench -out "bench-results/tags-$stamp.md"
  echo "bench: tag results in bench-results/tags-$stamp.md" >&2
fi

# The graph-aware cache: a volume whose Redis (metadata and objects) sits behind
# toxiproxy adding 1 ms and 10 ms; juicefs CLI cold and warmed, disgrafs cold (with
# the prefetcher) and warmed by tag, and the native directory, side by side.
# Sized to stay near 30 minutes on 2 cores; the issue's full size is
#   CACHEBENCH_SMALL=20000 CACHEBENCH_LARGE=8 (several hours at 10 ms with 1 thread;
#   CACHEBENCH_PASS_LIMIT bounds each pass and marks the passes it cut).
if [ "${BENCH_CACHE:-1}" = 1 ]; then
  toxiproxy=$(scripts/toxiproxy.sh install)
  go build -o bin/cachebench ./bench/cachebench
  # shellcheck disable=SC2086 # CACHEBENCH_FLAGS is a list of flags
  "${sudo[@]}" bin/cachebench -workdir "${CACHEBENCH_WORKDIR:-/var/tmp/disgrafs-cachebench}" \
    -disgrafs bin/disgrafs -juicefs "$peer" -toxiproxy "$toxiproxy" \
    -small "${CACHEBENCH_SMALL:-5000}" -large "${CACHEBENCH_LARGE:-2}" -large-mib "${CACHEBENCH_LARGE_MIB:-1024}" \
    -runs "${CACHEBENCH_RUNS:-3}" -pass-limit "${CACHEBENCH_PASS_LIMIT:-20s}" \
    -out "bench-results/cache-$stamp.md" ${CACHEBENCH_FLAGS:-} \
    2> >(trap '' INT; exec tee "bench-results/cache-$stamp.log" >&2)
  echo "bench: cache results in bench-results/cache-$stamp.md" >&2
fi

# What close-to-open across nodes costs a writer on a Redis volume: a node's
# closes with and without another node holding the files trusted, at 1 ms and
# 10 ms to Redis (WRITERWAIT_FILES, WRITERWAIT_ROUNDS).
if [ "${BENCH_WRITERWAIT:-1}" = 1 ]; then
  toxiproxy=$(scripts/toxiproxy.sh install)
  go build -o bin/writerwait ./bench/writerwait
  for lat in 1ms 10ms; do
    "${sudo[@]}" bin/writerwait -disgrafs bin/disgrafs -toxiproxy "$toxiproxy" -latency "$lat" \
      -files "${WRITERWAIT_FILES:-200}" -rounds "${WRITERWAIT_ROUNDS:-3}" | tee "bench-results/writerwait-$lat-$stamp.md"
  done
fi
