# Shared helpers of the load benchmarks (sourced, not run).
# shellcheck shell=bash

CALMLINE=${CALMLINE:-bin/calmline}
CLK_TCK=$(getconf CLK_TCK)

# need_jq installs jq (to read loadgen's JSON) when it is missing.
need_jq() {
	command -v jq >/dev/null && return
	echo "bench: installing jq" >&2
	if [ "$(id -u)" = 0 ]; then apt-get install -y -q jq >/dev/null; else sudo apt-get install -y -q jq >/dev/null; fi
}

# new_key prints a fresh API key.
new_key() { echo "clk_$(head -c32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"; }

# write_tenants FILE KEY [SECRET_FILE] writes a tenants file with one
# tenant, "bench", whose limit does not get in the way; with SECRET_FILE,
# its key signs AudioHook sessions with the secret in that file.
write_tenants() {
	local hash
	hash=$(printf %s "$2" | sha256sum | cut -d' ' -f1)
	cat >"$1" <<YAML
tenants:
  - id: bench
    name: Load benchmark
    max_concurrent_calls: 100000
    api_keys:
      - id: bench-1
        sha256: $hash
YAML
	if [ -n "${3:-}" ]; then
		echo "        client_secret_file: $(realpath "$3")" >>"$1"
	fi
}

# start_serve NAME WANT ARGS...: starts `calmline serve ARGS` in the
# background, logging to $DIR/NAME.{out,log}, and waits until WANT services
# have announced their listeners. Sets SERVE_PID and, per service, ADDR_<name>.
start_serve() {
	local name=$1 want=$2
	shift 2
	"$CALMLINE" serve "$@" >"$DIR/$name.out" 2>"$DIR/$name.log" &
	SERVE_PID=$!
	local n=0
	for _ in $(seq 600); do
		n=$(grep -c '^calmline: ready service=' "$DIR/$name.out" || true)
		[ "$n" -ge "$want" ] && break
		kill -0 "$SERVE_PID" 2>/dev/null || { echo "bench: $name exited:" >&2; tail -20 "$DIR/$name.log" >&2; exit 1; }
		sleep 0.1
	done
	[ "$n" -ge "$want" ] || { echo "bench: $name not ready" >&2; exit 1; }
	while read -r line; do
		local svc=${line#calmline: ready service=}
		svc=${svc%% *}
		printf -v "ADDR_$svc" %s "${line##* addr=}"
	done < <(grep '^calmline: ready service=' "$DIR/$name.out")
}

# stop_pid PID: SIGTERM and wait.
stop_pid() {
	kill -TERM "$1" 2>/dev/null || return 0
	wait "$1" 2>/dev/null || true
}

# metric ADDR NAME: a metric's value (summed over its series) from a
# service's /metrics.
metric() {
	curl -s "http://$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f\n", s }'
}

# rss_kib PID: resident memory.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# cpu_ticks PID: user + system CPU time in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# syscalls PID: the read-like and write-like system calls the process has
# made (/proc/PID/io syscr, syscw).
syscalls() { awk '/^syscr:/ { r = $2 } /^syscw:/ { w = $2 } END { print r, w }' "/proc/$1/io"; }

# conns PORT: established TCP connections to a local port (the client
# side: the gateway's connections to a backend).
conns() { ss -Htn state established "( dport = :$1 )" | wc -l; }

# loadavg: the 1-minute load average.
loadavg() { cut -d' ' -f1 /proc/loadavg; }
