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
  scripts/nornicdb.sh stop "$work/nornicdb" >/dev/null 2>&1 || true
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no \
  --daemonize yes --pidfile "$work/redis.pid" --logfile "$work/redis.log" 
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export DISGRAFS_TEST_REDIS=127.0.0.1:$port

# A real Bolt/Cypher server (NornicDB, see ../shared/FACTS.md) for the Neo4j backend.
bolt_port=${DISGRAFS_TEST_BOLT_PORT:-17687}
http_port=$((bolt_port + 1))
scripts/nornicdb.sh build >/dev/null
# toxiproxy (latency and outages in front of Redis) for the prealloc tests.
scripts/toxiproxy.sh install >/dev/null
scripts/nornicdb.sh start "$work/nornicdb" "$bolt_port" "$http_port" disgrafs-test >/dev/null
export DISGRAFS_TEST_BOLT=bolt://127.0.0.1:$bolt_port DISGRAFS_TEST_BOLT_USER=admin DISGRAFS_TEST_BOLT_PASSWORD=disgrafs-test
export DISGRAFS_NORNICDB_DIR=$work/nornicdb DISGRAFS_NORNICDB_HTTP=$http_port

echo "== go vet"
go vet -tags "$TAGS" ./...
echo "== unit tests"
go test -tags "$TAGS" -count=1 $(go list -tags "$TAGS" ./... | grep -v '/tests$')
echo "== fuzzing (10 s per target)"
scripts/test-fuzz.sh 10s
echo "== integration tests (real FUSE mounts)"
DISGRAFS_BIN=$BIN go test -tags "$TAGS" -count=1 -timeout 45m -v -skip '^(TestFault|TestLoad)' ./tests/
scripts/test-faults.sh
