#!/usr/bin/env bash
# bench-load: the largest number of concurrent stereo G.711 calls the whole
# stack sustains on this machine — `calmline serve` on the embedded
# defaults (one process, SQLite) plus `calmline loadgen` (another process).
#
# For each level N (a fresh stack each time) it streams N calls at
# real-time pace for DURATION after the ramp, hangs them all up in the
# same second, and passes when:
#   - every call completed: none refused or dropped (loadgen "ok"),
#   - every stored report holds every byte loadgen sent (no chunk lost),
#   - p99 audio→score latency ≤ P99_MAX_MS,
#   - the last report was stored within HANGUP_MAX_MS of the last hang-up.
# It also reports, from a 30 s window in the steady state: the stack's CPU
# and memory per call, its TCP connections from the gateway to each
# backend, and loadgen's own CPU.
#
# usage: scripts/bench-load.sh [N...]        (default: 250 500 750 1000 1250)
# env:   DURATION=2m RAMP=100 P99_MAX_MS=250 HANGUP_MAX_MS=2000
#        SERVE_FLAGS="--fullcall-batch 1s" (more flags for the stack's calmline serve)
#        WAV=cmd/calmline/testdata/call_emodb_9s.wav SOURCES=127.0.0.2-127.0.0.9
#        OUT=bench-out/load-DATE  KEEP_GOING=0 (stop at the first failing level)
#        CPU_PROFILE=1 (write the stack's CPU profile to OUT/N/serve.cpu.pprof)
#        FRAMES_PER_WRITE=1 (loadgen --frames-per-write: >1 makes loadgen cheaper, audio in bursts)
#        OVERLOAD=1.5 (overload mode: offer 1.5 x N calls to a gateway started with --max-calls N;
#                      passes when the excess is refused with 503 capacity_* and Retry-After, the
#                      admitted N pass the bounds above, and 0 reports and 0 fullcall bytes are lost)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

DURATION=${DURATION:-2m}
RAMP=${RAMP:-100}
P99_MAX_MS=${P99_MAX_MS:-250}
HANGUP_MAX_MS=${HANGUP_MAX_MS:-2000}
WAV=${WAV:-cmd/calmline/testdata/call_emodb_9s.wav}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.9}
OUT=${OUT:-bench-out/load-$(date -u +%Y%m%dT%H%M%SZ)}
KEEP_GOING=${KEEP_GOING:-0}
SETTLE=${SETTLE:-20} # seconds after the ramp before sampling
WINDOW=${WINDOW:-30} # seconds of steady state sampled
OVERLOAD=${OVERLOAD:-}
LEVELS=("$@")
[ ${#LEVELS[@]} -gt 0 ] || LEVELS=(250 500 750 1000 1250)

need_jq
mkdir -p "$OUT"
echo "bench-load: $(date -u +%FT%TZ), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(go version | cut -d' ' -f3)" | tee "$OUT/summary.txt"
echo "bench-load: DURATION=$DURATION RAMP=$RAMP WAV=$WAV, results in $OUT" | tee -a "$OUT/summary.txt"
printf '%-6s %-4s %9s %9s %9s %9s %11s %11s %9s %9s %9s %7s %7s %9s %7s\n' \
	calls pass completed refused dropped p99_ms max_ms hangup_ms cpu_%/call rss_KiB/call heap_KiB/call rt_conns fc_conns loadgen_% load | tee -a "$OUT/summary.txt"

best=0
for N in "${LEVELS[@]}"; do
	DIR="$OUT/$N"
	mkdir -p "$DIR"
	key=$(new_key)
	write_tenants "$DIR/tenants.yaml" "$key"
	prof=()
	[ "${CPU_PROFILE:-0}" = 1 ] && prof=(--cpu-profile "$DIR/serve.cpu.pprof")
	offer=$N
	if [ -n "$OVERLOAD" ]; then
		offer=$(awk -v n="$N" -v f="$OVERLOAD" 'BEGIN { printf "%d", n * f + 0.5 }')
		prof+=(--max-calls "$N")
	fi
	# shellcheck disable=SC2086
	start_serve stack 4 "${prof[@]}" ${SERVE_FLAGS:-} --data-dir "$DIR/data" --tenants "$DIR/tenants.yaml" --log-level warn \
		--gateway-addr 127.0.0.1:0 --realtime-addr 127.0.0.1:0 --fullcall-addr 127.0.0.1:0 --escalation-addr 127.0.0.1:0
	pid=$SERVE_PID
	sleep 2
	rss0=$(rss_kib "$pid")
	heap0=$(metric "$ADDR_gateway" go_memstats_heap_inuse_bytes)

	"$CALMLINE" loadgen --url "ws://$ADDR_gateway/ws/native" --api-key "$key" --calls "$offer" --ramp "$RAMP" \
		--duration "$DURATION" --wav "$WAV" --codec pcmu --burst-hangup --source-addrs "$SOURCES" \
		--frames-per-write "${FRAMES_PER_WRITE:-1}" --verify-reports "http://$ADDR_fullcall" --json >"$DIR/loadgen.json" 2>"$DIR/loadgen.log" &
	lg=$!
	# The steady state: all calls up, 20 s to settle, then a window.
	sleep "$(awk -v n="$offer" -v r="$RAMP" -v s="$SETTLE" 'BEGIN { print n / r + s }')"
	t0=$(date +%s.%N)
	c0=$(cpu_ticks "$pid")
	lc0=$(cpu_ticks "$lg")
	read -r sr0 sw0 < <(syscalls "$pid")
	sleep "$WINDOW"
	c1=$(cpu_ticks "$pid")
	read -r sr1 sw1 < <(syscalls "$pid")
	lc1=$(cpu_ticks "$lg")
	t1=$(date +%s.%N)
	rss1=$(rss_kib "$pid")
	heap1=$(metric "$ADDR_gateway" go_memstats_heap_inuse_bytes)
	live=$(metric "$ADDR_gateway" calmline_gateway_calls_active)
	rt_conns=$(conns "${ADDR_realtime##*:}")
	fc_conns=$(conns "${ADDR_fullcall##*:}")
	goroutines=$(metric "$ADDR_gateway" go_goroutines)
	load=$(loadavg)
	wait "$lg" || true
	curl -s "http://$ADDR_gateway/metrics" >"$DIR/metrics.txt"
	model=$(curl -s -H "Authorization: Bearer $key" "http://$ADDR_fullcall/api/v1/reports?page_size=1" |
		jq -r '.reports[0].model | "\(.name) \(.version)"' 2>/dev/null || echo unknown)
	stop_pid "$pid"

	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
	cpu=$(awk -v c="$((c1 - c0))" -v t="$CLK_TCK" -v s="$secs" 'BEGIN { printf "%.1f", 100 * c / t / s }')
	lcpu=$(awk -v c="$((lc1 - lc0))" -v t="$CLK_TCK" -v s="$secs" 'BEGIN { printf "%.1f", 100 * c / t / s }')
	j="$DIR/loadgen.json"
	if ! jq -e . "$j" >/dev/null 2>&1; then
		echo "bench-load: loadgen left no summary at $N calls:" >&2
		tail -5 "$DIR/loadgen.log" >&2
		exit 1
	fi
	read -r ok completed refused dropped p99 maxl hangup < <(jq -r '[.ok, .calls.completed, .calls.refused, .calls.dropped,
		.audio_to_score_ms.p99, .audio_to_score_ms.max, .hangup.last_stop_to_last_stopped_ms] | @tsv' "$j")
	pass=no
	if [ -n "$OVERLOAD" ]; then
		# Overload: the admitted calls must pass; the rest must be refused
		# for want of headroom, and nothing admitted may lose audio.
		sum_metric() { grep "^$1" "$DIR/metrics.txt" | grep -- "$2" | awk '{ s += $NF } END { printf "%.0f\n", s }'; }
		cap_refused=$(sum_metric calmline_gateway_calls_refused_total 'reason="capacity_')
		fc_dropped=$(sum_metric calmline_gateway_audio_dropped_bytes_total 'path="fullcall"')
		rt_dropped=$(sum_metric calmline_gateway_audio_dropped_bytes_total 'path="realtime"')
		backpressure=$(sum_metric calmline_gateway_fullcall_backpressure_seconds_total '')
		read -r rep_ok rep_missing rep_mismatched codes < <(jq -r '[.reports.ok // 0, .reports.missing // 0, .reports.mismatched // 0,
			(.errors // {} | to_entries | map("\(.key)=\(.value)") | join(","))] | @tsv' "$j")
		echo "bench-load: overload $N: offered $offer, completed $completed, refused $refused ($codes; gateway capacity refusals $cap_refused), p99 ${p99} ms, reports ok $rep_ok missing $rep_missing mismatched $rep_mismatched, fullcall bytes dropped $fc_dropped, realtime bytes dropped $rt_dropped, backpressure ${backpressure} s" | tee -a "$OUT/summary.txt"
		if [ "$completed" = "$N" ] && [ "$refused" = "$((offer - N))" ] && [ "$cap_refused" -ge "$((offer - N))" ] &&
			[ "$rep_ok" = "$completed" ] && [ "$fc_dropped" = 0 ] &&
			awk -v p="$p99" -v m="$P99_MAX_MS" -v h="$hangup" -v hm="$HANGUP_MAX_MS" 'BEGIN { exit !(p <= m && h <= hm) }'; then
			pass=yes
			best=$N
		fi
	elif [ "$ok" = true ] && [ "$completed" = "$N" ] &&
		awk -v p="$p99" -v m="$P99_MAX_MS" -v h="$hangup" -v hm="$HANGUP_MAX_MS" 'BEGIN { exit !(p <= m && h <= hm) }'; then
		pass=yes
		best=$N
	fi
	printf '%-6s %-4s %9s %9s %9s %9s %11s %11s %9s %9s %9s %7s %7s %9s %7s\n' "$N" "$pass" "$completed" "$refused" "$dropped" "$p99" "$maxl" "$hangup" \
		"$(awk -v c="$cpu" -v n="$N" 'BEGIN { printf "%.3f", c / n }')" \
		"$(( (rss1 - rss0) / N ))" "$(( (heap1 - heap0) / 1024 / N ))" \
		"$rt_conns" "$fc_conns" "$lcpu" "$load" | tee -a "$OUT/summary.txt"
	{
		echo "N=$N model=$model live_at_sample=$live stack_cpu_pct=$cpu rss0_kib=$rss0 rss1_kib=$rss1 heap0=$heap0 heap1=$heap1 goroutines=$goroutines"
		echo "stack system calls per call per second: $(awk -v r="$((sr1 - sr0))" -v w="$((sw1 - sw0))" -v n="$N" -v s="$secs" 'BEGIN { printf "%.1f reads, %.1f writes", r / n / s, w / n / s }')"
		echo "dropped_audio_bytes: $(grep '^calmline_gateway_audio_dropped_bytes_total' "$DIR/metrics.txt" | tr '\n' ' ')"
		echo "loadgen errors: $(jq -c .errors "$j") reports: $(jq -c .reports "$j") late_frames: $(jq .late_frames "$j")"
	} >>"$DIR/detail.txt"
	if [ "$pass" = no ] && [ "$KEEP_GOING" != 1 ]; then
		echo "bench-load: $N calls failed: $(jq -c '{errors, reports, audio_to_score_ms, hangup}' "$j")" | tee -a "$OUT/summary.txt"
		break
	fi
done
echo "bench-load: largest level passed: $best calls (model: ${model:-unknown}; commit $(git rev-parse --short HEAD))" | tee -a "$OUT/summary.txt"
