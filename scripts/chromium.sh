#!/usr/bin/env bash
# Headless Chromium for the console's browser tests (console/browsertest).
#
#   scripts/chromium.sh install   install Debian's chromium package if missing (idempotent)
#   scripts/chromium.sh path      print the browser's path, or fail when none is installed
#
# The tests find the browser through $CALMLINE_CHROMIUM, then chromium, chromium-browser,
# google-chrome on $PATH. They skip with a message when none is found unless
# CALMLINE_REQUIRE_CHROMIUM=1 (set by .ci/run), so a missing browser is a failure in CI.
set -euo pipefail

die() { echo "chromium.sh: $*" >&2; exit 1; }

path() {
	local c
	if [ -n "${CALMLINE_CHROMIUM:-}" ] && [ -x "$CALMLINE_CHROMIUM" ]; then
		echo "$CALMLINE_CHROMIUM"; return 0
	fi
	for c in chromium chromium-browser google-chrome google-chrome-stable; do
		if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
	done
	return 1
}

install() {
	if path >/dev/null; then
		return 0
	fi
	[ "$(id -u)" = 0 ] || die "Chromium is not installed and installing it needs root: apt-get install -y chromium"
	export DEBIAN_FRONTEND=noninteractive
	# fonts-noto-cjk so that the Japanese UI renders glyphs rather than boxes in screenshots.
	local pkgs="chromium fonts-noto-cjk"
	apt-get install -y --no-install-recommends $pkgs >/dev/null ||
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends $pkgs >/dev/null; } ||
		die "apt-get install $pkgs failed"
	path >/dev/null || die "chromium installed but not found on PATH"
}

case "${1:-}" in
install) install ;;
path) path || die "no Chromium found (run: scripts/chromium.sh install)" ;;
*) die "usage: chromium.sh install|path" ;;
esac
