"""Benchmark: pruning with ckdb vs. the same deletion in SQL on LangGraph's SqliteSaver schema.

    python benchmarks/prune.py [--repeats 5] [--workdir DIR]

Requires ``langgraph-checkpoint-sqlite`` (the ``bench`` extra) besides ckdb.

Scenarios (the same realistic small checkpoints in both stores):

1. one workflow / thread of 10,000 checkpoints: delete all but the newest 1,000
   - ckdb: ``store.prune(wf, RetentionPolicy(max_checkpoints=1000))``
   - SQL:  ``DELETE FROM checkpoints WHERE thread_id=? AND checkpoint_id NOT IN (SELECT ... ORDER BY
     checkpoint_id DESC LIMIT 1000)`` plus the orphaned ``writes`` rows, one transaction, commit;
2. 1,000 workflows / threads of 10 checkpoints each: keep the newest one of each
   - ckdb: ``store.prune(policy=RetentionPolicy(max_checkpoints=1))`` (every workflow)
   - SQL:  one ``DELETE`` of every row but the newest per thread (``row_number() OVER
     (PARTITION BY thread_id ...)``), plus the orphaned ``writes`` (``NOT EXISTS``).

Both stores are built once, outside the timed region (ckdb filled without fsync, SQLite with
``synchronous=OFF``; both are closed cleanly afterwards). Every measurement runs on a fresh copy,
alternating which system goes first; only the deletion is timed, with each system's durable
default: ckdb ``durability="sync"`` (fsync per transaction), SqliteSaver's WAL with SQLite's default
``synchronous=FULL``. Medians are reported; ratio = ckdb / SQL (below 1: ckdb is faster).

ckdb does more per checkpoint than the SQL does per row: it verifies each registry entry's tag
while planning, re-checks every victim inside its transaction (pinned, newest valid, still there)
and releases chunk references; it also splits a large prune into bounded transactions
(``ckdb.pruning.BATCH``), each fsynced, so that a prune never holds the writer for long.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ckdb
from ckdb import pruning
from ckdb.retention import RetentionPolicy

try:
    from langgraph.checkpoint.base.id import uuid6
    from langgraph.checkpoint.sqlite import SqliteSaver
except ImportError:  # pragma: no cover - a benchmark dependency
    sys.exit(
        "this benchmark needs langgraph-checkpoint-sqlite: pip install langgraph-checkpoint-sqlite"
    )


# --- the workload: realistic small agent checkpoints -------------------------------------------


def agent_state(wf: int, step: int) -> dict[str, Any]:
    """A small agent state (~1.5 KB encoded): a few chat messages, the task, progress, config."""
    return {
        "messages": [
            {
                "role": ("user", "assistant", "tool")[k % 3],
                "content": f"step {step} message {k}: the agent considers the next action for "
                f"workflow {wf} and records what it learned so far.",
                "id": f"msg-{wf}-{step}-{k}",
            }
            for k in range(6)
        ],
        "task": {"id": f"task-{wf}", "goal": "refactor the billing module", "attempt": step % 4},
        "progress": {"step": step, "done": step % 100, "ratio": step / 10_000},
        "configuration": {"model": "some-model", "temperature": 0.2, "max_tokens": 2048},
    }


def writes_for(step: int) -> list[tuple[str, Any]]:
    return [
        ("messages", {"role": "assistant", "content": f"write {step}"}),
        ("progress", {"step": step}),
    ]


# --- building the stores (not timed) --------------------------------------------------------------


def build_ckdb(path: Path, workflows: int, per_workflow: int) -> None:
    with ckdb.open(path, retention=None, _unsafe_nosync=True) as store:
        for step in range(per_workflow):  # interleaved, as concurrent workflows would write
            for wf in range(workflows):
                store.create(f"wf-{wf}", "step", state=agent_state(wf, step))
        st = store.stats()
        assert st["checkpoints"] == workflows * per_workflow, st


def build_sqlite(path: Path, workflows: int, per_workflow: int) -> None:
    conn = sqlite3.connect(path, check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    conn.execute("PRAGMA synchronous=OFF")  # filling only
    parents: dict[int, str | None] = dict.fromkeys(range(workflows))
    for step in range(per_workflow):
        for wf in range(workflows):
            config: dict[str, Any] = {
                "configurable": {"thread_id": f"wf-{wf}", "checkpoint_ns": ""}
            }
            if parents[wf] is not None:
                config["configurable"]["checkpoint_id"] = parents[wf]
            state = agent_state(wf, step)
            checkpoint = {
                "v": 4,
                "id": str(uuid6(clock_seq=step)),
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                "channel_values": state,
                "channel_versions": dict.fromkeys(state, f"{step:032}.0"),
                "versions_seen": {"agent": dict.fromkeys(state, f"{step:032}.0")},
                "pending_sends": [],
                "updated_channels": list(state),
            }
            saved = saver.put(
                config,  # type: ignore[arg-type]
                checkpoint,  # type: ignore[arg-type]
                {"source": "loop", "step": step, "parents": {}},
                dict.fromkeys(state, f"{step:032}.0"),
            )
            saver.put_writes(saved, writes_for(step), task_id=f"task-{wf}-{step}")
            parents[wf] = saved["configurable"]["checkpoint_id"]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (count,) = conn.execute("SELECT count(*) FROM checkpoints").fetchone()
    assert count == workflows * per_workflow, count
    conn.close()


# --- the timed deletions ----------------------------------------------------------------------------


def copy_store(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copyfile(src, dest)
        for suffix in ("-wal", "-shm"):
            extra = Path(str(src) + suffix)
            if extra.exists():
                shutil.copyfile(extra, Path(str(dest) + suffix))
    os.sync()  # the copy's dirty pages must not be flushed inside the timed region


def time_ckdb(path: Path, workflow: str | None, keep: int, expect_deleted: int) -> float:
    with ckdb.open(path, retention=None) as store:
        start = time.perf_counter()
        result = store.prune(workflow, RetentionPolicy(max_checkpoints=keep))
        elapsed = time.perf_counter() - start
        assert len(result.deleted) == expect_deleted, (len(result.deleted), expect_deleted)
    return elapsed


SQL_ONE_THREAD = (
    "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id NOT IN "
    "(SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
    "ORDER BY checkpoint_id DESC LIMIT ?)",
    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id NOT IN "
    "(SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '')",
)
SQL_EVERY_THREAD = (
    # The fastest of the forms tried (row-value NOT IN (... GROUP BY) took ~7x longer here).
    "DELETE FROM checkpoints WHERE rowid IN (SELECT rowid FROM (SELECT rowid, row_number() OVER "
    "(PARTITION BY thread_id, checkpoint_ns ORDER BY checkpoint_id DESC) AS rn FROM checkpoints) "
    "WHERE rn > 1)",
    "DELETE FROM writes WHERE NOT EXISTS (SELECT 1 FROM checkpoints c WHERE "
    "c.thread_id = writes.thread_id AND c.checkpoint_ns = writes.checkpoint_ns "
    "AND c.checkpoint_id = writes.checkpoint_id)",
)


def time_sql(path: Path, thread: str | None, keep: int, expect_deleted: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        # What SqliteSaver runs on a connection (WAL); synchronous stays at SQLite's default.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("SELECT count(*) FROM checkpoints").fetchone()  # warm the schema
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        if thread is not None:
            cur = conn.execute(SQL_ONE_THREAD[0], (thread, thread, keep))
            deleted = cur.rowcount
            conn.execute(SQL_ONE_THREAD[1], (thread, thread))
        else:
            assert keep == 1
            cur = conn.execute(SQL_EVERY_THREAD[0])
            deleted = cur.rowcount
            conn.execute(SQL_EVERY_THREAD[1])
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        assert deleted == expect_deleted, (deleted, expect_deleted)
    finally:
        conn.close()
    return elapsed


# --- driver ------------------------------------------------------------------------------------------


class Scenario:
    def __init__(
        self, name: str, workflows: int, per_workflow: int, keep: int, one: str | None
    ) -> None:
        self.name = name
        self.workflows = workflows
        self.per_workflow = per_workflow
        self.keep = keep
        self.one = one  # a single workflow / thread, or None: every one
        self.deleted = workflows * (per_workflow - keep)


def measure(
    s: Scenario, work: Path, repeats: int, log: Callable[[str], None]
) -> tuple[list[float], list[float]]:
    ck_src, sql_src = work / f"{s.name}.ckdb", work / f"{s.name}.sqlite"
    t0 = time.perf_counter()
    build_ckdb(ck_src, s.workflows, s.per_workflow)
    t1 = time.perf_counter()
    build_sqlite(sql_src, s.workflows, s.per_workflow)
    t2 = time.perf_counter()
    log(f"{s.name}: built ckdb in {t1 - t0:.1f} s, SQLite in {t2 - t1:.1f} s")
    ck_times: list[float] = []
    sql_times: list[float] = []
    for rep in range(repeats):
        ck_copy, sql_copy = work / f"run-{rep}.ckdb", work / f"run-{rep}.sqlite"
        copy_store(ck_src, ck_copy)
        copy_store(sql_src, sql_copy)
        runs: list[tuple[str, Callable[[], float]]] = [
            ("ckdb", functools.partial(time_ckdb, ck_copy, s.one, s.keep, s.deleted)),
            ("sql", functools.partial(time_sql, sql_copy, s.one, s.keep, s.deleted)),
        ]
        if rep % 2:
            runs.reverse()
        for which, run in runs:
            elapsed = run()
            (ck_times if which == "ckdb" else sql_times).append(elapsed)
        log(f"  rep {rep}: ckdb {ck_times[-1]:.3f} s, SQL {sql_times[-1]:.3f} s")
        shutil.rmtree(ck_copy)
        for p in work.glob(f"run-{rep}.sqlite*"):
            p.unlink()
    shutil.rmtree(ck_src)
    for p in work.glob(f"{s.name}.sqlite*"):
        p.unlink()
    return ck_times, sql_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    ap.add_argument(
        "--scale", type=float, default=1.0, help="multiply checkpoint counts (smoke runs)"
    )
    args = ap.parse_args()

    def n(x: int) -> int:
        return max(2, int(x * args.scale))

    scenarios = [
        Scenario(
            f"1 workflow: prune {n(10_000) - n(1_000):,} of {n(10_000):,}",
            1,
            n(10_000),
            n(1_000),
            "wf-0",
        ),
        Scenario(
            f"{n(1_000):,} workflows x 10: keep 1 each",
            n(1_000),
            10,
            1,
            None,
        ),
    ]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="ckdb-prune-bench-") as tmp:
        for s in scenarios:
            ck, sql = measure(s, Path(tmp), args.repeats, log)
            rows.append((s, statistics.median(ck), statistics.median(sql)))
    print(
        f"\nckdb {ckdb.__version__} (BATCH={pruning.BATCH}, durability=sync) vs. SQLite "
        f"{sqlite3.sqlite_version} on SqliteSaver's schema (WAL, synchronous=FULL); "
        f"median of {args.repeats} runs on fresh copies, {os.cpu_count()} CPUs\n"
    )
    print("| scenario | deleted | ckdb prune (s) | SQL DELETE (s) | ratio ckdb/SQL |")
    print("|---|---:|---:|---:|---:|")
    for sc, ck_med, sql_med in rows:
        print(
            f"| {sc.name} | {sc.deleted:,} | {ck_med:.3f} | {sql_med:.3f} | {ck_med / sql_med:.2f} |"
        )


if __name__ == "__main__":
    main()
