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
		log="$(mktemp)"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$log"; then
			# Go's fuzzer can end a short run with "context deadline exceeded"
			# when the deadline falls while it minimizes an input on a busy
			# machine: no input failed. Anything else, and any written
			# failing input, is a real failure.
			if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
				echo "== $target: the fuzzer's own deadline, not a failing input; running it again"
				go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
			else
				rm -f "$log"
				exit 1
			fi
		fi
		rm -f "$log"
		count=$((count + 1))
	done
done
if [ "$count" -eq 0 ]; then
	echo "no fuzz target found" >&2
	exit 1
fi
echo "ran $count fuzz targets"
