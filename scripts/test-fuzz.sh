#!/usr/bin/env bash
# A short fuzz run of every fuzz target (seed corpora are committed in each
# package's testdata/fuzz). Usage: scripts/test-fuzz.sh [FUZZTIME] (10s).
set -euo pipefail
cd "$(dirname "$0")/.."
TAGS=$(sed -n 's/^TAGS := //p' Makefile)
t=${1:-10s}
for target in graph:FuzzParse graph:FuzzValidTag graph:FuzzParseTagList control:FuzzDecode; do
  pkg=./${target%%:*}/ name=${target#*:}
  echo "-- $name ($pkg, $t)"
  go test -tags "$TAGS" -run XXX -fuzz "^${name}\$" -fuzztime "$t" "$pkg"
done
