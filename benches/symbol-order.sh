#!/usr/bin/env bash
# Writes benches/symbol-order.txt, the order in which the release linker lays
# out the gateway's functions (build.rs passes it to lld as
# --symbol-ordering-file): every function the gateway runs while serving a
# light load, hottest first, then those only start-up ran (their pages are
# released once start-up is over: src/startup_pages.rs).
#
#   bash benches/symbol-order.sh
#
# Why: the kernel maps an executable 64 KiB around each page it faults in, so
# the few MiB of code the gateway runs, scattered through 15 MiB of text,
# kept nearly all of it resident. Put together they take a quarter of the
# pages (benches/README.md, "The executable's pages, laid out by use").
#
# The run: the release binaries (cargo build --release --workspace) and oha
# from benches/run.sh; the gateway under valgrind's callgrind from its first
# instruction, with SQLite usage records, serving JSON and streamed chat
# completions (some dropped by the client), the model list, a refused key
# and a /metrics scrape; then, with perf, the real binary under a closed
# loop. Symbols are the linker's (mangled) names. A function that later
# changes keeps its name (legacy Rust symbols hash the crate and the
# instance, not the body); one that is new or renamed is placed after the
# listed ones, so the file ages slowly, except when the gateway's own
# dependencies change: cargo's hash of the crate covers them, so every
# bluesminds symbol is renamed and 40 % of the file stopped matching after
# libsqlite3-sys was added. Run it again after a change to [dependencies].
# BENCH_BIN_DIR as in run.sh. Prints how many 64 KiB windows of that
# binary's text the functions it ran touch: run it again on a build with the
# file to see the layout in effect.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=benches/bm-config.sh
source "$ROOT/benches/bm-config.sh"
bench_paths
for tool in valgrind nm python3 curl; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
[ -x "$OHA" ] || { echo "run benches/run.sh --quick once first (installs oha)" >&2; exit 1; }

bench_work bm-symbol-order
up_start "$BIN" "$WORK"
PORT=$(free_port)
ADMIN=$(free_port)
bm_config "$WORK/gateway.yaml" "$PORT" "$ADMIN" "sqlite://$WORK/bm.db" "$WORK/ledger" "$UP" 1
KEY=$(cd "$WORK" && "$BIN/bluesminds" --config "$WORK/gateway.yaml" keys create --name order 2>>"$WORK/keys.log")
(cd "$WORK" && exec taskset -c 0 env RUST_LOG=warn valgrind --tool=callgrind --demangle=no \
    --callgrind-out-file="$WORK/cg.out" "$BIN/bluesminds" --config "$WORK/gateway.yaml") >"$WORK/gw.log" 2>&1 &
GW=$!
PIDS+=("$GW")

CHAT="http://127.0.0.1:$PORT/v1/chat/completions"
chat() { # body
    curl -sf -o /dev/null -H "authorization: Bearer $KEY" -H 'content-type: application/json' -d "$1" "$CHAT"
}
for _ in $(seq 600); do # start-up under valgrind takes tens of seconds
    (: <>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "$GW" 2>/dev/null || { cat "$WORK/gw.log" >&2; exit 1; }
    sleep 0.5
done
# Start-up is over once the proxy accepts connections: its part goes to its
# own file (cg.out.1). What runs from here on goes to cg.out, the first
# request's own work included (the key's lookup, the usage statements'
# preparation), since a running gateway does it after start-up too.
callgrind_control -d "$GW" >/dev/null
chat "$BM_BODY" || { echo "the gateway did not answer; its log:" >&2; cat "$WORK/gw.log" >&2; exit 1; }
load() { # "-n N" or "-z SECONDS", body
    taskset -c 1 "$OHA" --no-tui --output-format quiet --worker-threads 1 $1 -c 64 -m POST \
        -H 'content-type: application/json' -H "authorization: Bearer $KEY" -d "$2" "$CHAT"
}
load "-n 3000" "$BM_BODY"
load "-n 200" "${BM_BODY%\}},\"stream\":true}"
# A timed run ends with its requests in flight dropped: the paths of clients
# that go away (the closed loops of the benchmarks end that way too).
load "-z 3s" "$BM_BODY"
curl -sf -o /dev/null -H "authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models"
curl -s -o /dev/null -H "authorization: Bearer bm_not_a_key" -H 'content-type: application/json' -d "$BM_BODY" "$CHAT"
curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/metrics"
sleep 2 # the usage writer's last batch
kill -INT "$GW"
wait "$GW" || true

# valgrind hides CPU features such as SHA-NI and AVX-512, so the code taken
# on them (sha2's key hashing, crc32fast's) never ran above. perf samples
# the binary itself under a closed loop; what it sees that callgrind did not
# goes after the callgrind list. Without perf the list is callgrind's alone.
: >"$WORK/sampled.txt"
if command -v perf >/dev/null; then
    mkdir -p "$WORK/real"
    REAL_PORT=$(free_port)
    bm_start "$BIN" "$WORK/real" "$REAL_PORT" "$(free_port)" "$UP"
    perf record -q -F 10000 -e cpu-clock -p "$BM_PID" -o "$WORK/perf.data" -- sleep 6 >/dev/null 2>&1 &
    PERF=$!
    sleep 0.5
    bm_oha "127.0.0.1:$REAL_PORT" "$BM_KEY" -z 5s >/dev/null
    wait "$PERF" || true
    perf report -i "$WORK/perf.data" --no-demangle --sort sym --stdio 2>/dev/null |
        awk '/^ +[0-9]/ {print $NF}' >"$WORK/sampled.txt"
else
    echo "perf not found: only what callgrind saw is listed" >&2
fi
nm -S --defined-only "$BIN/bluesminds" >"$WORK/syms.txt"
python3 - "$WORK/cg.out" "$WORK/cg.out.1" "$WORK/syms.txt" "$ROOT/benches/symbol-order.txt" "$WORK/sampled.txt" <<'PY'
import collections, re, sys

running, starting, syms, out, sampled = sys.argv[1:]
spec = re.compile(r"^(c?fn|c?ob)=\((\d+)\)(?: (.*))?$")
kind = {"fn": "fn", "cfn": "fn", "ob": "ob", "cob": "ob"}


def costs(cg):
    """Instructions per bluesminds function in one callgrind dump."""
    # callgrind's format names a function or object once, as "(id) name", and
    # by its id after that (anew in each dump file); a cost line right after
    # "calls=" is the callee's.
    names = {"fn": {}, "ob": {}}
    cost = collections.Counter()
    obj = fn = None
    after_call = False
    for line in open(cg):
        m = spec.match(line.rstrip("\n"))
        if m:
            key, ident, name = m.groups()
            table = names[kind[key]]
            if name:
                table[ident] = name
            if key == "ob":
                obj = table[ident]
            elif key == "fn":
                fn = (obj, table[ident])
            continue
        if line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False
            elif fn and fn[0] and fn[0].endswith("/bluesminds"):
                parts = line.split()
                if len(parts) > 1 and parts[1].isdigit():
                    # "'2" marks a recursive call's level, not a symbol.
                    cost[re.sub(r"'\d+$", "", fn[1])] += int(parts[1])
    return cost


text = {}
for line in open(syms):
    parts = line.split()
    if len(parts) == 4 and parts[2] in "tTwW":
        text[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
# What runs while the gateway serves comes first (callgrind's second part, then
# what only perf sampled), start-up's own functions after it: start-up's pages
# are released once it is over (src/startup_pages.rs), and the running code
# then faults back in as few 64 KiB windows as it fills.
ran = [name for name, _ in costs(running).most_common() if name in text]
seen = set(ran)
extra = [n for n in dict.fromkeys(l.strip() for l in open(sampled)) if n in text and n not in seen]
ran += extra
serving = len(ran)
seen.update(extra)
ran += [name for name, _ in costs(starting).most_common() if name in text and name not in seen]
with open(out, "w") as f:
    f.write("".join(name + "\n" for name in ran))


def windows(names):
    return {w for name in names for w in range(text[name][0] >> 16, (sum(text[name]) >> 16) + 1)}


def mib(names):
    return sum(text[n][1] for n in names) / 2**20


print(f"{len(ran)} functions ran ({len(extra)} more that perf saw while serving; {mib(ran):.1f} MiB of "
      f"{sum(s for _, s in text.values()) / 2**20:.1f} MiB of text); in this binary they touch "
      f"{len(windows(ran))} 64 KiB windows ({len(windows(ran)) / 16:.1f} MiB)")
print(f"{serving} of them ran while serving ({mib(ran[:serving]):.1f} MiB), touching "
      f"{len(windows(ran[:serving]))} windows ({len(windows(ran[:serving])) / 16:.1f} MiB)")
print(f"wrote {out}")
PY
