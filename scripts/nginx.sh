#!/usr/bin/env bash
# nginx for the loopback cluster (scripts/cluster-up.sh), as our own process.
#
#   scripts/nginx.sh install            install Debian's nginx package if missing (idempotent);
#                                       the system service it may start is stopped and disabled
#   scripts/nginx.sh start DIR CONF     run nginx with prefix DIR and config CONF in the background
#                                       (pid file DIR/nginx.pid, logs in DIR/logs); waits until it listens
#   scripts/nginx.sh stop DIR           stop the nginx started with prefix DIR (SIGQUIT, then SIGKILL)
#
# Never uses /etc/nginx or the system service: everything lives in DIR.
set -euo pipefail

die() { echo "nginx.sh: $*" >&2; exit 1; }

nginx_bin() { command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }; }

install() {
	nginx_bin >/dev/null && return 0
	[ "$(id -u)" = 0 ] || die "nginx is not installed and installing it needs root: apt-get install -y nginx"
	export DEBIAN_FRONTEND=noninteractive
	# policy-rc.d 101 keeps the package from starting the system service.
	local prc=/usr/sbin/policy-rc.d created=0
	if [ ! -e "$prc" ]; then printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; created=1; fi
	apt-get install -y -q --no-install-recommends nginx-light >/dev/null 2>&1 ||
		apt-get install -y -q --no-install-recommends nginx >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends nginx >/dev/null; } ||
		{ [ $created = 1 ] && rm -f "$prc"; die "apt-get install nginx failed"; }
	[ $created = 1 ] && rm -f "$prc"
	# Belt and braces: a system nginx the package did start is stopped.
	if [ -f /run/nginx.pid ]; then kill -QUIT "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
	nginx_bin >/dev/null || die "nginx installed but not found"
}

start() {
	local dir=${1:?usage: nginx.sh start DIR CONF} conf=${2:?usage: nginx.sh start DIR CONF} bin
	bin=$(nginx_bin) || die "nginx is not installed (run: scripts/nginx.sh install)"
	mkdir -p "$dir/logs" "$dir/tmp"
	dir=$(cd "$dir" && pwd)
	"$bin" -t -q -p "$dir/" -c "$conf" -e "$dir/logs/error.log" 2>"$dir/logs/configtest.log" ||
		die "config test failed: $(cat "$dir/logs/configtest.log")"
	"$bin" -p "$dir/" -c "$conf" -e "$dir/logs/error.log" -g "pid $dir/nginx.pid;" ||
		die "nginx did not start: $(tail -n5 "$dir/logs/error.log")"
	for _ in $(seq 50); do
		[ -s "$dir/nginx.pid" ] && kill -0 "$(cat "$dir/nginx.pid")" 2>/dev/null && return 0
		sleep 0.1
	done
	die "nginx did not write its pid file"
}

stop() {
	local dir=${1:?usage: nginx.sh stop DIR} pid
	[ -s "$dir/nginx.pid" ] || return 0
	pid=$(cat "$dir/nginx.pid")
	kill -QUIT "$pid" 2>/dev/null || { rm -f "$dir/nginx.pid"; return 0; }
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || { rm -f "$dir/nginx.pid"; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	pkill -KILL -P "$pid" 2>/dev/null || true
	rm -f "$dir/nginx.pid"
}

cmd=${1:-}
shift || true
case "$cmd" in
install) install ;;
start) start "$@" ;;
stop) stop "$@" ;;
*) die "usage: nginx.sh install | start DIR CONF | stop DIR" ;;
esac
