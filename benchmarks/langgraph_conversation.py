"""Benchmark: a 300-step growing conversation on CkdbSaver beside LangGraph's SqliteSaver.

    python benchmarks/langgraph_conversation.py [--steps 300] [--repeats 1] [--workdir DIR]
    python benchmarks/langgraph_conversation.py --breakdown   # ms per step in each saver method
    python benchmarks/langgraph_conversation.py --interleave --repeats 3  # step by step, paired

Requires ``langgraph`` and ``langgraph-checkpoint-sqlite`` besides ckdb.

The graph: one ``assistant`` node; state = ``messages`` (a growing list, LangGraph's ``add``
reducer), ``context`` (a ~16 KB document set by the first turn and never changed again, as a
system prompt, retrieved documents or a tool schema would be) and ``turn``. Each step is one
``graph.invoke`` with a new user message, ``durability="sync"`` (the step's checkpoints are
durable when ``invoke`` returns), so each step writes two checkpoints (input and loop) plus the
node's pending writes.

Timed: each step's ``invoke``; reported: the median over all steps and over the last 50 (the
state is largest there), and the database size after the last step (ckdb: the LMDB file and the
bytes in use, ``(last_pgno + 1) * page size``; SQLite: the file after a ``wal_checkpoint
(TRUNCATE)``). Each system's durable default: ckdb ``durability="sync"``, SqliteSaver's WAL with
SQLite's default ``synchronous=FULL``. Ratio = ckdb / SQLite (below 1: ckdb is faster/smaller).

Why the sizes differ: SqliteSaver stores the whole channel state in every checkpoint row, so the
unchanged ``context`` and the whole message list are rewritten every step; CkdbSaver stores one
compressed blob per (channel, version), so ``context`` is stored once and only ``messages`` and
``turn`` are written per step.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import operator
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

import ckdb
from ckdb._env import Env
from ckdb.integrations.langgraph import CkdbSaver

WORDS = [
    *[
        "agent",
        "checkpoint",
        "state",
        "restore",
        "thread",
        "channel",
        "value",
        "version",
        "retention",
        "policy",
    ],
    *[
        "frame",
        "tag",
        "durable",
        "commit",
        "crash",
        "resume",
        "graph",
        "node",
        "edge",
        "interrupt",
        "write",
        "blob",
    ],
]


class State(TypedDict, total=False):
    messages: Annotated[list[dict[str, str]], operator.add]
    context: str
    turn: int


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def build_graph(saver: BaseCheckpointSaver[Any]) -> Any:
    def assistant(state: State) -> State:
        turn = state.get("turn", 0) + 1
        rng = random.Random(turn)
        reply = {"role": "assistant", "content": _text(rng, 60)}
        return {"messages": [reply], "turn": turn}

    g: StateGraph[State] = StateGraph(State)
    g.add_node("assistant", assistant)
    g.add_edge(START, "assistant")
    g.add_edge("assistant", END)
    return g.compile(checkpointer=saver)


def conversation(saver: BaseCheckpointSaver[Any], steps: int) -> Iterator[float]:
    """Run the conversation one step per ``next``: yields each step's ``invoke`` time (s)."""
    graph = build_graph(saver)
    config = {"configurable": {"thread_id": "conversation"}}
    rng = random.Random(42)
    context = _text(random.Random(0), 2300)  # ~16 KB
    for i in range(steps):
        inp: State = {"messages": [{"role": "user", "content": _text(rng, 25)}]}
        if i == 0:
            inp["context"] = context
        t0 = time.perf_counter()
        graph.invoke(inp, config, durability="sync")
        yield time.perf_counter() - t0
    final = graph.get_state(config).values
    assert len(final["messages"]) == 2 * steps
    assert final["context"] == context


def converse(saver: BaseCheckpointSaver[Any], steps: int) -> list[float]:
    return list(conversation(saver, steps))


def interleaved(steps: int, repeats: int, workdir: Path | None) -> None:
    """The three savers step by step in one process (step i of each back to back, the order
    rotating each step), so that a burst of load hits all alike; per-step ratios, medians."""
    ratios: dict[str, list[float]] = {"ckdb": [], "ckdb-held": []}
    times: dict[str, list[float]] = {"ckdb": [], "ckdb-held": [], "sqlite": []}
    for _ in range(repeats):
        with contextlib.ExitStack() as stack:
            d = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=workdir)))
            s1 = stack.enter_context(ckdb.open(d / "a.ckdb", retention=None))
            s2 = stack.enter_context(ckdb.open(d / "b.ckdb", retention=None))
            conn = sqlite3.connect(d / "c.sqlite", check_same_thread=False)
            stack.callback(conn.close)
            runs = {
                "ckdb": conversation(CkdbSaver(s1), steps),
                "ckdb-held": conversation(CkdbSaver(s2, pending_writes="with_checkpoint"), steps),
                "sqlite": conversation(SqliteSaver(conn), steps),
            }
            names = list(runs)
            for i in range(steps):
                step: dict[str, float] = {}
                for name in names[i % 3 :] + names[: i % 3]:
                    step[name] = next(runs[name])
                    times[name].append(step[name])
                for name, rs in ratios.items():
                    rs.append(step[name] / step["sqlite"])
            for run in runs.values():
                next(run, None)  # the final checks
    for name, xs in times.items():
        print(f"{name:9s} median step {_ms(xs):6.2f} ms, last 50: {_ms(xs[-50:]):6.2f} ms")
    for name, rs in ratios.items():
        print(
            f"ratio {name}/sqlite, paired by step: median {statistics.median(rs):.3f}, "
            f"last 50 {statistics.median(rs[-50:]):.3f} ({steps} steps x {repeats})"
        )


def run_ckdb(
    workdir: Path, steps: int, pending_writes: str = "durable"
) -> tuple[list[float], dict[str, int]]:
    path = workdir / "conv.ckdb"
    with ckdb.open(path, retention=None) as store:
        times = converse(CkdbSaver(store, pending_writes=pending_writes), steps)
        info = store._env.info()
        used = (info["last_pgno"] + 1) * info["stat_psize"]
    return times, {"file": os.path.getsize(path / "data.mdb"), "used": used}


def run_ckdb_held(workdir: Path, steps: int) -> tuple[list[float], dict[str, int]]:
    """CkdbSaver(pending_writes="with_checkpoint"): a step's writes commit with its next put."""
    return run_ckdb(workdir, steps, "with_checkpoint")


def run_sqlite(workdir: Path, steps: int) -> tuple[list[float], dict[str, int]]:
    path = workdir / "conv.sqlite"
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        times = converse(SqliteSaver(conn), steps)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    size = os.path.getsize(path)
    return times, {"file": size, "used": size}


def breakdown(steps: int) -> None:
    """Milliseconds per step inside each saver method (and, for ckdb, inside its commits),
    one run per saver: where a step's time goes."""

    def timed(owner: Any, name: str, spent: collections.Counter[str], label: str) -> Any:
        real = getattr(owner, name)

        @functools.wraps(real)
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return real(*a, **k)
            finally:
                spent[label] += time.perf_counter_ns() - t0

        return wrapper

    def run(name: str, make: Callable[[Path], Any]) -> None:
        spent: collections.Counter[str] = collections.Counter()
        with tempfile.TemporaryDirectory() as d:
            saver, closer = make(Path(d))
            for meth in ("put", "put_writes", "get_tuple"):
                setattr(saver, meth, timed(saver, meth, spent, meth))
            t0 = time.perf_counter()
            try:
                converse(saver, steps)
            finally:
                closer()
            total = time.perf_counter() - t0
        cells = ", ".join(f"{k} {v / steps / 1e6:.2f}" for k, v in sorted(spent.items()))
        print(f"{name:10s} ms/step: whole step {total / steps * 1e3:.2f}; {cells}")

    commit: collections.Counter[str] = collections.Counter()
    real_commit = Env._commit_batch
    Env._commit_batch = timed(Env, "_commit_batch", commit, "commit")  # type: ignore[method-assign]
    try:
        for mode in ("durable", "with_checkpoint"):
            commit.clear()

            def make_ckdb(d: Path, mode: str = mode) -> Any:
                store = ckdb.open(d / "conv.ckdb", retention=None)
                return CkdbSaver(store, pending_writes=mode), store.close

            run(f"ckdb {mode}", make_ckdb)
            print(
                f"{'':10s} of which ckdb commits (LMDB txn + 2 fsyncs) {commit['commit'] / steps / 1e6:.2f}"
            )
    finally:
        Env._commit_batch = real_commit  # type: ignore[method-assign]

    def make_sqlite(d: Path) -> Any:
        conn = sqlite3.connect(d / "conv.sqlite", check_same_thread=False)
        return SqliteSaver(conn), conn.close

    run("sqlite", make_sqlite)


def _ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--breakdown", action="store_true", help="time inside each saver method")
    ap.add_argument(
        "--interleave", action="store_true", help="step the savers alternately, paired ratios"
    )
    args = ap.parse_args(argv)
    if args.breakdown:
        breakdown(args.steps)
        return 0
    if args.interleave:
        interleaved(args.steps, args.repeats, args.workdir)
        return 0
    runners: dict[str, Callable[[Path, int], tuple[list[float], dict[str, int]]]] = {
        "ckdb": run_ckdb,
        "ckdb-held": run_ckdb_held,
        "sqlite": run_sqlite,
    }
    results: dict[str, list[tuple[list[float], dict[str, int]]]] = {k: [] for k in runners}
    for r in range(args.repeats):
        order = list(runners)[r % len(runners) :] + list(runners)[: r % len(runners)]
        for name in order:
            with tempfile.TemporaryDirectory(dir=args.workdir) as d:
                results[name].append(runners[name](Path(d), args.steps))
    rows = {}
    for name, runs in results.items():
        all_t = [t for times, _ in runs for t in times]
        late = [t for times, _ in runs for t in times[-50:]]
        size = runs[-1][1]
        rows[name] = (_ms(all_t), _ms(late), size["file"], size["used"])
        print(
            f"{name:7s} median step {rows[name][0]:7.2f} ms | last-50 median {rows[name][1]:7.2f} ms"
            f" | file {size['file'] / 1e6:8.2f} MB | in use {size['used'] / 1e6:8.2f} MB"
        )
    s = rows["sqlite"]
    for name in ("ckdb", "ckdb-held"):
        c = rows[name]
        print(
            f"ratio {name}/sqlite: step {c[0] / s[0]:.2f}, last-50 {c[1] / s[1]:.2f}, "
            f"file {c[2] / s[2]:.3f}, in use {c[3] / s[3]:.3f}  ({args.steps} steps, "
            f"{args.repeats} repeat(s))"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
