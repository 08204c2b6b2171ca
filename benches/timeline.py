#!/usr/bin/env python3
"""Latency timeline of `timeline-load` runs, side by side, per interval.

    python3 benches/timeline.py [--bucket-ms 100] [--stalls-only MS] NAME=FILE.csv ...

For each interval of due times: how many requests were due and the p50, p90,
p99 and max of their latency, per target. Then a summary per target: overall
percentiles, the worst intervals, and how many intervals had a request slower
than 1, 5 and 20 ms. Latencies in microseconds. `--stalls-only MS` prints only
the intervals where some target's max exceeds MS milliseconds (the summary
always covers all).
"""
import argparse
import math


def load(path):
    meta, rows = {}, []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                for part in line[1:].split():
                    k, _, v = part.partition("=")
                    meta[k] = v
                continue
            if line.startswith("t_us"):
                continue
            t, lat, wait, lag, status = (int(x) for x in line.split(","))
            rows.append((t, lat, wait, lag, status))
    return meta, rows


def pct(sorted_vals, p):
    if not sorted_vals:
        return 0
    i = min(max(math.ceil(len(sorted_vals) * p), 1), len(sorted_vals)) - 1
    return sorted_vals[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bucket-ms", type=int, default=100)
    ap.add_argument("--stalls-only", type=float, default=None)
    ap.add_argument("runs", nargs="+", help="NAME=FILE.csv")
    a = ap.parse_args()
    width = a.bucket_ms * 1000

    runs = []
    for spec in a.runs:
        name, _, path = spec.partition("=")
        meta, rows = load(path)
        buckets = {}
        for t, lat, _wait, _lag, status in rows:
            # A failed request counts as its latency too: it is part of the stall.
            buckets.setdefault(t // width, []).append(lat)
        for v in buckets.values():
            v.sort()
        runs.append((name, meta, rows, buckets))

    n_buckets = max((max(b) + 1 for _, _, _, b in runs if b), default=0)
    cols = ["n", "p50", "p90", "p99", "max"]
    head = "| t (s) | " + " | ".join(f"{name} {c}" for name, *_ in runs for c in cols) + " |"
    print(f"Latency per {a.bucket_ms} ms of due time, in µs"
          + (f" (only intervals where some max > {a.stalls_only} ms)" if a.stalls_only else "")
          + ":\n")
    print(head)
    print("|" + " ---: |" * (1 + len(cols) * len(runs)))
    for i in range(n_buckets):
        cells = []
        worst = 0
        for _, _, _, buckets in runs:
            v = buckets.get(i, [])
            worst = max(worst, v[-1] if v else 0)
            cells += [len(v), pct(v, 0.5), pct(v, 0.9), pct(v, 0.99), v[-1] if v else 0]
        if a.stalls_only is not None and worst <= a.stalls_only * 1000:
            continue
        print(f"| {i * a.bucket_ms / 1000:.1f} | " + " | ".join(str(c) for c in cells) + " |")

    print("\nSummary (all measured requests):\n")
    print("| target | rate | requests | failed | p50 | p90 | p99 | p99.9 | max | intervals with max > 1 / 5 / 20 ms | worst intervals (s: max µs) | max dispatch lag µs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |")
    for name, meta, rows, buckets in runs:
        lat = sorted(r[1] for r in rows)
        failed = sum(1 for r in rows if not 200 <= r[4] < 300)
        over = [sum(1 for v in buckets.values() if v[-1] > ms * 1000) for ms in (1, 5, 20)]
        worst = sorted(buckets.items(), key=lambda kv: -kv[1][-1])[:5]
        worst_s = ", ".join(f"{k * a.bucket_ms / 1000:.1f}: {v[-1]}" for k, v in worst)
        lag = max((r[3] for r in rows), default=0)
        print(f"| {name} | {meta.get('rate', '?')} | {len(rows)} | {failed} | {pct(lat, .5)} | {pct(lat, .9)} | "
              f"{pct(lat, .99)} | {pct(lat, .999)} | {lat[-1] if lat else 0} | {over[0]} / {over[1]} / {over[2]} of {len(buckets)} | "
              f"{worst_s} | {lag} |")


if __name__ == "__main__":
    main()
