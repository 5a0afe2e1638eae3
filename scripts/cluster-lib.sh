# Shared pieces of the loopback cluster's scripts (sourced, not run).
# shellcheck shell=bash

CALMLINE=${CALMLINE:-bin/calmline}
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/calmline-cluster}
# shellcheck source=../deploy/cluster/cluster.env
source deploy/cluster/cluster.env

die() { echo "cluster: $*" >&2; exit 1; }

# flags FILE: the flags in a deploy/cluster/*.flags file.
flags() { sed -e 's/#.*//' "deploy/cluster/$1.flags" | xargs; }

# csv LIST: a space-separated list, comma-separated.
csv() { echo "$1" | tr ' ' ','; }

# procs: every calmline process of the cluster as NAME=SERVICE@ADDR.
procs() {
	local i=1 a
	echo "escalation=escalation@$ESCALATION"
	for a in $FULLCALLS; do echo "fullcall-$i=fullcall@$a"; i=$((i + 1)); done
	i=1
	for a in $REALTIMES; do echo "realtime-$i=realtime@$a"; i=$((i + 1)); done
	i=1
	for a in $GATEWAYS; do echo "gateway-$i=gateway@$a"; i=$((i + 1)); done
	echo "console=console@$CONSOLE"
}

# proc_spec NAME: prints SERVICE ADDR of a process.
proc_spec() {
	local p
	p=$(procs | grep "^$1=") || die "no process $1"
	p=${p#*=}
	echo "${p%@*} ${p#*@}"
}

# start_proc NAME: starts one calmline process of the cluster in the
# background (it outlives the script), logging to $CLUSTER_DIR/NAME.{out,log},
# its pid in NAME.pid; waits until it announces its listener.
start_proc() {
	local name=$1 svc addr dsn
	read -r svc addr < <(proc_spec "$name")
	dsn=$(cat "$CLUSTER_DIR/pg.dsn")
	local args=(serve "--services=$svc" "--$svc-addr=$addr" --data-dir "$CLUSTER_DIR/$name" --tenants "$CLUSTER_DIR/tenants.yaml" --service-secret-file "$CLUSTER_DIR/service-identity.secret")
	case $svc in
	gateway) args+=(--realtime "$(csv "$REALTIMES")" --fullcall "$(csv "$FULLCALLS")") ;;
	realtime) args+=(--escalation "$ESCALATION") ;;
	fullcall) args+=(--escalation "$ESCALATION" --fullcall-database "$dsn") ;;
	escalation) args+=(--escalation-database "$dsn") ;;
	console) args+=(--console-gateways "$(csv "$GATEWAYS")" --console-fullcall "${FULLCALLS%% *}" --console-escalation "$ESCALATION") ;;
	esac
	# shellcheck disable=SC2046
	args+=($(flags "$svc"))
	mkdir -p "$CLUSTER_DIR/$name"
	: >"$CLUSTER_DIR/$name.out"
	nohup "$CALMLINE" "${args[@]}" >"$CLUSTER_DIR/$name.out" 2>>"$CLUSTER_DIR/$name.log" </dev/null &
	local pid=$!
	echo "$pid" >"$CLUSTER_DIR/$name.pid"
	for _ in $(seq 300); do
		grep -q '^calmline: ready service=' "$CLUSTER_DIR/$name.out" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || { tail -n 20 "$CLUSTER_DIR/$name.log" >&2; die "$name exited at start"; }
		sleep 0.1
	done
	die "$name did not announce its listener within 30 s"
}

# stop_proc NAME [SIGNAL]: SIGTERM (or SIGNAL) and wait, SIGKILL after
# STOP_TIMEOUT seconds.
stop_proc() {
	local name=$1 sig=${2:-TERM} pidf="$CLUSTER_DIR/$1.pid" pid
	[ -s "$pidf" ] || return 0
	pid=$(cat "$pidf")
	if kill "-$sig" "$pid" 2>/dev/null; then
		local n=$((${STOP_TIMEOUT:-20} * 10))
		while kill -0 "$pid" 2>/dev/null && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
		if kill -0 "$pid" 2>/dev/null; then
			echo "cluster: $name did not stop within ${STOP_TIMEOUT:-20} s; SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
			while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
		fi
	fi
	rm -f "$pidf"
}

# alive NAME: whether the process is running.
alive() { [ -s "$CLUSTER_DIR/$1.pid" ] && kill -0 "$(cat "$CLUSTER_DIR/$1.pid")" 2>/dev/null; }

# port_free ADDR: nothing listens there.
port_free() { ! ss -Htln "( sport = :${1##*:} )" | awk '{print $4}' | grep -qx "$1"; }

# conns_to PID ADDR: established TCP connections process PID holds to ADDR.
conns_to() {
	ss -Htnp state established "( dport = :${2##*:} )" | awk -v d="$2" -v p="pid=$1," '$4 == d && index($0, p) > 0' | wc -l
}
