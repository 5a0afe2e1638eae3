#!/usr/bin/env bash
# bench-gateway-mem: the gateway's memory per live call. The gateway runs as
# its own process (`calmline serve --services=gateway`) in front of the
# backends in another, so that what grows with calls is the gateway's own:
# resident memory, live heap after GC (GODEBUG=gctrace), goroutine stacks
# and goroutines, read at 0 calls and with N calls live; the audio waiting
# in the replay logs for fullcall's acknowledgement
# (calmline_gateway_fullcall_unacked_bytes) is reported apart.
#
# usage: scripts/bench-gateway-mem.sh [N]     (default 1000)
# It also reports the gateway's own CPU per call, over 20 s with the calls
# live.
#
# env:   DURATION=90s RAMP=100 SETTLE=20 WAV=cmd/calmline/testdata/call_emodb_9s.wav
#        SOURCES=127.0.0.2-127.0.0.9 OUT=bench-out/mem-DATE
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

N=${1:-1000}
DURATION=${DURATION:-90s}
RAMP=${RAMP:-100}
SETTLE=${SETTLE:-20}
WAV=${WAV:-cmd/calmline/testdata/call_emodb_9s.wav}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.9}
DIR=${OUT:-bench-out/mem-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$DIR"
need_jq
key=$(new_key)
write_tenants "$DIR/tenants.yaml" "$key"

start_serve backends 3 --services=realtime,fullcall,escalation --data-dir "$DIR/data" --tenants "$DIR/tenants.yaml" \
	--log-level warn --realtime-addr 127.0.0.1:0 --fullcall-addr 127.0.0.1:0 --escalation-addr 127.0.0.1:0
backends=$SERVE_PID
GODEBUG=gctrace=1 start_serve gateway 1 --services=gateway --realtime "$ADDR_realtime" --fullcall "$ADDR_fullcall" \
	--data-dir "$DIR/data" --tenants "$DIR/tenants.yaml" --log-level warn --gateway-addr 127.0.0.1:0
gw=$SERVE_PID
trap 'stop_pid $gw; stop_pid $backends' EXIT

# live_heap: the live heap (MB) after the last few GCs, from gctrace.
live_heap_kib() {
	grep -o '[0-9]*->[0-9]*->[0-9]* MB' "$DIR/gateway.log" | tail -5 |
		awk -F'[- >]+' '{ s += $3 } END { if (NR) printf "%.0f\n", s / NR * 1024; else print 0 }'
}
sample() {
	echo "$(rss_kib "$gw") $(($(metric "$ADDR_gateway" go_memstats_heap_inuse_bytes) / 1024)) \
$(($(metric "$ADDR_gateway" go_memstats_stack_inuse_bytes) / 1024)) $(metric "$ADDR_gateway" go_goroutines) \
$(($(metric "$ADDR_gateway" calmline_gateway_fullcall_unacked_bytes) / 1024)) $(live_heap_kib)"
}

sleep 3
curl -s "http://$ADDR_gateway/metrics" >/dev/null
read -r rss0 heap0 stack0 gor0 unacked0 live0 < <(sample)
# No GC has run yet at idle: the heap allocated so far bounds what is live.
[ "$live0" != 0 ] || live0=$(($(metric "$ADDR_gateway" go_memstats_heap_alloc_bytes) / 1024))
"$CALMLINE" loadgen --url "ws://$ADDR_gateway/ws/native" --api-key "$key" --calls "$N" --ramp "$RAMP" \
	--duration "$DURATION" --wav "$WAV" --codec pcmu --source-addrs "$SOURCES" --json >"$DIR/loadgen.json" 2>"$DIR/loadgen.log" &
lg=$!
sleep "$(awk -v n="$N" -v r="$RAMP" -v s="$SETTLE" 'BEGIN { print n / r + s }')"
live=$(metric "$ADDR_gateway" calmline_gateway_calls_active)
read -r rss1 heap1 stack1 gor1 unacked1 live1 < <(sample)
rt_conns=$(conns "${ADDR_realtime##*:}")
fc_conns=$(conns "${ADDR_fullcall##*:}")
# The gateway's own CPU over a window, with the calls live.
# syscr/syscw: its read and write system calls (/proc/PID/io), which the
# load on the machine does not change.
c0=$(cpu_ticks "$gw"); t0=$(date +%s.%N)
read -r r0 w0 < <(syscalls "$gw")
sleep 20
c1=$(cpu_ticks "$gw"); t1=$(date +%s.%N)
read -r r1 w1 < <(syscalls "$gw")
gw_cpu=$(awk -v c="$((c1 - c0))" -v t="$CLK_TCK" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 100 * c / t / (b - a) }')
load=$(loadavg)
wait "$lg" || true

per() { awk -v a="$1" -v b="$2" -v n="$live" 'BEGIN { printf "%.1f", (b - a) / n }'; }
{
	echo "bench-gateway-mem: $(date -u +%FT%TZ), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $load"
	echo "live calls at the sample: $live (of $N); gateway TCP connections to realtime: $rt_conns, to fullcall: $fc_conns"
	echo "gateway CPU: $gw_cpu % of a core over 20 s = $(awk -v c="$gw_cpu" -v n="$live" 'BEGIN { printf "%.3f", c / n }') % per call"
	echo "gateway system calls per call per second: $(awk -v r="$((r1 - r0))" -v w="$((w1 - w0))" -v n="$live" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f reads, %.1f writes", r / n / (b - a), w / n / (b - a) }')"
	echo "                  at 0 calls   at $live calls   per call"
	printf 'RSS KiB           %10s %14s %10s\n' "$rss0" "$rss1" "$(per "$rss0" "$rss1")"
	printf 'live heap KiB     %10s %14s %10s   (after GC, gctrace; at 0 calls: allocated so far)\n' "$live0" "$live1" "$(per "$live0" "$live1")"
	printf 'heap in use KiB   %10s %14s %10s   (live and not yet collected)\n' "$heap0" "$heap1" "$(per "$heap0" "$heap1")"
	printf 'stacks KiB        %10s %14s %10s\n' "$stack0" "$stack1" "$(per "$stack0" "$stack1")"
	printf 'goroutines        %10s %14s %10s\n' "$gor0" "$gor1" "$(per "$gor0" "$gor1")"
	printf 'replay logs KiB   %10s %14s %10s   (unacknowledged audio, in the heap figures)\n' "$unacked0" "$unacked1" "$(per "$unacked0" "$unacked1")"
	echo "loadgen: $(jq -c '{ok, calls, audio_to_score_ms, errors}' "$DIR/loadgen.json")"
} | tee "$DIR/summary.txt"
