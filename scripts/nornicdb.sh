#!/usr/bin/env bash
# NornicDB: a Bolt/Cypher server used to test graph/neo4jstore (Neo4j itself
# cannot be installed here; see ../shared/FACTS.md).
#
#   scripts/nornicdb.sh build                                  build the server once (cached)
#   scripts/nornicdb.sh path                                   print the binary's path
#   scripts/nornicdb.sh start DIR PORT_BOLT PORT_HTTP PASSWORD  start on 127.0.0.1, print the pid
#   scripts/nornicdb.sh stop DIR                               stop the server started in DIR
#
# The server runs with a fresh data directory DIR/data, user "admin"; PASSWORD
# needs 8 characters at least (NornicDB ignores a shorter one, and then no
# login works). Its log is DIR/nornicdb.log and its pid DIR/nornicdb.pid. The
# build (about 3 minutes cold) lives in a module of its own under the cache
# directory, never inside the repository, so its many dependencies stay out of
# our go.mod. For the tests:
#
#   scripts/nornicdb.sh start "$work/nornicdb" 17687 17474 disgrafs-test
#   export DISGRAFS_TEST_BOLT=bolt://127.0.0.1:17687
#   export DISGRAFS_TEST_BOLT_USER=admin DISGRAFS_TEST_BOLT_PASSWORD=disgrafs-test
#   ...
#   scripts/nornicdb.sh stop "$work/nornicdb"
set -euo pipefail

VERSION=v1.2.0
CACHE=${DISGRAFS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/disgrafs}/nornicdb
BIN=${NORNICDB_BIN:-$CACHE/nornicdb-$VERSION}

die() { echo "nornicdb.sh: $*" >&2; exit 1; }

build() {
  if [ -x "$BIN" ]; then
    echo "$BIN"
    return
  fi
  command -v go >/dev/null || die "go is not installed"
  mkdir -p "$CACHE/src"
  cd "$CACHE/src"
  if [ ! -f go.mod ]; then
    go mod init disgrafs-nornicdb-build >/dev/null 2>&1
  fi
  # Pin exactly: the module proxy here serves exact tags only.
  go get "github.com/orneryd/nornicdb/cmd/nornicdb@$VERSION" >&2
  CGO_ENABLED=0 go build -tags noui,nolocalllm -o "$BIN.tmp" github.com/orneryd/nornicdb/cmd/nornicdb >&2
  mv "$BIN.tmp" "$BIN"
  echo "$BIN"
}

start() {
  [ $# -eq 4 ] || die "usage: start DIR PORT_BOLT PORT_HTTP PASSWORD"
  local dir=$1 bolt=$2 http=$3 pw=$4
  # NornicDB ignores a shorter admin password (and then no login works).
  [ ${#pw} -ge 8 ] || die "the password must have at least 8 characters"
  [ -x "$BIN" ] || build >/dev/null
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/nornicdb.pid" ] && kill -0 "$(cat "$dir/nornicdb.pid")" 2>/dev/null; then
    die "already running in $dir (pid $(cat "$dir/nornicdb.pid"))"
  fi
  rm -rf "$dir/data" "$dir/home"
  mkdir -p "$dir/data" "$dir/home"
  # The telemetry listener defaults to a fixed port; give it one derived from
  # the HTTP port so that several servers can run side by side, below the
  # kernel's ephemeral range (32768-60999), where an outgoing connection can
  # hold the port and make the server exit at start.
  local tele=${NORNICDB_TELEMETRY_PORT:-$(( (http + 11616) % 20000 + 10000 ))}
  # Run from DIR: the server looks for ./plugins and ./models.
  cd "$dir"
  HOME="$dir/home" \
  NORNICDB_TELEMETRY_LISTEN="127.0.0.1:$tele" \
  NORNICDB_DEFAULT_DATABASE=neo4j \
    setsid "$BIN" serve --data-dir "$dir/data" --address 127.0.0.1 \
      --bolt-port "$bolt" --http-port "$http" --headless --mcp-enabled=false \
      --admin-password "$pw" >"$dir/nornicdb.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/nornicdb.pid"
  for _ in $(seq 300); do
    if curl -sf "http://127.0.0.1:$http/health" >/dev/null 2>&1; then
      # Make sure it is ours answering, not another server on that port.
      sleep 0.2
      kill -0 "$pid" 2>/dev/null || die "port $http answers but our server exited (log: $dir/nornicdb.log)"
      echo "$pid"
      return
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      # The reason comes before the usage text the server prints after it.
      grep -v '^  ' "$dir/nornicdb.log" | tail -n 15 >&2 || true
      die "server exited during start (log: $dir/nornicdb.log)"
    fi
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  tail -n 30 "$dir/nornicdb.log" >&2 || true
  die "server did not answer http://127.0.0.1:$http/health within 30 s"
}

stop() {
  [ $# -eq 1 ] || die "usage: stop DIR"
  local pidfile=$1/nornicdb.pid
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  build) build ;;
  path) echo "$BIN" ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) die "usage: $0 build|path|start DIR PORT_BOLT PORT_HTTP PASSWORD|stop DIR" ;;
esac
