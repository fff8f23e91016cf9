#!/usr/bin/env bash
# Installs and runs toxiproxy v2.12.0 (the latency injector of the cache benchmark).
#
# Usage:
#   scripts/toxiproxy.sh install                 install server and cli into $TOXIPROXY_BIN
#                                                (default ~/.cache/disgrafs/bin) if missing;
#                                                prints the server's path
#   scripts/toxiproxy.sh start STATE_DIR [PORT]  start the server in the background with its
#                                                API on 127.0.0.1:PORT (default 8474);
#                                                pid and log go into STATE_DIR
#   scripts/toxiproxy.sh stop STATE_DIR          stop the server started with that STATE_DIR
#
# bench/cachebench starts its own server (a child it always stops); start/stop are for
# experiments by hand, e.g. with "$(dirname "$(scripts/toxiproxy.sh install)")/cli".
set -euo pipefail
version=v2.12.0
bindir=${TOXIPROXY_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/disgrafs/bin}
server=$bindir/server
cli=$bindir/cli

installed() {
  # go install leaves the version string unset ("git"): read the module version instead.
  [ -x "$server" ] && [ -x "$cli" ] &&
    go version -m "$server" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/Shopify/toxiproxy/v2[[:space:]]+$version[[:space:]]"
}

install() {
  if installed; then
    return 0
  fi
  mkdir -p "$bindir"
  echo "toxiproxy: installing $version into $bindir" >&2
  GOBIN=$bindir go install "github.com/Shopify/toxiproxy/v2/cmd/server@$version" >&2
  GOBIN=$bindir go install "github.com/Shopify/toxiproxy/v2/cmd/cli@$version" >&2
  installed || { echo "toxiproxy: $server does not report $version" >&2; exit 1; }
}

case ${1:-} in
install)
  install
  echo "$server"
  ;;
start)
  state=${2:?usage: toxiproxy.sh start STATE_DIR [PORT]}
  port=${3:-8474}
  install
  mkdir -p "$state"
  if [ -f "$state/toxiproxy.pid" ] && kill -0 "$(cat "$state/toxiproxy.pid")" 2>/dev/null; then
    echo "toxiproxy: already running (pid $(cat "$state/toxiproxy.pid"))" >&2
    exit 1
  fi
  nohup "$server" -host 127.0.0.1 -port "$port" >"$state/toxiproxy.log" 2>&1 &
  echo $! >"$state/toxiproxy.pid"
  for _ in $(seq 100); do
    if curl -sf "http://127.0.0.1:$port/version" >/dev/null; then
      echo "toxiproxy: API on 127.0.0.1:$port (pid $(cat "$state/toxiproxy.pid"))" >&2
      exit 0
    fi
    if ! kill -0 "$(cat "$state/toxiproxy.pid")" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "toxiproxy: did not come up; log $state/toxiproxy.log:" >&2
  tail -n 20 "$state/toxiproxy.log" >&2
  kill "$(cat "$state/toxiproxy.pid")" 2>/dev/null || true
  rm -f "$state/toxiproxy.pid"
  exit 1
  ;;
stop)
  state=${2:?usage: toxiproxy.sh stop STATE_DIR}
  pidfile=$state/toxiproxy.pid
  [ -f "$pidfile" ] || exit 0
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  ;;
*)
  sed -n '2,13p' "$0" >&2
  exit 2
  ;;
esac
