#!/usr/bin/env bash
# Builds the juicefs CLI v1.4.1 (the benchmark peer) from the Go module proxy in a
# module of its own, so its dependencies never enter disgrafs's go.mod.
# Usage: scripts/build-juicefs-peer.sh OUTPUT_BINARY
set -euo pipefail
out=${1:?usage: build-juicefs-peer.sh OUTPUT_BINARY}
out=$(realpath -m "$out")
version=v1.4.1
if [ -x "$out" ] && "$out" --version 2>/dev/null | grep -q "${version#v}"; then
  exit 0
fi
work=${JUICEFS_PEER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/disgrafs/juicefs-peer}
mkdir -p "$work"
cd "$work"
# juicefs's own go.mod carries replace lines that a consumer must repeat.
upstream_mod=$(GOFLAGS=-mod=mod go mod download -json "github.com/juicedata/juicefs@$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
{
  echo "module disgrafs.local/juicefs-peer"
  echo
  echo "go 1.26"
  echo
  echo "require github.com/juicedata/juicefs $version"
  echo
  grep '^replace ' "$upstream_mod"
  sed -n '/^replace (/,/^)/p' "$upstream_mod"
} > go.mod
cat > tools.go <<'EOT'
//go:build tools

package tools

import _ "github.com/juicedata/juicefs"
EOT
go mod tidy >/dev/null 2>&1 || true
go build -o "$out" github.com/juicedata/juicefs
"$out" --version
