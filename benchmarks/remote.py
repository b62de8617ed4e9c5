"""Remotes: what shipping costs and how fast a workflow moves to another host.

    python -m benchmarks.remote                                   # file:// remote in a temp dir
    python -m benchmarks.remote --url s3://ckdb-bench/run1 --endpoint http://127.0.0.1:7480 \\
        --access-key ckdbtest --secret-key ckdbtestsecret         # e.g. Ceph radosgw on loopback
    python -m benchmarks.remote --quick                           # small counts (CI smoke)

Figures (markdown to stdout, medians of ``--repeat`` runs):

- ship throughput: 8 KiB checkpoints per second, one busy workflow and 100 workflows (created
  locally first, then the store is opened with the remote and ``sync_remote`` timed: pure ship);
- PUTs per checkpoint at interval 1 s (an agent creating 20 checkpoints per second for a while),
  and the lag from commit to remote (p50 / p99, from ``remote_status``);
- take-over time of a workflow of 1,000 checkpoints on a fresh host;
- the local ``create`` rate with and without a remote attached: blocks alternate in one process,
  the ratio of medians is the figure (goal: within 5 %);
- with ``--postgres DSN``: what fleets use today, LangGraph's ``PostgresSaver.put`` of the same
  8 KiB on a shared PostgreSQL (needs ``langgraph-checkpoint-postgres`` and ``psycopg``), beside
  ckdb's ``create`` with the remote attached, alternating, median latencies.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import workloads  # noqa: E402

KEY = bytes(range(32))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="ckdb-remote-bench-"))
        self.n = 0
        self.state = workloads.agent_state(8 << 10)

    def remote(self, interval: float = 1.0) -> ckdb.Remote:
        self.n += 1
        a = self.args
        if a.url:
            url = f"{a.url.rstrip('/')}/{os.getpid()}-{self.n}"
        else:
            url = f"file://{self.tmp / f'bucket-{self.n}'}"
        return ckdb.Remote(url, endpoint=a.endpoint, access_key=a.access_key,
                           secret_key=a.secret_key, key=KEY, interval=interval)  # fmt: skip

    def store(self, remote: ckdb.Remote | None = None) -> ckdb.Store:
        self.n += 1
        return ckdb.open(self.tmp / f"s{self.n}.ckdb", key=KEY, retention=None, remote=remote)

    def fill(self, store: ckdb.Store, workflows: int, per: int) -> None:
        for i in range(per):
            for w in range(workflows):
                store.create(f"wf{w}", "step", state=workloads.vary(self.state, i * workflows + w))


def ship_throughput(b: Bench, workflows: int, per: int) -> float:
    """Checkpoints per second of a pure ship: everything is local before the remote attaches."""
    path = b.tmp / f"ship-{b.n}.ckdb"
    b.n += 1
    with ckdb.open(path, key=KEY, retention=None) as s:
        b.fill(s, workflows, per)
    remote = b.remote(interval=0.05)
    t = time.perf_counter()
    with ckdb.open(path, key=KEY, retention=None, remote=remote) as s:
        assert s.sync_remote(timeout=600).ok
        elapsed = time.perf_counter() - t
    return workflows * per / elapsed


def puts_and_lag(b: Bench, seconds: float, rate: float) -> dict[str, float]:
    with b.store(b.remote(interval=1.0)) as s:
        s.sync_remote(timeout=60)
        before = s.remote_status()
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            s.create("busy", "step", state=workloads.vary(b.state, n))
            n += 1
            time.sleep(max(0.0, start + n / rate - time.perf_counter()))
        s.sync_remote(timeout=60)
        st = s.remote_status()
    puts = (st.segments_put - before.segments_put) + (st.blobs_put - before.blobs_put)
    return {"checkpoints": n, "puts": puts, "per_checkpoint": puts / n,
            "lag_p50": st.lag_p50 or 0.0, "lag_p99": st.lag_p99 or 0.0}  # fmt: skip


def take_over_seconds(b: Bench, checkpoints: int, repeat: int) -> list[float]:
    remote = b.remote(interval=0.05)
    with b.store(remote) as a:
        b.fill(a, 1, checkpoints)
        assert a.sync_remote(timeout=600).ok
    times = []
    for _ in range(repeat):
        with b.store(ckdb.Remote(remote.url, endpoint=b.args.endpoint,
                                 access_key=b.args.access_key, secret_key=b.args.secret_key,
                                 key=KEY)) as host:  # fmt: skip
            t = time.perf_counter()
            report = host.take_over("wf0")
            times.append(time.perf_counter() - t)
            assert report.ok, report
            assert report.imported == checkpoints, report
    return times


def create_rates(b: Bench, block: int, repeat: int) -> tuple[list[float], list[float]]:
    """Alternating blocks of creates on a store without and one with a remote attached."""
    plain, shipped = [], []
    with b.store() as p, b.store(b.remote(interval=1.0)) as r:
        for rnd in range(repeat):
            for store, out in (
                ((p, plain), (r, shipped)) if rnd % 2 == 0 else ((r, shipped), (p, plain))
            ):
                t = time.perf_counter()
                for i in range(block):
                    store.create("wf", "step", state=workloads.vary(b.state, rnd * block + i))
                out.append(block / (time.perf_counter() - t))
        r.sync_remote(timeout=600)
    return plain, shipped


def put_latencies(b: Bench, dsn: str, n: int, repeat: int) -> tuple[list[float], list[float]]:
    """Median per-call latency (µs) per block: ckdb create (remote attached), PostgresSaver.put."""
    from langgraph.checkpoint.base import empty_checkpoint  # noqa: PLC0415 - optional
    from langgraph.checkpoint.postgres import PostgresSaver  # noqa: PLC0415

    ours, theirs = [], []
    blob = workloads.agent_state(8 << 10)
    with b.store(b.remote(interval=1.0)) as store, PostgresSaver.from_conn_string(dsn) as saver:
        saver.setup()
        cfg: Any = {"configurable": {"thread_id": f"bench-{os.getpid()}", "checkpoint_ns": ""}}
        version = 0
        for rnd in range(repeat):
            times = []
            for i in range(n):
                t = time.perf_counter()
                store.create("wf", "step", state=workloads.vary(blob, rnd * n + i))
                times.append(time.perf_counter() - t)
            ours.append(statistics.median(times) * 1e6)
            times = []
            for _ in range(n):
                version += 1
                ck = empty_checkpoint()
                ck["channel_values"] = {"state": workloads.vary(blob, version)}
                ck["channel_versions"] = {"state": str(version)}
                t = time.perf_counter()
                cfg = saver.put(
                    cfg, ck, {"source": "loop", "step": version}, {"state": str(version)}
                )
                times.append(time.perf_counter() - t)
            theirs.append(statistics.median(times) * 1e6)
        store.sync_remote(timeout=600)
    return ours, theirs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="s3://bucket/prefix (default: a file:// remote in a temp dir)")
    ap.add_argument("--endpoint")
    ap.add_argument("--access-key")
    ap.add_argument("--secret-key")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--postgres", metavar="DSN", help="also time LangGraph's PostgresSaver.put")
    a = ap.parse_args(argv)
    b = Bench(a)
    q = a.quick
    where = a.url or "file:// (temp dir)"
    print(f"## Remotes: shipping to {where}" + (f" at {a.endpoint}" if a.endpoint else ""))
    print()
    print(f"8 KiB agent state; medians of {a.repeat}; {os.cpu_count()} cores.")
    print()
    rows: list[tuple[str, str]] = []
    per = 60 if q else 500
    one = [ship_throughput(b, 1, per) for _ in range(a.repeat)]
    rows.append(
        (f"ship throughput, 1 workflow x {per}", f"{statistics.median(one):,.0f} checkpoints/s")
    )
    many = [ship_throughput(b, 100, 2 if q else 10) for _ in range(a.repeat)]
    rows.append((f"ship throughput, 100 workflows x {2 if q else 10}",
                 f"{statistics.median(many):,.0f} checkpoints/s"))  # fmt: skip
    print("ship throughput done", file=sys.stderr)
    pl = puts_and_lag(b, 3.0 if q else 20.0, 20.0)
    rows.append(("PUTs per checkpoint, interval 1 s, 20 creates/s",
                 f"{pl['per_checkpoint']:.3f} ({pl['puts']:.0f} PUTs / {pl['checkpoints']:.0f})"))  # fmt: skip
    rows.append(("lag commit -> remote, interval 1 s (p50 / p99)",
                 f"{pl['lag_p50'] * 1000:,.0f} ms / {pl['lag_p99'] * 1000:,.0f} ms"))  # fmt: skip
    print("puts and lag done", file=sys.stderr)
    n = 100 if q else 1000
    to = take_over_seconds(b, n, 3 if q else a.repeat)
    rows.append((f"take-over of a workflow of {n:,} checkpoints",
                 f"{statistics.median(to):.2f} s ({n / statistics.median(to):,.0f} checkpoints/s)"))  # fmt: skip
    print("take-over done", file=sys.stderr)
    plain, shipped = create_rates(b, 50 if q else 100, 2 * a.repeat if q else 30)
    mp, ms = statistics.median(plain), statistics.median(shipped)
    rows.append(("create rate, no remote", f"{mp:,.0f} /s"))
    rows.append(("create rate, remote attached (interval 1 s)",
                 f"{ms:,.0f} /s (ratio {ms / mp:.3f}; goal >= 0.95)"))  # fmt: skip
    if a.postgres:
        ours, theirs = put_latencies(b, a.postgres, 50 if q else 200, a.repeat)
        mo, mt = statistics.median(ours), statistics.median(theirs)
        rows.append(("ckdb create 8 KiB, remote attached (latency)", f"{mo:,.0f} µs"))
        rows.append(("LangGraph PostgresSaver.put 8 KiB, PostgreSQL on loopback",
                     f"{mt:,.0f} µs (ckdb / PostgreSQL {mo / mt:.2f})"))  # fmt: skip
    print("| measure | figure |")
    print("|---|---|")
    for name, fig in rows:
        print(f"| {name} | {fig} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
