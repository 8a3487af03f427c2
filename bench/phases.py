#!/usr/bin/env python3
"""Where the pipeline's time goes, per benchmark scenario (bench/profile.md).

Runs `scripts/bench` for one scenario at a time (BENCH_KEEP=1, so the database stays), while a
sampler reads the CPU time of every gateway, engine, postgres, loadgen and psql process from
/proc every 50 ms (the list of processes every 250 ms). Afterwards, from the kept ledger (the same clock as the samples):

- intake: upload created -> first and last chunk recorded by the gateway (stored + synced);
- broker: recorded -> the broker's confirm (`announced_at`), per chunk;
- engine: confirmed -> committed, per chunk (waiting in its partition, reading ahead, parse +
  validate + encode + COPY + commit);
- tail: last chunk recorded -> last committed;

and the CPU seconds each kind of process spent in the pipeline's window (created -> last
commit).

    BENCH_BIN_DIR=target/release bench/phases.py              # the three scenarios, 1M rows
    ROWS=5000000 BENCH_BIN_DIR=... bench/phases.py one-file
"""

import os
import subprocess
import sys
import threading
import time

KINDS = ("gateway", "engine", "postgres", "loadgen", "psql")
TICK = os.sysconf("SC_CLK_TCK")
PG = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
DB = os.environ.get("BENCH_DATABASE", "ingest_bench")


def watched_pids():
    """The processes of the kinds measured (listed now and then: reading every process's stat
    every sample would itself take a good part of a core)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith(KINDS):
            pids.append(pid)
    return pids


def cpu_by_kind(pids):
    """CPU seconds so far of the live processes among `pids`, summed by kind."""
    totals = dict.fromkeys(KINDS, 0.0)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        kind = next((k for k in KINDS if name.startswith(k)), None)
        if kind:
            totals[kind] += (int(fields[11]) + int(fields[12])) / TICK
    return totals


class Sampler(threading.Thread):
    """CPU totals by kind every 50 ms, with the wall clock. Processes that exit take their time
    with them, so a window's figure is the growth of the live ones: taken from the sample just
    before the window and the last one inside it."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples = []
        self.stop = False

    def run(self):
        pids, listed = [], 0.0
        while not self.stop:
            now = time.time()
            if now - listed > 0.25:
                pids, listed = watched_pids(), now
            self.samples.append((now, cpu_by_kind(pids)))
            time.sleep(0.05)

    def window(self, start, end):
        inside = [s for s in self.samples if start <= s[0] <= end]
        before = [s for s in self.samples if s[0] < start]
        if not inside or not before:
            return None
        a, b = before[-1][1], inside[-1][1]
        return {k: max(0.0, b[k] - a[k]) for k in KINDS}


def query(sql):
    out = subprocess.run(
        ["psql", f"{PG}/{DB}", "-qAtX", "-F", "|", "-c", sql],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    return [line.split("|") for line in out.splitlines()]


def quantiles(values):
    values = sorted(values)
    if not values:
        return "-"
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return f"{pick(0.5) * 1000:.0f} / {values[-1] * 1000:.0f} ms"


def scenario(name):
    sampler = Sampler()
    sampler.start()
    env = dict(os.environ, SCENARIOS=name, BENCH_KEEP="1")
    run = subprocess.run(["scripts/bench"], env=env, capture_output=True, text=True)
    sampler.stop = True
    sampler.join()
    ratio = [l for l in run.stdout.splitlines() + run.stderr.splitlines() if "ratio" in l.lower()]
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"scripts/bench {name} failed")
    # The original's client declares no chunk count: its upload ends by the settle rule, after
    # the benchmark's clock stopped at the last row loaded. "Done" is the last commit.
    (created, done), = query(
        "SELECT extract(epoch FROM u.created_at), extract(epoch FROM max(c.committed_at))"
        " FROM uploads u JOIN chunks c USING (upload_id) GROUP BY u.created_at"
    )
    created, done = float(created), float(done)
    chunks = [
        tuple(float(v) if v else None for v in row)
        for row in query(
            "SELECT extract(epoch FROM received_at), extract(epoch FROM announced_at),"
            " extract(epoch FROM committed_at), bytes FROM chunks ORDER BY chunk_no"
        )
    ]
    received = [c[0] for c in chunks]
    broker = [c[1] - c[0] for c in chunks if c[1]]
    engine = [c[2] - (c[1] or c[0]) for c in chunks if c[2]]
    committed = [c[2] for c in chunks if c[2]]
    cpu = sampler.window(created, done) or {}
    print(f"## {name}: {len(chunks)} chunks, {sum(c[3] for c in chunks) / 1e6:.1f} MB")
    for line in ratio[-3:]:
        print(f"    {line.strip()}")
    print(f"  created -> last commit        {done - created:.2f} s")
    print(f"  intake: first / last recorded +{min(received) - created:.2f} / +{max(received) - created:.2f} s")
    print(f"  broker confirm (p50 / max)    {quantiles(broker)}")
    print(f"  engine, confirmed -> committed (p50 / max) {quantiles(engine)}")
    print(f"  tail: last recorded -> last committed {max(committed) - max(received):.2f} s")
    print("  CPU s in the window: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    print()


def main():
    names = sys.argv[1:] or ["own-client", "original-client", "one-file"]
    for name in names:
        scenario(name)


if __name__ == "__main__":
    main()
