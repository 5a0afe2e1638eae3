#!/usr/bin/env bash
# measure-split.sh N: how the backends' CPU and memory divide between
# realtime, fullcall and escalation. Runs each service as its own
# `calmline serve --services=X` process (SQLite), N native calls from
# `calmline loadgen` (100 s, ramp 30/s), and prints, per process, the CPU
# over a 40 s window of steady state (from /proc) and the RSS growth per
# call, then fullcall's seconds analysed by source (all from realtime
# when realtime keeps up). The capacity model reads fullcall's share of
# the backends' CPU from it (measured.json: fullcall_share_of_backends_cpu).
# A light run (60 calls is about a tenth of a core for the stack), not a
# load benchmark; build bin/calmline first.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bench-lib.sh
N=${1:-60}
DIR=$(mktemp -d /tmp/calmline-split.XXXXXX)
key=$(new_key)
write_tenants "$DIR/tenants.yaml" "$key"
common=(--data-dir "$DIR/data" --tenants "$DIR/tenants.yaml" --log-level warn)
pids=()
trap 'for p in "${pids[@]}"; do stop_pid "$p"; done' EXIT
start_serve esc 1 --services=escalation "${common[@]}" --escalation-addr 127.0.0.1:0
esc=$SERVE_PID; pids+=("$SERVE_PID")
start_serve rt 1 --services=realtime --escalation "$ADDR_escalation" "${common[@]}" --realtime-addr 127.0.0.1:0
rt=$SERVE_PID; pids+=("$SERVE_PID")
start_serve fc 1 --services=fullcall --escalation "$ADDR_escalation" "${common[@]}" --fullcall-addr 127.0.0.1:0
fc=$SERVE_PID; pids+=("$SERVE_PID")
start_serve gw 1 --services=gateway --realtime "$ADDR_realtime" --fullcall "$ADDR_fullcall" "${common[@]}" --gateway-addr 127.0.0.1:0
gw=$SERVE_PID; pids+=("$SERVE_PID")
sleep 2
declare -A r0 c0 r1 c1
for p in esc rt fc gw; do r0[$p]=$(rss_kib "${!p}"); done
"$CALMLINE" loadgen --url "ws://$ADDR_gateway/ws/native" --api-key "$key" --calls "$N" --ramp 30 --duration 100s \
	--wav cmd/calmline/testdata/call_emodb_9s.wav --codec pcmu --burst-hangup --source-addrs 127.0.0.2-127.0.0.9 \
	--verify-reports "http://$ADDR_fullcall" --json >"$DIR/loadgen.json" 2>"$DIR/loadgen.log" &
lg=$!
sleep 25 # the ramp and a settling time: a measurement window, not synchronisation
live=$(metric "$ADDR_gateway" calmline_gateway_calls_active)
for p in esc rt fc gw; do c0[$p]=$(cpu_ticks "${!p}"); done
t0=$(date +%s.%N)
sleep 40
for p in esc rt fc gw; do
	c1[$p]=$(cpu_ticks "${!p}")
	r1[$p]=$(rss_kib "${!p}")
done
t1=$(date +%s.%N)
wait $lg || true
echo "measure-split: $(date -u +%FT%TZ), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), commit $(git rev-parse --short HEAD), $live live calls, load $(cut -d' ' -f1-3 /proc/loadavg)"
for p in esc rt fc gw; do
	awk -v p="$p" -v c="$((c1[$p] - c0[$p]))" -v t="$(getconf CLK_TCK)" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
		-v n="$live" -v ra="${r0[$p]}" -v rb="${r1[$p]}" \
		'BEGIN { pct = 100 * c / t / s; printf "%-4s cpu %.2f %% of a core, %.4f %% per call; rss +%d KiB per call\n", p, pct, pct / n, (rb - ra) / n }'
done
echo "loadgen reports: $(jq -c .reports "$DIR/loadgen.json")"
curl -s "http://$ADDR_fullcall/metrics" | grep -E '^calmline_fullcall_seconds_analysed_total' || true
