"""The floor under a cold ``list``: what listing 100 checkpoints must do at least, in Python.

    python -m benchmarks.list_floor [--rounds 15]

The goal (docs/performance.md) is ``list(limit=100)`` 10x faster than SqliteSaver's ``list``, also
cold (ckdb's memo of verified values emptied, as right after opening). Both stores hold 200
checkpoints of the 8 KiB agent state of ``benchmarks/workloads.py``. Each round, alternating
order, times (µs per call, medians over the rounds):

- ``SqliteSaver.list(limit=100)``, and the goal: a tenth of it;
- ckdb's ``list(limit=100)``, cold;
- the stages a listing of this API cannot skip, on ckdb's own store, cumulative:
  1. a read transaction and a cursor over the workflow's newest 100 registry entries;
  2. plus verifying each entry's tag (one truncated HMAC-SHA256, the batch verifier): a listing
     that trusted no unverified byte would need at least this, even with every listed field in
     the entry (a format change);
  3. plus one ``CheckpointInfo`` per entry, its id as text (uncached, as cold), its time as a
     datetime, no components: the record ``list`` returns.

No component records and no metadata are read in stages 1-3, so a ckdb with a layout built for
listing would still pay stage 3. Markdown to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import peers as P  # noqa: N812
from benchmarks import workloads as W  # noqa: N812
from ckdb import layout
from ckdb import meta as ckmeta
from ckdb.codec import RegistryVerifier
from ckdb.layout import DB_REGISTRY, FLAG_PINNED
from ckdb.records import CheckpointInfo

_text = layout.id_to_text  # uncached (ckdb 0.5.1): every id costs the same


def _stages(store: Any) -> list[tuple[str, Callable[[], object]]]:
    t = store.tables
    wf_key = t.keys.wf_key("wf-0")

    def cursor() -> object:
        with t.env.read() as txn:
            return [
                kv
                for _i, kv in enumerate(
                    itertools.islice(txn.prefix(DB_REGISTRY, wf_key, reverse=True), 100)
                )
            ]

    def verified() -> object:
        verify = RegistryVerifier(t.keys.mac)
        with t.env.read() as txn:
            it = enumerate(itertools.islice(txn.prefix(DB_REGISTRY, wf_key, reverse=True), 100))
            return [verify(k, v) for _i, (k, v) in it]

    def records() -> object:
        verify = RegistryVerifier(t.keys.mac)
        out = []
        with t.env.read() as txn:
            for _i, (k, v) in enumerate(
                itertools.islice(txn.prefix(DB_REGISTRY, wf_key, reverse=True), 100)
            ):
                got = verify(k, v)
                assert got is not None
                cid, created_us, flags = got
                out.append(
                    CheckpointInfo(
                        id=_text(cid),
                        workflow_id="wf-0",
                        phase="step",
                        kind="automatic",
                        name=None,
                        created_at=ckmeta.datetime_of(created_us),
                        created_by="bench",
                        sequence=int.from_bytes(k[-8:], "big"),
                        parent_id=None,
                        pinned=bool(flags & FLAG_PINNED),
                        status="valid",
                    )
                )
        return out

    return [
        ("1. cursor over 100 registry entries", cursor),
        ("2. + one tag verified per entry", verified),
        ("3. + a CheckpointInfo per entry (id text, datetime)", records),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    state = W.agent_state(8192)
    with tempfile.TemporaryDirectory() as d:
        peers = []
        for cls in (P.CkdbPeer, P.SqlitePeer):
            peer = P.fresh(cls, Path(d))
            peer.open(fast=True)
            for i in range(200):
                peer.create("wf-0", i + 1, W.vary(state, i))
            peer.close()
            peer.open(fast=False)
            peers.append(peer)
        ck, sq = peers
        store = ck.store  # type: ignore[attr-defined]
        timed: dict[str, list[float]] = {}

        def run(name: str, fn: Callable[[], object], cold: bool = False) -> None:
            if cold:
                P.forget(store)
            t0 = time.perf_counter_ns()
            fn()
            timed.setdefault(name, []).append((time.perf_counter_ns() - t0) / 1000)

        cases: list[tuple[str, Callable[[], object], bool]] = [
            ("SqliteSaver.list(limit=100)", lambda: sq.list100("wf-0"), False),
            ("ckdb list(limit=100), cold", lambda: ck.list100("wf-0"), True),
            *((name, fn, True) for name, fn in _stages(store)),
        ]
        for r in range(args.rounds):
            for name, fn, cold in cases[r % len(cases) :] + cases[: r % len(cases)]:
                run(name, fn, cold)
        for peer in peers:
            peer.close()
    med = {k: statistics.median(v) for k, v in timed.items()}
    goal = med["SqliteSaver.list(limit=100)"] / 10
    print(f"list 100 checkpoints of 8 KiB: µs per call, median of {args.rounds} rounds\n")
    print("| what | µs | x the goal (SqliteSaver / 10) |")
    print("|---|---:|---:|")
    for name, us in med.items():
        print(f"| {name} | {us:,.0f} | {us / goal:.2f} |")
    print(f"| goal: a tenth of SqliteSaver | {goal:,.0f} | 1.00 |")


if __name__ == "__main__":
    main()
