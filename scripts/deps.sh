#!/usr/bin/env bash
# Installs (with apt) the tools the test suite and benchmarks drive for real.
# Idempotent: installs only what is missing.
set -euo pipefail
want=()
need() { command -v "$1" >/dev/null 2>&1 || want+=("$2"); }
need redis-server redis-server
need redis-cli redis-tools
need fio fio
need stress-ng stress-ng
need setfattr attr
need fusermount3 fuse3
need setpriv util-linux
need unshare util-linux
need gcc gcc
need curl curl
need promtool prometheus
need prometheus prometheus
need bpftool bpftool
if [ ${#want[@]} -gt 0 ]; then
  echo "installing: ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
