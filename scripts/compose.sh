#!/usr/bin/env bash
# Runs Docker Compose with the arguments given: `docker compose` (v2) when
# the Docker CLI has it, else Debian's `docker-compose` (v1.29). Both read
# docker-compose.yml and .env at the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
	exec docker compose "$@"
elif command -v docker-compose >/dev/null 2>&1; then
	exec docker-compose "$@"
fi
echo "compose: neither 'docker compose' (v2) nor 'docker-compose' (v1.29) is installed" >&2
exit 1
