#!/usr/bin/env bash
# chaos: failover under load on the loopback cluster (scripts/cluster-up.sh).
#
# loadgen streams CALLS calls through nginx over TLS (with --reconnect, as a
# PBX that redials after losing its connection), and meanwhile, one at a
# time with RECOVER seconds between (the victim restarted, the cluster
# settled):
#   1. kill -9 realtime-1     (its calls' scoring moves to realtime-2)
#   2. kill -9 fullcall-1     (its calls resume from their checkpoints on fullcall-2)
#   3. kill -9 gateway-1      (its calls reconnect through nginx to gateway-2, same call ids)
#   4. restart escalation     (SIGTERM, start again; realtime's alerts wait and retry)
#   5. drain realtime-2       (SIGTERM: NOT_SERVING, its calls' scoring moves to realtime-1)
#   6. drain fullcall-2       (SIGTERM: its calls are checkpointed and resume on fullcall-1)
# Then it prints the figures, each with its goal:
#   calls dropped          loadgen: calls started that did not complete with their report
#   calls disturbed        reconnects outside the gateway kill (calls on surviving gateways that lost their connection)
#   audio lost             per call, the stored report (read back through nginx) against what loadgen sent,
#                          minus what it sent to the killed gateway that was never acknowledged (printed too)
#   scoring gap            the live-scoring gaps (failover) in the stored reports, from the realtime kill
#                          and the realtime drain together: p99 and max seconds
#   reconnect time         loadgen's reconnects after the gateway kill: p50, p99, max
#   escalations lost       alert episodes that fired (in the stored reports) with no escalation holding them
#
# usage: scripts/chaos.sh            env: CALLS=200 RAMP=50 RECOVER=12 WAV=... OUT=bench-out/chaos-DATE
#                                         KEEP_CLUSTER=1 (leave the cluster up afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh
source scripts/bench-lib.sh

CALLS=${CALLS:-200}
RAMP=${RAMP:-50}
RECOVER=${RECOVER:-12}
WAV=${WAV:-cmd/calmline/testdata/call_emodb_9s.wav}
OUT=${OUT:-bench-out/chaos-$(date -u +%Y%m%dT%H%M%SZ)}
need_jq
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

scripts/cluster-up.sh
trap '[ "${KEEP_CLUSTER:-0}" = 1 ] || scripts/cluster-down.sh >/dev/null' EXIT
source "$CLUSTER_DIR/cluster.env"
KEY=$(cat "$API_KEY_FILE")
api() { curl -sf --cacert "$CA_FILE" -H "Authorization: Bearer $KEY" "https://$EDGE$1"; }
now_ms() { date +%s%3N; }
log() { echo "chaos: $(date -u +%T) $*" | tee -a "$OUT/events.txt"; }

# The calls last through every step: the ramp, a settling time, four steps
# with recovery, and a margin.
ramp_s=$(awk -v n="$CALLS" -v r="$RAMP" 'BEGIN { printf "%d", n / r + 1 }')
settle=10
duration=$((ramp_s + settle + 6 * (RECOVER + 3) + 10))
prefix="chaos-$(date -u +%H%M%S)-"
log "$CALLS calls of ${duration}s through wss://$EDGE (load $(loadavg)); results in $OUT"
"$CALMLINE" loadgen --url "wss://$EDGE/ws/native" --ca-file "$CA_FILE" --api-key-file "$API_KEY_FILE" \
	--calls "$CALLS" --ramp "$RAMP" --duration "${duration}s" --wav "$WAV" --codec pcmu \
	--source-addrs 127.0.0.100-127.0.0.109 --reconnect --call-prefix "$prefix" \
	--verify-reports "https://$EDGE" --json >"$OUT/loadgen.json" 2>"$OUT/loadgen.log" &
lg=$!
sleep $((ramp_s + settle))

step() { # NAME ACTION: records the step's start time
	log "$1"
	echo "$1 $(now_ms)" >>"$OUT/steps.txt"
}
recover() { # NAME: restart a process, wait RECOVER
	start_proc "$1"
	log "$1 restarted (pid $(cat "$CLUSTER_DIR/$1.pid"))"
	sleep "$RECOVER"
}

step kill_realtime; kill -9 "$(cat "$CLUSTER_DIR/realtime-1.pid")"; sleep 3; recover realtime-1
step kill_fullcall; kill -9 "$(cat "$CLUSTER_DIR/fullcall-1.pid")"; sleep 3; recover fullcall-1
step kill_gateway; gw_at=$(now_ms); kill -9 "$(cat "$CLUSTER_DIR/gateway-1.pid")"; sleep 3; recover gateway-1
gw_end=$(now_ms)
step restart_escalation; stop_proc escalation; recover escalation
step drain_realtime; stop_proc realtime-2; recover realtime-2
step drain_fullcall; stop_proc fullcall-2; recover fullcall-2

log "waiting for the calls to end"
wait "$lg" || true
jq -e . "$OUT/loadgen.json" >/dev/null 2>&1 || { tail -20 "$OUT/loadgen.log" >&2; die "loadgen left no summary"; }
load=$(loadavg)

# The stored reports, read back through nginx.
: >"$OUT/reports.jsonl"
for id in $(jq -r '.calls.started as $n | range(1; $n + 1) | tostring' "$OUT/loadgen.json"); do
	api "/api/v1/reports/${prefix}$(printf %05d "$id")" | jq -c '{call_id, chunks, audio_bytes, incomplete, gaps, live_scoring_gaps, alerts}' >>"$OUT/reports.jsonl" || true
done
# Every escalation's alert ids, all pages.
: >"$OUT/escalations.jsonl"
tok=""
for _ in $(seq 1000); do
	page=$(api "/api/v1/escalations?page_size=100&page_token=$tok")
	echo "$page" | jq -c '.escalations[]?' >>"$OUT/escalations.jsonl"
	tok=$(echo "$page" | jq -r '.next_page_token // ""')
	[ -n "$tok" ] || break
done

j="$OUT/loadgen.json"
read -r started completed dropped refused failed mismatched missing lost_bytes < <(jq -r \
	'[.calls.started, .calls.completed, .calls.dropped, .calls.refused, .calls.failed, (.reports.mismatched // 0), (.reports.missing // 0), .reconnects.lost_bytes] | @tsv' "$j")
read -r rc_n rc_p50 rc_p99 rc_max disturbed < <(jq -r --argjson a "$gw_at" --argjson b "$gw_end" \
	'[.reconnects.events // [] | .[] | select(.at_unix_ms >= $a and .at_unix_ms <= $b) | .ms] | sort as $v
	 | ($v | length) as $n
	 | [$n, (if $n > 0 then $v[(($n * 0.5) | ceil) - 1] else 0 end), (if $n > 0 then $v[(($n * 0.99) | ceil) - 1] else 0 end), (if $n > 0 then $v[-1] else 0 end)] | @tsv' "$j" |
	paste - <(jq -r --argjson a "$gw_at" --argjson b "$gw_end" '[.reconnects.events // [] | .[] | select(.at_unix_ms < $a or .at_unix_ms > $b)] | length' "$j"))
rc_failed=$(jq -r '.reconnects.failed' "$j")
stored=$(wc -l <"$OUT/reports.jsonl")
read -r gap_n gap_p99 gap_max < <(jq -rs '[.[] | ([.live_scoring_gaps // [] | .[] | select(.reason == "GAP_REASON_FAILOVER") | (.samples | tonumber) / 8000] | max // empty)] | sort as $v
	| ($v | length) as $n | [$n, (if $n > 0 then $v[(($n * 0.99) | ceil) - 1] else 0 end), (if $n > 0 then $v[-1] else 0 end)] | map(if type == "number" then (. * 100 | round / 100) else . end) | @tsv' "$OUT/reports.jsonl")
reconnect_gaps=$(jq -rs '[.[] | .gaps // [] | .[] | select(.reason == "GAP_REASON_RECONNECT")] | length' "$OUT/reports.jsonl")
fired=$(jq -rs '[.[] | .alerts // [] | .[] | select(.state == "ALERT_STATE_FIRING") | .alert_id] | unique' "$OUT/reports.jsonl")
escalated=$(jq -rs '[.[] | .alert_ids // [] | .[]] | unique' "$OUT/escalations.jsonl")
lost_esc=$(jq -rn --argjson f "$fired" --argjson e "$escalated" '$f - $e')
echo "$lost_esc" >"$OUT/escalations_lost.json"
n_fired=$(echo "$fired" | jq length)
n_lost_esc=$(echo "$lost_esc" | jq length)

{
	echo "chaos: $(date -u +%FT%TZ), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), commit $(git rev-parse --short HEAD), load $load"
	echo "chaos: $CALLS calls ($started started) through nginx/TLS, each ${duration}s; steps: kill -9 realtime-1, kill -9 fullcall-1, kill -9 gateway-1, restart escalation, SIGTERM realtime-2, SIGTERM fullcall-2 (${RECOVER}s recovery each)"
	printf '%-44s %12s   %s\n' figure value goal
	printf '%-44s %12s   %s\n' "calls dropped (started, not completed)" "$dropped" 0
	printf '%-44s %12s   %s\n' "calls refused / failed to open" "$refused / $failed" 0
	printf '%-44s %12s   %s\n' "calls disturbed outside the gateway kill" "$disturbed" 0
	printf '%-44s %12s   %s\n' "reports not holding what was sent" "$((mismatched + missing)) of $completed" 0
	printf '%-44s %12s   %s\n' "  bytes sent to gateway-1, never acked" "$lost_bytes" "(in flight; a reconnect gap)"
	printf '%-44s %12s   %s\n' "calls with a live-scoring (failover) gap" "$gap_n" ""
	printf '%-44s %12s   %s\n' "scoring gap (realtime kill + drain), p99 s" "$gap_p99" "≤ 5"
	printf '%-44s %12s   %s\n' "scoring gap (realtime kill + drain), max s" "$gap_max" "≤ 5"
	printf '%-44s %12s   %s\n' "calls resumed after the gateway kill" "$rc_n (failed $rc_failed)" "its calls, ~half"
	printf '%-44s %12s   %s\n' "reconnect gaps in the stored reports" "$reconnect_gaps" "= resumed"
	printf '%-44s %12s   %s\n' "reconnect time p50 / p99 / max ms" "$rc_p50 / $rc_p99 / $rc_max" "p99 ≤ 5000"
	printf '%-44s %12s   %s\n' "alert episodes fired (stored reports)" "$n_fired" ""
	printf '%-44s %12s   %s\n' "escalations lost (fired, not escalated)" "$n_lost_esc" 0
	echo "chaos: loadgen: $(jq -c '{ok, errors, audio_to_score_ms: .audio_to_score_ms.p99, late_frames, client_cpu: .client.cpu_percent}' "$j")"
} | tee "$OUT/summary.txt"
ok=1
[ "$dropped" = 0 ] && [ "$refused" = 0 ] && [ "$failed" = 0 ] && [ $((mismatched + missing)) = 0 ] && [ "$n_lost_esc" = 0 ] && [ "$stored" = "$started" ] || ok=0
awk -v g="$gap_max" -v r="$rc_p99" 'BEGIN { exit !(g <= 5 && r <= 5000) }' || ok=0
if [ $ok = 1 ]; then echo "chaos: every goal met"; else echo "chaos: goals missed (see above)"; exit 1; fi
