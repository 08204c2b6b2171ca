#!/usr/bin/env python3
"""Turns the raw outputs of benches/run.sh into target/bench/report.md.

Usage: python3 benches/report.py target/bench/raw > target/bench/report.md
"""

import json
import os
import sys

RAW = sys.argv[1]
TARGETS = [
    ("direct", "direct (no hop)"),
    ("bare", "bare Pingora"),
    ("nginx", "nginx proxy_pass"),
    ("bluesminds", "BluesMinds"),
    ("bluesminds_pg", "BluesMinds (PostgreSQL)"),
    ("bluesminds_redis", "BluesMinds (PostgreSQL + Redis limits, 1 instance)"),
    ("bluesminds_cluster", "BluesMinds (PostgreSQL + Redis, 3 instances, load on one)"),
    ("litellm", "LiteLLM proxy"),
    ("portkey", "Portkey gateway (Node)"),
]
# Targets from the issues (#7, #15).
T_RPS_VS_BARE = 0.90
# Issue 15: added p99 at half of bare Pingora's saturation <= 1 ms first, then
# toward 150 µs (the next row).
T_ADDED_P99_US = 1000
T_ADDED_P99_NEXT_US = 150
T_VS_LITELLM = 20
T_RSS_MIB = 64


def load(name):
    path = os.path.join(RAW, name)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def text(name):
    path = os.path.join(RAW, name)
    return open(path).read().strip() if os.path.exists(path) else ""


meta = {}
for line in text("meta.env").splitlines():
    k, _, v = line.partition("=")
    meta[k] = v


def ok_rps(d):
    """Answers with a 2xx status per second (oha's own rps counts errors too)."""
    if not d:
        return None
    ok = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if k.startswith("2"))
    total = d["summary"]["total"]
    return ok / total if total else None


def pct_us(d, p):
    if not d:
        return None
    v = d.get("latencyPercentiles", {}).get(p)
    return None if v is None else v * 1e6


def non2xx(d):
    if not d:
        return 0
    bad = sum(v for k, v in d.get("statusCodeDistribution", {}).items() if not k.startswith("2"))
    errs = sum(v for k, v in d.get("errorDistribution", {}).items() if "deadline" not in k)
    return bad + errs


def fmt_us(v):
    if v is None:
        return "—"
    if v >= 10_000_000:
        return f"{v / 1e6:,.1f} s"
    if v >= 10_000:
        return f"{v / 1000:,.1f} ms"
    return f"{v:,.0f} µs"


def fmt_signed_us(v):
    return ("+" if v >= 0 else "-") + fmt_us(abs(v))


def fmt_num(v, digits=0):
    return "—" if v is None else f"{v:,.{digits}f}"


def fmt_mib(kib):
    return "—" if not kib else f"{kib / 1024:,.1f} MiB"


R = {}
for key, label in TARGETS:
    rate = text(f"{key}.rate.txt")
    R[key] = {
        "label": label,
        "status": text(f"{key}.status"),
        "closed": load(f"{key}.closed.json"),
        "open": load(f"{key}.open.{rate}.json"),
        "stream": load(f"{key}.stream.json"),
        "cpu": load(f"{key}.cpu.json"),
        "rate": rate,
    }
common_rate = text("rate.txt")
bare = R["bare"]
bare_rps = ok_rps(bare["closed"])
direct_stream = R["direct"]["stream"]


def added_p99(key, p="p99"):
    """(added latency percentile vs bare at the target's own open-loop rate, that rate)."""
    r = R[key]
    mine = pct_us(r["open"], p)
    base = pct_us(load(f"bare.open.{r['rate']}.json"), p)
    if key == "bare" or mine is None or base is None:
        return None, r["rate"]
    return mine - base, r["rate"]

def cpu_us_per_request(key, field="target_process_cores"):
    """CPU time of the target's processes (or of `field`) per 2xx answer in the closed loop, in µs."""
    r = R[key]
    rps = ok_rps(r["closed"])
    c = (r["cpu"] or {}).get(field)
    if not rps or c is None:
        return None
    return c / rps * 1e6


out = []
w = out.append
w("# BluesMinds load benchmark")
w("")
w(f"- date: {meta.get('date_utc', '?')}")
w(f"- command: `{meta.get('command', '?')}` ({meta.get('mode', '?')} mode)")
w(f"- commit: {meta.get('git', '?')}")
w(f"- CPU: {meta.get('cpu_model', '?')}, {meta.get('ncpu', '?')} cores; kernel {meta.get('kernel', '?')}")
shared = meta.get("shared_cores") == "1"
if shared:
    w(f"- pinning (taskset): proxy under test on CPUs {meta.get('proxy_cpus')} ({meta.get('proxy_threads')} worker threads / nginx workers); "
      f"**the load generator (oha, stream-load) and the fake upstream (1 thread) share the proxy's cores** (CPUs {meta.get('load_cpus')}), "
      "so every figure includes the load side's CPU use on the same cores")
else:
    w(f"- pinning (taskset): proxy under test on CPU {meta.get('proxy_cpus')} ({meta.get('proxy_threads')} worker thread(s) / nginx worker(s)); "
      f"load generator (oha, stream-load) and fake upstream (1 thread) on CPU {meta.get('load_cpus')}")
if meta.get("postgres", "-") != "-":
    w(f"- database: BluesMinds on SQLite (a file in a temp dir); the PostgreSQL rows on {meta['postgres']}, a fresh database per target, "
      "its backends pinned to the proxy's cores; Redis: " + meta.get("redis", "-"))
w(f"- machine before the run: {meta.get('busy_before_pct', '?')} % of all cores busy over 5 s; load average before / after: "
  f"{meta.get('loadavg_before', '?')} / {meta.get('loadavg_after', '?')} (per-run CPU use: see the closed-loop table)")
w(f"- tools: {meta.get('oha', '?')}; nginx {meta.get('nginx', '-')}; LiteLLM {meta.get('litellm', '-')}; "
  f"Portkey gateway {meta.get('portkey', '-')}; {meta.get('rustc', '?')}")
w(f"- scenarios: closed loop {meta.get('conns')} connections x {meta.get('closed_s')} s (after {meta.get('warm_s')} s warm-up); "
  f"open loop {meta.get('open_s')} s at a fixed rate with latency correction (common rate = half of bare Pingora's closed-loop rps = {common_rate} rps); "
  f"{meta.get('streams')} SSE streams of {meta.get('chunks')} chunks x {meta.get('chunk_delay_ms')} ms, started over {meta.get('stream_ramp_ms')} ms")
w("- request: non-streaming `POST /v1/chat/completions` (2 messages, ~170 B body; ~560 B answer); streams: the same with `\"stream\":true`")
w("")

# --- summary -----------------------------------------------------------------
w("## Summary against bare Pingora")
w("")
w("| target | rps (closed loop) | rps vs bare | p99 at fixed rate | added p50 / p90 / p99 vs bare | TTFB p50 / p99, 1,000 streams | added TTFB p50 vs direct | RSS with 1,000 streams | RSS vs bare |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
bare_rss = (bare["stream"] or {}).get("rss_kib_at_max_live")
for key, _ in TARGETS:
    r = R[key]
    if not r["closed"]:
        if key.startswith("bluesminds_") and not r["status"]:
            continue  # --postgres / --cluster not asked for
        w(f"| {r['label']} | {r['status'] or 'not run'} | | | | | | | |")
        continue
    rps = ok_rps(r["closed"])
    ratio = "—"
    if rps and bare_rps:
        ratio = f"{rps / bare_rps:.2f}x" if rps / bare_rps >= 0.1 else f"{rps / bare_rps:.4f}x"
    p99 = pct_us(r["open"], "p99")
    flagged = r["rate"] and common_rate and r["rate"] != common_rate
    p99_s = fmt_us(p99) + (f" (at {r['rate']} rps¹)" if flagged else "")
    added = "—"
    if key != "direct":
        parts = [added_p99(key, p)[0] for p in ("p50", "p90", "p99")]
        if all(x is not None for x in parts):
            added = " / ".join(fmt_signed_us(x) for x in parts)
    s = r["stream"] or {}
    ttfb = s.get("ttfb_us", {})
    ttfb_s = f"{fmt_us(ttfb.get('p50'))} / {fmt_us(ttfb.get('p99'))}" if s.get("ok") else "—"
    if s and s.get("failed"):
        ttfb_s += f" ({s['failed']} failed)"
    added_ttfb = "—"
    if key != "direct" and s.get("ok") and direct_stream and direct_stream.get("ok"):
        added_ttfb = fmt_signed_us(ttfb["p50"] - direct_stream["ttfb_us"]["p50"])
    rss = s.get("rss_kib_at_max_live")
    rss_s = "(upstream) " + fmt_mib(rss) if key == "direct" else fmt_mib(rss)
    if s.get("rss_anon_kib_at_max_live"):
        rss_s += f" (anon {fmt_mib(s['rss_anon_kib_at_max_live'])})"
    rss_ratio = f"{rss / bare_rss:.1f}x" if rss and bare_rss and key != "direct" else "—"
    w(f"| {r['label']} | {fmt_num(rps)} | {ratio} | {p99_s} | {added} | {ttfb_s} | {added_ttfb} | {rss_s} | {rss_ratio} |")
if any(R[k]["rate"] and R[k]["rate"] != common_rate for k, _ in TARGETS):
    w("")
    w(f"¹ cannot carry the common rate ({common_rate} rps): measured at half its own closed-loop rps "
      "(BluesMinds on PostgreSQL / with Redis: all at half of BluesMinds' (SQLite) closed-loop rps when they can carry it, so they compare with each other), "
      "and its added latency is against bare Pingora at that same rate.")
w("")
w("Added latency below the noise floor (`direct`'s own percentiles in the open-loop table) is not resolved by this machine.")
w("")

# --- targets -----------------------------------------------------------------
bm = R["bluesminds"]
lite = R["litellm"]
w("## Targets (issue #7)")
w("")
w("| target | measured | met |")
w("| --- | --- | --- |")


def verdict(ok):
    return "—" if ok is None else ("yes" if ok else "**no**")


bm_rps = ok_rps(bm["closed"])
v = bm_rps / bare_rps if bm_rps and bare_rps else None
w(f"| BluesMinds >= {T_RPS_VS_BARE:.0%} of bare-Pingora rps | {'—' if v is None else f'{v:.1%}'} | {verdict(None if v is None else v >= T_RPS_VS_BARE)} |")
v, rate = added_p99("bluesminds")
if v is None:
    w(f"| added p99 <= {T_ADDED_P99_US} µs at half saturation ({common_rate} rps) | — | — |")
elif rate == common_rate and v < -T_ADDED_P99_US:
    # The baseline's own tail was worse than the gateway's: a stall in that run,
    # not a measurement of what the gateway adds.
    w(f"| added p99 <= {T_ADDED_P99_US} µs at half saturation ({common_rate} rps) | {v:+,.0f} µs: not resolved, "
      f"bare Pingora's own p99 ({fmt_us(pct_us(R['bare']['open'], 'p99'))}) was the worse one in this run | — |")
elif rate == common_rate:
    w(f"| added p99 <= {T_ADDED_P99_US} µs at half saturation ({common_rate} rps) | {v:+,.0f} µs | {verdict(v <= T_ADDED_P99_US)} |")
    w(f"| (next) added p99 <= {T_ADDED_P99_NEXT_US} µs | {v:+,.0f} µs | {verdict(v <= T_ADDED_P99_NEXT_US)} |")
else:
    w(f"| added p99 <= {T_ADDED_P99_US} µs at half saturation ({common_rate} rps) | cannot carry {common_rate} rps; "
      f"at half its own saturation ({rate} rps): {v:+,.0f} µs vs bare Pingora at {rate} rps | **no** |")
lite_rps = ok_rps(lite["closed"])
v = bm_rps / lite_rps if bm_rps and lite_rps else None
w(f"| >= {T_VS_LITELLM}x LiteLLM rps | {'— (' + (lite['status'] or 'not run') + ')' if v is None else f'{v:.1f}x'} | {verdict(None if v is None else v >= T_VS_LITELLM)} |")
pk_rps = ok_rps(R["portkey"]["closed"])
v = bm_rps / pk_rps if bm_rps and pk_rps else None
w(f"| (no target) BluesMinds vs Portkey gateway rps | {'— (' + (R['portkey']['status'] or 'not run') + ')' if v is None else f'{v:.1f}x'} | — |")
rss = (bm["stream"] or {}).get("rss_kib_at_max_live")
live = (bm["stream"] or {}).get("max_live")
v = rss / 1024 if rss else None
bare_note = f"; bare Pingora: {bare_rss / 1024:.1f} MiB" if bare_rss else ""
w(f"| <= {T_RSS_MIB} MiB RSS with 1,000 open streams | {'—' if v is None else f'{v:.1f} MiB ({live} streams live when sampled{bare_note})'} | {verdict(None if v is None else v <= T_RSS_MIB)} |")
# Issue 15: no more memory than bare Pingora with the same streams open. The
# anonymous part is what the streams hold; the rest is mostly the executable's
# own pages (file-backed, shared), larger for a larger binary.
bare_s = bare["stream"] or {}
bm_s = bm["stream"] or {}
for what, field in (("RSS", "rss_kib_at_max_live"), ("anonymous RSS", "rss_anon_kib_at_max_live")):
    a, b = bm_s.get(field), bare_s.get(field)
    shown = "—" if not (a and b) else f"{a / 1024:.1f} MiB vs bare Pingora's {b / 1024:.1f} MiB"
    w(f"| {what} with 1,000 open streams <= bare Pingora's | {shown} | {verdict(None if not (a and b) else a <= b)} |")
w("")

# --- details -----------------------------------------------------------------
w("## Closed loop (fixed concurrency)")
w("")
w(f"{meta.get('conns')} connections, keep-alive, each sends its next request as soon as the previous answer arrived.")
w("CPU columns: busy share of the load core and of the proxy core over the run, the cores used by the target's own processes (for `direct`: the fake upstream), "
  "and that CPU time per answered request (for the PostgreSQL rows without the database server's backends: see the next section).")
if shared:
    w("The load generator shares the proxy's cores in this run: both busy columns are over the same CPUs, and 'not used by the target' includes the load generator and the fake upstream.")
w("")
w("| target | rps (2xx) | p50 | p90 | p99 | p99.9 | errors | load CPU busy | proxy CPU busy | target process cores | target CPU per request | proxy CPU(s) not used by the target (other processes, softirq) |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for key, _ in TARGETS:
    r = R[key]
    d = r["closed"]
    if not d:
        continue
    c = r["cpu"] or {}
    other = None
    if c.get("proxy_cpu_busy_pct") is not None:
        # direct has nothing of ours on the proxy core: all its load is foreign.
        own = 0 if key == "direct" else 100 * c.get("target_process_cores", 0) / c.get("proxy_ncpu", 1)
        other = max(0.0, c["proxy_cpu_busy_pct"] - own)
    per_req = cpu_us_per_request(key)
    w(f"| {r['label']} | {fmt_num(ok_rps(d))} | {fmt_us(pct_us(d, 'p50'))} | {fmt_us(pct_us(d, 'p90'))} | {fmt_us(pct_us(d, 'p99'))} | {fmt_us(pct_us(d, 'p99.9'))} | {non2xx(d)} "
      f"| {fmt_num(c.get('load_cpu_busy_pct'))}% | {fmt_num(c.get('proxy_cpu_busy_pct'))}% | {fmt_num(c.get('target_process_cores'), 2)} "
      f"| {'—' if per_req is None else f'{per_req:,.1f} µs'} | {fmt_num(other)}% |")
w("")

w("## Open loop (fixed rate, coordinated omission corrected)")
w("")
w("oha `-q RATE --latency-correction`: latency counts from when each request was due, so a stall is charged to every request queued behind it. "
  "`direct` at each rate is the noise floor of the load side (oha and the fake upstream share a core): tail figures below it mean nothing.")
w("")
w("| target | rate asked | rps achieved (2xx) | p50 | p90 | p99 | p99.9 | errors |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
rates = sorted({R[k]["rate"] for k, _ in TARGETS if R[k]["rate"]}, key=lambda x: -int(x))
for rate in rates:
    for key, _ in TARGETS:
        d = load(f"{key}.open.{rate}.json")
        if not d:
            continue
        note = "" if rate == common_rate else " ¹"
        w(f"| {R[key]['label']} | {rate}{note} | {fmt_num(ok_rps(d))} | {fmt_us(pct_us(d, 'p50'))} | {fmt_us(pct_us(d, 'p90'))} | {fmt_us(pct_us(d, 'p99'))} | {fmt_us(pct_us(d, 'p99.9'))} | {non2xx(d)} |")
w("")

w("## Streaming (slow SSE streams)")
w("")
w("TTFB: from starting to connect until the first SSE event arrived. RSS: VmRSS of the target's processes summed, "
  "sampled every 50 ms; 'with streams' is the sample taken when the most streams were live at once; 'anonymous': "
  "its RssAnon part, without the executable's and other files' pages.")
w("")
w("| target | streams ok | failed | TTFB p50 | p90 | p99 | max | most live at once | RSS before | RSS with streams | of it anonymous | RSS peak |")
w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for key, _ in TARGETS:
    r = R[key]
    s = r["stream"]
    if not s:
        continue
    t = s.get("ttfb_us", {})
    w(f"| {r['label']} | {s['ok']} | {s['failed']} | {fmt_us(t.get('p50'))} | {fmt_us(t.get('p90'))} | {fmt_us(t.get('p99'))} | {fmt_us(t.get('max'))} "
      f"| {s.get('max_live')} | {fmt_mib(s.get('rss_kib_before'))} | {fmt_mib(s.get('rss_kib_at_max_live'))} "
      f"| {fmt_mib(s.get('rss_anon_kib_at_max_live'))} | {fmt_mib(s.get('rss_kib_peak'))} |")
errs = [(R[k]["label"], R[k]["stream"]["errors"]) for k, _ in TARGETS if R[k]["stream"] and R[k]["stream"].get("errors")]
for label, e in errs:
    w(f"- {label} stream errors: " + ", ".join(f"{k}: {v}" for k, v in e.items()))
w("")

timeline = [(k, load(f"{k}.timeline.json")) for k in ("bare", "bluesminds")]
if any(d for _, d in timeline):
    w("## Latency timeline (open loop recorded per request)")
    w("")
    w(f"`timeline-load` at {common_rate} rps (half of bare Pingora's closed loop), {meta.get('conns')} connections; "
      "the latency of every request per 100 ms interval is in `target/bench/timeline.md` (`benches/timeline.py`).")
    w("")
    w("| target | requests | failed | p50 | p90 | p99 | p99.9 | max |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k, d in timeline:
        if not d:
            continue
        l = d["latency_us"]
        w(f"| {R[k]['label']} | {d['requests']:,} | {d['failed']} | {fmt_us(l['p50'])} | {fmt_us(l['p90'])} | "
          f"{fmt_us(l['p99'])} | {fmt_us(l['p999'])} | {fmt_us(l['max'])} |")
    w("")

# --- database and cluster limits (issue 15 item 5) ------------------------------
BM_ROWS = ["bluesminds", "bluesminds_pg", "bluesminds_redis", "bluesminds_cluster"]
if any(R[k]["closed"] for k in BM_ROWS[1:]):
    base_key = "bluesminds_pg"
    base = R[base_key]
    base_rps = ok_rps(base["closed"])
    base_cpu = cpu_us_per_request(base_key)
    w("## Database and cluster limits")
    w("")
    w("The same gateway and key, on SQLite, on PostgreSQL, with Redis limits (`redis.url`, `sync_ms: 100`) on one instance, "
      "and as one of three instances sharing the PostgreSQL database and Redis (the load on the first; the other two had "
      "served the key before the run, so all three sync its buckets every 100 ms). Differences are against "
      "\"BluesMinds (PostgreSQL)\": what cluster limits cost per request. CPU per request is from the closed loop: "
      "the gateway's processes (for 3 instances, all three), the PostgreSQL backends serving it, and the Redis server.")
    w("")
    w("| target | closed-loop rps | vs PostgreSQL alone | gateway CPU per request | vs PostgreSQL alone | PostgreSQL backends' CPU per request; requests per transaction | Redis commands per 1,000 requests | Redis commands per second | Redis server CPU | open-loop p50 / p90 / p99 | added p50 / p90 / p99 vs PostgreSQL alone |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in BM_ROWS:
        r = R[key]
        if not r["closed"]:
            if r["status"] and key != "bluesminds":
                w(f"| {r['label']} | {r['status']} | | | | | | | | | |")
            continue
        c = r["cpu"] or {}
        rps = ok_rps(r["closed"])
        vs = f"{rps / base_rps:.3f}x" if rps and base_rps else "—"
        cpu = cpu_us_per_request(key)
        first = cpu_us_per_request(key, "first_process_cores")
        dcpu = f"{cpu - base_cpu:+,.1f} µs" if cpu is not None and base_cpu is not None and key != base_key else "—"
        dbcpu = cpu_us_per_request(key, "db_process_cores")
        dbcpu_s = "— (in-process SQLite)" if key == "bluesminds" else ("—" if dbcpu is None else f"{dbcpu:,.1f} µs ({c.get('db_backends')} backends)")
        total0 = (r["closed"] or {}).get("summary", {}).get("total")
        if c.get("db_commits") and rps and total0:
            dbcpu_s += f"; {rps * total0 / c['db_commits']:,.0f} requests per commit"
        cmds = c.get("redis_commands")
        total = (r["closed"] or {}).get("summary", {}).get("total")
        n_ok = rps * total if rps and total else None
        per_k = f"{1000 * cmds / n_ok:,.2f}" if cmds is not None and n_ok else "—"
        per_s = f"{cmds / total:,.0f}" if cmds is not None and total else "—"
        rc = c.get("redis_process_cores")
        rc_s = "—" if rc is None or "redis_commands" not in c else f"{100 * rc:.1f} % of a core"
        o = r["open"]
        pcts = " / ".join(fmt_us(pct_us(o, p)) for p in ("p50", "p90", "p99")) if o else "—"
        added = "—"
        if o and base["open"] and key != base_key and r["rate"] == base["rate"]:
            added = " / ".join(fmt_signed_us(pct_us(o, p) - pct_us(base["open"], p)) for p in ("p50", "p90", "p99"))
        cpu_s = "—" if cpu is None else f"{cpu:,.1f} µs"
        if first is not None and cpu is not None:
            cpu_s += f" (instance under load {first:,.1f} µs, the other two {cpu - first:,.1f} µs)"
        w(f"| {r['label']} | {fmt_num(rps)} | {vs} | {cpu_s} | {dcpu} | {dbcpu_s} | {per_k} | {per_s} | {rc_s} | {pcts} | {added} |")
    w("")
    w("Redis commands are counted by the Redis server (commands inside the limit script's Lua included) over the closed loop: "
      "they come from the syncs (every 100 ms on each instance), not from requests, so per second they stay the same at any load "
      "and per 1,000 requests they only fall as the load grows. The open-loop columns compare only rows measured at the same rate; "
      "on this machine p99 differences of a few ms are noise (see `direct`'s own p99).")
    w("")

for key, label in TARGETS:
    if not key.startswith("bluesminds"):
        continue
    usage = load(f"{key}.usage.json")
    if usage:
        w(f"{label} usage logging: {usage['usage_rows']:,} rows in `usage_records` after the run (by status: {usage['by_status']}).")
        w("")
notes = [(R[k]["label"], R[k]["status"]) for k, _ in TARGETS if R[k]["status"] and R[k]["status"] != "ok"]
if notes:
    w("## Skipped or failed")
    w("")
    for label, s in notes:
        w(f"- {label}: {s}")
    w("")
print("\n".join(out))
