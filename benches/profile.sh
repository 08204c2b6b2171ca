#!/usr/bin/env bash
# Instruction profile of one proxy under a fixed, small load (valgrind callgrind:
# this machine's perf has no hardware counters). Counts only the load phase:
# start-up (migrations, tokenizer tables) runs uninstrumented (callgrind_control -i).
#
#   bash benches/profile.sh [bluesminds|bare] [REQUESTS] [stream] [--postgres] [--redis]
#
# Writes target/bench/profile/NAME[-stream].callgrind.out and a text summary
# NAME[-stream].txt (inclusive and self cost per function, instructions per
# request). --postgres: BluesMinds' database on PostgreSQL (BENCH_PG, default
# postgres://postgres@127.0.0.1:5432; a fresh database, dropped at exit),
# NAME gets "-pg"; --redis: with Redis limits (redis.url; a redis-server of
# its own on a free port, or BENCH_REDIS_URL), NAME gets "-redis". The Redis
# sync runs every 100 ms whatever the load, so its share per request depends
# on how long the requests take under valgrind: the summary also gives the
# instructions in the sync and the number of syncs. Needs the release binaries (cargo build --release --workspace) and
# oha from benches/run.sh (target/bench-tools/bin/oha). BENCH_BIN_DIR overrides
# the directory of the binaries (as in run.sh); BENCH_CHUNKS the content chunks
# per streamed answer (10); BENCH_BARE_ARGS more flags for bare-pingora
# (`--read-timeout-secs 600`: the upstream read timeout the gateway sets).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/bm-config.sh
source "$ROOT/benches/bm-config.sh"
bench_paths
POSTGRES=0 REDIS=0
ARGS=()
for a in "$@"; do
    case "$a" in
        --postgres) POSTGRES=1 ;;
        --redis) REDIS=1 ;;
        *) ARGS+=("$a") ;;
    esac
done
NAME="${ARGS[0]:-bluesminds}"
REQUESTS="${ARGS[1]:-5000}"
MODE="${ARGS[2]:-json}"
OUT="$TARGET/bench/profile"
TAG="$NAME$([ "$POSTGRES" = 1 ] && echo -pg || true)$([ "$REDIS" = 1 ] && echo -redis || true)$([ "$MODE" = stream ] && echo -stream || true)"
mkdir -p "$OUT"
rm -f "$OUT/$TAG".callgrind.out* "$OUT/$TAG.txt"
for tool in valgrind callgrind_control callgrind_annotate curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
[ -x "$OHA" ] || { echo "run benches/run.sh --quick once first (installs oha)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bm-profile.XXXXXX")"
PIDS=()
PG_BASE="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
PG_DB=""
REDIS_URL="${BENCH_REDIS_URL:-}"
REDIS_PREFIX="bmprofile:$$:"
cleanup() {
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ -n "$PG_DB" ]; then
        timeout 60 psql "$PG_BASE/postgres" -Atqc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    if [ -n "${BENCH_REDIS_URL:-}" ] && [ "$REDIS" = 1 ]; then
        redis-cli -u "$REDIS_URL" --scan --pattern "$REDIS_PREFIX*" 2>/dev/null \
            | xargs -r -n 100 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
    fi
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

taskset -c 0 "$BIN/fake-upstream" --listen "$UP" --threads 1 --chunks "${BENCH_CHUNKS:-10}" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_ok "http://$UP/health" 30

CG=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$TAG.callgrind.out")
AUTH=()
case "$NAME" in
    bare)
        # shellcheck disable=SC2086 # BENCH_BARE_ARGS: extra flags, split on spaces
        taskset -c 1 "${CG[@]}" "$BIN/bare-pingora" --listen "127.0.0.1:$PORT" --upstream "$UP" --threads 1 \
            ${BENCH_BARE_ARGS:-} >"$WORK/proxy.log" 2>&1 &
        PIDS+=($!)
        PROXY_PID=$!
        wait_ok "http://127.0.0.1:$PORT/health" 120
        ;;
    bluesminds)
        DB_URL="sqlite://$WORK/bluesminds.db"
        if [ "$POSTGRES" = 1 ]; then
            PG_DB="bm_profile_$$"
            timeout 60 psql "$PG_BASE/postgres" -v ON_ERROR_STOP=1 -Atqc "CREATE DATABASE $PG_DB" >/dev/null
            DB_URL="$PG_BASE/$PG_DB"
        fi
        if [ "$REDIS" = 1 ] && [ -z "$REDIS_URL" ]; then
            RPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
            taskset -c 0 redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no --dir "$WORK" \
                >"$WORK/redis.log" 2>&1 &
            PIDS+=($!)
            for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
            REDIS_URL="redis://127.0.0.1:$RPORT"
        fi
        bm_config "$WORK/gateway.yaml" "$PORT" "$ADMIN" "$DB_URL" "$WORK/usage-ledger" "$UP" 1 \
            "$([ "$REDIS" = 1 ] && echo "$REDIS_URL" || true)" "$REDIS_PREFIX"
        KEY=$(cd "$WORK" && "$BIN/bluesminds" --config "$WORK/gateway.yaml" keys create --name profile 2>/dev/null)
        AUTH=(-H "authorization: Bearer $KEY")
        (cd "$WORK" && exec taskset -c 1 env RUST_LOG=warn "${CG[@]}" "$BIN/bluesminds" --config "$WORK/gateway.yaml") \
            >"$WORK/proxy.log" 2>&1 &
        PIDS+=($!)
        PROXY_PID=$!
        wait_ok "http://127.0.0.1:$ADMIN/readyz" 300
        ;;
    *) echo "unknown target $NAME (bluesminds or bare)" >&2; exit 2 ;;
esac

STREAM=""
[ "$MODE" = stream ] && STREAM=',"stream":true'
# The fake upstream sends min(chunks, max_tokens) content chunks.
MAX_TOKENS=$((${BENCH_CHUNKS:-10} > 64 ? ${BENCH_CHUNKS:-10} : 64))
BODY="{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a helpful assistant.\"},{\"role\":\"user\",\"content\":\"Say hello in ten words.\"}],\"max_tokens\":$MAX_TOKENS$STREAM}"
load() { # requests
    timeout 600 taskset -c 0 "$OHA" --no-tui --output-format quiet --worker-threads 1 -n "$1" -c 8 -m POST \
        -H 'content-type: application/json' "${AUTH[@]}" -d "$BODY" "http://127.0.0.1:$PORT/v1/chat/completions"
}
load 500 # warm: key cache, upstream pool, lazy statics
sleep 2  # let the tokenizer warm-up thread and the first usage batch finish
callgrind_control -z "$PROXY_PID" >/dev/null
callgrind_control -i on "$PROXY_PID" >/dev/null
LOAD_T0=$(date +%s.%N)
load "$REQUESTS"
LOAD_S=$(python3 -c "import time; print(f'{time.time() - $LOAD_T0:.1f}')")
sleep 1.5 # the usage writer's batch for these requests (it runs on a timer-free notify; give it a moment)
callgrind_control -i off "$PROXY_PID" >/dev/null
INSTR_S=$(python3 -c "import time; print(f'{time.time() - $LOAD_T0:.1f}')")
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
    echo "load phase: ${LOAD_S} s under valgrind; instrumented: ${INSTR_S} s"
    if [ "$REDIS" = 1 ]; then
        # The sync runs on a timer (every 100 ms), not per request: its task's
        # inclusive cost (the Redis connection's driver task is not in it).
        SYNC=$(callgrind_annotate --inclusive=yes --threshold=100 "$DUMP" 2>/dev/null \
            | awk '/cluster::Cluster::spawn_sync::\{\{closure\}\} \[/ { gsub(",", "", $1); print $1; exit }')
        SYNC=${SYNC:-0}
        echo "Redis limit sync task (Cluster::spawn_sync, inclusive): $SYNC instructions, $((SYNC / REQUESTS)) per request" \
            "at this pace, about $(python3 -c "print(int(float('$INSTR_S') * 10))") syncs in the instrumented time"
    fi
    echo
    echo "## inclusive (top 60)"
    callgrind_annotate --inclusive=yes --threshold=99 "$DUMP" 2>/dev/null | sed -n '/^Ir/,$p' | head -70
    echo
    echo "## self (top 60)"
    callgrind_annotate --threshold=99 "$DUMP" 2>/dev/null | sed -n '/^Ir/,$p' | head -70
} >"$OUT/$TAG.txt"
head -1 "$OUT/$TAG.txt"
echo "profile: $DUMP, summary: $OUT/$TAG.txt"
