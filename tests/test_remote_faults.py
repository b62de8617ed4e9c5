"""The remote protocol under faults (on the in-memory twin, wrapped): requests that fail, PUTs
that happen but lose their answer, a zombie that keeps shipping after a take-over, and objects
that are forged, truncated, swapped or deleted in the bucket. After each: every checkpoint that
``sync_remote`` acknowledged is restorable elsewhere with its exact state; the history has no
gap, duplicate or fork; a forged object is an error, never data."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ckdb
from ckdb.errors import Fenced, RemoteError
from ckdb.remote import Remote, shipper
from ckdb.remote.format import log_key
from ckdb.remote.objects import MemoryObjects
from tests.remote_helpers import Backends, Faulty

WF = "wf"


def state(i: int) -> dict[str, Any]:
    return {"progress": {"step": i}, "notes": {"text": f"step {i} " * (i % 5 + 1)}}


def verify_elsewhere(tmp: Path, url: str, key: bytes, acked: dict[str, int]) -> ckdb.Store:
    """Take the workflow over on a fresh host and check every acknowledged checkpoint."""
    check = ckdb.check_remote(Remote(url, key=key), deep=True)
    assert check.ok, check.problems
    host = ckdb.open(tmp / f"verify-{time.monotonic_ns()}.ckdb", key=key, retention=None,
                     remote=Remote(url, interval=0.05))  # fmt: skip
    report = host.take_over(WF)
    assert report.ok, report.problems
    infos = host.list(WF)
    seqs = [i.sequence for i in infos]
    assert seqs == sorted(set(seqs), reverse=True)  # no duplicate
    ids = {i.id for i in infos}
    for cid, step in acked.items():
        assert cid in ids, f"acknowledged {cid} (step {step}) is missing"
        assert host.load(cid).state == state(step)
    return host


@settings(max_examples=30)
@given(
    seed=st.integers(0, 2**32), fail=st.sampled_from([0.1, 0.3]), lose=st.sampled_from([0.1, 0.4])
)
def test_failures_and_lost_answers_never_lose_or_duplicate(
    tmp_path_factory: pytest.TempPathFactory, seed: int, fail: float, lose: float
) -> None:
    tmp = tmp_path_factory.mktemp("faults")
    url = f"memory://faults-{seed}-{time.monotonic_ns()}"
    key = b"k" * 32
    faulty = Faulty(MemoryObjects(url[9:]), fail=fail, lose=lose, seed=seed)
    faulty.enabled = False  # the first contact and the self-test work
    acked: dict[str, int] = {}
    # The shipper's retry backoff (0.5 s doubling to 30 s) shortened: the same faults and
    # retries, without sleeping most of two minutes between them.
    with mock.patch.multiple(shipper, BACKOFF_MIN=0.01, BACKOFF_MAX=0.05), \
            ckdb.open(tmp / "a.ckdb", key=key, retention=None,
                      remote=Remote(url, objects=faulty, interval=0.01)) as a:  # fmt: skip
        faulty.enabled = True
        faulty.script = ["lose", "fail", "lose"]  # at least these, whatever the dice say
        step = 0
        for _round in range(4):
            made = {}
            for _ in range(3):
                made[a.create(WF, f"s{step}", state=state(step)).id] = step
                step += 1
            try:
                report = a.sync_remote(timeout=20)
            except RemoteError:
                continue  # not acknowledged: nothing is promised for these
            assert report.ok
            acked.update(made)
        faulty.enabled = False
        assert a.sync_remote(timeout=20).ok  # and eventually everything ships
    assert faulty.faults > 0
    verify_elsewhere(tmp, url, key, acked).close()
    MemoryObjects.forget(url[9:])


def test_a_zombie_that_keeps_shipping_is_fenced(
    twin: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    a = ckdb.open(tmp_path / "a.ckdb", key=fleet_key, retention=None, remote=twin.remote())
    stop = threading.Event()
    errors: list[BaseException] = []
    made: list[str] = []

    def zombie() -> None:
        i = 0
        while not stop.is_set():
            try:
                made.append(a.create(WF, f"z{i}", state=state(i)).id)
            except Fenced:
                return
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)
                return
            i += 1
            time.sleep(0.005)

    a.create(WF, "first", state=state(0))
    assert a.sync_remote(timeout=20).ok
    thread = threading.Thread(target=zombie)
    thread.start()
    time.sleep(0.2)
    with ckdb.open(tmp_path / "b.ckdb", key=fleet_key, retention=None, remote=twin.remote()) as b:
        report = b.take_over(WF)
        b.create(WF, "b-owns", state=state(99))
        assert b.sync_remote(timeout=20).ok
        thread.join(20)
        stop.set()
        assert not thread.is_alive() and not errors
        with pytest.raises(Fenced):
            a.create(WF, "after", state=state(1))
        a.close()
        # B's history: what A shipped before the fence (maybe some late segments), then B's.
        infos = b.list(WF)
        assert infos[0].phase == "b-owns"
        assert all(i.phase.startswith(("z", "first", "b-owns")) for i in infos)
        seqs = [i.sequence for i in infos]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
        assert report.epoch == 2
    check = ckdb.check_remote(twin.remote(key=fleet_key), deep=True)
    assert check.ok, check.problems


def _three_segments(twin: Backends, tmp: Path, key: bytes) -> tuple[list[str], str]:
    ids = []
    with ckdb.open(tmp / "a.ckdb", key=key, retention=None, remote=twin.remote()) as a:
        for i in range(3):
            ids.append(a.create(WF, f"s{i}", state=state(i)).id)
            assert a.sync_remote(timeout=20).ok  # one segment each
        wk = a._shipper.link.keys.wk(WF)  # type: ignore[union-attr]
    return ids, wk


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap", "forge"])
def test_damaged_segment_ends_the_history_before_it(
    twin: Backends, tmp_path: Path, fleet_key: bytes, damage: str
) -> None:
    ids, wk = _three_segments(twin, tmp_path, fleet_key)
    objects = twin.objects()
    key2 = log_key(wk, 2)
    data = objects.get(key2)
    assert data is not None
    if damage == "flip":
        bad = bytearray(data)
        bad[len(bad) // 2] ^= 1
        new = bytes(bad)
    elif damage == "truncate":
        new = data[: len(data) // 2]
    elif damage == "swap":  # a valid frame from another slot
        new = objects.get(log_key(wk, 3)) or b""
    else:  # forged: a frame under another remote's keys
        other = Backends("memory", tmp_path / "other")
        with ckdb.open(tmp_path / "o.ckdb", key=b"o" * 32, remote=other.remote()) as o:
            o.create(WF, "forged", state=state(7))
            assert o.sync_remote(timeout=20).ok
            new = other.objects().get(log_key(o._shipper.link.keys.wk(WF), 1)) or b""  # type: ignore[union-attr]
        other.close()
    objects.put(key2, new)
    check = ckdb.check_remote(twin.remote(key=fleet_key))
    assert not check.ok and any(key2 in p for p in check.problems)
    with ckdb.open(tmp_path / "b.ckdb", key=fleet_key, retention=None, remote=twin.remote()) as b:
        report = b.pull(WF)
        assert not report.ok and any(key2 in p for p in report.problems)
        assert [i.id for i in b.list(WF)] == [ids[0]]  # nothing from or after the damage
        assert b.restore_latest(WF, restore_files=False).checkpoint.state == state(0)


def test_deleted_tail_and_deleted_middle(twin: Backends, tmp_path: Path, fleet_key: bytes) -> None:
    ids, wk = _three_segments(twin, tmp_path, fleet_key)
    objects = twin.objects()
    objects.delete([log_key(wk, 2)])  # a hole: 3 is unreachable
    check = ckdb.check_remote(twin.remote(key=fleet_key))
    assert any("not reachable" in p for p in check.problems)
    with ckdb.open(tmp_path / "b.ckdb", key=fleet_key, retention=None, remote=twin.remote()) as b:
        b.pull(WF)
        assert [i.id for i in b.list(WF)] == [ids[0]]
    # A deleted tail (the documented limit): indistinguishable from a shorter history.
    objects.delete([log_key(wk, 3)])
    assert ckdb.check_remote(twin.remote(key=fleet_key)).ok


def test_blob_damage_is_an_error_never_data(
    twin: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    with ckdb.open(tmp_path / "a.ckdb", key=fleet_key, retention=None, remote=twin.remote()) as a:
        # Incompressible, so its compressed body is over BLOB_FROM and travels as a blob.
        a.create(WF, "big", state={"blob": os.urandom(300_000).hex()})
        assert a.sync_remote(timeout=20).ok
    objects = twin.objects()
    blob = next(i.key for i in objects.list("wf/") if "/blob/" in i.key)
    data = bytearray(objects.get(blob) or b"")
    data[40] ^= 1
    objects.put(blob, bytes(data))
    assert not ckdb.check_remote(twin.remote(key=fleet_key), deep=True).ok
    with ckdb.open(tmp_path / "b.ckdb", key=fleet_key, retention=None, remote=twin.remote()) as b:
        with pytest.raises(ckdb.IntegrityError, match="blob"):
            b.take_over(WF)
        assert b.list(WF) == []  # nothing imported


def test_a_cursor_behind_the_remote_is_caught_up_before_a_delete_is_settled(
    twin: Backends, tmp_path: Path, fleet_key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment PUT lands, then the process dies before its cursor commit (here: the commit
    fails), and the checkpoint is deleted locally before the next ship. The remote lists it; the
    next ship must catch the cursor up and ship the delete, not drop the tombstone as "never
    shipped". (Found by the power-loss rounds with a remote attached.)"""
    from ckdb.errors import StorageError
    from ckdb.remote.shipper import Shipper

    real = Shipper._commit
    pending: list[Any] = []

    def dies_once(self: Shipper, *args: Any) -> None:
        if pending:
            pending.pop()()  # meanwhile, the agent deletes the checkpoint
            raise StorageError("injected: the process died before the cursor commit")
        real(self, *args)

    monkeypatch.setattr(Shipper, "_commit", dies_once)
    with ckdb.open(tmp_path / "a.ckdb", key=fleet_key, retention=None,
                   remote=twin.remote()) as a:  # fmt: skip
        first = a.create(WF, "first", state=state(0)).id
        pending.append(lambda: a.delete(first))
        assert a.sync_remote(timeout=20).ok
        assert not pending, "the injected failure did not happen"
        assert a.list(WF) == []
        last = a.create(WF, "last", state=state(2)).id
        assert a.sync_remote(timeout=20).ok
    with ckdb.open(tmp_path / "b.ckdb", key=fleet_key, retention=None,
                   remote=twin.remote()) as b:  # fmt: skip
        b.pull(WF)
        assert [i.id for i in b.list(WF)] == [last]  # "first" was deleted remotely too
    assert ckdb.check_remote(twin.remote(key=fleet_key), deep=True).ok
