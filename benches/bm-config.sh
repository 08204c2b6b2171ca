# Sourced by run.sh, profile.sh, ab.sh, tail.sh and symbol-order.sh: the
# gateway's benchmark config. SQLite (or the given database) usage logging,
# health checks on, and key limits set far above the load so the rate-limit
# path runs on every request without denying; and, for the scripts that run
# one gateway at a time, the request they send and helpers that find the
# binaries and start and stop the processes they measure.

# The non-streaming chat request of the closed and open loops.
BM_BODY='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in ten words."}],"max_tokens":64}'

# bench_paths: the release binaries (BIN; BENCH_BIN_DIR overrides, as in
# run.sh) and oha as run.sh installs it (OHA), under ROOT's target directory.
bench_paths() {
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
    BIN="${BENCH_BIN_DIR:-$TARGET/release}"
    OHA="$TARGET/bench-tools/bin/oha"
}

free_port() { # a free loopback port
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ok() { # url log: up within 10 s, or the run stops with the log
    for _ in $(seq 100); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "$1 did not answer; its log:" >&2
    cat "$2" >&2
    exit 1
}

# bm_oha HOSTPORT KEY OHA_ARGS...: the closed loop of ab.sh and tail.sh: OHA
# (the caller's oha) on CPU 1, 64 keep-alive connections sending BM_BODY;
# its JSON summary on stdout.
bm_oha() {
    local to=$1 key=$2
    shift 2
    taskset -c 1 "$OHA" --no-tui --output-format json --worker-threads 1 -c 64 -t 30s -m POST \
        -H 'content-type: application/json' -H "authorization: Bearer $key" -d "$BM_BODY" \
        "$@" "http://$to/v1/chat/completions"
}

# up_start BIN_DIR W: a fresh fake upstream (one thread, pinned to CPU 1 with
# the load) on a free port, answering; sets UP (host:port) and UP_PID and
# adds the process to PIDS.
up_start() {
    UP="127.0.0.1:$(free_port)"
    taskset -c 1 "$1/fake-upstream" --listen "$UP" --threads 1 --chunks 10 --chunk-delay-ms 0 >"$2/up.log" 2>&1 &
    UP_PID=$!
    PIDS+=("$UP_PID")
    wait_ok "http://$UP/health" "$2/up.log"
}

# bm_start BIN_DIR W PORT ADMIN UPSTREAM: a fresh gateway with one worker in
# W (SQLite, a new key) pinned to CPU 0, ready; sets BM_PID and BM_KEY and
# adds the process to PIDS.
bm_start() {
    local dir=$1 w=$2
    bm_config "$w/gateway.yaml" "$3" "$4" "sqlite://$w/bm.db" "$w/ledger" "$5" 1
    BM_KEY=$(cd "$w" && "$dir/bluesminds" --config "$w/gateway.yaml" keys create --name bench 2>>"$w/keys.log")
    (cd "$w" && exec taskset -c 0 env RUST_LOG=warn "$dir/bluesminds" --config "$w/gateway.yaml") >"$w/gw.log" 2>&1 &
    BM_PID=$!
    PIDS+=("$BM_PID")
    wait_ok "http://127.0.0.1:$4/readyz" "$w/gw.log"
}

# bench_work NAME: a fresh temp directory in WORK, and at exit every process
# in PIDS stopped (SIGINT, then SIGKILL) and the directory removed.
bench_work() {
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}

# bm_config file port admin dburl ledger upstream threads [redis_url prefix]:
# one instance's config.
bm_config() {
    local file=$1 port=$2 admin=$3 dburl=$4 ledger=$5 upstream=$6 threads=$7 redis_url=${8:-} prefix=${9:-}
    cat >"$file" <<EOF2
server:
  proxy_listen: "127.0.0.1:$port"
  admin_listen: "127.0.0.1:$admin"
  threads: $threads
  grace_period_secs: 1
database:
  url: "$dburl"
usage:
  ledger_dir: "$ledger"
health_check:
  enabled: true
limits:
  rpm: 1000000000
  tpm: 1000000000000
  concurrency: 100000
pools:
  - name: bench
    models: [gpt-4o-mini]
    backends:
      - url: http://$upstream
prices:
  gpt-4o-mini: { input_per_1m: 0.15, output_per_1m: 0.60 }
EOF2
    if [ -n "$redis_url" ]; then
        printf 'redis:\n  url: "%s"\n  prefix: "%s"\n  sync_ms: 100\n' "$redis_url" "$prefix" >>"$file"
    fi
}
