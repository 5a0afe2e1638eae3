#!/usr/bin/env bash
# bench-gateway-profile: the gateway process's CPU, system calls and CPU
# profile under N AudioHook calls (issue 15's "thin gateway" measurement).
# The gateway runs as its own process (`calmline serve --services=gateway
# --cpu-profile`) in front of realtime, fullcall and escalation in another;
# loadgen drives N AudioHook sessions (signed, as Genesys's client does) for
# 60 s. Over a 30 s window with the calls live it prints the gateway's CPU
# (ms per call per second of call) and its read and write system calls per
# call per second (/proc/PID/io); then the CPU profile (gw.pprof), a heap
# profile and a goroutine dump (through the admin token) and the metrics are
# left in OUT. Keep N ≤ 100 on a shared machine.
#
# usage: scripts/bench-gateway-profile.sh [N]     (default 100)
# env:   PROTOCOL=audiohook DURATION=60s GATEWAY_FLAGS="--fullcall-batch 1s"
#        OUT=bench-out/profile-DATE
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

N=${1:-100}
P=${PROTOCOL:-audiohook}
DURATION=${DURATION:-60s}
DIR=${OUT:-bench-out/profile-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$DIR"
need_jq
key=$(new_key)
head -c32 /dev/urandom | base64 >"$DIR/client-secret"
chmod 600 "$DIR/client-secret"
write_tenants "$DIR/tenants.yaml" "$key" "$DIR/client-secret"
start_serve backends 3 --services=realtime,fullcall,escalation --data-dir "$DIR/data" --tenants "$DIR/tenants.yaml" \
	--log-level warn --realtime-addr 127.0.0.1:0 --fullcall-addr 127.0.0.1:0 --escalation-addr 127.0.0.1:0
backends=$SERVE_PID
# A fresh admin token for the profiler, never logged.
head -c24 /dev/urandom | base64 | tr -d '\n' >"$DIR/admin-token"
chmod 600 "$DIR/admin-token"
# shellcheck disable=SC2086
start_serve gateway 1 --services=gateway --realtime "$ADDR_realtime" --fullcall "$ADDR_fullcall" \
	--data-dir "$DIR/data" --tenants "$DIR/tenants.yaml" --log-level warn --gateway-addr 127.0.0.1:0 \
	--cpu-profile "$DIR/gw.pprof" --admin-token-file "$DIR/admin-token" ${GATEWAY_FLAGS:-}
gw=$SERVE_PID
trap 'stop_pid $gw; stop_pid $backends' EXIT
sleep 2
"$CALMLINE" loadgen --protocol "$P" --url "ws://$ADDR_gateway/ws/$P" --api-key "$key" \
	--client-secret-file "$DIR/client-secret" --calls "$N" --ramp 100 --duration "$DURATION" \
	--wav cmd/calmline/testdata/call_emodb_9s.wav --codec pcmu --source-addrs 127.0.0.2-127.0.0.9 \
	--json >"$DIR/loadgen.json" 2>"$DIR/loadgen.log" &
lg=$!
sleep 15
live=$(metric "$ADDR_gateway" calmline_gateway_calls_active)
io() { awk '/^syscr/ { r = $2 } /^syscw/ { w = $2 } END { print r, w }' "/proc/$gw/io"; }
c0=$(cpu_ticks "$gw"); t0=$(date +%s.%N); read -r r0 w0 < <(io)
sleep 30
c1=$(cpu_ticks "$gw"); t1=$(date +%s.%N); read -r r1 w1 < <(io)
load=$(loadavg)
curl -s "http://$ADDR_gateway/metrics" >"$DIR/metrics.txt"
auth="Authorization: Bearer $(cat "$DIR/admin-token")"
curl -s -H "$auth" "http://$ADDR_gateway/debug/pprof/heap?gc=1" >"$DIR/heap.pprof"
curl -s -H "$auth" "http://$ADDR_gateway/debug/pprof/goroutine?debug=1" >"$DIR/goroutines.txt"
wait "$lg" || true
{
	echo "bench-gateway-profile: $(date -u +%FT%TZ), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), commit $(git rev-parse --short HEAD), $P, flags: ${GATEWAY_FLAGS:-none}"
	awk -v c="$((c1 - c0))" -v t="$CLK_TCK" -v a="$t0" -v b="$t1" -v n="$live" -v r="$((r1 - r0))" -v w="$((w1 - w0))" -v l="$load" \
		'BEGIN { s = b - a; pct = 100 * c / t / s; printf "live %d: gateway CPU %.1f %% of a core = %.3f ms per call per second; system calls per call per second: %.1f reads, %.1f writes; load %s\n", n, pct, pct * 10 / n, r / n / s, w / n / s, l }'
	awk '/^calmline_gateway_backend_chunks_total/ { printf "chunks sent: %s %s\n", $1, $2 }' "$DIR/metrics.txt"
	echo "loadgen: $(jq -c '{ok, errors, late_frames, audio_to_score_ms}' "$DIR/loadgen.json")"
	echo "profile: go tool pprof -top $CALMLINE $DIR/gw.pprof"
} | tee "$DIR/summary.txt"
