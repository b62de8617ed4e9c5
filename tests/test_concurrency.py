"""Concurrency: several processes on one store, many threads on one Store, readers while another
process writes, fork safety, and map growth while threads write and read.

No timing assertions (the machine is shared and noisy): only what must hold whatever the
interleaving.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lmdb import verify as lmdb_verify

import ckdb
from tests.workers.concurrent_worker import SHARED, creator_state, stream_state


def open_store(path: Any, **kwargs: Any) -> ckdb.Store:
    """``ckdb.open`` with automatic retention off: these tests count every checkpoint."""
    return ckdb.open(path, retention=None, **kwargs)


WORKER = Path(__file__).resolve().parent / "workers" / "concurrent_worker.py"
PROCESS_TIMEOUT = 120


# --- helpers -------------------------------------------------------------------------------------


def start_workers(argvs: list[list[str]]) -> list[subprocess.Popen[bytes]]:
    """Start the workers, wait until each is ready, then let them all go at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for argv in argvs
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert json.loads(line or b"null") == {"op": "ready"}, (
                p.stderr.read().decode() if p.stderr else ""  # type: ignore[union-attr]
            )
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
    except BaseException:
        for p in procs:
            p.kill()
            p.wait()
        raise
    return procs


def finish(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, err.decode(errors="replace")
    return [json.loads(line) for line in out.decode().splitlines()]


def run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``n`` threads started together; re-raise the first failure."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PROCESS_TIMEOUT)
        assert not t.is_alive(), "a thread hangs (deadlock?)"
    if errors:
        raise errors[0]


def assert_structurally_sound(path: Path) -> None:
    assert lmdb_verify.verify(str(path)) == []


def assert_chain(infos: list[ckdb.CheckpointInfo]) -> None:
    """A workflow listing (newest first, nothing deleted): sequences 1..n, each checkpoint's
    parent the one before it."""
    infos = sorted(infos, key=lambda i: i.sequence)
    assert [i.sequence for i in infos] == list(range(1, len(infos) + 1))
    assert infos[0].parent_id is None
    for prev, cur in itertools.pairwise(infos):
        assert cur.parent_id == prev.id, (prev, cur)


# --- (a) several processes -----------------------------------------------------------------------

PROCS = 4
CREATES = 200


def test_processes_create_concurrently(store_path: Path) -> None:
    open_store(store_path).close()  # created up front; racing creation is tested below
    procs = start_workers(
        [["creator", str(store_path), str(i), str(CREATES), str(1 << 20)] for i in range(PROCS)]
    )
    results = {i: finish(p)[-1]["created"] for i, p in enumerate(procs)}

    assert_structurally_sound(store_path)
    with open_store(store_path) as store:
        everything = store.list()
        assert len(everything) == PROCS * CREATES
        ids = [i.id for i in everything]
        assert len(set(ids)) == len(ids)
        by_id = {i.id: i for i in everything}
        for index, created in results.items():
            assert [c["k"] for c in created] == list(range(CREATES))
            for c in created:
                info = by_id[c["id"]]
                assert (info.workflow_id, info.sequence) == (c["wf"], c["seq"])
                assert store.load(c["id"]).state == creator_state(index, c["k"])
            # Own workflow: only this process wrote it, so sequences are 1..n in creation order.
            own = [c for c in created if c["wf"] != SHARED]
            assert [c["seq"] for c in own] == list(range(1, len(own) + 1))
            own_listed = store.list(f"own-{index}")
            assert [i.id for i in own_listed] == [c["id"] for c in reversed(own)]
            assert_chain(own_listed)
            # Shared workflow: this process's checkpoints appear in its creation order.
            shared = [c for c in created if c["wf"] == SHARED]
            seqs = [c["seq"] for c in shared]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        shared_listed = store.list(SHARED)
        assert len(shared_listed) == PROCS * CREATES // 2
        assert_chain(shared_listed)  # no duplicate or missing sequence, parents linked
        order = {c["id"]: (index, c["k"]) for index, cs in results.items() for c in cs}
        for index in range(PROCS):
            ks = [order[i.id][1] for i in reversed(shared_listed) if order[i.id][0] == index]
            assert ks == sorted(ks)
        assert sorted(store.workflows()) == sorted([SHARED, *(f"own-{i}" for i in range(PROCS))])
        assert store.stats()["checkpoints"] == PROCS * CREATES


def test_processes_race_to_create_the_store(tmp_path: Path) -> None:
    path = tmp_path / "raced.ckdb"
    procs = start_workers([["opener", str(path), str(i)] for i in range(4)])
    results = [finish(p)[-1] for p in procs]
    assert len({r["uuid"] for r in results}) == 1, "the processes ended up in different stores"
    assert {p.name for p in tmp_path.iterdir()} == {"raced.ckdb"}, "temporary directories left"
    with open_store(path) as store:
        listed = store.list("race")
        assert {i.id for i in listed} == {r["id"] for r in results}
        assert_chain(listed)


# --- (b) threads sharing one Store ---------------------------------------------------------------

THREADS = 8
ROUNDS = 40


def test_threads_share_one_store(store: ckdb.Store) -> None:
    created: dict[int, list[tuple[str, str, int]]] = {i: [] for i in range(THREADS)}
    published: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        rng = random.Random(t)
        for k in range(ROUNDS):
            wf = f"thread-{t}" if k % 2 == 0 else SHARED
            state = {
                "who": {"thread": t, "k": k},
                "pad": {"b": rng.randbytes(rng.choice([10, 3000]))},
            }
            info = store.create(wf, "p", state=state, compression=rng.choice([True, False, "lz4"]))
            assert info.workflow_id == wf
            created[t].append((wf, info.id, info.sequence))
            with lock:
                published.append((info.id, state))
                sample = rng.sample(published, min(3, len(published)))
            for cid, expected in sample:  # other threads' checkpoints, loaded concurrently
                assert store.load(cid).state == expected
            own = store.list(f"thread-{t}")
            assert [i.sequence for i in own] == sorted((i.sequence for i in own), reverse=True)
            latest = store.latest(wf)
            assert latest is not None
            assert latest.sequence >= info.sequence
            if k % 10 == 0:
                assert len(store.list()) >= len(created[t])

    run_threads(THREADS, work)

    everything = store.list()
    assert len(everything) == THREADS * ROUNDS
    assert len({i.id for i in everything}) == THREADS * ROUNDS
    for cid, expected in published:
        assert store.load(cid).state == expected
    for t, items in created.items():
        own = [seq for wf, _cid, seq in items if wf != SHARED]
        assert own == list(range(1, len(own) + 1))
        shared = [seq for wf, _cid, seq in items if wf == SHARED]
        assert shared == sorted(shared)
        assert_chain(store.list(f"thread-{t}"))
    assert_chain(store.list(SHARED))


# --- (c) readers in one process while another writes ---------------------------------------------

STREAM = 120
STREAM_SIZE = 40_000  # incompressible: the writer's 1 MiB map has to grow


def test_readers_while_another_process_writes(store_path: Path) -> None:
    reader = open_store(store_path, map_size=1 << 20)
    try:
        (proc,) = start_workers(
            [["stream", str(store_path), str(STREAM), str(STREAM_SIZE), str(1 << 20)]]
        )
        seen: dict[int, list[int]] = {}
        failures: list[BaseException] = []

        def read(t: int) -> None:
            rng = random.Random(t)
            highest = 0
            seen[t] = []
            while True:
                finished = proc.poll() is not None
                listed = reader.list("stream")
                seqs = [i.sequence for i in listed]
                # A snapshot: every committed checkpoint, none half-written, none missing.
                assert seqs == list(range(len(seqs), 0, -1))
                assert len(seqs) >= highest, "a reader went back in time"
                highest = len(seqs)
                seen[t].append(highest)
                for info in [*listed[:1], *rng.sample(listed, min(2, len(listed)))]:
                    ck = reader.load(info.id)
                    k = ck.state["k"]["k"]
                    assert info.sequence == k + 1
                    assert ck.state == stream_state(k, STREAM_SIZE)
                latest = reader.latest("stream")
                if listed:
                    assert latest is not None
                    assert latest.sequence >= highest
                if finished:
                    return

        def guarded(t: int) -> None:
            try:
                read(t)
            except BaseException as err:
                failures.append(err)
                raise

        try:
            run_threads(3, guarded)
        finally:
            if failures and proc.poll() is None:
                proc.kill()
        lines = finish(proc)
        acks = [x for x in lines if x["op"] == "create"]
        assert [x["seq"] for x in acks] == list(range(1, STREAM + 1))
        assert all(s[-1] == STREAM for s in seen.values())
        for x in acks:
            assert reader.load(x["id"]).state == stream_state(x["k"], STREAM_SIZE)
    finally:
        reader.close()
    assert_structurally_sound(store_path)


# --- (d) fork and double open --------------------------------------------------------------------


def _in_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child; return its exit code (the child never returns here)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            code = body()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_store_in_forked_child_is_closed(store: ckdb.Store) -> None:
    info = store.create("wf", "p", state={"x": 1})
    calls: list[Callable[[], object]] = [
        lambda: store.create("wf", "child", state={"x": 2}),
        lambda: store.load(info.id),
        store.list,
        lambda: store.list("wf"),
        lambda: store.latest("wf"),
        lambda: store.get_info(info.id),
        lambda: store.delete(info.id),
        lambda: store.pin(info.id),
        store.workflows,
    ]

    def child() -> int:
        for n, call in enumerate(calls, start=1):
            try:
                call()
            except ckdb.StoreClosed:
                continue
            except BaseException:
                return 100 + n  # raised something else
            return n  # returned normally
        store.close()  # allowed: must not touch the parent's environment
        return 0

    assert _in_child(child) == 0
    # The parent's store is unaffected by the child.
    assert store.load(info.id).state == {"x": 1}
    second = store.create("wf", "p2", state={"x": 3})
    assert [i.id for i in store.list("wf")] == [second.id, info.id]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("close_first", [True, False], ids=["closed", "not-closed"])
def test_forked_child_can_open_the_store_again(
    store: ckdb.Store, store_path: Path, close_first: bool
) -> None:
    """StoreClosed tells the child to "open it again in the child": that must work, whether or not
    the child closed the inherited Store first (a forked worker often cannot reach it)."""
    info = store.create("wf", "p", state={"x": 1})

    def child() -> int:
        if close_first:
            store.close()
        with open_store(store_path) as again:
            if again.load(info.id).state != {"x": 1}:
                return 2
            again.create("wf", "from-child", state={"x": 2})
        return 0

    assert _in_child(child) == 0
    listed = store.list("wf")
    assert [i.phase for i in listed] == ["from-child", "p"]
    assert store.load(listed[0].id).state == {"x": 2}


def test_second_open_in_one_process_is_locked(store: ckdb.Store, store_path: Path) -> None:
    info = store.create("wf", "p", state={"x": 1})
    with pytest.raises(ckdb.StoreLocked):
        open_store(store_path)
    with pytest.raises(ckdb.StoreLocked):
        open_store(store_path, readonly=True)
    # Another spelling of the same directory is the same store.
    with pytest.raises(ckdb.StoreLocked):
        open_store(store_path.parent / "." / store_path.name)
    link = store_path.parent / "link.ckdb"
    link.symlink_to(store_path, target_is_directory=True)
    with pytest.raises(ckdb.StoreLocked):
        open_store(link)
    # The refused opens did not disturb the open store...
    assert store.load(info.id).state == {"x": 1}
    store.create("wf", "p2", state={"x": 2})
    # ...and once it is closed, the path opens again.
    store.close()
    with pytest.raises(ckdb.StoreClosed):
        store.load(info.id)
    with open_store(link) as again:
        assert again.load(info.id).state == {"x": 1}
        assert len(again.list("wf")) == 2


# --- (e) map growth under concurrency ------------------------------------------------------------

GROW_WRITERS = 4
GROW_CREATES = 36  # x 1 MiB incompressible: the map must grow past 1 -> ~65 -> ~130 MiB


def test_map_grows_while_threads_write_and_read(store_path: Path) -> None:
    with open_store(store_path, map_size=1 << 20) as store:
        start_map = store.stats()["map_size"]
        maps = {start_map}
        published: list[tuple[str, int, int]] = []
        lock = threading.Lock()
        writing = threading.Event()
        writing.set()

        def state(seed: int, size: int) -> dict[str, Any]:
            return {"data": {"seed": seed, "blob": random.Random(seed).randbytes(size)}}

        def writer(t: int) -> None:
            rng = random.Random(t)
            for k in range(GROW_CREATES):
                size = (1 << 20) if k % 3 else rng.randrange(10, 20_000)
                seed = t * 1000 + k
                info = store.create(f"grow-{t}", "p", state=state(seed, size))
                assert info.sequence == k + 1
                with lock:
                    published.append((info.id, seed, size))
                    maps.add(store.stats()["map_size"])

        def reader(t: int) -> None:
            rng = random.Random(100 + t)
            while writing.is_set():
                with lock:
                    sample = rng.sample(published, min(2, len(published)))
                for cid, seed, size in sample:
                    assert store.load(cid).state == state(seed, size)
                store.list()

        def work(i: int) -> None:
            if i < GROW_WRITERS:
                try:
                    writer(i)
                finally:
                    with lock:
                        done.append(i)
                        if len(done) == GROW_WRITERS:
                            writing.clear()
            else:
                reader(i)

        done: list[int] = []
        try:
            run_threads(GROW_WRITERS + 2, work)
        finally:
            writing.clear()

        grown = sorted(maps)
        assert len(grown) >= 3, f"the map grew fewer times than intended: {grown}"
        assert len(published) == GROW_WRITERS * GROW_CREATES
        for cid, seed, size in published:
            assert store.load(cid).state == state(seed, size)
        for t in range(GROW_WRITERS):
            assert_chain(store.list(f"grow-{t}"))
    assert_structurally_sound(store_path)
    with open_store(store_path, map_size=1 << 20) as again:  # reopens with a too-small map
        assert len(again.list()) == GROW_WRITERS * GROW_CREATES
        cid, seed, size = published[-1]
        assert again.load(cid).state == state(seed, size)
        again.create("grow-0", "after", state={"x": 1})


def test_group_commit_leader_returns_under_sustained_load(store_path: Path) -> None:
    """Liveness of the group-commit handoff: a thread that leads a transaction while other
    writers queue up behind it returns once its own write is durable, while they are still
    writing, and everyone's writes complete. (The handoff guarantees this even when more writers
    are queued than a batch holds; with six writers in one batch the earlier drain-the-queue
    leader also returned, so this guards the handoff against hangs rather than reproducing
    starvation.) The generous bounds only catch a hang."""
    import threading

    with ckdb.open(store_path, retention=None) as store:
        inside = threading.Event()
        release = threading.Event()
        stop = threading.Event()
        errors: list[BaseException] = []

        def slow(txn: Any) -> str:
            inside.set()
            release.wait(60)
            return "mine"

        result: list[str] = []
        leader = threading.Thread(target=lambda: result.append(store._env.write(slow)))
        leader.start()
        assert inside.wait(60)  # the thread is now the leader, inside its transaction

        def hammer(n: int) -> None:
            try:
                while not stop.is_set():
                    store.create(f"busy-{n}", "p", state={"n": {"v": n}})
            except BaseException as err:  # noqa: BLE001 - reported by the assertion below
                errors.append(err)

        busy = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in range(6)]
        for t in busy:
            t.start()
        while len(store._env._queue) < 3:  # other writers are queued behind the leader
            threading.Event().wait(0.001)
        release.set()
        leader.join(timeout=60)
        returned_while_busy = not leader.is_alive()
        stop.set()
        for t in busy:
            t.join(timeout=120)
        leader.join(timeout=60)
        assert returned_while_busy, "the leader kept serving others and never returned"
        assert result == ["mine"]
        assert not errors
        assert all(not t.is_alive() for t in busy)
