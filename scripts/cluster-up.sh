#!/usr/bin/env bash
# cluster-up: the scale-out topology on loopback, every part its own process
# on its own address (deploy/cluster/cluster.env):
#
#   loadgen/PBX ──wss──▶ nginx (TLS) ──ws──▶ gateway-1, gateway-2
#                                             │ gRPC pools (round robin, health-checked)
#                         realtime-1, realtime-2 ◀┤├▶ fullcall-1, fullcall-2 ──▶ PostgreSQL
#                                   └──────▶ escalation ◀──────┘
#
# A fresh cluster each time, in CLUSTER_DIR (default /tmp/calmline-cluster):
# PostgreSQL (scripts/postgres.sh), a CA and an edge certificate generated
# here (never committed), a tenants file with a generated API key, the
# calmline processes (`calmline serve --services=...`), nginx (scripts/nginx.sh).
# Already up: says so and does nothing. Stop with scripts/cluster-down.sh.
#
# Afterwards CLUSTER_DIR/cluster.env holds what clients need: EDGE (the
# https/wss base URL), CA_FILE, API_KEY_FILE, DSN.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh

if [ -f "$CLUSTER_DIR/cluster.env" ] && alive gateway-1; then
	echo "cluster: already up in $CLUSTER_DIR (scripts/cluster-down.sh to stop it)"
	exit 0
fi
[ -x "$CALMLINE" ] || die "$CALMLINE missing: make build"
command -v openssl >/dev/null || die "openssl is needed for the edge certificate"
scripts/nginx.sh install
scripts/postgres.sh install
# Leftovers of a cluster that half-stopped.
scripts/cluster-down.sh >/dev/null 2>&1 || true
for a in $NGINX_ADDR $GATEWAYS $REALTIMES $FULLCALLS $ESCALATION $CONSOLE; do
	port_free "$a" || die "$a is in use"
done
rm -rf "$CLUSTER_DIR"
mkdir -p "$CLUSTER_DIR/tls" "$CLUSTER_DIR/nginx"
chmod 0711 "$CLUSTER_DIR"

# PostgreSQL, shared by both fullcall instances and escalation.
scripts/postgres.sh start "$CLUSTER_DIR/pg" >"$CLUSTER_DIR/pg.dsn"

# The edge certificate: a throwaway CA and a leaf for nginx's address,
# valid for two days.
edge_ip=${NGINX_ADDR%:*}
(
	cd "$CLUSTER_DIR/tls"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=calmline cluster CA" -keyout ca.key -out ca.crt 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-subj "/CN=$edge_ip" -keyout edge.key -out edge.csr 2>/dev/null
	printf 'subjectAltName=IP:%s,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$edge_ip" >edge.ext
	openssl x509 -req -in edge.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
		-extfile edge.ext -out edge.crt 2>/dev/null
	rm -f edge.csr ca.srl
	chmod 0600 ca.key edge.key
)

# The deployment secret every process proves its service identity with on
# internal gRPC (docs/security.md); one file, shared, owner-only.
(umask 077 && head -c32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$CLUSTER_DIR/service-identity.secret")

# The tenants file: one tenant with a fresh key.
key="clk_$(head -c32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
printf %s "$key" >"$CLUSTER_DIR/api.key"
chmod 0600 "$CLUSTER_DIR/api.key"
cat >"$CLUSTER_DIR/tenants.yaml" <<YAML
tenants:
  - id: $TENANT
    name: Loopback cluster
    max_concurrent_calls: 100000
    api_keys:
      - id: $TENANT-1
        sha256: $(printf %s "$key" | sha256sum | cut -d' ' -f1)
    alert_rule:
      id: caller-pressure
      score: caller_pressure
      threshold: $ALERT_THRESHOLD
      hold_seconds: $ALERT_HOLD_SECONDS
      clear_below: $((ALERT_THRESHOLD - 10))
      cooldown_seconds: 5
YAML

while read -r p; do
	start_proc "${p%%=*}"
done < <(procs)

# nginx.
servers() {
	local a out=""
	for a in $1; do out+="		server $a max_fails=1 fail_timeout=10s;"$'\n'; done
	printf %s "$out"
}
gw=$(servers "$GATEWAYS") fc=$(servers "$FULLCALLS") esc=$(servers "$ESCALATION")
awk -v dir="$CLUSTER_DIR" -v addr="$NGINX_ADDR" -v gw="$gw" -v fc="$fc" -v esc="$esc" '
	{ gsub(/@DIR@/, dir); gsub(/@NGINX_ADDR@/, addr) }
	/^@GATEWAY_SERVERS@$/ { print gw; next }
	/^@FULLCALL_SERVERS@$/ { print fc; next }
	/^@ESCALATION_SERVERS@$/ { print esc; next }
	{ print }' deploy/cluster/nginx.conf.in >"$CLUSTER_DIR/nginx/nginx.conf"
scripts/nginx.sh start "$CLUSTER_DIR/nginx" "$CLUSTER_DIR/nginx/nginx.conf"

cat >"$CLUSTER_DIR/cluster.env" <<ENV
EDGE=$NGINX_ADDR
CA_FILE=$CLUSTER_DIR/tls/ca.crt
API_KEY_FILE=$CLUSTER_DIR/api.key
CONSOLE=$CONSOLE
DSN=$(cat "$CLUSTER_DIR/pg.dsn")
ENV
echo "cluster: up in $CLUSTER_DIR"
echo "cluster: calls to wss://$NGINX_ADDR/ws/native (CA $CLUSTER_DIR/tls/ca.crt, API key in $CLUSTER_DIR/api.key)"
echo "cluster: reports at https://$NGINX_ADDR/api/v1/reports, escalations at https://$NGINX_ADDR/api/v1/escalations"
echo "cluster: supervisor console at http://$CONSOLE/ (both gateways' calls on its wall)"
echo "cluster: pids: $(for n in $(procs | cut -d= -f1); do printf '%s=%s ' "$n" "$(cat "$CLUSTER_DIR/$n.pid")"; done)nginx=$(cat "$CLUSTER_DIR/nginx/nginx.pid")"
