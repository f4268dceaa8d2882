#!/usr/bin/env bash
# Runs Sigil locally: builds both services, starts the authority (bbolt under
# ./data, reused by the next run) and one authorizer, waits until both report
# SERVING over the gRPC health protocol, and stops both cleanly on Ctrl-C.
#
# Environment (all optional):
#   SIGIL_DEV_DATA_DIR        data directory        (default ./data)
#   SIGIL_DEV_AUTHORITY       authority gRPC addr   (default 127.0.0.1:7001)
#   SIGIL_DEV_AUTHORIZER      authorizer gRPC addr  (default 127.0.0.1:7002)
#   SIGIL_DEV_AUTHORITY_METRICS / SIGIL_DEV_AUTHORIZER_METRICS
#                             metrics addrs         (default 127.0.0.1:9101 / :9102)
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir="${SIGIL_DEV_DATA_DIR:-./data}"
authority="${SIGIL_DEV_AUTHORITY:-127.0.0.1:7001}"
authorizer="${SIGIL_DEV_AUTHORIZER:-127.0.0.1:7002}"
authority_metrics="${SIGIL_DEV_AUTHORITY_METRICS:-127.0.0.1:9101}"
authorizer_metrics="${SIGIL_DEV_AUTHORIZER_METRICS:-127.0.0.1:9102}"
bin="${SIGIL_DEV_BIN:-./bin}"

# port_free NAME ADDR VAR: fails at once, in one line, when something
# already answers on ADDR, rather than mistaking it for our service later.
port_free() {
	local name="$1" addr="$2" var="$3"
	if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
		echo "dev: port ${addr##*:} ($addr) is already in use; stop what holds it or set $var to another address for the $name" >&2
		exit 1
	fi
}
port_free authority "$authority" SIGIL_DEV_AUTHORITY
port_free authorizer "$authorizer" SIGIL_DEV_AUTHORIZER
port_free "authority's metrics" "$authority_metrics" SIGIL_DEV_AUTHORITY_METRICS
port_free "authorizer's metrics" "$authorizer_metrics" SIGIL_DEV_AUTHORIZER_METRICS

echo "building services into $bin/ ..."
mkdir -p "$bin" "$data_dir"
CGO_ENABLED=0 go build -trimpath -buildvcs=auto -o "$bin/" ./services/authority ./services/authorizer

pids=()
logs="$(mktemp -d)" # our processes' logs, to tell their ports from another program's
stop() {
	trap - INT TERM EXIT
	if [ "${#pids[@]}" -gt 0 ]; then
		echo "stopping ..."
		kill -TERM "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
	rm -rf "$logs"
	echo "stopped"
}
trap stop EXIT
# Ctrl-C is how a user stops it: a clean stop is a success.
trap 'exit 0' INT
trap 'exit 0' TERM

# wait_serving NAME ADDR PID: waits until the process we started logs that
# it listens (so the port is its own, not another program's), then polls
# the health check until SERVING; fails when the process died or 60 s
# passed.
wait_serving() {
	local name="$1" addr="$2" pid="$3"
	for _ in $(seq 1 240); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$name exited; see its log above" >&2
			return 1
		fi
		if grep -q '"msg":"listening"' "$logs/$name.log" 2>/dev/null &&
			"$bin/$name" healthcheck --addr "$addr" --timeout 1s >/dev/null 2>&1; then
			echo "$name is SERVING on $addr"
			return 0
		fi
		sleep 0.25
	done
	echo "$name did not become SERVING on $addr within 60s" >&2
	return 1
}

"$bin/authority" --data-dir "$data_dir" --listen "$authority" --metrics-listen "$authority_metrics" \
	2> >(tee "$logs/authority.log" | sed 's/^/[authority]  /' >&2) &
pids+=($!)
wait_serving authority "$authority" "${pids[0]}"

"$bin/authorizer" --authority "$authority" --authority-token-file "$data_dir/watch.token" \
	--listen "$authorizer" --metrics-listen "$authorizer_metrics" \
	2> >(tee "$logs/authorizer.log" | sed 's/^/[authorizer] /' >&2) &
pids+=($!)
wait_serving authorizer "$authorizer" "${pids[1]}"

cat <<MSG

Sigil is running.
  authority   $authority   (metrics http://$authority_metrics/metrics)
  authorizer  $authorizer   (metrics http://$authorizer_metrics/metrics)
  operator token: $data_dir/operator.token   (data: $data_dir, kept for the next run)

Try, in another terminal:
  go tool grpcurl -plaintext $authority list
  go tool grpcurl -plaintext -H "authorization: Bearer \$(cat $data_dir/operator.token)" \\
    $authority sigil.v1.TokenAuthorityService/ListPermissions
Then follow the walkthrough in README.md. Ctrl-C stops both services.
MSG

wait -n "${pids[@]}" || true
echo "a service exited" >&2
exit 1
