#!/usr/bin/env bash
# Runs every test: go vet, unit tests, and the integration suite on real FUSE
# mounts against a real Redis server that this script starts on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
TAGS=$(sed -n 's/^TAGS := //p' Makefile)
BIN=$(pwd)/bin/disgrafs
[ -x "$BIN" ] || make build

work=$(mktemp -d /tmp/disgrafs-test.XXXXXX)
port=${DISGRAFS_TEST_REDIS_PORT:-16379}
cleanup() {
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no \
  --daemonize yes --pidfile "$work/redis.pid" --logfile "$work/redis.log" 
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export DISGRAFS_TEST_REDIS=127.0.0.1:$port

echo "== go vet"
go vet -tags "$TAGS" ./...
echo "== unit tests"
go test -tags "$TAGS" -count=1 $(go list -tags "$TAGS" ./... | grep -v '/tests$')
echo "== integration tests (real FUSE mounts)"
DISGRAFS_BIN=$BIN go test -tags "$TAGS" -count=1 -timeout 45m -v ./tests/
