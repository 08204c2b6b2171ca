#!/usr/bin/env bash
# BluesMinds load benchmark: the gateway against no hop, a bare Pingora proxy,
# nginx and LiteLLM, in one run on this machine. See benches/README.md.
#
#   bash benches/run.sh [--quick] [--timeline] [--no-build] [--skip-nginx] [--skip-litellm]
#                       [--skip-portkey] [--idle-wait=SECONDS] [--cores=N] [--postgres] [--cluster]
#
# --cores=N: every proxy gets N worker threads (bare Pingora, BluesMinds,
# nginx workers) and is pinned to CPUs 0..N-1, and so are the load generators
# and the fake upstream: the load generator shares the proxy's cores (the
# report says so). Default: the proxy on CPU 1, one thread; load on CPU 0.
#
# --postgres: one more target, "BluesMinds (PostgreSQL)": the same gateway with
# its database (keys, usage records) on the PostgreSQL at BENCH_PG (default
# postgres://postgres@127.0.0.1:5432), in a fresh database made for the run
# (createdb) and dropped at exit. The PostgreSQL backends serving it are
# pinned to the proxy's cores, as SQLite's writer threads are.
#
# --cluster (implies --postgres): two more targets on PostgreSQL with Redis
# limits: one instance with redis.url set, and three instances sharing one
# database and one Redis, the load on the first while the other two run and
# sync (each saw the key before the run). The difference to "BluesMinds
# (PostgreSQL)" is the cost of cluster limits. Redis: a redis-server of the
# run's own on a free port (pinned with the load) if redis-server is installed,
# else BENCH_REDIS_URL (default redis://127.0.0.1:6379) with a key prefix of
# the run's own whose keys are deleted at exit.
#
# --timeline: bare Pingora and BluesMinds only: the closed loop, then an open
# loop at half of bare's saturation recorded per request (timeline-load), and
# the latency per 100 ms interval side by side in target/bench/timeline.md
# (BENCH_TIMELINE_RATE=N: both at N rps instead).
#
# --idle-wait: before measuring, wait up to this long (default: 600 s in full
# mode, 0 in quick mode) for the machine to be idle (both cores < 15 % busy
# over 5 s); the run goes ahead anyway afterwards and the report says how busy
# the machine was.
#
# Writes target/bench/report.md (also printed) and the raw tool outputs to
# target/bench/raw/. Every process it starts is stopped on exit; every wait and
# every load run is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET/bench"
RAW="$OUT/raw"
TOOLS="$TARGET/bench-tools"
OHA="$TOOLS/bin/oha"
OHA_VERSION="1.16.0"
LITELLM_VENV="$TARGET/bench-litellm-venv"
COMMAND_LINE="bash benches/run.sh $*"
for v in BENCH_BIN_DIR BENCH_COMMIT BENCH_PROXY_CPUS BENCH_LOAD_CPUS BENCH_TIMELINE_RATE; do
    if [ -n "${!v:-}" ]; then COMMAND_LINE="$v=${!v} $COMMAND_LINE"; fi
done

QUICK=0 BUILD=1 NGINX=1 LITELLM=1 PORTKEY=1 TIMELINE=0 IDLE_WAIT_S="" CORES="" POSTGRES=0 CLUSTER=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --idle-wait=*) IDLE_WAIT_S="${arg#--idle-wait=}" ;;
        --no-build) BUILD=0 ;;
        --skip-nginx) NGINX=0 ;;
        --skip-litellm) LITELLM=0 ;;
        --skip-portkey) PORTKEY=0 ;;
        --timeline) TIMELINE=1 ;;
        --cores=*) CORES="${arg#--cores=}" ;;
        --postgres) POSTGRES=1 ;;
        --cluster) CLUSTER=1 POSTGRES=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

# --- scenario sizes ----------------------------------------------------------
CONNS=64            # closed loop: connections, each sends its next request when the last answer is in
STREAMS=1000        # concurrent slow SSE streams
CHUNKS=10           # content chunks per completion (fake upstream)
CHUNK_DELAY_MS=200  # delay before each streamed chunk during the streaming scenario
STREAM_RAMP_MS=1000 # stream starts are spread over this long
if [ "$QUICK" = 1 ]; then
    WARM_S=1 CLOSED_S=3 OPEN_S=3
    LITELLM=0 PORTKEY=0
    IDLE_WAIT_S="${IDLE_WAIT_S:-0}"
else
    WARM_S=3 CLOSED_S=15 OPEN_S=15
    IDLE_WAIT_S="${IDLE_WAIT_S:-600}"
fi
if [ "$TIMELINE" = 1 ]; then
    # Only the two Pingora proxies: the timeline compares the gateway with its floor.
    NGINX=0 LITELLM=0 PORTKEY=0
    CLOSED_S=$((CLOSED_S < 10 ? CLOSED_S : 10))
fi
PORTKEY_VERSION="1.15.2"
PORTKEY_DIR="$TARGET/bench-portkey"

# --- CPU pinning -------------------------------------------------------------
# The proxy under test gets a core of its own; the load generator and the fake
# upstream share the other. On a 1-core machine everything shares core 0.
NCPU=$(nproc)
if [ -n "$CORES" ]; then
    case "$CORES" in ''|*[!0-9]*) echo "--cores takes a number" >&2; exit 2 ;; esac
    [ "$CORES" -ge 1 ] && [ "$CORES" -le "$NCPU" ] || { echo "--cores=$CORES: this machine has $NCPU" >&2; exit 2; }
    # Proxy and load on the same N cores: the load generator shares the proxy's cores.
    PROXY_CPUS="${BENCH_PROXY_CPUS:-0-$((CORES - 1))}"
    LOAD_CPUS="${BENCH_LOAD_CPUS:-0-$((CORES - 1))}"
elif [ "$NCPU" -ge 2 ]; then
    PROXY_CPUS="${BENCH_PROXY_CPUS:-1}"
    LOAD_CPUS="${BENCH_LOAD_CPUS:-0}"
else
    PROXY_CPUS="${BENCH_PROXY_CPUS:-0}"
    LOAD_CPUS="${BENCH_LOAD_CPUS:-0}"
fi
# Worker threads for each proxy: one per core it is pinned to.
PROXY_THREADS=$(taskset -c "$PROXY_CPUS" nproc)

expand_cpus() { # taskset list (0,2-3) -> "0 2 3"
    local part i out=()
    local -a parts
    IFS=, read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then
            for ((i = ${part%-*}; i <= ${part#*-}; i++)); do out+=("$i"); done
        else
            out+=("$part")
        fi
    done
    echo "${out[*]}"
}
# Do the load generator and the proxy share a core?
SHARED_CORES=0
for c in $(expand_cpus "$PROXY_CPUS"); do
    for l in $(expand_cpus "$LOAD_CPUS"); do [ "$c" != "$l" ] || SHARED_CORES=1; done
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in taskset curl python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bm-bench.XXXXXX")"
mkdir -p "$WORK/logs" "$OUT"
rm -rf "$RAW"
mkdir -p "$RAW"

# --- process bookkeeping and cleanup -----------------------------------------
declare -A PID=()
CREATED_POLICY_RC=0

descendants() { # pid -> the pid and all its descendants
    local p=$1 c
    echo "$p"
    for c in $(pgrep -P "$p" 2>/dev/null || true); do descendants "$c"; done
}

stop_proc() { # name: SIGINT the process tree, SIGKILL what is left after 10 s
    local name=$1 pid tree deadline
    pid="${PID[$name]:-}"
    [ -n "$pid" ] || return 0
    unset "PID[$name]"
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    tree=$(descendants "$pid")
    kill -INT $tree 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for name in "${!PID[@]}"; do stop_proc "$name"; done
    if declare -F pg_drop_all >/dev/null; then pg_drop_all; fi
    if declare -F redis_cleanup >/dev/null; then redis_cleanup; fi
    if [ "$CREATED_POLICY_RC" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ -d "$WORK/logs" ]; then
        rm -rf "$OUT/logs"
        cp -r "$WORK/logs" "$OUT/logs" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    [ $rc = 0 ] || log "failed (exit $rc); logs in $OUT/logs"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_bg() { # name cpus command...: start pinned, in the background, logging to logs/name.log
    local name=$1 cpus=$2
    shift 2
    taskset -c "$cpus" "$@" >"$WORK/logs/$name.log" 2>&1 &
    PID[$name]=$!
}

alive() { kill -0 "${PID[$1]}" 2>/dev/null; }

wait_http() { # name url seconds [curl args...]: until the URL answers 200
    local name=$1 url=$2 secs=$3 deadline code
    shift 3
    deadline=$((SECONDS + secs))
    while [ $SECONDS -lt $deadline ]; do
        alive "$name" || { tail -20 "$WORK/logs/$name.log" >&2; die "$name exited during start-up"; }
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.2
    done
    tail -20 "$WORK/logs/$name.log" >&2
    return 1
}

free_ports() { # n: n free loopback ports
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

cpu_ticks() { # cpu list (taskset syntax) -> "busy total" jiffies from /proc/stat, summed over those CPUs
    awk -v cs=" $(expand_cpus "$1") " '$1 ~ /^cpu[0-9]/ && index(cs, " " substr($1, 4) " ") {
        t = 0; for (i = 2; i <= NF; i++) t += $i; busy += t - $5 - $6; total += t }
        END { print busy + 0, total + 0 }' /proc/stat
}

proc_ticks() { # pids... -> utime+stime jiffies summed (all threads)
    local sum=0 p f
    for p in "$@"; do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }
        set -- $f
        sum=$((sum + ${12} + ${13}))
    done
    echo $sum
}

# --- build and tools ---------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "building (cargo build --release --workspace)"
    timeout 3600 cargo build --release --workspace >"$WORK/logs/build.log" 2>&1 \
        || { tail -30 "$WORK/logs/build.log" >&2; die "build failed"; }
fi
# BENCH_BIN_DIR: measure binaries built elsewhere (e.g. a snapshot of a commit,
# with --no-build); BENCH_COMMIT then names what they were built from.
BIN="${BENCH_BIN_DIR:-$TARGET/release}"
for b in bluesminds fake-upstream bare-pingora stream-load timeline-load; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing (run without --no-build)"
done

if ! [ -x "$OHA" ] || ! "$OHA" --version | grep -q "$OHA_VERSION"; then
    log "installing oha $OHA_VERSION into $TOOLS"
    timeout 3600 cargo install oha --version "$OHA_VERSION" --locked --root "$TOOLS" \
        >"$WORK/logs/oha-install.log" 2>&1 || { tail -20 "$WORK/logs/oha-install.log" >&2; die "cannot install oha"; }
fi

NGINX_BIN=""
NGINX_NOTE=""
if [ "$NGINX" = 1 ]; then
    NGINX_BIN=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
    if [ -z "$NGINX_BIN" ]; then
        log "installing nginx (apt-get)"
        # Keep the package from starting a system nginx on port 80.
        if ! [ -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            CREATED_POLICY_RC=1
        fi
        if ! timeout 900 env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >"$WORK/logs/apt.log" 2>&1; then
            timeout 600 apt-get update -q >>"$WORK/logs/apt.log" 2>&1 || true
            timeout 900 env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >>"$WORK/logs/apt.log" 2>&1 || true
        fi
        if [ "$CREATED_POLICY_RC" = 1 ]; then rm -f /usr/sbin/policy-rc.d; CREATED_POLICY_RC=0; fi
        NGINX_BIN=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
    fi
    [ -n "$NGINX_BIN" ] || NGINX_NOTE="nginx could not be installed (see logs/apt.log)"
else
    NGINX_NOTE="skipped (--skip-nginx)"
fi

LITELLM_NOTE=""
if [ "$LITELLM" = 1 ]; then
    if ! [ -f "$LITELLM_VENV/.installed" ]; then
        log "installing litellm[proxy] into $LITELLM_VENV"
        rm -rf "$LITELLM_VENV"
        if timeout 1800 python3 -m venv "$LITELLM_VENV" >"$WORK/logs/litellm-install.log" 2>&1 \
            && timeout 1800 "$LITELLM_VENV/bin/pip" install -q 'litellm[proxy]' >>"$WORK/logs/litellm-install.log" 2>&1; then
            touch "$LITELLM_VENV/.installed"
        else
            LITELLM_NOTE="litellm[proxy] did not install (see logs/litellm-install.log)"
        fi
    fi
elif [ "$TIMELINE" = 1 ]; then
    LITELLM_NOTE="skipped (--timeline)"
elif [ "$QUICK" = 1 ]; then
    LITELLM_NOTE="skipped (--quick)"
else
    LITELLM_NOTE="skipped (--skip-litellm)"
fi

# Portkey's gateway (npm @portkey-ai/gateway), run as its own start-server.js
# in one Node process: the peer written in TypeScript.
PORTKEY_NOTE=""
PORTKEY_JS="$PORTKEY_DIR/node_modules/@portkey-ai/gateway/build/start-server.js"
if [ "$PORTKEY" = 1 ]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        PORTKEY_NOTE="Node.js/npm not installed"
    elif ! [ -f "$PORTKEY_DIR/.installed-$PORTKEY_VERSION" ]; then
        log "installing @portkey-ai/gateway $PORTKEY_VERSION into $PORTKEY_DIR (npm)"
        rm -rf "$PORTKEY_DIR"
        mkdir -p "$PORTKEY_DIR"
        # --ignore-scripts: its postinstall runs patch-package, but the package
        # ships no patches/ directory (only build/), so there is nothing to apply.
        if timeout 900 npm install --prefix "$PORTKEY_DIR" --no-audit --no-fund --ignore-scripts \
            "@portkey-ai/gateway@$PORTKEY_VERSION" >"$WORK/logs/portkey-install.log" 2>&1 && [ -f "$PORTKEY_JS" ]; then
            touch "$PORTKEY_DIR/.installed-$PORTKEY_VERSION"
        else
            PORTKEY_NOTE="@portkey-ai/gateway did not install (see logs/portkey-install.log)"
        fi
    fi
elif [ "$TIMELINE" = 1 ]; then
    PORTKEY_NOTE="skipped (--timeline)"
elif [ "$QUICK" = 1 ]; then
    PORTKEY_NOTE="skipped (--quick)"
else
    PORTKEY_NOTE="skipped (--skip-portkey)"
fi

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- machine state -----------------------------------------------------------
busy_pct() { # seconds -> busy % of all cores over that window
    local a b
    read -r -a a <<<"$(awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat)"
    sleep "$1"
    read -r -a b <<<"$(awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat)"
    echo $(( 100 * (b[0] - a[0]) / (b[1] - a[1] > 0 ? b[1] - a[1] : 1) ))
}
IDLE_DEADLINE=$((SECONDS + IDLE_WAIT_S))
BUSY=$(busy_pct 5)
while [ "$BUSY" -ge 15 ] && [ $SECONDS -lt $IDLE_DEADLINE ]; do
    log "machine busy ($BUSY % of all cores over 5 s); waiting for idle (up to $((IDLE_DEADLINE - SECONDS)) s more)"
    sleep 25
    BUSY=$(busy_pct 5)
done
[ "$BUSY" -lt 15 ] || log "machine still busy ($BUSY %); measuring anyway (see the report's load columns)"

{
    echo "date_utc=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "command=$COMMAND_LINE"
    echo "mode=$([ "$QUICK" = 1 ] && echo quick || echo full)$([ "$TIMELINE" = 1 ] && echo ', timeline' || true)"
    echo "cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "ncpu=$NCPU"
    echo "proxy_cpus=$PROXY_CPUS"
    echo "load_cpus=$LOAD_CPUS"
    echo "proxy_threads=$PROXY_THREADS"
    echo "shared_cores=$SHARED_CORES"
    echo "postgres=$([ "$POSTGRES" = 1 ] && echo "PostgreSQL $(timeout 10 psql "${BENCH_PG:-postgres://postgres@127.0.0.1:5432}/postgres" -Atqc 'show server_version' 2>/dev/null || echo '?') at ${BENCH_PG:-postgres://postgres@127.0.0.1:5432}" || echo '-')"
    echo "kernel=$(uname -r)"
    if [ -n "${BENCH_COMMIT:-}" ]; then
        echo "git=$BENCH_COMMIT (binaries from $BIN)"
    elif [ -n "${BENCH_BIN_DIR:-}" ]; then
        # Binaries built elsewhere: this tree's commit may not be theirs.
        echo "git=binaries from $BIN (bluesminds built $(date -u -r "$BIN/bluesminds" '+%Y-%m-%d %H:%M UTC')), not necessarily this tree's $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    else
        echo "git=$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src/ has uncommitted changes)')"
    fi
    echo "rustc=$(rustc --version 2>/dev/null || echo '?')"
    echo "oha=$("$OHA" --version)"
    echo "nginx=$([ -n "$NGINX_BIN" ] && "$NGINX_BIN" -v 2>&1 | sed 's/.*: //' || echo '-')"
    echo "litellm=$([ -z "$LITELLM_NOTE" ] && "$LITELLM_VENV/bin/pip" show litellm 2>/dev/null | awk '/^Version/ { print $2 }' || echo '-')"
    echo "portkey=$([ -z "$PORTKEY_NOTE" ] && echo "$PORTKEY_VERSION (node $(node --version))" || echo '-')"
    echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busy_before_pct=$BUSY"
    echo "conns=$CONNS"
    echo "streams=$STREAMS"
    echo "chunks=$CHUNKS"
    echo "chunk_delay_ms=$CHUNK_DELAY_MS"
    echo "stream_ramp_ms=$STREAM_RAMP_MS"
    echo "warm_s=$WARM_S"
    echo "closed_s=$CLOSED_S"
    echo "open_s=$OPEN_S"
    echo "nginx_note=$NGINX_NOTE"
    echo "litellm_note=$LITELLM_NOTE"
    echo "portkey_note=$PORTKEY_NOTE"
    echo "timeline=$TIMELINE"
} >"$RAW/meta.env"
top -bn1 | head -15 >"$RAW/top-before.txt" 2>/dev/null || true
log "mode $(grep '^mode=' "$RAW/meta.env" | cut -d= -f2); proxies on CPU $PROXY_CPUS ($PROXY_THREADS threads), load + fake upstream on CPU $LOAD_CPUS$([ "$SHARED_CORES" = 1 ] && echo ' (shared with the proxy)'); machine $BUSY % busy, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- PostgreSQL and Redis (--postgres, --cluster) ----------------------------
# PostgreSQL: a fresh database per target, dropped at exit.
PG_BASE="${BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
PG_DBS=()
CUR_PGDB=""       # the database of the target being measured: its backends are pinned and their CPU counted
pg() { timeout 60 psql "$PG_BASE/${1}" -v ON_ERROR_STOP=1 -Atq -c "$2"; }
pg_create() { # name
    pg postgres "CREATE DATABASE $1" >>"$WORK/logs/postgres.log" 2>&1 || return 1
    PG_DBS+=("$1")
}
pg_drop_all() {
    local d
    for d in "${PG_DBS[@]}"; do
        pg postgres "DROP DATABASE IF EXISTS $d WITH (FORCE)" >>"$WORK/logs/postgres.log" 2>&1 \
            || log "could not drop database $d"
    done
    PG_DBS=()
}
db_backend_pids() { # PostgreSQL backends connected to the current target's database
    [ -n "$CUR_PGDB" ] || return 0
    pg postgres "SELECT pid FROM pg_stat_activity WHERE datname = '$CUR_PGDB' AND pid <> pg_backend_pid()" 2>/dev/null || true
}
db_commits() { # transactions committed in the current target's database (pg_stat_database; flushed about every second)
    [ -n "$CUR_PGDB" ] || return 0
    pg postgres "SELECT xact_commit FROM pg_stat_database WHERE datname = '$CUR_PGDB'" 2>/dev/null || true
}
pin_db_backends() { # the backends run on the proxy's cores, as SQLite's writer threads do
    local p
    for p in $(db_backend_pids); do taskset -a -p -c "$PROXY_CPUS" "$p" >/dev/null 2>&1 || true; done
}

# Redis: a server of the run's own (its command count is then the gateway's
# alone), else the shared one with a prefix of the run's own.
REDIS_URL="" REDIS_OWN=0 REDIS_NOTE=""
REDIS_PREFIXES=()
CUR_REDIS=0       # the current target uses Redis: count its commands
redis_start() {
    [ -z "$REDIS_URL" ] || return 0
    if [ -z "${BENCH_REDIS_URL:-}" ] && command -v redis-server >/dev/null; then
        local port
        port=$(free_ports 1)
        mkdir -p "$WORK/redis"
        start_bg redis "$LOAD_CPUS" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
            --dir "$WORK/redis" --protected-mode no
        local deadline=$((SECONDS + 20))
        until redis-cli -p "$port" ping >/dev/null 2>&1; do
            [ $SECONDS -lt $deadline ] || die "redis-server did not start"
            sleep 0.2
        done
        REDIS_URL="redis://127.0.0.1:$port" REDIS_OWN=1
        REDIS_NOTE="redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') of the run's own, pinned with the load (CPU $LOAD_CPUS)"
    else
        REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
        REDIS_NOTE="shared Redis at $REDIS_URL (its command count includes other clients)"
    fi
}
redis_commands() {
    redis-cli -u "$REDIS_URL" info stats 2>/dev/null | tr -d '\r' | sed -n 's/^total_commands_processed://p'
}
redis_cleanup() { # delete the keys of the run's prefixes from a shared Redis
    local p
    [ "$REDIS_OWN" = 0 ] && [ -n "$REDIS_URL" ] || return 0
    for p in "${REDIS_PREFIXES[@]}"; do
        redis-cli -u "$REDIS_URL" --scan --pattern "$p*" 2>/dev/null | xargs -r -n 100 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
    done
}

# --- the fake upstream ---------------------------------------------------------
read -r UP_PORT P_BARE P_NGINX P_BM P_BM_ADMIN P_LITELLM P_PORTKEY <<<"$(free_ports 7)"
UP="127.0.0.1:$UP_PORT"
start_bg upstream "$LOAD_CPUS" "$BIN/fake-upstream" --listen "$UP" --threads 1 --chunks "$CHUNKS" --chunk-delay-ms 0
wait_http upstream "http://$UP/health" 30 || die "fake upstream did not start"

set_chunk_delay() {
    curl -sf --max-time 5 -X POST "http://$UP/_control/chunk_delay" \
        -H 'content-type: application/json' -d "{\"ms\":$1}" >/dev/null
}

BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in ten words."}],"max_tokens":64}'
AUTH=()
CHAT=/v1/chat/completions

oha_run() { # out seconds url extra-args...: one oha run, JSON to $out
    local out=$1 secs=$2 url=$3
    shift 3
    timeout $((secs + 60)) taskset -c "$LOAD_CPUS" "$OHA" --no-tui --output-format json \
        --worker-threads 1 -z "${secs}s" -c "$CONNS" -t 30s -m POST \
        -H 'content-type: application/json' "${AUTH[@]}" -d "$BODY" "$@" "$url" >"$out" 2>>"$WORK/logs/oha.log"
}

json_get() { # file python-expression-on-d
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

open_loop() { # name url rate: one latency-corrected fixed-rate run
    log "$1: open loop at $3 rps (latency corrected), ${OPEN_S}s"
    oha_run "$RAW/$1.open.$3.json" "$OPEN_S" "$2" -q "$3" --latency-correction || log "$1: open loop failed"
}

# timeline_run name url rate: the open loop recorded per request (timeline-load),
# every target at the same rate (bare Pingora's), for benches/timeline.py.
timeline_run() {
    local name=$1 url=$2 rate=$3 hostport hdr=() i
    hostport=${url#http://}
    hostport=${hostport%%/*}
    for ((i = 1; i < ${#AUTH[@]}; i += 2)); do hdr+=(--header "${AUTH[i]}"); done
    log "$name: timeline, open loop at $rate rps, ${OPEN_S}s (+1 s warm-up)"
    local before after sched_pid=""
    before=$(upstream_connections)
    if command -v perf >/dev/null; then
        # Scheduler events of the whole machine during the run: which tasks
        # held the proxy's core while its worker waited (benches/sched-blame.py).
        perf sched record -k CLOCK_MONOTONIC -o "$WORK/$name.sched.data" -- sleep $((OPEN_S + 3)) \
            >"$WORK/logs/$name.perf-sched.log" 2>&1 &
        sched_pid=$!
        sleep 0.5
    fi
    timeout $((OPEN_S + 90)) taskset -c "$LOAD_CPUS" "$BIN/timeline-load" --addr "$hostport" \
        --path "/${url#http://*/}" --rate "$rate" --duration-s "$OPEN_S" --warmup-s 1 --conns "$CONNS" \
        --body "$BODY" --out "$RAW/$name.timeline.csv" "${hdr[@]}" \
        >"$RAW/$name.timeline.json" 2>>"$WORK/logs/timeline-load.log" || log "$name: timeline run failed"
    if [ -n "$sched_pid" ]; then
        wait "$sched_pid" || true
        local t0
        t0=$(sed -n 's/^# monotonic_ns_at_t0=//p' "$RAW/$name.timeline.csv")
        python3 "$ROOT/benches/sched-blame.py" "$WORK/$name.sched.data" "${PID[$name]}" \
            --from-ns "${t0:-0}" --secs "$OPEN_S" >"$RAW/$name.sched-blame.md" 2>>"$WORK/logs/sched-blame.log" || true
        rm -f "$WORK/$name.sched.data"
    fi
    after=$(upstream_connections)
    # Connections the proxy opened to the upstream during the run (health
    # checks included): a pool that keeps its connections opens ~none.
    echo $((after - before)) >"$RAW/$name.upstream-connections.txt"
    log "$name: $((after - before)) upstream connections opened during the timeline run"
}

upstream_connections() {
    curl -sf --max-time 5 "http://$UP/_control/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("connections", 0))'
}

RSS_PIDS=()       # if set: the processes whose memory the stream scenario samples (else the target's)
RATE=""           # the common open-loop rate: half of bare Pingora's saturation
EXTRA_RATES=()    # half-saturation rates of targets that cannot carry RATE
BM_RATE=""        # half of BluesMinds' (SQLite) saturation: the open-loop rate of its PostgreSQL / Redis set-ups

# run_target name url pids...: closed loop, open loop, streams against one target.
run_target() {
    local name=$1 url=$2
    shift 2
    local pids=("$@")
    log "$name: warm-up ${WARM_S}s"
    oha_run "$RAW/$name.warmup.json" "$WARM_S" "$url" || log "$name: warm-up failed"

    log "$name: closed loop, $CONNS connections, ${CLOSED_S}s"
    local c0a c1a c0b c1b pa pb hz dbpids da db ra=0 rb=0 rca=0 rcb=0
    hz=$(getconf CLK_TCK)
    # PostgreSQL targets: the backends serving the gateway run on the proxy's
    # cores and their CPU is counted beside the gateway's.
    pin_db_backends
    dbpids=$(db_backend_pids)
    read -r -a c0a <<<"$(cpu_ticks "$LOAD_CPUS")"
    read -r -a c1a <<<"$(cpu_ticks "$PROXY_CPUS")"
    pa=$(proc_ticks $(for p in "${pids[@]}"; do descendants "$p"; done))
    local fa fb  # the first process alone (the instance under load, when there are several)
    fa=$(proc_ticks $(descendants "${pids[0]}"))
    da=$(proc_ticks $dbpids)
    local xa xb
    xa=$(db_commits)
    if [ "$CUR_REDIS" = 1 ]; then
        rca=$(redis_commands)
        [ "$REDIS_OWN" = 0 ] || ra=$(proc_ticks "${PID[redis]}")
    fi
    oha_run "$RAW/$name.closed.json" "$CLOSED_S" "$url" || log "$name: closed loop failed"
    pb=$(proc_ticks $(for p in "${pids[@]}"; do descendants "$p"; done))
    fb=$(proc_ticks $(descendants "${pids[0]}"))
    db=$(proc_ticks $dbpids)
    xb=$(db_commits)
    if [ "$CUR_REDIS" = 1 ]; then
        rcb=$(redis_commands)
        [ "$REDIS_OWN" = 0 ] || rb=$(proc_ticks "${PID[redis]}")
    fi
    read -r -a c0b <<<"$(cpu_ticks "$LOAD_CPUS")"
    read -r -a c1b <<<"$(cpu_ticks "$PROXY_CPUS")"
    python3 - "$RAW/$name.cpu.json" "${c0a[@]}" "${c0b[@]}" "${c1a[@]}" "${c1b[@]}" "$pa" "$pb" "$hz" "$CLOSED_S" \
        "$da" "$db" "$(echo "$dbpids" | wc -w)" "$CUR_REDIS" "${rca:-0}" "${rcb:-0}" "$ra" "$rb" "${xa:-0}" "${xb:-0}" "$fa" "$fb" "${#pids[@]}" "$PROXY_THREADS" <<'EOF'
import json, sys
o = sys.argv[1]
b0a, t0a, b0b, t0b, b1a, t1a, b1b, t1b, pa, pb, hz, secs, da, db, ndb, redis, rca, rcb, ra, rb, xa, xb, fa, fb, npids, _ = map(float, sys.argv[2:])
d = {
    "load_cpu_busy_pct": 100 * (b0b - b0a) / max(t0b - t0a, 1),
    "proxy_cpu_busy_pct": 100 * (b1b - b1a) / max(t1b - t1a, 1),
    "target_process_cores": (pb - pa) / hz / secs,
    "proxy_ncpu": int(sys.argv[-1]),
}
if npids > 1:
    d["first_process_cores"] = (fb - fa) / hz / secs
if ndb:
    d["db_backends"] = int(ndb)
    d["db_process_cores"] = (db - da) / hz / secs
    d["db_commits"] = int(xb - xa)
if redis:
    d["redis_commands"] = int(rcb - rca)
    d["redis_process_cores"] = (rb - ra) / hz / secs
json.dump(d, open(o, "w"))
EOF

    local rps
    rps=$(json_get "$RAW/$name.closed.json" 'sum(v for k, v in d["statusCodeDistribution"].items() if k.startswith("2")) / d["summary"]["total"]' 2>/dev/null || echo 0)
    log "$name: $rps rps (2xx) in the closed loop"
    if [ "$name" = bare ]; then
        RATE=$(python3 -c "print(max(1, int(float('$rps') / 2)))")
        echo "$RATE" >"$RAW/rate.txt"
    fi
    # A target that cannot carry the common rate would only queue: it is measured
    # at half its own saturation instead, and bare Pingora and direct at that rate too.
    local rate=$RATE
    [ "$name" != bluesminds ] || BM_RATE=$(python3 -c "print(max(1, int(float('$rps') / 2)))")
    if [[ $name == bluesminds_* ]] && [ -n "$BM_RATE" ] \
        && python3 -c "import sys; sys.exit(0 if float('$rps') >= 1.1 * $BM_RATE else 1)"; then
        # The gateway's other set-ups (PostgreSQL, Redis) all run at half of
        # the SQLite gateway's saturation when they can carry it, so their
        # latencies compare with each other.
        rate=$BM_RATE
        case " ${EXTRA_RATES[*]} " in *" $rate "*) ;; *) EXTRA_RATES+=("$rate") ;; esac
    elif [ "$name" != direct ] && python3 -c "import sys; sys.exit(0 if float('$rps') < 1.1 * $RATE else 1)"; then
        rate=$(python3 -c "print(max(1, int(float('$rps') / 2)))")
        case " ${EXTRA_RATES[*]} " in *" $rate "*) ;; *) EXTRA_RATES+=("$rate") ;; esac
    fi
    echo "$rate" >"$RAW/$name.rate.txt"
    if [ "$TIMELINE" = 1 ]; then
        # BENCH_TIMELINE_RATE: one rate for both instead of half of bare's
        # saturation, e.g. one the gateway can carry, to see its tail apart
        # from queueing.
        timeline_run "$name" "$url" "${BENCH_TIMELINE_RATE:-$RATE}"
        echo "ok" >"$RAW/$name.status"
        return 0
    fi
    open_loop "$name" "$url" "$rate"
    if [ "$name" = direct ]; then
        for r in "${EXTRA_RATES[@]}"; do open_loop direct "$url" "$r"; done
    fi

    log "$name: $STREAMS streams, $CHUNKS chunks x ${CHUNK_DELAY_MS}ms"
    local rss_pids=""
    [ ${#RSS_PIDS[@]} = 0 ] || pids=("${RSS_PIDS[@]}")
    for p in "${pids[@]}"; do rss_pids+="$(descendants "$p" | tr '\n' ',')"; done
    set_chunk_delay "$CHUNK_DELAY_MS"
    local hostport=${url#http://}
    hostport=${hostport%%/*}
    local hdr=() i
    for ((i = 1; i < ${#AUTH[@]}; i += 2)); do hdr+=(--header "${AUTH[i]}"); done
    timeout 120 taskset -c "$LOAD_CPUS" "$BIN/stream-load" --addr "$hostport" \
        --streams "$STREAMS" --ramp-ms "$STREAM_RAMP_MS" --timeout-s 60 --pids "${rss_pids%,}" "${hdr[@]}" \
        >"$RAW/$name.stream.json" 2>>"$WORK/logs/stream-load.log" || log "$name: stream run failed"
    set_chunk_delay 0
    echo "ok" >"$RAW/$name.status"
}

start_bare() {
    start_bg bare "$PROXY_CPUS" "$BIN/bare-pingora" --listen "127.0.0.1:$P_BARE" --upstream "$UP" --threads "$PROXY_THREADS"
    wait_http bare "http://127.0.0.1:$P_BARE/health" 30 || die "bare-pingora did not start"
}

# --- targets -------------------------------------------------------------------
# b. bare Pingora first: its saturation sets the common open-loop rate.
start_bare
run_target bare "http://127.0.0.1:$P_BARE$CHAT" "${PID[bare]}"
stop_proc bare

# c. nginx proxy_pass
if [ -n "$NGINX_BIN" ]; then
    N="$WORK/nginx"
    mkdir -p "$N/tmp"
    cat >"$N/nginx.conf" <<EOF
# One worker per proxy core (like Pingora's threads); no access log (bare Pingora
# logs nothing either); keepalive to the upstream; streaming unbuffered.
worker_processes $PROXY_THREADS;
worker_rlimit_nofile 65536;
daemon off;
pid $N/nginx.pid;
error_log $N/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $N/tmp/body;
    proxy_temp_path $N/tmp/proxy;
    fastcgi_temp_path $N/tmp/fastcgi;
    uwsgi_temp_path $N/tmp/uwsgi;
    scgi_temp_path $N/tmp/scgi;
    keepalive_requests 1000000;
    upstream fake {
        server $UP;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_NGINX backlog=4096;
        location / {
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }
    }
}
EOF
    start_bg nginx "$PROXY_CPUS" "$NGINX_BIN" -p "$N" -c "$N/nginx.conf" -e "$N/error.log"
    if wait_http nginx "http://127.0.0.1:$P_NGINX/health" 30; then
        run_target nginx "http://127.0.0.1:$P_NGINX$CHAT" "${PID[nginx]}"
    else
        log "nginx did not start"
        echo "nginx did not start (see logs/nginx.log)" >"$RAW/nginx.status"
    fi
    stop_proc nginx
    cp "$N/error.log" "$WORK/logs/nginx-error.log" 2>/dev/null || true
else
    echo "$NGINX_NOTE" >"$RAW/nginx.status"
fi

# d. BluesMinds: SQLite usage logging, health checks on, and key limits set far
# above the load so the rate-limit path runs on every request without denying.
# With --postgres / --cluster the same gateway again on PostgreSQL, with Redis
# limits on one instance, and as one of three Redis-synced instances.

# shellcheck source=benches/bm-config.sh
source "$ROOT/benches/bm-config.sh"

# run_bm name url-of-db instances redis: make the key, start the instances
# (the first on the proxy's ports), warm the others on the key, measure the
# first, stop all, and check the usage records.
run_bm() {
    local name=$1 dburl=$2 n=$3 redis=$4
    local dir="$WORK/$name" i prefix="" key ports admins pids=()
    mkdir -p "$dir"
    if [ "$redis" = 1 ]; then
        redis_start
        prefix="bmbench:$$:$name:"
        REDIS_PREFIXES+=("$prefix")
    fi
    read -r -a ports <<<"$P_BM $(free_ports $((n - 1)))"
    read -r -a admins <<<"$P_BM_ADMIN $(free_ports $((n - 1)))"
    for ((i = 1; i <= n; i++)); do
        bm_config "$dir/gateway$i.yaml" "${ports[i - 1]}" "${admins[i - 1]}" "$dburl" "$dir/usage-ledger$i" "$UP" "$PROXY_THREADS" \
            "$([ "$redis" = 1 ] && echo "$REDIS_URL")" "$prefix"
    done
    key=$(cd "$dir" && "$BIN/bluesminds" --config "$dir/gateway1.yaml" keys create --name bench 2>>"$WORK/logs/$name-keys.log" || true)
    if [ -z "$key" ]; then
        echo "could not create a BluesMinds key (see logs/$name-keys.log)" >"$RAW/$name.status"
        return 0
    fi
    for ((i = 1; i <= n; i++)); do
        local inst=$name
        [ "$i" = 1 ] || inst="$name-$i"
        # Every instance on the proxy's cores (the idle ones only sync and probe).
        (cd "$dir" && exec taskset -c "$PROXY_CPUS" env RUST_LOG=warn "$BIN/bluesminds" --config "$dir/gateway$i.yaml") \
            >"$WORK/logs/$inst.log" 2>&1 &
        PID[$inst]=$!
        pids+=("${PID[$inst]}")
    done
    local ready=1
    for ((i = 1; i <= n; i++)); do
        local inst=$name
        [ "$i" = 1 ] || inst="$name-$i"
        wait_http "$inst" "http://127.0.0.1:${admins[i - 1]}/readyz" 60 || ready=0
    done
    if [ "$ready" = 1 ]; then
        # The other instances meet the key first, so they hold its buckets and
        # take part in every sync while the first is measured.
        for ((i = 2; i <= n; i++)); do
            for _ in 1 2 3 4 5; do
                curl -s -o /dev/null --max-time 5 -H 'content-type: application/json' \
                    -H "authorization: Bearer $key" -d "$BODY" "http://127.0.0.1:${ports[i - 1]}$CHAT" || true
            done
        done
        [ "$redis" = 1 ] && CUR_REDIS=1
        AUTH=(-H "authorization: Bearer $key")
        RSS_PIDS=("${pids[0]}")   # memory: the instance under load
        run_target "$name" "http://127.0.0.1:$P_BM$CHAT" "${pids[@]}"
        RSS_PIDS=()
        AUTH=()
        CUR_REDIS=0
        curl -s --max-time 5 "http://127.0.0.1:$P_BM_ADMIN/metrics" >"$RAW/$name.metrics.txt" || true
    else
        echo "BluesMinds did not become ready (see logs/$name*.log)" >"$RAW/$name.status"
    fi
    for ((i = n; i >= 1; i--)); do
        if [ "$i" = 1 ]; then stop_proc "$name"; else stop_proc "$name-$i"; fi
    done
    # Usage logging check (after the graceful flush): rows written vs requests answered.
    if [[ $dburl == sqlite://* ]]; then
        python3 - "${dburl#sqlite://}" >"$RAW/$name.usage.json" <<'EOF' || true
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = dict(db.execute("select status, count(*) from usage_records group by status").fetchall())
print(json.dumps({"usage_rows": sum(rows.values()), "by_status": {str(k): v for k, v in rows.items()}}))
EOF
    else
        pg "${dburl##*/}" "SELECT status, count(*) FROM usage_records GROUP BY status" 2>>"$WORK/logs/postgres.log" \
            | python3 -c 'import json, sys
rows = {l.split("|")[0]: int(l.split("|")[1]) for l in sys.stdin if "|" in l}
print(json.dumps({"usage_rows": sum(rows.values()), "by_status": rows}))' >"$RAW/$name.usage.json" || true
    fi
}

run_bm bluesminds "sqlite://$WORK/bluesminds/bluesminds.db" 1 0
if [ "$POSTGRES" = 1 ]; then
    for t in bluesminds_pg $([ "$CLUSTER" = 1 ] && echo bluesminds_redis bluesminds_cluster); do
        db="bm_bench_$$_${t#bluesminds_}"
        if ! pg_create "$db"; then
            echo "could not create PostgreSQL database $db at $PG_BASE (see logs/postgres.log)" >"$RAW/$t.status"
            continue
        fi
        CUR_PGDB=$db
        case $t in
            bluesminds_pg) run_bm "$t" "$PG_BASE/$db" 1 0 ;;
            bluesminds_redis) run_bm "$t" "$PG_BASE/$db" 1 1 ;;
            bluesminds_cluster) run_bm "$t" "$PG_BASE/$db" 3 1 ;;
        esac
        CUR_PGDB=""
    done
fi

# e. LiteLLM (one uvicorn worker; no database, so no spend logging; auth by master key)
if [ -z "$LITELLM_NOTE" ]; then
    L="$WORK/litellm"
    mkdir -p "$L"
    cat >"$L/config.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://$UP/v1
      api_key: sk-fake
general_settings:
  master_key: sk-bench-master
EOF
    # No network beyond loopback: use the bundled model cost map.
    (cd "$L" && exec taskset -c "$PROXY_CPUS" env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
        "$LITELLM_VENV/bin/litellm" --config "$L/config.yaml" --host 127.0.0.1 --port "$P_LITELLM" \
        --num_workers 1) >"$WORK/logs/litellm.log" 2>&1 &
    PID[litellm]=$!
    if wait_http litellm "http://127.0.0.1:$P_LITELLM/health/liveliness" 180; then
        AUTH=(-H "authorization: Bearer sk-bench-master")
        run_target litellm "http://127.0.0.1:$P_LITELLM$CHAT" "${PID[litellm]}"
        AUTH=()
    else
        echo "LiteLLM did not start within 180 s (see logs/litellm.log)" >"$RAW/litellm.status"
    fi
    stop_proc litellm
else
    echo "$LITELLM_NOTE" >"$RAW/litellm.status"
fi

# f. Portkey's gateway: one Node process, the OpenAI provider with its custom
# host set to the fake upstream (Portkey sends the client's Authorization on).
if [ -z "$PORTKEY_NOTE" ]; then
    (exec taskset -c "$PROXY_CPUS" env NODE_ENV=production \
        node "$PORTKEY_JS" --port="$P_PORTKEY" --headless) >"$WORK/logs/portkey.log" 2>&1 &
    PID[portkey]=$!
    if wait_http portkey "http://127.0.0.1:$P_PORTKEY/" 60; then
        AUTH=(-H "authorization: Bearer sk-fake" -H "x-portkey-provider: openai"
            -H "x-portkey-custom-host: http://$UP/v1")
        run_target portkey "http://127.0.0.1:$P_PORTKEY$CHAT" "${PID[portkey]}"
        AUTH=()
    else
        echo "Portkey's gateway did not start within 60 s (see logs/portkey.log)" >"$RAW/portkey.status"
    fi
    stop_proc portkey
else
    echo "$PORTKEY_NOTE" >"$RAW/portkey.status"
fi

# a. direct to the fake upstream (no hop), last: it also runs the open loop at
# every extra rate. Its RSS figures are the fake upstream's own.
if [ "$TIMELINE" = 0 ]; then
    run_target direct "http://$UP$CHAT" "${PID[upstream]}"
fi

# Bare Pingora again at the extra rates, so every target has a floor at its rate.
if [ ${#EXTRA_RATES[@]} -gt 0 ]; then
    start_bare
    oha_run "$RAW/bare.rewarm.json" "$WARM_S" "http://127.0.0.1:$P_BARE$CHAT" || true
    for r in "${EXTRA_RATES[@]}"; do open_loop bare "http://127.0.0.1:$P_BARE$CHAT" "$r"; done
    stop_proc bare
fi

stop_proc upstream
echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/meta.env"
echo "redis=${REDIS_NOTE:--}" >>"$RAW/meta.env"
top -bn1 | head -15 >"$RAW/top-after.txt" 2>/dev/null || true

python3 "$ROOT/benches/report.py" "$RAW" >"$OUT/report.md"
if [ "$TIMELINE" = 1 ]; then
    {
        echo "# Latency timeline: bare Pingora and BluesMinds at ${BENCH_TIMELINE_RATE:-$RATE} rps"
        echo
        echo "\`$COMMAND_LINE\` at $(grep '^git=' "$RAW/meta.env" | cut -d= -f2-), $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        python3 "$ROOT/benches/timeline.py" bare="$RAW/bare.timeline.csv" bluesminds="$RAW/bluesminds.timeline.csv"
        echo
        for t in bare bluesminds; do
            if [ -s "$RAW/$t.sched-blame.md" ]; then
                echo
                echo "### $t: what held the proxy core while its worker waited to run (\`perf sched\`, benches/sched-blame.py)"
                echo
                cat "$RAW/$t.sched-blame.md"
            fi
        done
        echo
        echo "Upstream connections opened during the timeline run: bare Pingora $(cat "$RAW/bare.upstream-connections.txt" 2>/dev/null || echo '?'), BluesMinds $(cat "$RAW/bluesminds.upstream-connections.txt" 2>/dev/null || echo '?') (fake upstream's accept count)."
    } >"$OUT/timeline.md" || log "timeline table failed"
    python3 "$ROOT/benches/timeline.py" --stalls-only 5 bare="$RAW/bare.timeline.csv" bluesminds="$RAW/bluesminds.timeline.csv" || true
    log "timeline: $OUT/timeline.md"
else
    cat "$OUT/report.md"
fi
log "report: $OUT/report.md"
