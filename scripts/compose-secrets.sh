#!/usr/bin/env bash
# Makes the secrets docker-compose.yml mounts, when missing, in
# deploy/secrets/ (mode 0700, git-ignored). Compose (outside swarm) bind-mounts
# secret files with their host permissions, and the containers run as uid
# 65532, so the files are 0644 inside a 0700 directory: readable by the
# container, not by other users of this host. Existing files are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${SIGIL_SECRETS_DIR:-deploy/secrets}"
mkdir -p "$dir"
chmod 0700 "$dir"
rand() { head -c 32 /dev/urandom | base64 | tr -d '\n'; }
urlrand() { rand | tr '+/' '-_' | tr -d '='; }
make_secret() {
	local file="$dir/$1" value="$2"
	if [ ! -s "$file" ]; then
		(umask 022 && printf '%s\n' "$value" >"$file")
		echo "created $file"
	fi
}
make_secret operator.token "sigil_op_$(urlrand)"
make_secret watch.token "sigil_watch_$(urlrand)"
make_secret kek "$(rand)"
