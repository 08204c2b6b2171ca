#!/usr/bin/env bash
# Instruction profile of one proxy under a fixed, small load (valgrind callgrind:
# this machine's perf has no hardware counters). Counts only the load phase:
# start-up (migrations, tokenizer tables) runs uninstrumented (callgrind_control -i).
#
#   bash benches/profile.sh [bluesminds|bare] [REQUESTS] [stream]
#
# Writes target/bench/profile/NAME[-stream].callgrind.out and a text summary
# NAME[-stream].txt (inclusive and self cost per function, instructions per
# request). Needs the release binaries (cargo build --release --workspace) and
# oha from benches/run.sh (target/bench-tools/bin/oha). BENCH_BIN_DIR overrides
# the directory of the binaries (as in run.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BENCH_BIN_DIR:-$TARGET/release}"
OHA="$TARGET/bench-tools/bin/oha"
NAME="${1:-bluesminds}"
REQUESTS="${2:-5000}"
MODE="${3:-json}"
OUT="$TARGET/bench/profile"
TAG="$NAME$([ "$MODE" = stream ] && echo -stream || true)"
mkdir -p "$OUT"
rm -f "$OUT/$TAG".callgrind.out* "$OUT/$TAG.txt"
for tool in valgrind callgrind_control callgrind_annotate curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
[ -x "$OHA" ] || { echo "run benches/run.sh --quick once first (installs oha)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bm-profile.XXXXXX")"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

read -r UP_PORT PORT ADMIN <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')"
UP="127.0.0.1:$UP_PORT"

wait_ok() { # url seconds [curl args]
    local url=$1 deadline=$((SECONDS + $2))
    shift 2
    until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true)" = 200 ]; do
        [ $SECONDS -lt $deadline ] || { echo "timeout waiting for $url" >&2; exit 1; }
        sleep 0.5
    done
}

taskset -c 0 "$BIN/fake-upstream" --listen "$UP" --threads 1 --chunks 10 >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_ok "http://$UP/health" 30

CG=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$TAG.callgrind.out")
AUTH=()
case "$NAME" in
    bare)
        taskset -c 1 "${CG[@]}" "$BIN/bare-pingora" --listen "127.0.0.1:$PORT" --upstream "$UP" --threads 1 \
            >"$WORK/proxy.log" 2>&1 &
        PIDS+=($!)
        wait_ok "http://127.0.0.1:$PORT/health" 120
        ;;
    bluesminds)
        cat >"$WORK/gateway.yaml" <<EOF
server:
  proxy_listen: "127.0.0.1:$PORT"
  admin_listen: "127.0.0.1:$ADMIN"
  threads: 1
  grace_period_secs: 1
database:
  url: "sqlite://$WORK/bluesminds.db"
usage:
  ledger_dir: "$WORK/usage-ledger"
limits:
  rpm: 1000000000
  tpm: 1000000000000
  concurrency: 100000
pools:
  - name: bench
    models: [gpt-4o-mini]
    backends:
      - url: http://$UP
prices:
  gpt-4o-mini: { input_per_1m: 0.15, output_per_1m: 0.60 }
EOF
        KEY=$(cd "$WORK" && "$BIN/bluesminds" --config "$WORK/gateway.yaml" keys create --name profile 2>/dev/null)
        AUTH=(-H "authorization: Bearer $KEY")
        (cd "$WORK" && exec taskset -c 1 env RUST_LOG=warn "${CG[@]}" "$BIN/bluesminds" --config "$WORK/gateway.yaml") \
            >"$WORK/proxy.log" 2>&1 &
        PIDS+=($!)
        wait_ok "http://127.0.0.1:$ADMIN/readyz" 300
        ;;
    *) echo "unknown target $NAME (bluesminds or bare)" >&2; exit 2 ;;
esac
PROXY_PID=${PIDS[1]}

STREAM=""
[ "$MODE" = stream ] && STREAM=',"stream":true'
BODY="{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a helpful assistant.\"},{\"role\":\"user\",\"content\":\"Say hello in ten words.\"}],\"max_tokens\":64$STREAM}"
load() { # requests
    timeout 600 taskset -c 0 "$OHA" --no-tui --output-format quiet --worker-threads 1 -n "$1" -c 8 -m POST \
        -H 'content-type: application/json' "${AUTH[@]}" -d "$BODY" "http://127.0.0.1:$PORT/v1/chat/completions"
}
load 500 # warm: key cache, upstream pool, lazy statics
sleep 2  # let the tokenizer warm-up thread and the first usage batch finish
callgrind_control -z "$PROXY_PID" >/dev/null
callgrind_control -i on "$PROXY_PID" >/dev/null
load "$REQUESTS"
sleep 1.5 # the usage writer's batch for these requests (it runs on a timer-free notify; give it a moment)
callgrind_control -i off "$PROXY_PID" >/dev/null
callgrind_control -d "$PROXY_PID" >/dev/null
kill -INT "$PROXY_PID" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done

# `callgrind_control -d` wrote the load phase to NAME.callgrind.out.1; the file
# written at exit holds only the (uninstrumented) shutdown.
DUMP="$OUT/$TAG.callgrind.out.1"
[ -s "$DUMP" ] || { echo "no profile dump ($DUMP)" >&2; exit 1; }
set +o pipefail # head closes the pipes early
{
    TOTAL=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    echo "# $TAG: $REQUESTS requests, $TOTAL instructions, $((TOTAL / REQUESTS)) per request"
    echo
    echo "## inclusive (top 60)"
    callgrind_annotate --inclusive=yes --threshold=99 "$DUMP" 2>/dev/null | sed -n '/^Ir/,$p' | head -70
    echo
    echo "## self (top 60)"
    callgrind_annotate --threshold=99 "$DUMP" 2>/dev/null | sed -n '/^Ir/,$p' | head -70
} >"$OUT/$TAG.txt"
head -1 "$OUT/$TAG.txt"
echo "profile: $DUMP, summary: $OUT/$TAG.txt"
