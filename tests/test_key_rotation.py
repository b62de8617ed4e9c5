"""Key rotation: re-wrap under a new master key, a new data key and incremental re-tagging that
resumes after a SIGKILL; old backups still open with the old key and still repair; the generated
key file's ``key.new`` crash window."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import ckdb
from ckdb import keyrotation
from ckdb.layout import DB_CHUNKS
from tests.test_scrub import dump, inject

WORKER = Path(__file__).parent / "workers" / "rotate_worker.py"
ROOT = Path(__file__).resolve().parents[1]


def fill(store: ckdb.Store, work: Path, n: int) -> dict[str, Any]:
    work.mkdir(exist_ok=True)
    states = {}
    for i in range(n):
        (work / "f.bin").write_bytes(random.Random(i).randbytes(3000))
        (work / "same.txt").write_text("same\n" * 50)
        state = {"task": {"i": i}, "agent": {"notes": [f"n{i}.{j}" for j in range(40)]}}
        states[store.create(f"wf{i % 3}", "p", state=state, files=work).id] = state
    return states


def assert_all_verify(store: ckdb.Store, states: dict[str, Any]) -> None:
    report = store.scrub()
    assert report.ok and report.findings == (), report.findings
    for cid, state in states.items():
        assert store.load(cid).state == state


def key_ids(path: Path) -> set[int]:
    """The key ids found in every frame header of the store (raw)."""
    from ckdb.layout import DB_CHECKPOINTS, DB_PAYLOADS, FRAME_HEADER  # noqa: PLC0415

    ids = set()
    raw = dump(path, (DB_CHECKPOINTS, DB_PAYLOADS, DB_CHUNKS))
    for values in raw.values():
        for value in values.values():
            ids.add(FRAME_HEADER.unpack_from(value)[4])
    return ids


def test_rotate_with_a_new_data_key(tmp_path: Path) -> None:
    old, new = os.urandom(32), os.urandom(32)
    path = tmp_path / "s.ckdb"
    with ckdb.open(path, key=old, retention=None) as store:
        states = fill(store, tmp_path / "w", 12)
        store.backup(tmp_path / "before.ckdb")
        report = store.rotate_key(new, new_data_key=True)
        assert report.complete
        assert report.active_key_id not in report.retired_key_ids
        assert report.retired_key_ids == (1,)
        assert report.retagged > 0
        assert_all_verify(store, states)
        states.update(fill(store, tmp_path / "w2", 2))  # new writes under the new data key
    assert key_ids(path) == {report.active_key_id}  # every frame re-tagged
    with pytest.raises(ckdb.WrongKey):
        ckdb.open(path, key=old)
    with ckdb.open(path, key=new, retention=None) as store:
        assert_all_verify(store, states)
    # The backup taken before the rotation still opens with the old key only.
    with pytest.raises(ckdb.WrongKey):
        ckdb.open(tmp_path / "before.ckdb", key=new)
    with ckdb.open(tmp_path / "before.ckdb", key=old, retention=None) as b:
        assert b.scrub().findings == ()


def test_old_backup_repairs_the_rotated_store(tmp_path: Path) -> None:
    old, new = os.urandom(32), os.urandom(32)
    path = tmp_path / "s.ckdb"
    with ckdb.open(path, key=old, retention=None) as store:
        states = fill(store, tmp_path / "w", 6)
        store.backup(tmp_path / "before.ckdb")
        store.rotate_key(new, new_data_key=True)
        with store._env.read() as txn:
            chunks = [bytes(k) for k, _v in txn.range(DB_CHUNKS)]
    inject(path, DB_CHUNKS, chunks[0], "flip")
    inject(path, DB_CHUNKS, chunks[1], "truncate")
    with ckdb.open(path, key=new, retention=None) as store:
        report = store.scrub(repair=True, backup=tmp_path / "before.ckdb")
        assert report.repaired >= 1 and report.deleted == 0
        assert report.ok, report.findings
        assert_all_verify(store, states)
        # A further rotation still verifies the frames the old backup supplied (old key id).
        store.retag()
        assert_all_verify(store, states)


def test_interrupted_retag_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = os.urandom(32), os.urandom(32)
    path = tmp_path / "s.ckdb"
    monkeypatch.setattr(keyrotation, "RETAG_BATCH", 7)
    with ckdb.open(path, key=old, retention=None) as store:
        states = fill(store, tmp_path / "w", 10)
        keyrotation.rotate(store.tables, new, True)  # step 1 only: as if killed right after it
        partial = store.retag(max_batches=2)
        assert not partial.complete and partial.retagged == 14
        # Mixed key ids: everything still verifies meanwhile, and new writes work.
        assert_all_verify(store, states)
    assert len(key_ids(path)) == 2
    with ckdb.open(path, key=new, retention=None) as store:
        states.update(fill(store, tmp_path / "w2", 1))
        done = store.retag()
        assert done.complete
        assert store.retag().retagged == 0  # nothing left
        assert_all_verify(store, states)
    assert len(key_ids(path)) == 1


def _kill_round(tmp_path: Path, seed: int, rounds: int) -> dict[str, int]:
    rng = random.Random(seed)
    keys = [os.urandom(32)]
    path = tmp_path / "s.ckdb"
    with ckdb.open(path, key=keys[0], retention=None) as store:
        states = fill(store, tmp_path / "w", 30)
    outcomes = {"old-key": 0, "new-key": 0, "finished": 0}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(rounds):
        current, new = keys[-1], os.urandom(32)
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(path), current.hex(), new.hex(), "1"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate(timeout=30)[0]
        if "done" in out:  # finished before the kill
            outcomes["finished"] += 1
        try:
            store = ckdb.open(path, key=new, retention=None)
            keys.append(new)
            outcomes["new-key"] += 1
        except ckdb.WrongKey:
            store = ckdb.open(path, key=current, retention=None)  # killed before the commit
            outcomes["old-key"] += 1
        with store:
            assert_all_verify(store, states)  # verifies mid-rotation, with mixed key ids
            assert store.retag().complete  # resumes and finishes
            assert_all_verify(store, states)
        assert len(key_ids(path)) == 1
        with pytest.raises(ckdb.WrongKey):
            ckdb.open(path, key=os.urandom(32))
        if keys[-1] is new:
            for stale in keys[:-1]:
                with pytest.raises(ckdb.WrongKey):
                    ckdb.open(path, key=stale)
    return outcomes


@pytest.mark.crash
def test_sigkill_during_rotation_resumes(tmp_path: Path) -> None:
    outcomes = _kill_round(tmp_path, seed=3, rounds=5)
    assert sum(outcomes.values()) - outcomes["finished"] == 5


@pytest.mark.crash
@pytest.mark.slow
def test_sigkill_during_rotation_many_rounds(tmp_path: Path) -> None:
    outcomes = _kill_round(tmp_path, seed=5, rounds=25)
    assert sum(outcomes.values()) - outcomes["finished"] == 25


# --- the generated key file ----------------------------------------------------------------------


def test_rotate_generated_key_file(store: ckdb.Store, tmp_path: Path) -> None:
    states = fill(store, tmp_path / "w", 3)
    path = store.path
    old = (path / "key").read_bytes()
    report = store.rotate_key()
    assert report.complete
    new = (path / "key").read_bytes()
    assert new != old
    assert not (path / "key.new").exists()
    assert (path / "key").stat().st_mode & 0o777 == 0o600
    store.close()
    with ckdb.open(path, retention=None) as again:
        assert_all_verify(again, states)
    with pytest.raises(ckdb.WrongKey):
        ckdb.open(path, key=bytes.fromhex(old.decode().strip()))


def test_rotate_needs_a_key_when_the_store_has_no_key_file(tmp_path: Path) -> None:
    with ckdb.open(tmp_path / "s", key=os.urandom(32)) as store:
        with pytest.raises(ckdb.InvalidInput):
            store.rotate_key()
        with pytest.raises(ckdb.InvalidInput):
            store.rotate_key(b"short")


def test_crash_between_commit_and_rename_is_finished_at_open(
    store: ckdb.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    states = fill(store, tmp_path / "w", 3)
    path = store.path
    old = (path / "key").read_bytes()

    def crash(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt("killed between the commit and the rename")

    monkeypatch.setattr(keyrotation.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.rotate_key(new_data_key=True)
    monkeypatch.undo()
    store.close()
    assert (path / "key").read_bytes() == old
    pending = (path / "key.new").read_bytes()
    assert pending != old
    with ckdb.open(path, retention=None) as again:  # tries key, then key.new, finishes the rename
        assert (path / "key").read_bytes() == pending
        assert not (path / "key.new").exists()
        again.retag()
        assert_all_verify(again, states)
    with ckdb.open(path, retention=None) as again:
        assert_all_verify(again, states)


def test_crash_before_commit_leaves_the_old_key(store: ckdb.Store, tmp_path: Path) -> None:
    states = fill(store, tmp_path / "w", 2)
    path = store.path
    old = (path / "key").read_bytes()
    store.close()
    (path / "key.new").write_text(os.urandom(32).hex() + "\n")  # written, never committed
    with ckdb.open(path, retention=None) as again:
        assert (path / "key").read_bytes() == old
        # The unused key.new is left alone: at open it cannot be told from a rotation in progress
        # in another process (deleting that would lose the new key); the next rotation replaces it.
        assert (path / "key.new").exists()
        assert_all_verify(again, states)
        again.rotate_key()
        assert not (path / "key.new").exists()
        assert (path / "key").read_bytes() != old
        assert_all_verify(again, states)


def test_crash_mid_rotation_in_a_real_process_with_key_file(tmp_path: Path) -> None:
    """The generated-key-file rotation killed by SIGKILL: the store opens with no key argument
    whichever side of the commit the kill landed on."""
    path = tmp_path / "s.ckdb"
    with ckdb.open(path, retention=None) as store:
        states = fill(store, tmp_path / "w", 8)
    code = (
        "import sys, ckdb\n"
        "s = ckdb.open(sys.argv[1], retention=None)\n"
        "print('ready', flush=True)\n"
        "while True: s.rotate_key()\n"
    )
    rng = random.Random(1)
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        with ckdb.open(path, retention=None) as store:
            # key.new is gone if the rotation committed (open finished the rename), or is an
            # unused leftover if the kill came before the commit; either way `key` opens it.
            assert_all_verify(store, states)
