#!/usr/bin/env bash
# The fault and load suite (make test-faults): kill -9 cycles, metadata
# outages, damaged cache and index files, signals, and the bounded load test,
# on real FUSE mounts. Bounded: about 5-8 minutes on a 2-core machine.
# DISGRAFS_FAULT_CYCLES=N runs N kill -9 cycles (20 by default); 50 or more
# is the long mode (metadata outages of 30 s). DISGRAFS_LOAD_SECONDS sets the
# load test's duration (60 by default).
# Uses $DISGRAFS_TEST_REDIS when set (scripts/test.sh starts one); otherwise
# starts its own Redis on DISGRAFS_TEST_REDIS_PORT (16380 by default).
set -euo pipefail
cd "$(dirname "$0")/.."
TAGS=$(sed -n 's/^TAGS := //p' Makefile)
BIN=$(pwd)/bin/disgrafs
[ -x "$BIN" ] || make build

if [ -z "${DISGRAFS_TEST_REDIS:-}" ]; then
  work=$(mktemp -d /tmp/disgrafs-faults.XXXXXX)
  port=${DISGRAFS_TEST_REDIS_PORT:-16380}
  trap '[ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null; rm -rf "$work"' EXIT
  redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no \
    --daemonize yes --pidfile "$work/redis.pid" --logfile "$work/redis.log"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export DISGRAFS_TEST_REDIS=127.0.0.1:$port
fi

echo "== fault and load suite (real FUSE mounts)"
DISGRAFS_BIN=$BIN go test -tags "$TAGS" -count=1 -timeout 30m -v -run '^(TestFault|TestLoad)' ./tests/
