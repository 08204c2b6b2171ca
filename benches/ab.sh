#!/usr/bin/env bash
# Two builds of the gateway, alternating, in the same closed loop: for a change
# too small for run.sh's run-to-run spread. Each round starts a fresh fake
# upstream and gateway (SQLite, limits and health checks on, as run.sh sets
# it up), warms it for 3 s and runs `oha -c 64` for SECONDS; the gateway is
# pinned to CPU 0, oha and the fake upstream to CPU 1. Prints each run's rps
# and the gateway's user and system CPU time per answered request (from
# /proc/PID/stat), then the mean of each build.
#
#   bash benches/ab.sh DIR_A DIR_B [ROUNDS] [SECONDS]
#
# DIR_A, DIR_B: directories holding `bluesminds` and `fake-upstream` release
# binaries (absolute or relative). Needs oha from benches/run.sh
# (target/bench-tools/bin/oha). ROUNDS defaults to 3, SECONDS to 8.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OHA="${CARGO_TARGET_DIR:-$ROOT/target}/bench-tools/bin/oha"
# shellcheck source=benches/bm-config.sh
source "$ROOT/benches/bm-config.sh"
[ $# -ge 2 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
A="$(cd "$1" && pwd)" B="$(cd "$2" && pwd)"
ROUNDS="${3:-3}" SECS="${4:-8}"
[ -x "$OHA" ] || { echo "run benches/run.sh --quick once first (installs oha)" >&2; exit 1; }
for d in "$A" "$B"; do
    for b in bluesminds fake-upstream; do
        [ -x "$d/$b" ] || { echo "$d/$b is missing" >&2; exit 1; }
    done
done

bench_work bm-ab

# run DIR LABEL: one fresh gateway measured; prints "LABEL rps user_us sys_us".
run() {
    local dir=$1 label=$2 w port admin before after
    w="$(mktemp -d "$WORK/run.XXXXXX")"
    port=$(free_port) admin=$(free_port)
    up_start "$dir" "$w"
    bm_start "$dir" "$w" "$port" "$admin" "$UP"
    bm_oha "127.0.0.1:$port" "$BM_KEY" -z 3s >/dev/null
    before=$(awk '{print $14, $15}' "/proc/$BM_PID/stat")
    bm_oha "127.0.0.1:$port" "$BM_KEY" -z "${SECS}s" >"$w/oha.json"
    after=$(awk '{print $14, $15}' "/proc/$BM_PID/stat")
    python3 - "$w/oha.json" "$label" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ok = d["statusCodeDistribution"].get("200", 0)
u0, s0 = map(int, sys.argv[3].split())
u1, s1 = map(int, sys.argv[4].split())
tick_us = 1e6 / int(sys.argv[5])
print(f"{sys.argv[2]} {ok / d['summary']['total']:.0f} {(u1 - u0) * tick_us / ok:.2f} {(s1 - s0) * tick_us / ok:.2f}")
PY
    kill -INT "$BM_PID" "$UP_PID"
    wait "$BM_PID" "$UP_PID" 2>/dev/null || true
}

RESULTS="$WORK/results"
for ((i = 1; i <= ROUNDS; i++)); do
    run "$A" A >>"$RESULTS"
    run "$B" B >>"$RESULTS"
done
python3 - "$RESULTS" "$A" "$B" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}\n")
print("| run | build | rps | user CPU per request | system CPU per request |")
print("| ---: | --- | ---: | ---: | ---: |")
for i, (label, rps, user, system) in enumerate(rows, 1):
    print(f"| {i} | {label} | {int(rps):,} | {float(user):.1f} µs | {float(system):.1f} µs |")
print()
for label in "AB":
    mine = [r for r in rows if r[0] == label]
    n = len(mine)
    mean = lambda k: sum(float(r[k]) for r in mine) / n
    print(f"{label}: mean {mean(1):,.0f} rps, {mean(2):.1f} µs user + {mean(3):.1f} µs system per request over {n} runs")
PY
