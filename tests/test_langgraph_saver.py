"""CkdbSaver beyond the conformance suite: per-channel blobs, frames, no pickle, retention,
persistence, encrypted keys, async off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.base")

from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

import ckdb
from ckdb.integrations import _langgraph_pending
from ckdb.integrations.langgraph import CkdbSaver
from ckdb.retention import RetentionPolicy
from ckdb.tables import langgraph_values
from ckdb.tables.langgraph_layout import DB_BLOBS, DB_CHECKPOINTS, DB_RUNS, DB_WRITES


def _cfg(tid: str, ns: str = "", cid: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": tid, "checkpoint_ns": ns}
    if cid:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def _chain(saver: CkdbSaver, tid: str, n: int, ns: str = "", **md: Any) -> list[Any]:
    """n checkpoints; channel "big" set once, "count" changes every step."""
    out, parent = [], None
    versions: dict[str, Any] = {}
    for i in range(n):
        new = {"count": saver.get_next_version(versions.get("count"), None)}
        if i == 0:
            new["big"] = saver.get_next_version(None, None)
        versions.update(new)
        cp = generate_checkpoint(
            channel_values={"big": "x" * 5000, "count": i}, channel_versions=dict(versions)
        )
        parent = saver.put(_cfg(tid, ns, parent), cp, generate_metadata(step=i, **md), new)
        parent = parent["configurable"]["checkpoint_id"]
        out.append(parent)
    return out


def _count(store: ckdb.Store, db: bytes) -> int:
    with store._env.read() as txn:
        return sum(1 for _ in txn.range(db))


@pytest.fixture
def saver(store: ckdb.Store) -> CkdbSaver:
    return CkdbSaver(store)


def test_one_blob_per_changed_channel(saver: CkdbSaver, store: ckdb.Store) -> None:
    ids = _chain(saver, "t", 5)
    # "big" once, "count" five times: unchanged channels are not rewritten
    assert _count(store, DB_BLOBS) == 6
    for i, cid in enumerate(ids):
        tup = saver.get_tuple(_cfg("t", cid=cid))
        assert tup is not None
        assert tup.checkpoint["channel_values"] == {"big": "x" * 5000, "count": i}


def test_tampered_frame_is_an_error_not_data(saver: CkdbSaver, store: ckdb.Store) -> None:
    _chain(saver, "t", 2)
    for db in (DB_BLOBS, DB_CHECKPOINTS):
        with store._env.read() as txn:
            key, value = next(txn.range(db))
        bad = bytearray(value)
        bad[20] ^= 0x01

        def put(txn: Any, db: bytes = db, key: bytes = key, value: bytes = bytes(bad)) -> None:
            txn.put(db, key, value)

        store._env.write(put)
        with pytest.raises(ckdb.IntegrityError):
            saver.get_tuple(_cfg("t", cid=_cid_of(saver, key, db)))
        store._env.write(lambda txn, db=db, key=key, value=value: txn.put(db, key, value))


def _cid_of(saver: CkdbSaver, key: bytes, db: bytes) -> str | None:
    if db == DB_CHECKPOINTS:
        from ckdb.tables.langgraph_layout import split_checkpoint_key

        return split_checkpoint_key(key)[2]
    return None  # the blob belongs to the first checkpoint's "big": the newest reads it too


def test_pickle_refused(store: ckdb.Store) -> None:
    with pytest.raises(ckdb.InvalidInput):
        CkdbSaver(store, serde=JsonPlusSerializer(pickle_fallback=True))
    saver = CkdbSaver(store)
    assert not getattr(saver.serde, "pickle_fallback", False)

    class Opaque:
        pass

    cp = generate_checkpoint(channel_values={"o": Opaque()}, channel_versions={"o": 1})
    with pytest.raises(Exception):  # noqa: B017 - serde's own error: not storable without pickle
        saver.put(_cfg("t"), cp, generate_metadata(), {"o": 1})
    assert _count(store, DB_CHECKPOINTS) == 0


def test_persists_across_reopen(store_path: Path) -> None:
    with ckdb.open(store_path, retention=None) as store:
        saver = CkdbSaver(store)
        ids = _chain(saver, "t", 3)
        saver.put_writes(_cfg("t", cid=ids[-1]), [("ch", {"v": 1})], "task-1", "a:b")
    with ckdb.open(store_path, retention=None) as store:
        tup = CkdbSaver(store).get_tuple(_cfg("t"))
        assert tup is not None
        assert tup.config["configurable"]["checkpoint_id"] == ids[-1]
        assert tup.parent_config is not None
        assert tup.parent_config["configurable"]["checkpoint_id"] == ids[-2]
        assert tup.pending_writes == [("task-1", "ch", {"v": 1})]


def test_no_retention_unless_set(store_path: Path) -> None:
    # even a store opened with ckdb's default ("standard") retention keeps every LangGraph
    # checkpoint: ckdb policies apply to the saver only when the user sets one on it
    with ckdb.open(store_path) as store:
        saver = CkdbSaver(store)
        _chain(saver, "t", 15)
        store.prune()
        assert len(list(saver.list(_cfg("t")))) == 15
        assert saver.get_retention("t") is None


def test_thread_retention_keeps_resume_point(saver: CkdbSaver, store: ckdb.Store) -> None:
    saver.set_retention("t", "minimal")  # 3 checkpoints, 7 days
    ids = _chain(saver, "t", 8)
    child = _chain(saver, "t", 5, ns="child:1")
    other = _chain(saver, "u", 6)  # no policy: untouched
    assert [t.checkpoint["id"] for t in saver.list(_cfg("t", ""))] == ids[::-1][:3]
    assert [t.checkpoint["id"] for t in saver.list(_cfg("t", "child:1"))] == child[::-1][:3]
    assert len(list(saver.list(_cfg("u")))) == len(other)
    # blobs of deleted checkpoints are collected; the kept ones still read in full
    tup = saver.get_tuple(_cfg("t"))
    assert tup is not None
    assert tup.checkpoint["channel_values"] == {"big": "x" * 5000, "count": 7}

    # an aggressive policy still never deletes the newest checkpoint of each namespace
    res = saver.apply_retention("t", RetentionPolicy(max_checkpoints=0, max_age=0))
    assert sorted(res.deleted) == sorted(ids[-3:-1] + child[-3:-1])
    assert [t.checkpoint["id"] for t in saver.list(_cfg("t", ""))] == [ids[-1]]
    assert [t.checkpoint["id"] for t in saver.list(_cfg("t", "child:1"))] == [child[-1]]
    saver.set_retention("t", None)
    assert saver.get_retention("t") is None


def test_saver_default_retention_and_dry_run(store: ckdb.Store) -> None:
    saver = CkdbSaver(store, retention=RetentionPolicy(max_checkpoints=2))
    saver.set_retention("keep-all", None)
    _chain(saver, "t", 5)
    _chain(saver, "keep-all", 5)
    assert len(list(saver.list(_cfg("t")))) == 2
    assert len(list(saver.list(_cfg("keep-all")))) == 5
    dry = saver.apply_retention(policy="minimal", dry_run=True)
    assert dry.dry_run
    assert len(dry.planned) == 2
    assert len(list(saver.list(_cfg("keep-all")))) == 5


def test_delete_and_copy_leave_no_orphans(saver: CkdbSaver, store: ckdb.Store) -> None:
    ids = _chain(saver, "t", 4, run_id="r1")
    saver.put_writes(_cfg("t", cid=ids[-1]), [("ch", 1)], "task")
    saver.copy_thread("t", "t2")
    assert [x.checkpoint["id"] for x in saver.list(_cfg("t2"))] == ids[::-1]
    assert _count(store, DB_RUNS) == 8
    saver.delete_for_runs(["r1"])
    for db in (DB_CHECKPOINTS, DB_BLOBS, DB_WRITES, DB_RUNS):
        assert _count(store, db) == 0, db


def test_writes_for_a_checkpoint_retention_deleted_are_dropped(store: ckdb.Store) -> None:
    """A task finishing after retention removed its checkpoint must not leave writes that
    nothing reads and only delete_thread would remove (first-session known gap)."""
    saver = CkdbSaver(store, retention=RetentionPolicy(max_checkpoints=1))
    first, second = _chain(saver, "t", 2)  # the second put deleted the first
    assert [t.checkpoint["id"] for t in saver.list(_cfg("t"))] == [second]
    saver.put_writes(_cfg("t", cid=first), [("ch", 1)], "late-task")
    assert _count(store, DB_WRITES) == 0
    saver.put_writes(_cfg("t", cid=second), [("ch", 2)], "task")
    tup = saver.get_tuple(_cfg("t"))
    assert tup is not None and [w[1:] for w in tup.pending_writes] == [("ch", 2)]


def test_writes_for_a_checkpoint_not_stored_yet_are_kept(store: ckdb.Store) -> None:
    """LangGraph's default ("async") durability saves a checkpoint in the background while
    its tasks run: their put_writes can commit before that checkpoint's put. Found in
    review: the writes were dropped as if retention had deleted their checkpoint."""
    saver = CkdbSaver(store)
    (first,) = _chain(saver, "t", 1)
    cp = generate_checkpoint(channel_values={"count": 1}, channel_versions={"count": "2"})
    assert cp["id"] > first  # newer than every stored checkpoint: its put is coming
    saver.put_writes(_cfg("t", cid=cp["id"]), [("ch", 1)], "early-task")
    saver.put_writes(_cfg("t", cid=cp["id"]), [("__interrupt__", "question?")], "asking-task")
    assert _count(store, DB_WRITES) == 2
    saver.put(_cfg("t", cid=first), cp, generate_metadata(step=1), {"count": "2"})
    tup = saver.get_tuple(_cfg("t"))
    assert tup is not None and tup.checkpoint["id"] == cp["id"]
    assert sorted(w[1:] for w in tup.pending_writes) == [
        ("__interrupt__", "question?"),
        ("ch", 1),
    ]


def test_prune_keep_latest_collects_blobs(saver: CkdbSaver, store: ckdb.Store) -> None:
    _chain(saver, "t", 6)
    saver.prune(["t"])
    assert _count(store, DB_CHECKPOINTS) == 1
    assert _count(store, DB_BLOBS) == 2  # the survivor's "big" and "count"
    with pytest.raises(ckdb.InvalidInput):
        saver.prune(["t"], strategy="keep_some")


def test_encrypted_store_keys_hold_no_names(tmp_path: Path) -> None:
    with ckdb.open(tmp_path / "enc", retention=None, encryption="aes-gcm") as store:
        saver = CkdbSaver(store)
        _chain(saver, "secret-thread", 2, ns="secret-ns")
        saver.put_writes(_cfg("secret-thread", "secret-ns", "x"), [("secret-ch", 1)], "t")
        with store._env.read() as txn:
            for db in (DB_CHECKPOINTS, DB_BLOBS, DB_WRITES):
                for key, value in txn.range(db):
                    assert b"secret" not in key and b"secret" not in value
        (tup,) = list(saver.list(None, limit=1))
        assert tup.config["configurable"]["thread_id"] == "secret-thread"
        assert tup.config["configurable"]["checkpoint_ns"] == "secret-ns"


def test_overlong_key_is_invalid_input(saver: CkdbSaver) -> None:
    cp = generate_checkpoint()
    with pytest.raises(ckdb.InvalidInput):
        saver.put(_cfg("t" * 600), cp, generate_metadata(), {})


def test_async_runs_off_the_event_loop(saver: CkdbSaver, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_put = saver.put

    def spy(*a: Any, **k: Any) -> Any:
        seen.append(threading.get_ident())
        return real_put(*a, **k)

    monkeypatch.setattr(saver, "put", spy)

    async def main() -> None:
        cp = generate_checkpoint()
        await saver.aput(_cfg("t"), cp, generate_metadata(), {})
        listed = [t async for t in saver.alist(_cfg("t"))]
        assert listed[0].checkpoint["id"] == cp["id"]
        await saver.aprune(["t"], strategy="delete")
        assert await saver.aget_tuple(_cfg("t")) is None

    asyncio.run(main())
    assert seen and threading.get_ident() not in seen


def test_list_across_threads_and_filters(saver: CkdbSaver) -> None:
    a = _chain(saver, "a", 3, run_id="ra")
    b = _chain(saver, "b", 2, run_id="rb")
    everything = [t.checkpoint["id"] for t in saver.list(None)]
    assert sorted(everything, reverse=True) == everything
    assert set(everything) == set(a + b)
    assert [t.checkpoint["id"] for t in saver.list(None, filter={"run_id": "rb"})] == b[::-1]
    got = [t.checkpoint["id"] for t in saver.list(_cfg("a"), before=_cfg("a", cid=a[2]), limit=1)]
    assert got == [a[1]]


class _Commits:
    """Counts the durable commits a saver makes (its store's ``Env.write`` calls)."""

    def __init__(self, saver: CkdbSaver, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        real = saver._env.write

        def counted(fn: Any, **kw: Any) -> Any:
            self.n += 1
            return real(fn, **kw)

        monkeypatch.setattr(saver._env, "write", counted)


@pytest.fixture
def held(store: ckdb.Store, monkeypatch: pytest.MonkeyPatch) -> tuple[CkdbSaver, str, _Commits]:
    """A "with_checkpoint" saver with one checkpoint, and a count of its commits from then."""
    saver = CkdbSaver(store, pending_writes="with_checkpoint")
    (first,) = _chain(saver, "t", 1)
    return saver, first, _Commits(saver, monkeypatch)


def test_with_checkpoint_writes_commit_with_the_next_put(
    store: ckdb.Store, held: tuple[CkdbSaver, str, _Commits]
) -> None:
    saver, first, commits = held
    saver.put_writes(_cfg("t", cid=first), [("a", 1)], "task-1")
    saver.put_writes(_cfg("t", cid=first), [("b", 2)], "task-2")
    assert (commits.n, _count(store, DB_WRITES)) == (0, 0)  # held, nothing committed
    _chain_from = saver.put(
        _cfg("t", cid=first),
        generate_checkpoint(channel_values={"count": 1}, channel_versions={"count": "2"}),
        generate_metadata(step=1),
        {"count": "2"},
    )
    assert (commits.n, _count(store, DB_WRITES)) == (1, 2)  # one commit: both writes + the put
    tup = saver.get_tuple(_cfg("t", cid=first))
    assert tup is not None and sorted(w[1:] for w in tup.pending_writes) == [("a", 1), ("b", 2)]
    assert _chain_from["configurable"]["checkpoint_id"] != first


def test_with_checkpoint_reads_and_special_writes_commit_what_is_held(
    store: ckdb.Store, held: tuple[CkdbSaver, str, _Commits]
) -> None:
    saver, first, commits = held
    saver.put_writes(_cfg("t", cid=first), [("a", 1)], "task-1")
    tup = saver.get_tuple(_cfg("t"))  # a read sees what was held: it commits it first
    assert tup is not None and [w[1:] for w in tup.pending_writes] == [("a", 1)]
    assert commits.n == 1
    saver.put_writes(_cfg("t", cid=first), [("b", 2)], "task-2")
    # An interrupt is never held: it commits at once, with the regular write held before it.
    saver.put_writes(_cfg("t", cid=first), [("__interrupt__", "ask")], "task-3")
    assert (commits.n, _count(store, DB_WRITES)) == (2, 3)
    saver.flush()
    assert commits.n == 2  # nothing held: no commit


def test_with_checkpoint_writes_are_held_again_when_the_commit_fails(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = CkdbSaver(store, pending_writes="with_checkpoint")
    (first,) = _chain(saver, "t", 1)
    saver.put_writes(_cfg("t", cid=first), [("a", 1)], "task-1")
    real = saver._env.write

    def failing(fn: Any, **kw: Any) -> Any:
        raise ckdb.StorageError("disk on fire")

    monkeypatch.setattr(saver._env, "write", failing)
    with pytest.raises(ckdb.StorageError):
        saver.flush()
    monkeypatch.setattr(saver._env, "write", real)
    saver.flush()
    assert _count(store, DB_WRITES) == 1


def test_closing_the_store_commits_what_is_held(tmp_path: Path) -> None:
    """A clean shutdown loses nothing: closing the store a saver was given commits its held
    writes, and so does leaving from_path's block by an exception."""
    path = tmp_path / "s.ckdb"
    store = ckdb.open(path, retention=None)
    saver = CkdbSaver(store, pending_writes="with_checkpoint")
    (first,) = _chain(saver, "t", 1)
    saver.put_writes(_cfg("t", cid=first), [("a", 1)], "task-1")
    assert _count(store, DB_WRITES) == 0
    store.close()

    def block_that_fails() -> None:
        with CkdbSaver.from_path(path, pending_writes="with_checkpoint") as again:
            tup = again.get_tuple(_cfg("t", cid=first))
            assert tup is not None and [w[1:] for w in tup.pending_writes] == [("a", 1)]
            again.put_writes(_cfg("t", cid=first), [("b", 2)], "task-2")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        block_that_fails()
    with CkdbSaver.from_path(path) as last:
        tup = last.get_tuple(_cfg("t", cid=first))
        assert tup is not None
        assert sorted(w[1:] for w in tup.pending_writes) == [("a", 1), ("b", 2)]


def test_flush_waits_for_the_commit_another_thread_carries_its_writes_in(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread B's put takes A's held write into its commit; until that commit ends, A's read
    must wait for it, not read without the write its own put_writes returned for."""
    saver = CkdbSaver(store, pending_writes="with_checkpoint")
    (first,) = _chain(saver, "t", 1)
    saver.put_writes(_cfg("t", cid=first), [("mine", 1)], "task-1")
    real = saver._env.write
    inside, release = threading.Event(), threading.Event()

    def slow(fn: Any, **kw: Any) -> Any:
        if threading.current_thread().name == "putter":
            inside.set()
            assert release.wait(10)
        return real(fn, **kw)

    monkeypatch.setattr(saver._env, "write", slow)
    putter = threading.Thread(
        name="putter",
        target=lambda: saver.put(_cfg("u"), generate_checkpoint(), generate_metadata(step=0), {}),
    )
    putter.start()
    assert inside.wait(10)  # B has taken the held write and is committing it
    seen: list[Any] = []
    reader = threading.Thread(target=lambda: seen.append(saver.get_tuple(_cfg("t", cid=first))))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive()  # waiting for B's commit
    release.set()
    putter.join(10)
    reader.join(10)
    assert seen and seen[0] is not None
    assert [w[1:] for w in seen[0].pending_writes] == [("mine", 1)]


def test_a_put_writes_over_the_bounds_that_fails_writes_nothing(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the bounds, put_writes commits at once; if that commit fails it raises, and its
    write is not held to commit later (a raise means nothing was written)."""
    from ckdb.integrations import _langgraph_pending

    monkeypatch.setattr(_langgraph_pending, "MAX_HELD", 2)
    saver = CkdbSaver(store, pending_writes="with_checkpoint")
    (first,) = _chain(saver, "t", 1)
    saver.put_writes(_cfg("t", cid=first), [("a", 1)], "task-1")  # held
    real = saver._env.write

    def failing(fn: Any, **kw: Any) -> Any:
        raise ckdb.StorageError("disk on fire")

    monkeypatch.setattr(saver._env, "write", failing)
    with pytest.raises(ckdb.StorageError):
        saver.put_writes(_cfg("t", cid=first), [("b", 2)], "task-2")  # over the bounds
    monkeypatch.setattr(saver._env, "write", real)
    saver.flush()
    tup = saver.get_tuple(_cfg("t", cid=first))
    assert tup is not None and [w[1:] for w in tup.pending_writes] == [("a", 1)]


def test_pending_writes_mode_is_checked(store: ckdb.Store) -> None:
    with pytest.raises(ckdb.InvalidInput, match="pending_writes"):
        CkdbSaver(store, pending_writes="sometimes")


# -- durable put_writes riding in a put's commit ---------------------------------------------------


def _txnid(store: ckdb.Store) -> int:
    return store._env.info()["last_txnid"]


def _next(saver: CkdbSaver, tid: str, parent: str, step: int) -> tuple[Any, Any, Any, Any]:
    """The arguments of the put of a child of ``parent`` (one changed channel)."""
    version = saver.get_next_version(str(step), None)
    cp = generate_checkpoint(channel_values={"count": step}, channel_versions={"count": version})
    return _cfg(tid, cid=parent), cp, generate_metadata(step=step), {"count": version}


def _offer_in_thread(saver: CkdbSaver, config: Any, writes: Any) -> tuple[threading.Thread, list]:
    """put_writes in a thread of its own; returns once its offer is open (or it finished)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            saver.put_writes(config, writes, "task")
        except BaseException as err:  # reported to the test
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not saver._pending.offers._open and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0005)
    return thread, errors


def _joinable(saver: CkdbSaver, tid: str, parent: str) -> str:
    """Make the namespace joinable the way LangGraph does: a put (a real one) starts while a
    put_writes of the namespace runs. -> the id of that put's checkpoint."""
    lay = saver._layout
    with saver._pending.offers.running(lay.ns(lay.thread(tid), "")):
        args = _next(saver, tid, parent, 1)
        saver.put(*args)
    return str(args[1]["id"])


@pytest.fixture
def long_window(monkeypatch: pytest.MonkeyPatch) -> float:
    """A window no loaded machine reaches: an offer is taken, or a wait is visible."""
    monkeypatch.setattr(_langgraph_pending, "JOIN_WAIT", 30.0)
    return 30.0


def test_sequential_put_writes_commit_at_once(store: ckdb.Store, long_window: float) -> None:
    """Calls one after the other (no put running beside them) never offer: each put_writes is
    its own commit by the time it returns, without waiting for the window."""
    saver = CkdbSaver(store)
    (first,) = _chain(saver, "t", 1)
    before, t0 = _txnid(store), time.monotonic()
    for i in range(3):
        saver.put_writes(_cfg("t", cid=first), [("ch", i)], f"task-{i}")
        assert _txnid(store) == before + i + 1
    assert time.monotonic() - t0 < long_window / 3


def test_durable_put_writes_rides_in_the_put_beside_it(
    store: ckdb.Store, long_window: float
) -> None:
    saver = CkdbSaver(store)
    first = _joinable(saver, "t", _chain(saver, "t", 1)[0])
    before = _txnid(store)
    thread, errors = _offer_in_thread(saver, _cfg("t", cid=first), [("ch", "w")])
    assert len(saver._pending.offers._open) == 1 and thread.is_alive()  # waiting, not written
    assert _count(store, DB_WRITES) == 0
    saver.put(*_next(saver, "t", first, 1))
    thread.join(10)
    assert not thread.is_alive() and not errors
    assert _txnid(store) == before + 1  # the writes and the checkpoint: one commit
    tup = saver.get_tuple(_cfg("t", cid=first))
    assert tup is not None and [w[1:] for w in tup.pending_writes] == [("ch", "w")]


def test_an_offer_no_put_takes_commits_alone(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not taken within the window: the put_writes commits its writes itself, and its
    namespace stops waiting until a put is seen beside a put_writes again."""
    monkeypatch.setattr(_langgraph_pending, "JOIN_WAIT", 0.05)
    saver = CkdbSaver(store)
    first = _joinable(saver, "t", _chain(saver, "t", 1)[0])
    before = _txnid(store)
    saver.put_writes(_cfg("t", cid=first), [("ch", 1)], "task")
    assert _txnid(store) == before + 1 and _count(store, DB_WRITES) == 1
    assert not saver._pending.offers._open
    saver.put_writes(_cfg("t", cid=first), [("ch", 2)], "task-2")  # no wait now
    assert _txnid(store) == before + 2


def test_special_writes_never_wait_for_a_put(store: ckdb.Store, long_window: float) -> None:
    saver = CkdbSaver(store)
    first = _joinable(saver, "t", _chain(saver, "t", 1)[0])
    before, t0 = _txnid(store), time.monotonic()
    saver.put_writes(_cfg("t", cid=first), [("__interrupt__", "question?")], "task")
    assert _txnid(store) == before + 1
    assert time.monotonic() - t0 < long_window / 3


def test_an_offer_whose_carrier_fails_commits_alone(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch, long_window: float
) -> None:
    """The put that took the offer fails inside its transaction (nothing of it written): the
    put_writes commits its writes itself and returns normally; the put raises."""
    saver = CkdbSaver(store)
    first = _joinable(saver, "t", _chain(saver, "t", 1)[0])
    thread, errors = _offer_in_thread(saver, _cfg("t", cid=first), [("ch", "w")])
    assert len(saver._pending.offers._open) == 1

    def broken(*_a: Any) -> None:
        raise OSError("injected failure inside the put's transaction")

    monkeypatch.setattr(langgraph_values, "write", broken)
    args = _next(saver, "t", first, 1)
    with pytest.raises(OSError, match="injected"):
        saver.put(*args)
    thread.join(10)
    assert not thread.is_alive() and not errors
    assert _count(store, DB_CHECKPOINTS) == 2  # the failed put wrote nothing
    tup = saver.get_tuple(_cfg("t", cid=first))
    assert tup is not None and [w[1:] for w in tup.pending_writes] == [("ch", "w")]
