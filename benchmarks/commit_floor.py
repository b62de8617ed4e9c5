"""The floor under a durable call: one small durable commit, raw LMDB beside SQLite's WAL.

    python -m benchmarks.commit_floor [--commits 400]

No ckdb code runs here. Each round commits one 2,000-byte put durably in each engine, the order
alternating: py-lmdb with ``sync=True`` (LMDB flushes the data pages, then writes and flushes the
meta page: two flushes per commit), and SQLite in WAL mode with its default ``synchronous=FULL``
(the WAL frames appended and flushed once per commit), which is what SqliteSaver runs on. A
LangGraph step with ``durability="sync"`` makes three such durable calls with either saver
(``put``, ``put_writes``, ``put``); CkdbSaver's ``pending_writes="with_checkpoint"`` makes two.
Medians, and the median of the per-round ratios; markdown to stdout.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time

import lmdb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=400)
    args = parser.parse_args()
    value = os.urandom(2000)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        env = lmdb.open(os.path.join(d, "lmdb"), map_size=1 << 30, sync=True, metasync=True)
        conn = sqlite3.connect(os.path.join(d, "wal.sqlite"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        times: dict[str, list[int]] = {"lmdb": [], "sqlite": []}
        for i in range(args.commits):
            for name in ("lmdb", "sqlite") if i % 2 == 0 else ("sqlite", "lmdb"):
                t0 = time.perf_counter_ns()
                if name == "lmdb":
                    with env.begin(write=True) as txn:
                        txn.put(i.to_bytes(8, "big"), value)
                else:
                    conn.execute("BEGIN")
                    conn.execute("INSERT INTO t VALUES (?, ?)", (i, value))
                    conn.execute("COMMIT")
                times[name].append(time.perf_counter_ns() - t0)
        env.close()
        conn.close()
    lm, sq = (statistics.median(times[k]) / 1000 for k in ("lmdb", "sqlite"))
    paired = statistics.median(a / b for a, b in zip(times["lmdb"], times["sqlite"], strict=True))
    print(f"one durable commit of a 2,000-byte put, {args.commits} rounds alternating\n")
    print("| engine | µs (median) |")
    print("|---|---:|")
    print(f"| LMDB, sync (two flushes) | {lm:.0f} |")
    print(f"| SQLite WAL, synchronous=FULL (one flush) | {sq:.0f} |")
    print(f"| ratio LMDB / SQLite, paired by round | {paired:.2f} |")


if __name__ == "__main__":
    main()
