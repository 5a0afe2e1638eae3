#!/usr/bin/env bash
# bench-cluster: the scale-out topology's throughput on this machine — the
# loopback cluster (scripts/cluster-up.sh: nginx/TLS, 2 gateways, 2 realtime,
# 2 fullcall on PostgreSQL, 1 escalation) with `calmline loadgen` through
# nginx — against the single-process figure of scripts/bench-load.sh.
#
# For each level N (a fresh cluster each time) it streams N calls at
# real-time pace for DURATION after the ramp, hangs them all up in the same
# second, and passes on bench-load's criteria:
#   - every call completed: none refused or dropped (loadgen "ok"),
#   - every stored report (read back through nginx) holds every byte sent,
#   - p99 audio→score latency ≤ P99_MAX_MS,
#   - the last report was stored within HANGUP_MAX_MS of the last hang-up.
# From a WINDOW-second sample of the steady state it reports the CPU of
# every process (per kind, in % of one core), and the established TCP
# connections from each gateway to each realtime and fullcall (the
# gateways' pool size is the expectation).
#
# usage: scripts/bench-cluster.sh [N...]     (default: 300 500 600)
# env:   DURATION=2m RAMP=100 P99_MAX_MS=250 HANGUP_MAX_MS=2000 WAV=... OUT=bench-out/cluster-DATE KEEP_GOING=0
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh
source scripts/cluster-lib.sh

DURATION=${DURATION:-2m}
RAMP=${RAMP:-100}
P99_MAX_MS=${P99_MAX_MS:-250}
HANGUP_MAX_MS=${HANGUP_MAX_MS:-2000}
WAV=${WAV:-cmd/calmline/testdata/call_emodb_9s.wav}
OUT=${OUT:-bench-out/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
KEEP_GOING=${KEEP_GOING:-0}
SETTLE=${SETTLE:-20}
WINDOW=${WINDOW:-30}
LEVELS=("$@")
[ ${#LEVELS[@]} -gt 0 ] || LEVELS=(300 500 600)

need_jq
mkdir -p "$OUT"
trap 'scripts/cluster-down.sh >/dev/null 2>&1 || true' EXIT
echo "bench-cluster: $(date -u +%FT%TZ), $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(go version | cut -d' ' -f3), commit $(git rev-parse --short HEAD)" | tee "$OUT/summary.txt"
echo "bench-cluster: DURATION=$DURATION RAMP=$RAMP WAV=$WAV, results in $OUT" | tee -a "$OUT/summary.txt"
printf '%-6s %-4s %9s %8s %8s %8s %8s %10s %7s %7s %7s %7s %7s %7s %9s %-23s %7s\n' \
	calls pass completed refused dropped p99_ms max_ms hangup_ms gw_% rt_% fc_% esc_% pg_% nginx_% cpu_%/call "conns gw→rt,fc (each)" load | tee -a "$OUT/summary.txt"

# pids_of KIND: the cluster's pids of a kind (gateway, realtime, ...).
pids_of() {
	case $1 in
	nginx) pgrep -P "$(cat "$CLUSTER_DIR/nginx/nginx.pid")"; cat "$CLUSTER_DIR/nginx/nginx.pid" ;;
	pg) local pm; pm=$(head -n1 "$CLUSTER_DIR/pg/data/postmaster.pid"); echo "$pm"; pgrep -P "$pm" || true ;;
	*) for p in $(procs | cut -d= -f1 | grep "^$1"); do cat "$CLUSTER_DIR/$p.pid"; done ;;
	esac
}
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done; echo $t; }
KINDS=(gateway realtime fullcall escalation pg nginx)

best=0
for N in "${LEVELS[@]}"; do
	DIR="$OUT/$N"
	mkdir -p "$DIR"
	scripts/cluster-up.sh >"$DIR/cluster-up.log"
	source "$CLUSTER_DIR/cluster.env"
	declare -A PIDS=()
	for k in "${KINDS[@]}"; do PIDS[$k]=$(pids_of "$k" | xargs); done
	sleep 2
	"$CALMLINE" loadgen --url "wss://$EDGE/ws/native" --ca-file "$CA_FILE" --api-key-file "$API_KEY_FILE" \
		--calls "$N" --ramp "$RAMP" --duration "$DURATION" --wav "$WAV" --codec pcmu --burst-hangup \
		--source-addrs 127.0.0.100-127.0.0.115 --verify-reports "https://$EDGE" --json >"$DIR/loadgen.json" 2>"$DIR/loadgen.log" &
	lg=$!
	sleep "$(awk -v n="$N" -v r="$RAMP" -v s="$SETTLE" 'BEGIN { print n / r + s }')"
	declare -A C0=()
	for k in "${KINDS[@]}"; do C0[$k]=$(ticks ${PIDS[$k]}); done
	t0=$(date +%s.%N)
	sleep "$WINDOW"
	t1=$(date +%s.%N)
	declare -A PCT=()
	total=0
	for k in "${KINDS[@]}"; do
		c1=$(ticks ${PIDS[$k]})
		PCT[$k]=$(awk -v c="$((c1 - ${C0[$k]}))" -v t="$CLK_TCK" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 100 * c / t / (b - a) }')
		total=$(awk -v s="$total" -v p="${PCT[$k]}" 'BEGIN { print s + p }')
	done
	# Established connections from each gateway process to each backend.
	conns=""
	for g in $(procs | cut -d= -f1 | grep '^gateway'); do
		for b in $REALTIMES $FULLCALLS; do
			conns+="$(conns_to "$(cat "$CLUSTER_DIR/$g.pid")" "$b"),"
		done
	done
	conns=${conns%,}
	load=$(loadavg)
	wait "$lg" || true
	scripts/cluster-down.sh >/dev/null
	j="$DIR/loadgen.json"
	if ! jq -e . "$j" >/dev/null 2>&1; then
		echo "bench-cluster: loadgen left no summary at $N calls:" >&2
		tail -5 "$DIR/loadgen.log" >&2
		exit 1
	fi
	read -r ok completed refused dropped p99 maxl hangup < <(jq -r '[.ok, .calls.completed, .calls.refused, .calls.dropped,
		.audio_to_score_ms.p99, .audio_to_score_ms.max, .hangup.last_stop_to_last_stopped_ms] | @tsv' "$j")
	pass=no
	if [ "$ok" = true ] && [ "$completed" = "$N" ] &&
		awk -v p="$p99" -v m="$P99_MAX_MS" -v h="$hangup" -v hm="$HANGUP_MAX_MS" 'BEGIN { exit !(p <= m && h <= hm) }'; then
		pass=yes
		best=$N
	fi
	printf '%-6s %-4s %9s %8s %8s %8s %8s %10s %7s %7s %7s %7s %7s %7s %9s %-23s %7s\n' "$N" "$pass" "$completed" "$refused" "$dropped" "$p99" "$maxl" "$hangup" \
		"${PCT[gateway]}" "${PCT[realtime]}" "${PCT[fullcall]}" "${PCT[escalation]}" "${PCT[pg]}" "${PCT[nginx]}" \
		"$(awk -v c="$total" -v n="$N" 'BEGIN { printf "%.3f", c / n }')" "$conns" "$load" | tee -a "$OUT/summary.txt"
	echo "N=$N loadgen: $(jq -c '{errors, reports, late_frames, client_cpu: .client.cpu_percent}' "$j")" >>"$DIR/detail.txt"
	if [ "$pass" = no ] && [ "$KEEP_GOING" != 1 ]; then
		echo "bench-cluster: $N calls failed: $(jq -c '{errors, reports, audio_to_score_ms, hangup}' "$j")" | tee -a "$OUT/summary.txt"
		break
	fi
done
echo "bench-cluster: largest level passed: $best calls (pool size $(flags gateway | grep -o 'pool-size=[0-9]*' | cut -d= -f2); conns column: gateway-1→rt1,rt2,fc1,fc2 then gateway-2→...)" | tee -a "$OUT/summary.txt"
