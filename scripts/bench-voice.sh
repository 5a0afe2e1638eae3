#!/usr/bin/env bash
# bench-voice.sh — time calmline's voice analysis against the reference tools
# (Praat 6.3 and aubio) on the same recording, in one run, and print the
# figures as a Markdown table: CPU seconds (user + system, all threads) and
# seconds of audio per CPU second ("× real time").
#
# Usage: scripts/bench-voice.sh [WAV]
#   WAV  default ../shared/corpus/long/long_600s.ulaw.wav (10 min, μ-law mono)
# Environment:
#   CALMLINE        the calmline binary (default bin/calmline; `make build` makes it)
#   PRAAT_FEATURES  features.praat (default: tools/praat/features.praat next to the corpus)
#
# Praat and aubio are installed with apt-get when missing (idempotent; needs
# root or sudo). A tool that cannot be installed is reported and skipped.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
wav=${1:-$here/../shared/corpus/long/long_600s.ulaw.wav}
calmline=${CALMLINE:-$here/bin/calmline}
[ -f "$wav" ] || { echo "bench-voice: no such file: $wav" >&2; exit 2; }
wav=$(cd "$(dirname "$wav")" && pwd)/$(basename "$wav")
praat_script=${PRAAT_FEATURES:-$(dirname "$(dirname "$(dirname "$wav")")")/tools/praat/features.praat}
[ -x "$calmline" ] || { echo "bench-voice: $calmline missing: run make build" >&2; exit 2; }

# install PKG CMD: apt-get install PKG unless CMD is already on the PATH.
install() {
  command -v "$2" >/dev/null 2>&1 && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "bench-voice: installing $1 ..." >&2
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1"; } >/dev/null 2>&1 ||
    echo "bench-voice: could not install $1" >&2
  command -v "$2" >/dev/null 2>&1
}
have_praat=0 have_aubio=0
install praat praat && have_praat=1
install aubio-tools aubiopitch && have_aubio=1

# Duration of the file from its header (8 or 16 kHz, any codec).
dur=$("$calmline" analyze "$wav" | sed -n 's/.*"duration_s":\([0-9.]*\).*/\1/p')

rows=()
# run NAME WHAT CMD...: time CMD (CPU = user + sys of the process and its
# children) and add a row.
run() {
  local name=$1 what=$2; shift 2
  local t
  t=$(mktemp)
  /usr/bin/time -f '%U %S %e' -o "$t" "$@" >/dev/null 2>&1 || { echo "bench-voice: $name failed" >&2; rm -f "$t"; return 0; }
  read -r user sys wall <"$t"
  rm -f "$t"
  local cpu rt
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.3f", u+s}')
  rt=$(awk -v d="$dur" -v c="$cpu" 'BEGIN{ if (c > 0) printf "%.0f", d/c; else print "—" }')
  rows+=("| $name | $what | $cpu | $rt |")
}

# The Go benchmark: the per-channel analysis alone on the same file (decoded
# first), in 100 ms chunks as the services push it; CPU time from getrusage.
if command -v go >/dev/null 2>&1; then
  corpus=$(dirname "$(dirname "$wav")")
  b=$(cd "$here/lib" && CORPUS=$corpus go test -run '^$' -bench 'BenchmarkCallLong600$' -benchtime 5x -benchmem ./voice/ 2>/dev/null | grep '^BenchmarkCallLong600' || true)
  rt=$(echo "$b" | awk '{for (i = 2; i <= NF; i++) if ($i == "x_realtime_cpu") print $(i-1)}')
  if [ -n "$rt" ]; then
    cpu=$(awk -v d="$dur" -v r="$rt" 'BEGIN{printf "%.3f", d/r}')
    allocs=$(echo "$b" | awk '{for (i = 2; i <= NF; i++) if ($i == "allocs/op") print $(i-1)}')
    rows+=("| calmline voice.Call (go test -bench CallLong600) | the same analysis without process start, file I/O and JSON (1 channel, 100 ms chunks; $allocs allocations per 10 min, all at set-up) | $cpu | $rt |")
  fi
fi
run "calmline analyze" "everything: F0+voicing, intensity, balance, HNR, pulses, jitter, shimmer, syllables, VAD, baseline, scores, JSON (1 channel)" "$calmline" analyze "$wav"
if [ $have_praat -eq 1 ] && [ -f "$praat_script" ]; then
  pr=$(command -v praat_nogui || command -v praat)
  run "Praat To Pitch (cc)" "F0 + voicing only" "$pr" --run "$praat_script" "$wav" pitch cc 75 500 - -
  run "Praat To Pitch (ac)" "F0 + voicing only" "$pr" --run "$praat_script" "$wav" pitch ac 75 500 - -
  run "Praat voice report" "pitch, pulses, jitter, shimmer, HNR, intensity, silences, syllables (features.praat full)" "$pr" --run "$praat_script" "$wav" full cc 75 500 - -
else
  echo "bench-voice: Praat or $praat_script unavailable; skipped" >&2
fi
if [ $have_aubio -eq 1 ]; then
  run "aubiopitch -p yinfft" "F0 only, no voicing decision (defaults: 2048/256)" aubiopitch -i "$wav" -p yinfft
  run "aubiopitch -p yin" "F0 only, no voicing decision (defaults: 2048/256)" aubiopitch -i "$wav" -p yin
  run "aubiopitch -p yinfft -H 80" "F0 only, 10 ms hop like the others" aubiopitch -i "$wav" -p yinfft -H 80
fi

echo "Voice analysis speed on $(basename "$wav") (${dur} s), $(date -u +%Y-%m-%d), $(uname -m), $(nproc) CPUs: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo
echo "| tool | what it computes | CPU s | × real time |"
echo "|---|---|---:|---:|"
printf '%s\n' "${rows[@]}"
