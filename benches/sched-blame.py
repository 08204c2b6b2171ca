#!/usr/bin/env python3
"""Who held the proxy's core while its worker thread waited to run.

    perf sched record -k CLOCK_MONOTONIC -o sched.data -- sleep SECONDS   # during a load run
    python3 benches/sched-blame.py sched.data PID [--from-ns T0 --secs S] [--min-ms 1]

PID is the proxy process. Its worker threads are the ones named `Pingora HTTP Pr...`
(Pingora's service threads, in bare-pingora and the gateway alike). For every
time a worker became runnable (woken, or preempted while running) until it ran
again, the run time of each other task on that CPU is summed, for waits longer
than --min-ms. The gateway's own threads (same PID) are listed apart from the
rest of the machine: what the gateway can fix is the first group.

Prints the distribution of the workers' run-queue waits and the blame table.
"""
import argparse
import collections
import os
import re
import subprocess
import sys

SWITCH = re.compile(
    r"prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)")
WAKE = re.compile(r"comm=(.*?) pid=(\d+) ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("pid")
    ap.add_argument("--tids", default="", help="the process's thread ids (comma-separated), if it has exited")
    ap.add_argument("--from-ns", type=int, default=0, help="only waits starting after this CLOCK_MONOTONIC time")
    ap.add_argument("--secs", type=float, default=0, help="... and within this many seconds of it")
    ap.add_argument("--min-ms", type=float, default=1.0)
    a = ap.parse_args()

    own = set(t for t in a.tids.split(",") if t)
    if not own and os.path.isdir(f"/proc/{a.pid}/task"):
        own = set(os.listdir(f"/proc/{a.pid}/task"))
    own.add(a.pid)
    lo = a.from_ns / 1e9
    hi = lo + a.secs if a.secs else float("inf")

    out = subprocess.run(["perf", "sched", "script", "-i", a.data, "-F", "pid,tid,time,cpu,event,trace"],
                         capture_output=True, text=True).stdout
    # Each event is stamped with the task it ran in (pid = its process): that
    # is how threads of an exited process are known.
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)/(\d+)\s", line)
        if m and m.group(1) == a.pid:
            own.add(m.group(2))
    workers = {}          # tid -> name, learned from the trace
    waiting = {}          # tid -> (since, {comm: seconds})
    running = {}          # cpu -> (tid, comm, since)
    worker_cpu = {}       # tid -> the CPU it last ran on (pinned: its core)
    first = {}            # tid -> the task on its core when its wait began
    first_own = collections.Counter()
    first_other = collections.Counter()
    waits = []
    blame_own = collections.Counter()
    blame_other = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*\d+/\d+\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)", line)
        if not m:
            continue
        cpu, t, ev, rest = m.group(1), float(m.group(2)), m.group(3), m.group(4)
        if ev.startswith("sched_wakeup"):
            w = WAKE.search(rest)
            if w and w.group(2) in own and w.group(1).startswith("Pingora") and w.group(2) not in waiting:
                waiting[w.group(2)] = (t, collections.Counter())
                cur = running.get(worker_cpu.get(w.group(2)))
                first[w.group(2)] = (cur[0], cur[1]) if cur else ("?", "idle")
            continue
        if ev != "sched_switch":
            continue
        s = SWITCH.search(rest)
        if not s:
            continue
        pc, pp, st, nc, npid = s.groups()
        # The task leaving this CPU ran since it came on: charge it to every
        # worker waiting meanwhile.
        prev = running.get(cpu)
        if prev and prev[0] == pp:
            for tid, (since, counter) in waiting.items():
                if tid != pp and worker_cpu.get(tid) == cpu:
                    counter[(pp, pc)] += t - max(prev[2], since)
        if npid in own and nc.startswith("Pingora"):
            worker_cpu[npid] = cpu
        if pc.startswith("Pingora") and pp in own:
            workers[pp] = pc
            worker_cpu[pp] = cpu
            if st.startswith("R"):
                waiting[pp] = (t, collections.Counter())
                first[pp] = (npid, nc)
        if npid in waiting and nc.startswith("Pingora"):
            since, counter = waiting.pop(npid)
            if lo <= since <= hi:
                d = t - since
                waits.append(d)
                if d * 1000 >= a.min_ms:
                    for (tid, comm), v in counter.items():
                        (blame_own if tid in own else blame_other)[comm] += v
                    ftid, fcomm = first.pop(npid, ("?", "?"))
                    (first_own if ftid in own else first_other)[fcomm] += 1
        running[cpu] = (npid, nc, t)

    if not waits:
        print("no waits of the proxy's worker threads found", file=sys.stderr)
        sys.exit(1)
    waits.sort()
    n = len(waits)
    pct = lambda p: waits[min(n - 1, int(n * p))] * 1000
    long_total = sum(w for w in waits if w * 1000 >= a.min_ms) * 1000
    print(f"worker threads: {', '.join(sorted(set(workers.values()))) or '?'}; run-queue waits: {n}, "
          f"p50 {pct(.5):.3f} ms, p99 {pct(.99):.3f} ms, max {waits[-1] * 1000:.3f} ms; "
          f"waits >= {a.min_ms} ms: {sum(1 for w in waits if w * 1000 >= a.min_ms)}, {long_total:.1f} ms in all")
    print()
    print(f"| ran on the core during waits >= {a.min_ms} ms | ms |")
    print("| --- | ---: |")
    print(f"| **the proxy's own threads** | **{sum(blame_own.values()) * 1000:.1f}** |")
    for k, v in blame_own.most_common(8):
        print(f"| &nbsp; {k} | {v * 1000:.1f} |")
    print(f"| **other processes** | **{sum(blame_other.values()) * 1000:.1f}** |")
    for k, v in blame_other.most_common(8):
        print(f"| &nbsp; {k} | {v * 1000:.1f} |")
    print()
    print(f"On the core when each of those waits began (the worker was preempted by it, or woke while it ran): "
          f"the proxy's own threads {sum(first_own.values())} times ("
          + ", ".join(f"{k} {v}" for k, v in first_own.most_common(4)) + "), other processes "
          f"{sum(first_other.values())} times (" + ", ".join(f"{k} {v}" for k, v in first_other.most_common(4)) + ").")


if __name__ == "__main__":
    main()
