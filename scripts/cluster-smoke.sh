#!/usr/bin/env bash
# cluster-smoke: the loopback cluster comes up, carries a call through
# nginx over TLS, serves its report back through nginx over HTTPS, and
# goes down with nothing left running. About 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh
command -v jq >/dev/null || { source scripts/bench-lib.sh; need_jq; }

t0=$(date +%s)
scripts/cluster-up.sh
trap 'scripts/cluster-down.sh' EXIT
source "$CLUSTER_DIR/cluster.env"
key=$(cat "$API_KEY_FILE")
id="smoke-$(date +%s)-"
# The console follows both gateways: its wall, read while the calls run,
# must announce both calls (nginx puts them on different gateways).
jar="$CLUSTER_DIR/console.jar"
curl -sf -c "$jar" -H 'Content-Type: application/json' --data-binary "{\"key\":\"$key\"}" "http://$CONSOLE/api/login" >/dev/null ||
	die "smoke: sign-in to the console at http://$CONSOLE failed"
curl -sN -m 25 -b "$jar" "http://$CONSOLE/api/live" >"$CLUSTER_DIR/console-live.txt" 2>/dev/null &
wall=$!
"$CALMLINE" loadgen --url "wss://$EDGE/ws/native" --ca-file "$CA_FILE" --api-key-file "$API_KEY_FILE" \
	--calls 2 --ramp 0 --duration 8s --wav cmd/calmline/testdata/call_emodb_9s.wav --codec pcmu \
	--call-prefix "$id" --verify-reports "https://$EDGE" --json >"$CLUSTER_DIR/smoke.json" ||
	{ cat "$CLUSTER_DIR/smoke.json" >&2; die "smoke: the calls through nginx failed"; }
report=$(curl -sf --cacert "$CA_FILE" -H "Authorization: Bearer $key" "https://$EDGE/api/v1/reports/${id}00001") ||
	die "smoke: the report is not readable through nginx"
echo "$report" | jq -e '.incomplete == false and (.audio_bytes | tonumber) > 0 and .end_reason == "END_REASON_HANGUP"' >/dev/null ||
	die "smoke: unexpected report: $(echo "$report" | head -c 400)"
curl -sf --cacert "$CA_FILE" -H "Authorization: Bearer $key" "https://$EDGE/api/v1/escalations?page_size=1" | jq -e '.escalations' >/dev/null ||
	die "smoke: escalation's API is not reachable through nginx"
kill "$wall" 2>/dev/null || true
wait "$wall" 2>/dev/null || true
for n in 00001 00002; do
	grep -q "\"id\":\"${id}$n\"" "$CLUSTER_DIR/console-live.txt" || die "smoke: the console's wall never showed ${id}$n"
done
ups=$(grep -o '"gw":\[[^]]*\]' "$CLUSTER_DIR/console-live.txt" | tail -n1 | grep -o '"up":true' | wc -l)
[ "$ups" -eq 2 ] || die "smoke: the console follows $ups gateways; want 2"
# Plain HTTP to the TLS port is refused: nginx speaks TLS only.
if curl -sf "http://$EDGE/healthz" >/dev/null 2>&1; then die "smoke: nginx answered plain HTTP"; fi
# Each gateway holds its pool's connections to each backend, no more
# (the pool size from deploy/cluster/gateway.flags).
pool=$(flags gateway | grep -o 'pool-size=[0-9]*' | cut -d= -f2)
for g in $(procs | cut -d= -f1 | grep '^gateway'); do
	for b in $REALTIMES $FULLCALLS; do
		n=$(conns_to "$(cat "$CLUSTER_DIR/$g.pid")" "$b")
		[ "$n" -ge 1 ] && [ "$n" -le "$pool" ] || die "smoke: $g holds $n connections to $b; want 1 to $pool"
	done
done
echo "cluster-smoke: ok: 2 calls through wss://$EDGE on the console's wall from both gateways, their reports back over https, $(jq -c '{audio_to_score_p99_ms: .audio_to_score_ms.p99, stop_to_stopped_p99_ms: .stop_to_stopped_ms.p99}' "$CLUSTER_DIR/smoke.json"), $(( $(date +%s) - t0 )) s in all"
