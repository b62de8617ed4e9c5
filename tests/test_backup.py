"""Backups: consistent under concurrent writes, refused onto a non-empty destination, never half
there after a SIGKILL, openable with the same key, and usable as a repair source."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ckdb
from ckdb.layout import DB_CHUNKS
from tests.test_scrub import inject

WORKER = Path(__file__).parent / "workers" / "backup_worker.py"
ROOT = Path(__file__).resolve().parents[1]


def fill(store: ckdb.Store, work: Path, n: int, size: int = 2000, wf: str = "wf") -> list[str]:
    work.mkdir(exist_ok=True)
    ids = []
    for i in range(n):
        (work / "f.bin").write_bytes(random.Random(i).randbytes(size))
        (work / "same.txt").write_text("same\n" * 100)
        ids.append(
            store.create(wf, f"p{i}", state={"i": i, "blob": os.urandom(size)}, files=work).id
        )
    return ids


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if "ckdb-backup" in p.name]


def test_backup_during_concurrent_writes(store: ckdb.Store, tmp_path: Path) -> None:
    fill(store, tmp_path / "w0", 5)
    stop = threading.Event()
    written: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        work = tmp_path / "w1"
        work.mkdir()
        i = 0
        try:
            while not stop.is_set():
                (work / "f").write_bytes(os.urandom(5000))
                written.append(store.create("busy", "x", state={"i": i}, files=work).id)
                i += 1
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 3:
            time.sleep(0.01)
        reports = [store.backup(tmp_path / f"b{k}.ckdb") for k in range(2)]
    finally:
        stop.set()
        thread.join(60)
    assert not errors
    assert not thread.is_alive()
    for report in reports:
        assert report.scrub.ok
        with ckdb.open(report.path, retention=None) as copy:
            scrub = copy.scrub()
            assert scrub.ok and scrub.findings == ()
            infos = copy.list()
            assert len(infos) == report.checkpoints >= 5 + 3
            for info in infos:
                assert copy.load(info.id).info.id == info.id  # every checkpoint whole
            # A consistent snapshot: the busy workflow's checkpoints are a prefix of the writes.
            busy = [i.id for i in reversed(copy.list("busy"))]
            assert busy == written[: len(busy)]
    assert leftovers(tmp_path) == []
    assert store.scrub().ok


def test_non_empty_destination_is_refused(store: ckdb.Store, tmp_path: Path) -> None:
    fill(store, tmp_path / "w", 2)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "precious.txt").write_text("mine")
    with pytest.raises(ckdb.InvalidInput):
        store.backup(dest)
    assert [p.name for p in dest.iterdir()] == ["precious.txt"]
    assert (dest / "precious.txt").read_text() == "mine"
    # A file as destination, and the store itself (or inside it), are refused too.
    afile = tmp_path / "afile"
    afile.write_text("x")
    for bad in (afile, store.path, store.path / "sub"):
        with pytest.raises(ckdb.InvalidInput):
            store.backup(bad)
    assert afile.read_text() == "x"
    assert not (store.path / "sub").exists()
    assert leftovers(tmp_path) == []
    # An existing empty directory is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert store.backup(empty).checkpoints == 2


def test_backup_opens_with_the_same_generated_key(store: ckdb.Store, tmp_path: Path) -> None:
    ids = fill(store, tmp_path / "w", 3)
    dest = tmp_path / "b.ckdb"
    report = store.backup(dest)
    assert report.checkpoints == 3 and report.bytes > 0
    key = dest / "key"
    assert key.read_bytes() == (store.path / "key").read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with ckdb.open(dest, retention=None) as copy:
        assert copy.uuid == store.uuid
        for cid in ids:
            assert copy.load(cid).state == store.load(cid).state


def test_backup_with_a_caller_key(tmp_path: Path) -> None:
    master = os.urandom(32)
    with ckdb.open(tmp_path / "s.ckdb", key=master, retention=None) as store:
        ids = fill(store, tmp_path / "w", 2)
        store.backup(tmp_path / "b.ckdb")
    assert not (tmp_path / "b.ckdb" / "key").exists()  # the caller keeps the key
    with pytest.raises(ckdb.WrongKey):
        ckdb.open(tmp_path / "b.ckdb")
    with pytest.raises(ckdb.WrongKey):
        ckdb.open(tmp_path / "b.ckdb", key=os.urandom(32))
    with ckdb.open(tmp_path / "b.ckdb", key=master, retention=None) as copy:
        assert [copy.load(c).state["i"] for c in ids] == [0, 1]


def test_backup_is_a_repair_source(store: ckdb.Store, tmp_path: Path) -> None:
    ids = fill(store, tmp_path / "w", 4)
    store.backup(tmp_path / "b.ckdb")
    want = {cid: store.load(cid).state for cid in ids}
    with store._env.read() as txn:
        chunks = [bytes(k) for k, _v in txn.range(DB_CHUNKS)]
    path = store.path
    store.close()
    for chunk in chunks:
        inject(path, DB_CHUNKS, chunk, "flip")
    with ckdb.open(path, retention=None) as s:
        report = s.scrub(repair=True, backup=tmp_path / "b.ckdb")
        assert report.ok and report.repaired >= 1
        assert s.scrub().findings == ()
        assert {cid: s.load(cid).state for cid in ids} == want


def test_compact_writes_a_verified_copy(store: ckdb.Store, tmp_path: Path) -> None:
    ids = fill(store, tmp_path / "w", 6, size=50_000)
    for cid in ids[:5]:
        store.delete(cid)
    report = store.compact(tmp_path / "c.ckdb")
    assert report.checkpoints == 1
    assert report.bytes < os.path.getsize(store.path / "data.mdb")
    with ckdb.open(tmp_path / "c.ckdb", retention=None) as copy:
        assert copy.scrub().findings == ()
        assert copy.load(ids[5]).state == store.load(ids[5]).state


def _kill_rounds(tmp_path: Path, rounds: int, seed: int) -> dict[str, int]:
    src = tmp_path / "src.ckdb"
    with ckdb.open(src, retention=None) as store:
        fill(store, tmp_path / "w", 24, size=150_000)  # a few MiB: copy + verify take a while
    rng = random.Random(seed)
    outcomes = {"absent": 0, "complete": 0}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for r in range(rounds):
        dest = tmp_path / f"dest{r}.ckdb"
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(src), str(dest)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its verification subprocess dies with it
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.35))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        if dest.exists():
            outcomes["complete"] += 1
            assert (dest / "data.mdb").exists()
            with ckdb.open(dest, retention=None) as copy:
                report = copy.scrub()
                assert report.ok and report.findings == ()
                assert len(copy.list()) == 24
        else:
            outcomes["absent"] += 1
        # A temporary copy may be left beside it, but it is never at the destination.
        with ckdb.open(src, retention=None) as store:
            assert store.scrub().findings == ()
    return outcomes


@pytest.mark.crash
def test_sigkill_during_backup_leaves_no_half_backup(tmp_path: Path) -> None:
    outcomes = _kill_rounds(tmp_path, rounds=6, seed=7)
    assert sum(outcomes.values()) == 6


@pytest.mark.crash
@pytest.mark.slow
def test_sigkill_during_backup_many_rounds(tmp_path: Path) -> None:
    outcomes = _kill_rounds(tmp_path, rounds=30, seed=11)
    assert sum(outcomes.values()) == 30
