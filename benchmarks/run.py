"""ckdb's performance suite: ckdb and its peers on the same data, in one run.

    python -m benchmarks [--quick] [--only create8k,read,...] [--workdir DIR]
    python benchmarks/run.py --quick          # the same

Peers (``benchmarks/peers.py``): raw py-lmdb with the same bytes (the engine floor), LangGraph's
``SqliteSaver``, ``diskcache`` and the naive file-per-checkpoint design. Optional peers that are
not installed are left out with a note (``pip install langgraph-checkpoint-sqlite diskcache``).

Method: every system gets the same deterministic agent-like state (``benchmarks/workloads.py``).
Repetitions alternate between the systems (the order rotates every round) so that a noisy
machine hurts them alike; the table shows medians and ratios. Durable creates are measured in
steady state: the store already holds checkpoints and some were deleted, so freed pages are
reused. Nothing skips fsync, tag verification or read-back. Per-stage breakdowns time ckdb's own
functions with ``time.perf_counter_ns`` wrappers (exclusive time: a stage excludes the stages it
calls) on the same data.

Sections: fsync, create8k, threads8k, create1m, read (latest+load, list 100), prune, size, tree.
``--quick`` (< ~1-2 minutes on a loaded 2-core VM) shrinks counts and repetitions; the full run
takes several minutes (the 1 GiB capture and the 10,000-checkpoint prune dominate).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import types
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lmdb

import ckdb
from benchmarks import floors
from benchmarks import peers as P  # noqa: N812
from benchmarks import workloads as W  # noqa: N812
from ckdb import codec, encoding
from ckdb import meta as ckmeta
from ckdb import store as ckstore
from ckdb._env import Env


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --- per-stage probes -------------------------------------------------------------------------


class Probe:
    """Exclusive time per label: wraps functions, subtracts the time of wrapped callees."""

    def __init__(self) -> None:
        self.excl: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        """Wrap ``owner.attr``. For a module function, every ``ckdb.*`` module that imported the
        same function under the same name is patched too (``from ckdb.codec import ...``)."""
        if not hasattr(owner, attr) or (isinstance(owner, type) and attr not in owner.__dict__):
            log(f"  (probe: {getattr(owner, '__name__', owner)}.{attr} not found; skipped)")
            return
        orig = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        call = getattr(owner, attr)
        local, excl, calls = self._local, self.excl, self.calls

        def wrapper(*a: Any, **k: Any) -> Any:
            stack = local.__dict__.setdefault("stack", [])
            stack.append(0)
            t0 = time.perf_counter_ns()
            try:
                return call(*a, **k)
            finally:
                elapsed = time.perf_counter_ns() - t0
                inner = stack.pop()
                excl[label] += elapsed - inner
                calls[label] += 1
                if stack:
                    stack[-1] += elapsed

        owners = [owner]
        if isinstance(owner, types.ModuleType):
            owners += [
                m
                for name, m in list(sys.modules.items())
                if name.startswith("ckdb") and m is not owner and getattr(m, attr, None) is orig
            ]
        for o in owners:
            self._undo.append((o, attr, o.__dict__[attr] if isinstance(o, type) else orig))
            setattr(o, attr, wrapper)

    def undo(self) -> None:
        for owner, attr, orig in reversed(self._undo):
            setattr(owner, attr, orig)
        self._undo.clear()

    @contextlib.contextmanager
    def active(self, targets: list[tuple[Any, str, str]]) -> Iterator[Probe]:
        for owner, attr, label in targets:
            self.wrap(owner, attr, label)
        try:
            yield self
        finally:
            self.undo()


CREATE_STAGES = [
    (ckstore.Store, "create", "create: validation, ids, sha256 digests, records (Python)"),
    (encoding, "encode", "encode (msgpack)"),
    (codec, "compress", "compress (cramjam: zstd or lz4)"),
    (codec, "tag", "tag (HMAC-SHA256, incl. read-back verify)"),
    (codec, "parse_frame", "read-back parse (excl. its tag)"),
    (Env, "write", "group-commit queue / wake-up"),
    (Env, "_run_item", "txn body: puts, gets, registry, metadata (excl. above)"),
    (Env, "_commit_batch", "txn begin + commit (fsync data + meta)"),
]
READ_STAGES = [
    (ckstore.Store, "latest", "latest: other (txn, lookups, records)"),
    (ckstore.Store, "load", "load: other (txn, lookups, sha256 digests, records)"),
    (codec, "decode_registry", "registry scan: entry verify (excl. tag)"),
    (ckmeta.Meta, "parse", "metadata decode + checks (excl. msgpack)"),  # noqa: SLF001
    (ckmeta, "_parse_cached", "metadata parse, memoised on verified bytes"),
    (codec, "parse_frame", "frame verify: parse (excl. tag)"),
    (codec, "tag", "tag (HMAC-SHA256)"),
    (codec, "decompress", "decompress (cramjam)"),
    (encoding, "decode", "decode (msgpack)"),
]


def breakdown_rows(probe: Probe, ops: int) -> list[tuple[str, float, int]]:
    total = sum(probe.excl.values())
    rows = [(label, ns / ops / 1000, probe.calls[label]) for label, ns in probe.excl.items()]
    rows.sort(key=lambda r: -r[1])
    rows.append(("**total**", total / ops / 1000, ops))
    return rows


def print_breakdown(
    title: str, rows: list[tuple[str, float, int]], ops: int, note: str = ""
) -> None:
    total = rows[-1][1]
    print(f"\n**{title}** (exclusive µs per operation, {ops} operations)\n")
    if note:
        print(note + "\n")
    print("| stage | µs/op | share | calls/op |")
    print("|---|---:|---:|---:|")
    for label, us, calls in rows:
        share = f"{100 * us / total:.0f} %" if label != "**total**" else ""
        print(f"| {label} | {us:,.1f} | {share} | {calls / ops:.1f} |")


# --- sections ----------------------------------------------------------------------------------


class Ctx:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.work = work
        self.classes, self.missing = P.available((P.ALL[0], *floors.PEERS, *P.ALL[1:]))
        self.results: dict[str, dict[str, float]] = {}
        self.extra: list[Callable[[], None]] = []  # breakdown printers, run at the end

    def q(self, quick: int, full: int) -> int:
        return quick if self.quick else full


def sec_fsync(ctx: Ctx) -> None:
    path = ctx.work / "fsync.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    block = os.urandom(8192)
    os.pwrite(fd, block, 0)
    os.fsync(fd)
    samples = []
    try:
        for _ in range(ctx.q(50, 300)):
            t0 = time.perf_counter_ns()
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            samples.append((time.perf_counter_ns() - t0) / 1000)
    finally:
        os.close(fd)
        path.unlink()
    ctx.results["fdatasync of 8 KiB (µs, p50)"] = {"_all": med(samples)}


def _prepared(ctx: Ctx, state: dict[str, Any], prefill: int, keep: int, tag: str) -> list[P.Peer]:
    """Every peer with ``prefill`` checkpoints of ``wf-0`` filled fast, then trimmed to
    ``keep`` (freed pages to reuse), reopened durable."""
    out = []
    for cls in ctx.classes:
        peer = P.fresh(cls, ctx.work / tag)
        peer.open(fast=True)
        for i in range(prefill):
            peer.create("wf-0", i + 1, W.vary(state, i))
        peer.trim("wf-0", keep)
        peer.close()
        peer.open(fast=False)
        peer.step = prefill  # type: ignore[attr-defined]
        out.append(peer)
    return out


def _rotate(peers: list[P.Peer], r: int) -> list[P.Peer]:
    k = r % len(peers)
    return peers[k:] + peers[:k]


def _creates(peer: P.Peer, state: dict[str, Any], n: int, threads: int) -> float:
    """ops/s of ``n`` creates spread over ``threads`` threads (one workflow each)."""
    if threads == 1:
        steps = range(peer.step + 1, peer.step + n + 1)  # type: ignore[attr-defined]
        peer.step += n  # type: ignore[attr-defined]
        states = [W.vary(state, s) for s in steps]
        t0 = time.perf_counter()
        for s, st in zip(steps, states, strict=True):
            peer.create("wf-0", s, st)
        return n / (time.perf_counter() - t0)
    per = n // threads
    base = peer.step  # type: ignore[attr-defined]
    peer.step += per  # type: ignore[attr-defined]
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        states = [W.vary(state, base + i + 1) for i in range(per)]
        barrier.wait()
        try:
            for i, st in enumerate(states):
                peer.create(f"wf-t{t}", base + i + 1, st)
        except BaseException as err:
            errors.append(err)

    ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in ths:
        th.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return per * threads / elapsed


def _create_section(
    ctx: Ctx, key: str, size: int, threads: int, prefill: int, keep: int, n: int, rounds: int
) -> None:
    state = W.agent_state(size)
    raw = len(encoding.encode(state))
    log(f"{key}: state {raw:,} B encoded; prefill {prefill}, keep {keep}; {rounds} x {n} creates")
    peers = _prepared(ctx, state, prefill, keep, key.split(maxsplit=1)[0])
    samples: dict[str, list[float]] = defaultdict(list)
    batches = [0]
    orig = Env.__dict__["_commit_batch"]

    def counting(self: Env, batch: list[Any]) -> None:
        batches[0] += 1
        orig(self, batch)

    row: dict[str, float] = {}
    try:
        if threads == 1:
            # Interleave single operations (op i of every system back to back, the order rotating)
            # so that bursts of load from other processes hit every system alike.
            lat: dict[str, list[float]] = defaultdict(list)
            for r in range(rounds):
                for i in range(n):
                    for peer in _rotate(peers, r + i):
                        peer.step += 1  # type: ignore[attr-defined]
                        st = W.vary(state, peer.step)  # type: ignore[attr-defined]
                        t0 = time.perf_counter_ns()
                        peer.create("wf-0", peer.step, st)  # type: ignore[attr-defined]
                        lat[peer.name].append(time.perf_counter_ns() - t0)
                log(f"  round {r + 1}/{rounds}: " + ", ".join(
                    f"{k} {1e9 / med(v[-n:]):,.0f}/s" for k, v in lat.items()))  # fmt: skip
            row = {name: 1e9 / med(v) for name, v in lat.items()}
        else:
            commits0 = {p.name: p.commits for p in peers if isinstance(p, floors.FloorPeer)}
            for r in range(rounds):
                for peer in _rotate(peers, r):
                    if peer.name == "ckdb":
                        Env._commit_batch = counting  # type: ignore[method-assign]
                    try:
                        samples[peer.name].append(_creates(peer, state, n, threads))
                    finally:
                        Env._commit_batch = orig  # type: ignore[method-assign]
                log(f"  round {r + 1}/{rounds}: " + ", ".join(
                    f"{k} {v[-1]:,.0f}/s" for k, v in samples.items()))  # fmt: skip
            row = {name: med(v) for name, v in samples.items()}
            if "SqliteSaver" in samples:  # batches of one round share the machine's state
                for name in ("ckdb", *(c.name for c in floors.PEERS)):
                    if name in samples:
                        row[f"paired ratio {name}/SqliteSaver"] = med(
                            [
                                c / q
                                for c, q in zip(samples[name], samples["SqliteSaver"], strict=True)
                            ]
                        )
        ck = next(p for p in peers if p.name == "ckdb")
        if threads == 1:
            probe = Probe()
            ops = max(10, n)
            lm = next((p for p in peers if p.name.startswith("lmdb")), None)
            floor_ns: list[float] = []
            for _ in range(ops):  # ckdb (probed) and raw lmdb interleaved, op by op
                with probe.active(CREATE_STAGES):
                    _creates(ck, state, 1, 1)
                if lm is not None:
                    t0 = time.perf_counter_ns()
                    _creates(lm, state, 1, 1)
                    floor_ns.append(time.perf_counter_ns() - t0)
            rows = breakdown_rows(probe, ops)
            floor = 1e9 / med(floor_ns)
            title = f"ckdb create breakdown, {key.split(' (', 1)[0]}"
            note = f"interleaved with it, raw lmdb one put + sync commit of the same bytes: {1e6 / floor:,.0f} µs/op (p50); the ckdb table sums means"
            ctx.extra.append(lambda: print_breakdown(title, rows, ops, note))
        else:
            creates = rounds * (n // threads) * threads
            ctx.results[f"group commit: creates per commit, {threads} threads"] = {
                "ckdb": creates / max(1, batches[0])
            } | {
                p.name: creates / max(1, p.commits - commits0[p.name])  # type: ignore[attr-defined]
                for p in peers
                if p.name in commits0
            }
    finally:
        for peer in peers:
            peer.close()
    ctx.results[key] = row


def sec_create8k(ctx: Ctx) -> None:
    _create_section(
        ctx, "durable create 8 KiB, 1 thread (ops/s)", 8192, 1,
        ctx.q(300, 2000), ctx.q(150, 1000), ctx.q(20, 40), ctx.q(3, 7),
    )  # fmt: skip


def sec_threads8k(ctx: Ctx) -> None:
    _create_section(
        ctx, "durable create 8 KiB, 8 threads (ops/s)", 8192, 8,
        ctx.q(300, 2000), ctx.q(150, 1000), ctx.q(32, 64), ctx.q(4, 11),
    )  # fmt: skip


def sec_create1m(ctx: Ctx) -> None:
    _create_section(
        ctx, "durable create 1 MiB, 1 thread (ops/s)", 1 << 20, 1,
        ctx.q(8, 40), ctx.q(4, 20), ctx.q(3, 6), ctx.q(3, 7),
    )  # fmt: skip


def sec_read(ctx: Ctx) -> None:
    state = W.agent_state(8192)
    peers = _prepared(ctx, state, 200, 200, "read")
    lat: dict[str, list[float]] = defaultdict(list)
    lst: dict[str, list[float]] = defaultdict(list)
    cold_lat: list[float] = []
    cold_lst: list[float] = []
    rounds, m, ml = ctx.q(3, 9), ctx.q(60, 200), ctx.q(10, 30)
    log(f"read: 200 checkpoints of 8 KiB; {rounds} rounds x {m} latest+load, {ml} list(100)")
    try:
        for peer in peers:  # correctness first: every peer returns the state it was given
            back = peer.latest_load("wf-0")
            if isinstance(back, dict):
                assert back["messages"] == state["messages"], peer.name
        for r in range(rounds):
            for peer in _rotate(peers, r):
                for _ in range(m):
                    t0 = time.perf_counter_ns()
                    peer.latest_load("wf-0")
                    lat[peer.name].append((time.perf_counter_ns() - t0) / 1000)
                if peer.name == "diskcache":
                    continue  # no ordered listing: its keys are not a sorted index
                for _ in range(ml):
                    t0 = time.perf_counter_ns()
                    got = peer.list100("wf-0")
                    lst[peer.name].append((time.perf_counter_ns() - t0) / 1000)
                assert len(got) == 100, (peer.name, len(got))
                if isinstance(peer, P.CkdbPeer):  # cold: as the first read after opening
                    for _ in range(m):
                        peer.forget()
                        t0 = time.perf_counter_ns()
                        peer.latest_load("wf-0")
                        cold_lat.append((time.perf_counter_ns() - t0) / 1000)
                    for _ in range(ml):
                        peer.forget()
                        t0 = time.perf_counter_ns()
                        peer.list100("wf-0")
                        cold_lst.append((time.perf_counter_ns() - t0) / 1000)
        ck = next(p for p in peers if p.name == "ckdb")
        probe = Probe()
        ops = ctx.q(200, 1000)
        with probe.active(READ_STAGES):
            for _ in range(ops):
                ck.latest_load("wf-0")
        rows = breakdown_rows(probe, ops)
        ctx.extra.append(lambda: print_breakdown("ckdb latest + load breakdown, 8 KiB", rows, ops))
        probe2 = Probe()
        with probe2.active([*READ_STAGES[2:], (ckstore.Store, "list", "list: other")]):
            for _ in range(ml):
                ck.list100("wf-0")
        rows2 = breakdown_rows(probe2, ml)
        ctx.extra.append(lambda: print_breakdown("ckdb list(limit=100) breakdown", rows2, ml))
    finally:
        for peer in peers:
            peer.close()
    # The floor remembers nothing between reads: it belongs beside ckdb's cold reads only.
    names = [c.name for c in floors.PEERS]
    floor_lat = {n: med(lat.pop(n)) for n in names if n in lat}
    floor_lst = {n: med(lst.pop(n)) for n in names if n in lst}
    ctx.results["latest + load, 8 KiB (µs, p50)"] = {k: med(v) for k, v in lat.items()}
    ctx.results["list 100 checkpoints (µs, p50)"] = {k: med(v) for k, v in lst.items()}
    sql = "SqliteSaver"
    cold = "cold: ckdb's memo and caches emptied before each call (µs, p50)"
    ctx.results[f"latest + load, 8 KiB, {cold}"] = (
        {"ckdb": med(cold_lat)} | floor_lat | ({sql: med(lat[sql])} if sql in lat else {})
    )
    ctx.results[f"list 100 checkpoints, {cold}"] = (
        {"ckdb": med(cold_lst)} | floor_lst | ({sql: med(lst[sql])} if sql in lst else {})
    )


def sec_prune(ctx: Ctx) -> None:
    try:
        from benchmarks import prune as pr  # noqa: PLC0415 - needs langgraph
    except SystemExit:
        ctx.missing.append("prune: needs langgraph-checkpoint-sqlite")
        return
    total = ctx.q(2000, 10_000)
    keep = total // 10
    s = pr.Scenario(f"prune {total - keep} of {total}", 1, total, keep, "wf-0")
    work = ctx.work / "prune"
    work.mkdir()
    log(f"prune: {s.name} (benchmarks/prune.py), plus a raw LMDB range delete")
    ck, sql = pr.measure(s, work, ctx.q(3, 5), log)
    # The engine floor: the same number of records as a raw LMDB range delete, one sync commit.
    env_dir = work / "raw"
    env_dir.mkdir()
    value = encoding.encode(pr.agent_state(0, 0))
    env = lmdb.open(str(env_dir), map_size=4 << 30, sync=True, metasync=True, lib_version=0)
    raw_times = []
    try:
        for _rep in range(ctx.q(3, 5)):
            with env.begin(write=True) as txn:
                for i in range(total):
                    txn.put(i.to_bytes(8, "big"), value)
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                cur = txn.cursor()
                hi = (total - keep).to_bytes(8, "big")
                if cur.set_range(b""):
                    while cur.key() and cur.key() < hi and cur.delete():
                        pass
            raw_times.append(time.perf_counter() - t0)
    finally:
        env.close()
    # The floors: what any prune must do (benchmarks/floors.py, FloorPeer.trim), on a store of
    # the same shape filled without fsync, timed with a sync commit.
    floor_times: dict[str, list[float]] = defaultdict(list)
    for _rep in range(ctx.q(3, 5)):
        for cls in floors.PEERS:
            floor = P.fresh(cls, work / "floors")
            floor.open(fast=True)
            for i in range(total):
                floor.create("wf-0", i + 1, pr.agent_state(0, i))
            floor.close()
            floor.open()
            t0 = time.perf_counter()
            gone = floor.trim("wf-0", keep)
            floor_times[cls.name].append(time.perf_counter() - t0)
            floor.close()
            assert len(gone) == total - keep, len(gone)
    shutil.rmtree(work / "floors")
    # Per-stage breakdown of one ckdb prune on a fresh store of the same shape.
    from ckdb import pruning  # noqa: PLC0415
    from ckdb._env import Txn  # noqa: PLC0415
    from ckdb.retention import RetentionPolicy  # noqa: PLC0415

    src = work / "breakdown.ckdb"
    pr.build_ckdb(src, 1, total)
    os.sync()
    probe = Probe()
    stages = [
        (ckstore.Store, "prune", "prune: other (batching, result records)"),
        (pruning, "registry_entries", "plan: registry scan + entry verify (excl. tag)"),
        (pruning, "plan_retention", "plan: retention policy (pure)"),
        (pruning, "delete_victims", "delete: re-check victims, ids (excl. below)"),
        (codec, "tag", "tag (HMAC-SHA256: registry entries)"),
        (Txn, "delete_range", "delete: payload/marks range deletes"),
        (Txn, "delete", "delete: metadata deletes"),
        (Txn, "delete_keys_in_range", "delete: registry cursor pass"),
        (Env, "write", "group-commit queue"),
        (Env, "_run_item", "txn body: other"),
        (
            Env,
            "_commit_batch",
            f"txn begin + commit (fsync), {-(-(total - keep) // pruning.BATCH)} commits",
        ),
    ]
    with ckdb.open(src, retention=None) as store, probe.active(stages):
        store.prune("wf-0", RetentionPolicy(max_checkpoints=keep))
    prows = breakdown_rows(probe, 1)
    ctx.extra.append(
        lambda: print_breakdown(f"ckdb prune {total - keep:,} of {total:,} breakdown", prows, 1)
    )
    shutil.rmtree(src)
    ctx.results[f"prune {total - keep:,} of {total:,} (ms)"] = {
        "ckdb": med(ck) * 1000,
        "SqliteSaver": med(sql) * 1000,
        "lmdb (raw)": med(raw_times) * 1000,
    } | {name: med(t) * 1000 for name, t in floor_times.items()}


def sec_size(ctx: Ctx) -> None:
    steps = 300
    states = W.conversation(steps)
    raw_last = len(encoding.encode(states[-1]))
    log(f"size: {steps}-step conversation (last state {raw_last:,} B)")
    row: dict[str, float] = {}
    for cls in ctx.classes:
        peer = P.fresh(cls, ctx.work / "size")
        peer.open(fast=True)  # sizes do not depend on fsync
        for i, st in enumerate(states):
            peer.create("conv", i + 1, st)
        row[peer.name] = peer.size() / 2**20
        if isinstance(peer, P.CkdbPeer):
            row["ckdb used pages"] = peer.used() / 2**20
        peer.close()
    ctx.results[f"store size, {steps}-step conversation (MiB)"] = row


def sec_tree(ctx: Ctx) -> None:
    from benchmarks import capture_restore as cr  # noqa: PLC0415

    files, reps, mib = ctx.q(2000, 10_000), ctx.q(1, 3), ctx.q(128, 1024)
    base = Path(tempfile.mkdtemp(prefix="tree-", dir=ctx.work))
    log(f"tree: {files} files x {reps} reps (benchmarks/capture_restore.py), {mib} MiB file")
    try:
        r = cr.small_files(base, files, reps)
        big = cr.big_file(base, mib)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ctx.results[f"re-checkpoint, unchanged {files:,}-file tree (s)"] = {"ckdb": med(r["unchanged"])}
    ctx.results[f"capture {files:,}-file tree, fresh store (s)"] = {"ckdb": med(r["full"])}
    ctx.results[f"restore {files:,}-file tree, verified (s)"] = {"ckdb": med(r["restore"])}
    ctx.results[f"peak RssAnon, capture of a {mib} MiB file (MiB)"] = {"ckdb": big["peak"] / 2**20}
    ctx.results[f"capture of a {mib} MiB file (MiB/s)"] = {"ckdb": mib / big["elapsed"]}


SECTIONS: dict[str, Callable[[Ctx], None]] = {
    "fsync": sec_fsync,
    "create8k": sec_create8k,
    "threads8k": sec_threads8k,
    "create1m": sec_create1m,
    "read": sec_read,
    "prune": sec_prune,
    "size": sec_size,
    "tree": sec_tree,
}

# (result key prefix, goal text, ratio function, pass test)
GOALS: list[tuple[str, str, Callable[[dict[str, float]], float], Callable[[float], bool]]] = [
    ("durable create 8 KiB, 1 thread", "ckdb ≥ 0.9x raw lmdb",
     lambda r: r["ckdb"] / r["lmdb (raw)"], lambda x: x >= 0.9),
    ("durable create 8 KiB, 8 threads", "ckdb ≥ 3x SqliteSaver (paired by round)",
     lambda r: r.get("paired ratio ckdb/SqliteSaver", r["ckdb"] / r["SqliteSaver"]),
     lambda x: x >= 3),
    ("durable create 1 MiB", "ckdb ≥ 2x SqliteSaver",
     lambda r: r["ckdb"] / r["SqliteSaver"], lambda x: x >= 2),
    ("latest + load", "ckdb ≤ 0.7x SqliteSaver get_tuple",
     lambda r: r["ckdb"] / r["SqliteSaver"], lambda x: x <= 0.7),
    ("list 100", "SqliteSaver / ckdb ≥ 10",
     lambda r: r["SqliteSaver"] / r["ckdb"], lambda x: x >= 10),
    ("prune", "SQL / ckdb ≥ 20",
     lambda r: r["SqliteSaver"] / r["ckdb"], lambda x: x >= 20),
    ("store size", "ckdb ≤ 0.5x SqliteSaver",
     lambda r: r["ckdb"] / r["SqliteSaver"], lambda x: x <= 0.5),
    ("re-checkpoint", "≤ 0.3 s", lambda r: r["ckdb"], lambda x: x <= 0.3),
    ("peak RssAnon", "≤ 150 MiB (goal: 1 GiB file)",
     lambda r: r["ckdb"], lambda x: x <= 150),
]  # fmt: skip


def machine_info() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    import cramjam  # noqa: PLC0415
    import msgpack  # noqa: PLC0415
    import ormsgpack  # noqa: PLC0415

    parts = [
        f"{os.cpu_count()} CPUs ({platform.machine()}), load average {load[0]:.2f}",
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"ckdb {ckdb.__version__}",
        f"py-lmdb {lmdb.__version__} / LMDB {'.'.join(map(str, lmdb.version()))}",
        f"SQLite {sqlite3.sqlite_version}",
        f"msgpack {'.'.join(map(str, msgpack.version))}, ormsgpack {ormsgpack.__version__}, "
        f"cramjam {getattr(cramjam, '__version__', '?')}",
    ]
    for mod in ("langgraph.checkpoint.sqlite", "diskcache"):
        try:
            m = __import__(mod, fromlist=["x"])
            from importlib.metadata import version  # noqa: PLC0415

            dist = "langgraph-checkpoint-sqlite" if "langgraph" in mod else mod
            parts.append(f"{dist} {version(dist)}")
            del m
        except Exception:  # noqa: BLE001, S110 - optional peer
            pass
    return "; ".join(parts)


def fmt(v: float | None) -> str:
    if v is None or v != v:  # noqa: PLR0124 - NaN
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def report(ctx: Ctx, elapsed: float) -> None:
    names = [c.name for c in ctx.classes]
    print(f"\n## ckdb benchmark ({'quick' if ctx.quick else 'full'} run, {elapsed:.0f} s)\n")
    print(machine_info() + "\n")
    for cls in ctx.classes:
        flag = "" if cls.durable else " **not durable**"
        print(f"- **{cls.name}**{flag}: {cls.note or 'see benchmarks/peers.py'}")
    for note in ctx.missing:
        print(f"- left out: {note}")
    print()
    print("| benchmark | " + " | ".join(names) + " | goal | ratio | met | at the floor |")
    print("|---|" + "---:|" * len(names) + "---|---:|:---:|---:|")
    for key, row in ctx.results.items():
        goal, ratio, met, at_floor = "", "", "", ""
        for prefix, text, fn, ok in GOALS:
            if key.startswith(prefix):
                try:
                    x = fn(row)
                    goal, ratio, met = text, fmt(x), ("yes" if ok(x) else "**no**")
                except KeyError:
                    goal = text + " (peer missing)"
                verdicts = []
                for floor in (c.name for c in floors.PEERS):
                    if floor not in row or "ckdb" not in row:
                        continue
                    at = {k: v for k, v in row.items() if not k.startswith("paired ratio ckdb")}
                    at["ckdb"] = row[floor]
                    if f"paired ratio {floor}/SqliteSaver" in row:
                        at["paired ratio ckdb/SqliteSaver"] = row[
                            f"paired ratio {floor}/SqliteSaver"
                        ]
                    with contextlib.suppress(KeyError):
                        y = fn(at)
                        verdicts.append(f"{floor} {fmt(y)}{'' if ok(y) else ' (blocked)'}")
                at_floor = "; ".join(verdicts)
        if "_all" in row:
            cells = [fmt(row["_all"])] + [""] * (len(names) - 1)
        else:
            cells = [fmt(row.get(n)) for n in names]
        extra = {k: v for k, v in row.items() if k not in names and k != "_all"}
        label = key + "".join(f"; {k}: {fmt(v)}" for k, v in extra.items())
        print(f"| {label} | " + " | ".join(cells) + f" | {goal} | {ratio} | {met} | {at_floor} |")
    for printer in ctx.extra:
        printer()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts, few repetitions")
    ap.add_argument("--only", default="", help=f"comma-separated sections of {list(SECTIONS)}")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    args = ap.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="ckdb-bench-") as tmp:
        ctx = Ctx(args, Path(tmp))
        for name in chosen:
            t = time.perf_counter()
            SECTIONS[name](ctx)
            log(f"[{name}: {time.perf_counter() - t:.1f} s]")
    report(ctx, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
