#!/usr/bin/env bash
# Throwaway PostgreSQL clusters for calmline's tests and benchmarks.
#
#   scripts/postgres.sh install          install Debian's postgresql package if missing (idempotent)
#   scripts/postgres.sh start DIR [PORT] create a cluster in DIR (once) and start it on
#                                        127.0.0.1:PORT (a free port when omitted); prints the DSN
#   scripts/postgres.sh stop DIR         stop the cluster in DIR and remove DIR
#
# The cluster trusts loopback connections, listens only on 127.0.0.1 and keeps its
# socket in DIR. It runs without fsync unless PG_DURABLE=1 (tests do not need durability
# against power loss; benchmarks that measure commits should set it). PostgreSQL refuses
# to run as root, so as root the server runs as the "postgres" user the package creates.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {
	local d
	if command -v pg_config >/dev/null 2>&1; then
		d=$(pg_config --bindir 2>/dev/null || true)
		if [ -x "$d/initdb" ]; then echo "$d"; return; fi
	fi
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
	[ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return; }
	return 1
}

install() {
	if bindir >/dev/null; then
		return 0
	fi
	[ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and installing it needs root: apt-get install -y postgresql"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends postgresql >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends postgresql >/dev/null; } ||
		die "apt-get install postgresql failed"
	# The package starts Debian's own cluster; the tests never use it.
	if command -v pg_ctlcluster >/dev/null 2>&1; then
		for c in $(ls /etc/postgresql 2>/dev/null); do
			for n in $(ls "/etc/postgresql/$c" 2>/dev/null); do pg_ctlcluster "$c" "$n" stop 2>/dev/null || true; done
		done
	fi
	bindir >/dev/null || die "postgresql installed but initdb not found"
}

# as runs a command as the cluster's owner.
as() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

start() {
	local dir=${1:?usage: postgres.sh start DIR [PORT]} port=${2:-} bin
	bin=$(bindir) || die "PostgreSQL is not installed (run: scripts/postgres.sh install)"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if [ "$(id -u)" = 0 ]; then
		id postgres >/dev/null 2>&1 || die "no postgres user to run the server as"
		chown postgres "$dir"
		chmod 0700 "$dir"
	fi
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
			die "initdb failed: $(tail -n5 "$dir/initdb.log")"
	fi
	local opts="-c listen_addresses=127.0.0.1 -k $dir -c max_connections=200"
	if [ "${PG_DURABLE:-0}" != 1 ]; then
		opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	fi
	local tries=0
	while :; do
		local p=${port:-$((20000 + RANDOM % 40000))}
		if as "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts -p $p" -w -t 60 start >/dev/null 2>&1; then
			echo "$p" >"$dir/port"
			echo "postgres://postgres@127.0.0.1:$p/postgres?sslmode=disable"
			return 0
		fi
		tries=$((tries + 1))
		# Another process may have taken the port; pick another unless one was asked for.
		if [ -n "$port" ] || [ "$tries" -ge 5 ]; then
			die "the server did not start: $(tail -n5 "$dir/server.log" 2>/dev/null)"
		fi
	done
}

stop() {
	local dir=${1:?usage: postgres.sh stop DIR} bin
	[ -d "$dir" ] || return 0
	if bin=$(bindir) && [ -f "$dir/data/postmaster.pid" ]; then
		as "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
}

case "${1:-}" in
install) install ;;
start) shift; start "$@" ;;
stop) shift; stop "$@" ;;
*) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
