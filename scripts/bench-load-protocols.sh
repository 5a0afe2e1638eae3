#!/usr/bin/env bash
# bench-load-protocols: the same load over the native protocol, AudioHook,
# Twilio-style streams and Asterisk chan_websocket, side by side. The
# gateway runs as its own process (`calmline serve --services=gateway`) in
# front of the backends in another, so that its CPU — what differs between
# protocols — is measured on its own.
#
# For each level N and each protocol (a fresh gateway and backends each
# time) it streams N concurrent stereo μ-law calls at real-time pace for
# DURATION, hangs them all up in the same second, checks every stored
# report against what was sent (loadgen --verify-reports), and samples a
# WINDOW of steady state: the gateway's CPU, the backends' CPU and
# loadgen's CPU, as CPU time from /proc (less sensitive to other work on
# the machine than wall-clock figures, but not immune to it).
#
# Per row: calls completed (of N), refused and dropped; stored reports
# checked ok; p99 audio→score latency (n/a for Twilio and Asterisk, which
# carry no scores back); the gateway's CPU in % of a core and per call (ms
# of CPU per second of call), and that per-call figure as a ratio to
# native's at the same level; the backends' and loadgen's CPU; the
# 1-minute load average at the end of the window.
#
# usage: scripts/bench-load-protocols.sh [N...]   (default: 200 400)
# env:   DURATION=2m RAMP=100 SETTLE=15 WINDOW=60 PROTOCOLS="native audiohook twilio asterisk"
#        WAV=cmd/calmline/testdata/call_emodb_9s.wav SOURCES=127.0.0.2-127.0.0.9
#        OUT=bench-out/protocols-DATE
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

DURATION=${DURATION:-2m}
RAMP=${RAMP:-100}
SETTLE=${SETTLE:-15}
WINDOW=${WINDOW:-60}
PROTOCOLS=${PROTOCOLS:-native audiohook twilio asterisk}
WAV=${WAV:-cmd/calmline/testdata/call_emodb_9s.wav}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.9}
OUT=${OUT:-bench-out/protocols-$(date -u +%Y%m%dT%H%M%SZ)}
LEVELS=("$@")
[ ${#LEVELS[@]} -gt 0 ] || LEVELS=(200 400)

need_jq
mkdir -p "$OUT"
echo "bench-load-protocols: $(date -u +%FT%TZ), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(go version | cut -d' ' -f3), commit $(git rev-parse --short HEAD)" | tee "$OUT/summary.txt"
echo "bench-load-protocols: DURATION=$DURATION RAMP=$RAMP SETTLE=${SETTLE}s WINDOW=${WINDOW}s WAV=$WAV, results in $OUT" | tee -a "$OUT/summary.txt"
printf '%-6s %-10s %9s %7s %7s %10s %8s %8s %12s %8s %9s %9s %6s\n' \
	calls protocol completed refused dropped reports_ok p99_ms gw_cpu_% gw_ms/call/s vs_native backend_% loadgen_% load | tee -a "$OUT/summary.txt"

gw=""
backends=""
cleanup() {
	[ -z "$gw" ] || stop_pid "$gw"
	[ -z "$backends" ] || stop_pid "$backends"
}
trap cleanup EXIT

for N in "${LEVELS[@]}"; do
	native_per_call=""
	for P in $PROTOCOLS; do
		DIR="$OUT/$N-$P"
		mkdir -p "$DIR"
		key=$(new_key)
		# The key has an AudioHook client secret (generated here, never
		# kept in git); the other protocols ignore it.
		head -c32 /dev/urandom | base64 >"$DIR/client-secret"
		chmod 600 "$DIR/client-secret"
		write_tenants "$DIR/tenants.yaml" "$key" "$DIR/client-secret"
		start_serve backends 3 --services=realtime,fullcall,escalation --data-dir "$DIR/data" --tenants "$DIR/tenants.yaml" \
			--log-level warn --realtime-addr 127.0.0.1:0 --fullcall-addr 127.0.0.1:0 --escalation-addr 127.0.0.1:0
		backends=$SERVE_PID
		start_serve gateway 1 --services=gateway --realtime "$ADDR_realtime" --fullcall "$ADDR_fullcall" \
			--data-dir "$DIR/data" --tenants "$DIR/tenants.yaml" --log-level warn --gateway-addr 127.0.0.1:0
		gw=$SERVE_PID
		sleep 2

		"$CALMLINE" loadgen --protocol "$P" --url "ws://$ADDR_gateway/ws/$P" --api-key "$key" \
			--client-secret-file "$DIR/client-secret" --calls "$N" --ramp "$RAMP" --duration "$DURATION" \
			--wav "$WAV" --codec pcmu --burst-hangup --source-addrs "$SOURCES" \
			--verify-reports "http://$ADDR_fullcall" --json >"$DIR/loadgen.json" 2>"$DIR/loadgen.log" &
		lg=$!
		sleep "$(awk -v n="$N" -v r="$RAMP" -v s="$SETTLE" 'BEGIN { print n / r + s }')"
		live=$(metric "$ADDR_gateway" calmline_gateway_calls_active)
		t0=$(date +%s.%N)
		g0=$(cpu_ticks "$gw")
		b0=$(cpu_ticks "$backends")
		l0=$(cpu_ticks "$lg")
		sleep "$WINDOW"
		g1=$(cpu_ticks "$gw")
		b1=$(cpu_ticks "$backends")
		l1=$(cpu_ticks "$lg")
		t1=$(date +%s.%N)
		load=$(loadavg)
		wait "$lg" || true
		curl -s "http://$ADDR_gateway/metrics" >"$DIR/gateway-metrics.txt"
		stop_pid "$gw"
		gw=""
		stop_pid "$backends"
		backends=""

		j="$DIR/loadgen.json"
		if ! jq -e . "$j" >/dev/null 2>&1; then
			echo "bench-load-protocols: loadgen left no summary for $P at $N calls:" >&2
			tail -5 "$DIR/loadgen.log" >&2
			continue
		fi
		pct() { awk -v c="$(($2 - $1))" -v t="$CLK_TCK" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 100 * c / t / (b - a) }'; }
		gcpu=$(pct "$g0" "$g1")
		bcpu=$(pct "$b0" "$b1")
		lcpu=$(pct "$l0" "$l1")
		# % of a core / live calls * 10 = ms of gateway CPU per second of call.
		per_call=$(awk -v c="$gcpu" -v n="$live" 'BEGIN { if (n > 0) printf "%.4f", c * 10 / n; else print "nan" }')
		[ "$P" != native ] || native_per_call=$per_call
		ratio=$(awk -v a="$per_call" -v b="$native_per_call" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
		read -r completed refused dropped rok p99 < <(jq -r '[.calls.completed, .calls.refused, .calls.dropped,
			(.reports.ok // 0), (if .audio_to_score_ms == null then "n/a" else .audio_to_score_ms.p99 end)] | @tsv' "$j")
		printf '%-6s %-10s %9s %7s %7s %10s %8s %8s %12s %8s %9s %9s %6s\n' "$N" "$P" "$completed" "$refused" "$dropped" "$rok" "$p99" \
			"$gcpu" "$per_call" "$ratio" "$bcpu" "$lcpu" "$load" | tee -a "$OUT/summary.txt"
		{
			echo "N=$N protocol=$P live_at_sample=$live window_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
			echo "  loadgen: ok=$(jq .ok "$j") errors=$(jq -c .errors "$j") reports=$(jq -c .reports "$j") late_frames=$(jq .late_frames "$j") audio_to_score=$(jq -c .audio_to_score_ms "$j") stop_to_stopped=$(jq -c .stop_to_stopped_ms "$j")"
			echo "  gateway: events_out_bytes=$(awk '$1 ~ /^calmline_gateway_events_out_bytes_total/ { s += $NF } END { printf "%.0f", s }' "$DIR/gateway-metrics.txt") audio_in_bytes=$(awk '$1 ~ /^calmline_gateway_audio_in_bytes_total/ { s += $NF } END { printf "%.0f", s }' "$DIR/gateway-metrics.txt")"
		} >>"$OUT/detail.txt"
	done
done
cat "$OUT/detail.txt" >>"$OUT/summary.txt"
