#!/usr/bin/env bash
# cluster-down: stops the loopback cluster scripts/cluster-up.sh started —
# nginx first (no new calls), the gateways (they drain: their calls'
# reports are stored), then realtime, fullcall, escalation, PostgreSQL.
# Each process gets SIGTERM and SIGKILL after STOP_TIMEOUT (20 s). Logs stay
# in CLUSTER_DIR; nothing is left running and the ports are free.
# Idempotent: with nothing up it does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh

[ -d "$CLUSTER_DIR" ] || exit 0
scripts/nginx.sh stop "$CLUSTER_DIR/nginx"
# Reverse start order; the processes of one kind stop in parallel.
for kind in console gateway realtime fullcall escalation; do
	for p in $(procs | cut -d= -f1 | grep "^$kind"); do
		stop_proc "$p" &
	done
	wait
done
if [ -d "$CLUSTER_DIR/pg" ]; then
	scripts/postgres.sh stop "$CLUSTER_DIR/pg" >/dev/null 2>&1 || true
fi
rm -f "$CLUSTER_DIR/cluster.env"
for a in $NGINX_ADDR $GATEWAYS $REALTIMES $FULLCALLS $ESCALATION $CONSOLE; do
	port_free "$a" || echo "cluster: $a is still in use" >&2
done
echo "cluster: down (logs in $CLUSTER_DIR)"
