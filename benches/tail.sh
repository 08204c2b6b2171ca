#!/usr/bin/env bash
# The tail target of issue 15 ("added p99 at half of bare Pingora's
# saturation <= 1 ms") in alternating rounds, since one run of
# `run.sh --timeline` moves by orders of magnitude between runs here.
# Each round starts a fresh fake upstream, then bare Pingora and then the
# gateway (set up as in run.sh, SQLite), each pinned to CPU 0 with the load
# on CPU 1: a closed loop (`oha -c 64`, 3 s warm-up, 8 s measured) gives
# each one's saturation, then `timeline-load` runs both at half of bare's
# (the round's rate) for SECONDS. Prints each round and the medians.
#
#   bash benches/tail.sh DIR [ROUNDS] [SECONDS]
#
# DIR: a directory holding the release binaries `bluesminds`, `bare-pingora`,
# `fake-upstream` and `timeline-load`. ROUNDS defaults to 3, SECONDS to 15.
# TAIL_RATE=N: every round at N rps instead. Needs oha from benches/run.sh
# (target/bench-tools/bin/oha).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OHA="${CARGO_TARGET_DIR:-$ROOT/target}/bench-tools/bin/oha"
# shellcheck source=benches/bm-config.sh
source "$ROOT/benches/bm-config.sh"
[ $# -ge 1 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
DIR="$(cd "$1" && pwd)"
ROUNDS="${2:-3}" SECS="${3:-15}"
[ -x "$OHA" ] || { echo "run benches/run.sh --quick once first (installs oha)" >&2; exit 1; }
for b in bluesminds bare-pingora fake-upstream timeline-load; do
    [ -x "$DIR/$b" ] || { echo "$DIR/$b is missing" >&2; exit 1; }
done

bench_work bm-tail

# closed_loop hostport key: the closed loop's rps (2xx per second).
closed_loop() {
    bm_oha "$1" "$2" -z 3s >/dev/null
    bm_oha "$1" "$2" -z 8s | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["statusCodeDistribution"].get("200",0)/d["summary"]["total"]))'
}

# open_loop hostport key rate name: timeline-load at rate; prints "p50 p90 p99 failed".
open_loop() {
    taskset -c 1 "$DIR/timeline-load" --addr "$1" --rate "$3" --duration-s "$SECS" --warmup-s 1 \
        --conns 64 --body "$BM_BODY" --header "Authorization: Bearer $2" --out "$WORK/$4.csv" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["latency_us"]; print(l["p50"], l["p90"], l["p99"], d["failed"])'
}

# round N: prints "N bare_rps bm_rps rate bare_p50 p90 p99 failed bm_p50 p90 p99 failed".
round() {
    local w port admin pid bare_rps bm_rps rate bare bm
    w="$(mktemp -d "$WORK/round.XXXXXX")"
    port=$(free_port) admin=$(free_port)
    up_start "$DIR" "$w"

    taskset -c 0 "$DIR/bare-pingora" --listen "127.0.0.1:$port" --upstream "$UP" --threads 1 >"$w/bare.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ok "http://127.0.0.1:$port/health" "$w/bare.log"
    bare_rps=$(closed_loop "127.0.0.1:$port" none)
    rate=${TAIL_RATE:-$((bare_rps / 2))}
    bare=$(open_loop "127.0.0.1:$port" none "$rate" "bare-$1")
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true

    port=$(free_port)
    bm_start "$DIR" "$w" "$port" "$admin" "$UP"
    bm_rps=$(closed_loop "127.0.0.1:$port" "$BM_KEY")
    bm=$(open_loop "127.0.0.1:$port" "$BM_KEY" "$rate" "bm-$1")
    kill -INT "$BM_PID" "$UP_PID"
    wait "$BM_PID" "$UP_PID" 2>/dev/null || true
    echo "$1 $bare_rps $bm_rps $rate $bare $bm"
}

RESULTS="$WORK/results"
for ((i = 1; i <= ROUNDS; i++)); do
    # Not in a pipeline: a subshell's processes would escape the clean-up.
    round "$i" >>"$RESULTS"
    tail -n 1 "$RESULTS" >&2
done
python3 - "$RESULTS" "$DIR" "$SECS" <<'PY'
import statistics, sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1])]
print(f"binaries: {sys.argv[2]}; open loop {sys.argv[3]} s per target per round, at half of bare Pingora's closed-loop rps\n")
print("| round | bare rps | BluesMinds rps (vs bare) | rate | bare p50 / p90 / p99 | BluesMinds p50 / p90 / p99 | added p99 | failed |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for n, bare, bm, rate, b50, b90, b99, bf, g50, g90, g99, gf in rows:
    print(f"| {n} | {bare:,} | {bm:,} ({bm / bare:.2f}x) | {rate:,} | {b50:,} / {b90:,} / {b99:,} µs | "
          f"{g50:,} / {g90:,} / {g99:,} µs | {g99 - b99:+,} µs | {bf} / {gf} |")
added = [r[10] - r[6] for r in rows]
print(f"\nmedian added p99: {statistics.median(added):+,.0f} µs; rounds within 1 ms: "
      f"{sum(a <= 1000 for a in added)} of {len(rows)}; median rps ratio "
      f"{statistics.median(r[2] / r[1] for r in rows):.2f}x")
PY
