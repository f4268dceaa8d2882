#!/usr/bin/env bash
# Builds the images, starts docker-compose.yml in the background and waits
# until every started container reports healthy (its healthcheck runs the
# binary's own `healthcheck` subcommand), or fails after
# SIGIL_COMPOSE_WAIT seconds (default 120) naming the containers that are
# not. Compose v1 has no `up --wait`, so the wait is done here for both.
# Extra arguments go to `up` (e.g. --profile must come before: use
# COMPOSE_PROFILES=sidecar).
set -euo pipefail
cd "$(dirname "$0")/.."
compose=scripts/compose.sh
"$compose" build
"$compose" up -d --no-build "$@"
deadline=$((SECONDS + ${SIGIL_COMPOSE_WAIT:-120}))
while :; do
	pending=()
	for id in $("$compose" ps -q); do
		state=$(docker inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
		case "${state##* }" in
		healthy | running) ;;
		*) pending+=("$state") ;;
		esac
	done
	if [ "${#pending[@]}" -eq 0 ]; then
		echo "compose: every container is healthy"
		"$compose" ps
		exit 0
	fi
	if [ "$SECONDS" -ge "$deadline" ]; then
		echo "compose: not healthy after ${SIGIL_COMPOSE_WAIT:-120}s: ${pending[*]}" >&2
		"$compose" logs --tail 20 >&2 || true
		exit 1
	fi
	sleep 1
done
