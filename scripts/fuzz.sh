#!/usr/bin/env bash
# Runs every fuzz target of the module for a fixed time each.
# Usage: scripts/fuzz.sh [duration]   (default 10s)
set -euo pipefail
fuzztime="${1:-10s}"
cd "$(dirname "$0")/.."
count=0
for pkg in $(go list ./...); do
	targets=$(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true)
	for target in $targets; do
		echo "== $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
		count=$((count + 1))
	done
done
if [ "$count" -eq 0 ]; then
	echo "no fuzz target found" >&2
	exit 1
fi
echo "ran $count fuzz targets"
