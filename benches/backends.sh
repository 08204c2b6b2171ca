#!/usr/bin/env bash
# What each upstream backend costs the gateway before any traffic: for each
# N given, a fresh gateway (config as in run.sh, one pool with N backends at
# addresses nothing listens on, health checks on) pinned to CPU 0, the time
# from its start to an answering admin port, and its anonymous memory
# (`RssAnon`) 3 s later. Prints one line per N and, at the end, the memory
# per backend between the smallest and the largest N.
#
#   bash benches/backends.sh DIR [N...]
#
# DIR: a directory holding the release `bluesminds` binary. N defaults to
# 1 10 40. Each backend has an HTTP health check of its own, with its own
# connectors (see benches/README.md, "Trust roots once per process").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/bm-config.sh
source "$ROOT/benches/bm-config.sh"
[ $# -ge 1 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
DIR="$(cd "$1" && pwd)"
shift
if [ $# -ge 1 ]; then COUNTS=("$@"); else COUNTS=(1 10 40); fi
[ -x "$DIR/bluesminds" ] || { echo "$DIR/bluesminds is missing" >&2; exit 1; }

bench_work bm-backends

# backends N FILE: the config's one backend replaced by N on 127.0.0.2... (port 9,
# where nothing answers: the probes fail, which costs what a healthy one does).
backends() {
    python3 - "$2" "$1" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
text = open(path).read()
lines = "".join(f"      - url: http://127.0.{i // 250}.{i % 250 + 2}:9\n" for i in range(n))
open(path, "w").write(text.replace("      - url: http://127.0.0.1:1\n", lines))
EOF
}

declare -A KIB
for n in "${COUNTS[@]}"; do
    w="$(mktemp -d "$WORK/n$n.XXXXXX")"
    port=$(free_port) admin=$(free_port)
    bm_config "$w/gateway.yaml" "$port" "$admin" "sqlite://$w/bm.db" "$w/ledger" "127.0.0.1:1" 1
    backends "$n" "$w/gateway.yaml"
    start=$(date +%s%N)
    (cd "$w" && exec taskset -c 0 env RUST_LOG=warn "$DIR/bluesminds" --config "$w/gateway.yaml") >"$w/gw.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ok "http://127.0.0.1:$admin/healthz" "$w/gw.log"
    up_ms=$((($(date +%s%N) - start) / 1000000))
    sleep 3
    KIB[$n]=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
    printf '%5d backends: up in %5d ms, RssAnon %7d KiB\n' "$n" "$up_ms" "${KIB[$n]}"
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
done
lo=${COUNTS[0]} hi=${COUNTS[-1]}
if [ "$hi" != "$lo" ]; then
    echo "per backend ($lo -> $hi): $(((KIB[$hi] - KIB[$lo]) / (hi - lo))) KiB"
fi
