"""Regression tests for the defects a code review found (fixed in 882808b).

Each test is the reviewer's reproduction turned into an assertion of the fixed behaviour. Races
are made deterministic by hooking the store's own entry points (``store._env.write``, the
keyring reload) and running the "other process" as a real subprocess at the hooked moment; no
sleeps order events, and the one wait with a timeout (the nested-read deadlock) only catches a
hang.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ckdb
from ckdb.capture import manifest_chunks
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_CHUNKS,
    DB_REFS,
    DB_REGISTRY,
    DB_WORKFLOWS,
    id_from_text,
)

WORKER = Path(__file__).parent / "workers" / "review_worker.py"


def second_process(*args: str) -> None:
    """Run the worker in another process (one LMDB environment per path per process)."""
    proc = subprocess.run(
        [sys.executable, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "done" in proc.stdout, (proc.stdout, proc.stderr)


def hook_first_write(store: ckdb.Store, before: Callable[[], None]) -> dict[str, bool]:
    """Run ``before`` just ahead of the store's next write (once), then write as usual."""
    orig = store._env.write
    fired = {"fired": False}

    def hooked(fn: Any, **kw: Any) -> Any:
        store._env.write = orig
        fired["fired"] = True
        before()
        return orig(fn, **kw)

    store._env.write = hooked
    return fired


def flip_byte(value: bytes, at: int) -> bytes:
    v = bytearray(value)
    v[at] ^= 1
    return bytes(v)


# --- scrub ---------------------------------------------------------------------------------------


def test_scrub_repair_keeps_an_orphan_chunk_a_concurrent_create_references(
    store: ckdb.Store, tmp_path: Path
) -> None:
    """Scrub repair deleted orphan chunks found in an earlier snapshot without re-checking, so a
    create committing in between lost its chunk (found in review)."""
    work = tmp_path / "work"
    work.mkdir()
    data = os.urandom(100_000)
    (work / "f.bin").write_bytes(data)
    # An unreferenced, unleased chunk (a crashed big capture leaves these behind).
    cid = store.content_id(data)
    frame = store.chunk_frame(cid, data)
    store._env.write(lambda t: t.put(DB_CHUNKS, cid, frame))
    created: list[str] = []
    # Scrub's first write is its repair; a create that reuses the orphan commits just before it.
    fired = hook_first_write(
        store, lambda: created.append(store.create("wf", "p", state={"x": 1}, files=work).id)
    )
    store.scrub(repair=True)
    assert fired["fired"] and created
    assert store.has_chunk(cid)
    report = store.validate(created[0], level="comprehensive")
    assert report.ok, report.findings
    store.restore(created[0], target_dir=tmp_path / "out")
    assert (tmp_path / "out" / "f.bin").read_bytes() == data
    assert store.scrub().findings == ()


# --- key rotation --------------------------------------------------------------------------------


def test_master_rotation_keeps_a_data_key_another_process_added(tmp_path: Path) -> None:
    """A master-key rotation wrote back this process's stale in-memory keyring, dropping a data
    key another process had added (and re-tagged everything under) since (found in review)."""
    path = tmp_path / "s.ckdb"
    k0, k2 = os.urandom(32), os.urandom(32)
    a = ckdb.open(path, key=k0, retention=None)
    try:
        ids = [a.create("wf", "p", state={"i": i}).id for i in range(3)]
        second_process("add-data-key", str(path), k0.hex())  # B: new data key, all re-tagged
        a.rotate_key(k2)  # A, open since before B's rotation: master key only
    finally:
        a.close()
    with ckdb.open(path, key=k2, retention=None) as s:
        for i, cid in enumerate(ids):
            assert s.load(cid).state == {"i": i}
        latest = s.latest("wf")
        assert latest is not None and latest.id == ids[-1]
        assert s.scrub().findings == ()


def test_open_during_a_rotation_leaves_key_new_alone(tmp_path: Path) -> None:
    """Opening a store (own key file) while another process was between writing key.new and
    committing its rotation deleted key.new, so the rotation failed and the key was lost (found
    in review)."""
    path = tmp_path / "s.ckdb"
    a = ckdb.open(path, retention=None)
    try:
        cid = a.create("wf", "p", state={"x": 1}).id
        seen: dict[str, bool] = {}

        def other_process_opens() -> None:
            seen["before"] = (path / "key.new").exists()
            second_process("open", str(path))
            seen["after"] = (path / "key.new").exists()

        # rotate_key's first write is the rotation commit; key.new is written before it.
        fired = hook_first_write(a, other_process_opens)
        a.rotate_key()
        assert fired["fired"]
        assert seen == {"before": True, "after": True}
    finally:
        a.close()
    assert not (path / "key.new").exists()
    with ckdb.open(path, retention=None) as s:  # the key file holds the new key
        assert s.load(cid).state == {"x": 1}


# --- retention -----------------------------------------------------------------------------------


def test_prune_keeps_the_newest_valid_checkpoint_as_latest_defines_it(store: ckdb.Store) -> None:
    """Retention's "keep the newest valid" guard trusted registry flags only, so with the newest
    checkpoint's metadata rotten (unmarked) it deleted the real resume point (found in review)."""
    ids = [store.create("wf", "p", state={"i": i}).id for i in range(3)]
    newest = id_from_text(ids[-1])

    def rot(t: Any) -> None:
        t.put(DB_CHECKPOINTS, newest, flip_byte(t.get(DB_CHECKPOINTS, newest), 20))

    store._env.write(rot)
    before = store.latest("wf")
    assert before is not None and before.id == ids[1]
    store.prune("wf", "minimal", now=dt.datetime.now(dt.UTC) + dt.timedelta(days=40))
    after = store.latest("wf")
    assert after is not None and after.id == ids[1]
    assert store.load(ids[1]).state == {"i": 1}


def test_damaged_retention_victim_does_not_block_automatic_creates(tmp_path: Path) -> None:
    """A rotten reference count of an old checkpoint's chunk made every automatic create of the
    workflow fail, because automatic retention hit it inside the create's transaction (found in
    review)."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "a").write_bytes(os.urandom(5000))
    with ckdb.open(tmp_path / "s.ckdb", retention="minimal") as s:
        first = s.create("wf", "p", state={"i": 0}, files=work).id
        (work / "a").write_bytes(os.urandom(5000))  # later checkpoints: other content
        for i in range(1, 3):
            s.create("wf", "p", state={"i": i}, files=work)
        manifest = ckdb.reading.load(s.tables, id_from_text(first))[1]
        chunk = next(iter(manifest_chunks(manifest)))
        s._env.write(lambda t: t.put(DB_REFS, chunk, flip_byte(t.get(DB_REFS, chunk), 3)))
        # Keeping 3, each automatic create now plans the oldest (the damaged one) for deletion.
        new = [s.create("wf", "p", state={"i": 10 + i}).id for i in range(3)]
        latest = s.latest("wf")
        assert latest is not None and latest.id == new[-1]
        for i, cid in enumerate(new):
            assert s.load(cid).state == {"i": 10 + i}
        # The damage is still there for scrub to find and repair.
        assert s.scrub(repair=True).ok
        assert s.scrub().findings == ()


def test_damaged_workflow_record_does_not_block_the_workflow(store: ckdb.Store) -> None:
    """A rotten workflow record made every create of the workflow, workflows() and prune() fail,
    and scrub did not even report it (found in review)."""
    store.create("wf", "p", state={"i": 0})

    def rot(t: Any) -> None:
        key, value = next(iter(t.range(DB_WORKFLOWS)))
        t.put(DB_WORKFLOWS, bytes(key), flip_byte(bytes(value), -1))

    store._env.write(rot)
    report = store.scrub()
    assert any(f.kind == "workflow" for f in report.findings), report.findings
    store.prune()  # must not raise
    assert store.workflows() in ([], ["wf"])
    info = store.create("wf", "p", state={"i": 1})
    assert info.sequence == 2  # rebuilt from the registry, not restarted
    assert store.workflows() == ["wf"]
    latest = store.latest("wf")
    assert latest is not None and latest.id == info.id
    assert store.scrub().findings == ()


# --- delete_workflow -----------------------------------------------------------------------------


def test_delete_workflow_deletes_only_verified_ownership(store: ckdb.Store) -> None:
    """delete_workflow took checkpoint ids from registry values without verifying them, so a
    value of workflow B copied under workflow A's prefix made it delete B's checkpoint (found in
    review)."""
    store.create("A", "p", state={"x": 1})
    b = store.create("B", "p", state={"x": 2}).id

    def swap(t: Any) -> None:
        ka = next(k for k, _ in t.prefix(DB_REGISTRY, store._keys.wf_key("A")))
        vb = next(v for _, v in t.prefix(DB_REGISTRY, store._keys.wf_key("B")))
        t.put(DB_REGISTRY, bytes(ka), bytes(vb))

    store._env.write(swap)
    assert store.delete_workflow("A") == 0  # nothing provably A's
    assert store.load(b).state == {"x": 2}
    latest = store.latest("B")
    assert latest is not None and latest.id == b


# --- the write path ------------------------------------------------------------------------------


def test_keyboard_interrupt_in_a_write_function_reaches_the_caller(store: ckdb.Store) -> None:
    """A KeyboardInterrupt raised inside a write function (Ctrl-C during retention, say) reached
    its own caller as an empty StorageError instead (found in review)."""

    def interrupted(txn: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store._env.write(interrupted)
    assert store._env._leading is False
    info = store.create("wf", "p", state={"x": 1})  # the store still writes
    assert store.load(info.id).state == {"x": 1}


_BAD_PATHS: dict[str, Callable[[ckdb.Store, Path, str], Any]] = {
    "restore into an existing file": lambda s, d, cid: s.restore(cid, target_dir=d / "afile"),
    "restore target with NUL": lambda s, d, cid: s.restore(cid, target_dir="x\0y"),
    "create files= with NUL": lambda s, d, cid: s.create("wf", "p", files="x\0y"),
    "create files= bytes path": lambda s, d, cid: s.create("wf", "p", files=os.fsencode(d)),
    "open path with NUL": lambda s, d, cid: ckdb.open("a\0b"),
    "backup destination with NUL": lambda s, d, cid: s.backup("a\0b"),
    "restore_latest into an existing file": (
        lambda s, d, cid: s.restore_latest("wf", target_dir=d / "afile")
    ),
}


@pytest.mark.parametrize("case", list(_BAD_PATHS))
def test_bad_paths_are_invalid_input(store: ckdb.Store, tmp_path: Path, case: str) -> None:
    """Bad caller paths (NUL, bytes, an existing file as a target) raised raw
    TypeError/ValueError/FileExistsError, or were silently accepted, instead of InvalidInput
    (found in review)."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "a").write_bytes(b"x" * 10)
    cid = store.create("wf", "p", state={"x": 1}, files=work).id
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(ckdb.InvalidInput):
        _BAD_PATHS[case](store, tmp_path, cid)
    # Nothing was created, and a target problem never marks the checkpoint corrupted.
    assert [(i.id, i.status) for i in store.list("wf")] == [(cid, "valid")]
    assert (tmp_path / "afile").read_bytes() == b""


def test_source_file_gone_during_reread_is_invalid_input(store: ckdb.Store, tmp_path: Path) -> None:
    """A source file deleted before the create's re-read of a chunk that lost its last reference
    meanwhile raised a raw FileNotFoundError instead of InvalidInput (found in review)."""
    w1, w2 = tmp_path / "w1", tmp_path / "w2"
    w1.mkdir()
    w2.mkdir()
    data = os.urandom(10_000)
    (w1 / "f").write_bytes(data)
    (w2 / "f").write_bytes(data)
    first = store.create("wf1", "p", files=w1).id

    def race() -> None:
        store.delete(first)  # the shared chunk loses its last reference
        (w2 / "f").unlink()  # and its source goes away before the commit

    fired = hook_first_write(store, race)
    with pytest.raises(ckdb.InvalidInput, match="changed while it was being"):
        store.create("wf2", "p", files=w2)
    assert fired["fired"]
    assert store.latest("wf2") is None  # nothing was written
    assert store.scrub().findings == ()


# --- the resize gate -----------------------------------------------------------------------------


def test_keyring_reload_inside_a_read_does_not_deadlock_with_a_waiting_resize(
    tmp_path: Path,
) -> None:
    """A keyring reload (unknown key id) opened a nested read transaction that queued behind a
    waiting map resize, which itself waited for the outer read: a deadlock (found in review)."""
    path = tmp_path / "s.ckdb"
    key = os.urandom(32)
    a = ckdb.open(path, key=key, retention=None)
    cid = a.create("wf", "p", state={"x": 1}).id
    # Another process adds data key 2 and re-tags everything: A must reload its keyring to load.
    second_process("add-data-key", str(path), key.hex())
    orig_reload = a._keys.reload
    resizer: list[threading.Thread] = []

    def reload_with_a_resize_waiting() -> Any:
        t = threading.Thread(target=a._env._adopt_map_size, daemon=True)
        t.start()
        resizer.append(t)
        deadline = time.monotonic() + 30
        while not a._env._gate._waiting:  # the resize is now queued behind our read
            assert t.is_alive() and time.monotonic() < deadline, "the resize never queued"
            time.sleep(0.001)
        return orig_reload()

    a._reload_keyring = reload_with_a_resize_waiting  # type: ignore[method-assign]
    a._keys.reload = reload_with_a_resize_waiting
    result: dict[str, Any] = {}

    def load() -> None:
        try:
            result["state"] = a.load(cid).state
        except BaseException as err:
            result["error"] = err

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(timeout=30)
    if loader.is_alive():
        # Deadlocked: the store cannot be closed (its gate is stuck); its daemon threads are
        # abandoned with it.
        pytest.fail("load() deadlocked: a nested read waited for a resize waiting for it")
    try:
        assert result == {"state": {"x": 1}}
        assert resizer
        resizer[0].join(timeout=30)
        assert not resizer[0].is_alive()
    finally:
        a.close()


# --- encryption ----------------------------------------------------------------------------------


def test_encrypted_store_does_not_leak_component_names(tmp_path: Path) -> None:
    """In an encrypted store, payload keys carried component names in clear text (state keys
    can be as telling as values) (found in review)."""
    path = tmp_path / "s.ckdb"
    state = {"acme_layoff_list": [1, 2], "task": "x"}
    with ckdb.open(path, encryption="aes-gcm", retention=None) as s:
        cid = s.create(
            "acme-merger-wf",
            "due-diligence",
            state=state,
            kind="manual",
            name="before-announcement",
        ).id
    raw = (path / "data.mdb").read_bytes()
    for needle in (
        b"acme_layoff_list",
        b"acme-merger-wf",
        b"due-diligence",
        b"before-announcement",
    ):
        assert needle not in raw, needle
    with ckdb.open(path, retention=None) as s:
        assert s.load(cid).state == state
        assert s.scrub().findings == ()


def test_rotation_refuses_when_another_process_changed_the_master_key(store_path: Path) -> None:
    """Rotating from a process whose master key is no longer the store's must refuse (it would
    re-wrap a keyring it cannot verify), not clobber the other rotation. Found in review."""
    import subprocess
    import sys

    k1, k2, k3 = (bytes([n]) * 32 for n in (1, 2, 3))
    with ckdb.open(store_path, key=k1, retention=None) as mine:
        info = mine.create("wf", "p", state={"x": {"v": 1}})
        # Another process re-keys the store while this one keeps it open.
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "import ckdb\n"
                f"s = ckdb.open({str(store_path)!r}, key={k1!r}, retention=None)\n"
                f"s.rotate_key({k2!r})\n"
                "s.close()\n",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        with pytest.raises(ckdb.WrongKey, match="re-keyed by another process"):
            mine.rotate_key(k3)
    with ckdb.open(store_path, key=k2, retention=None) as again:  # the other rotation stands
        assert again.load(info.id).state == {"x": {"v": 1}}
        assert again.scrub().ok


def test_target_side_restore_failure_does_not_mark_the_checkpoint(
    store: ckdb.Store, tmp_path: Path
) -> None:
    """A restore that fails because of the target (here: an unwritable place) raises
    RestoreFailed and must not mark the checkpoint corrupted (restore_latest used to treat every
    such error as damage in the store). Found in review."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "a.txt").write_text("alpha")
    info = store.create("wf", "p", files=work)
    with pytest.raises(ckdb.RestoreFailed):
        store.restore_latest("wf", target_dir="/proc/ckdb-cannot-create-here/x")
    assert store.list("wf")[0].status == "valid"
    assert store.load(info.id).files is not None


def test_backup_is_verified_with_the_key_file_it_carries(
    store: ckdb.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup reports success only if it opens with the key file copied into it (the copy is
    what a user restores from), not merely with the key in this process's memory. Found in
    review."""
    import ckdb.maintenance

    store.create("wf", "p", state={"x": {"v": 1}})

    def copy_wrong_key(src: object, dst: object) -> None:
        Path(str(dst)).write_text(os.urandom(32).hex() + "\n")

    monkeypatch.setattr(ckdb.maintenance.shutil, "copyfile", copy_wrong_key)
    dest = tmp_path / "backup.ckdb"
    with pytest.raises(ckdb.WrongKey):
        store.backup(dest)
    assert not dest.exists()
    monkeypatch.undo()
    report = store.backup(dest)
    assert report.checkpoints == 1
    with ckdb.open(dest, retention=None) as copy:  # opens with its own key file
        assert copy.scrub().ok


def test_scrub_reports_integration_frames_with_damaged_magic(store: ckdb.Store) -> None:
    """Scrub skipped integration values whose first bytes no longer read as a frame, so damage
    there was invisible to scrub, the monitor and backup verification. Found in review."""
    store._env.ensure_db(b"lg_test")
    frame = store.tables.frames.frame(
        ckdb.layout.RecordType.INTEGRATION, b"lg_test", b"k", b"payload", ckdb.layout.Codec.NONE
    )
    store._env.write(lambda txn: txn.put(b"lg_test", b"k", frame))
    assert store.scrub().ok
    damaged = bytes([frame[0] ^ 0xFF]) + frame[1:]
    store._env.write(lambda txn: txn.put(b"lg_test", b"k", damaged))
    report = store.scrub()
    assert not report.ok
    assert any(f.kind == "integration" for f in report.findings)


def test_monitor_interval_beyond_the_timeout_limit_is_invalid_input(store: ckdb.Store) -> None:
    """A huge interval made Event.wait raise OverflowError in the monitor thread, which died
    silently. Found in review."""
    import threading

    with pytest.raises(ckdb.InvalidInput):
        store.monitor(interval=threading.TIMEOUT_MAX * 2)


def test_crash_resume_report_without_kills_is_not_ok() -> None:
    """A run that never delivered a kill (a workflow with no hook points) passed vacuously.
    Found in review."""
    from ckdb.testing.runner import CrashResumeReport

    report = CrashResumeReport(
        workflow="w:f",
        reference_result=None,
        reference_points=(),
        trials=(),
        minimal=None,
        seed=1,
    )
    assert not report.ok
    assert "no kill was delivered" in report.summary()


def test_langgraph_put_never_deletes_the_checkpoint_it_wrote(store: ckdb.Store) -> None:
    """With a retention policy, a put whose checkpoint id sorts before the existing ones (a
    stepped clock, another process, a caller-chosen id) was deleted by its own retention in the
    same transaction, and put returned a config pointing at nothing. Found in review."""
    pytest.importorskip("langgraph")
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6

    from ckdb.integrations.langgraph import CkdbSaver
    from ckdb.retention import RetentionPolicy

    saver = CkdbSaver(store, retention=RetentionPolicy(max_checkpoints=1))
    cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}

    def checkpoint(cid: str) -> Any:
        c = empty_checkpoint()
        c["id"] = cid
        return c

    first = saver.put(cfg, checkpoint(str(uuid6())), {}, {})
    second = saver.put(first, checkpoint(str(uuid6())), {}, {})
    early = saver.put(second, checkpoint("00000000-0000-0000-0000-000000000001"), {}, {})
    assert saver.get_tuple(early) is not None


def test_missing_working_directory_is_a_warning_of_create(
    store: ckdb.Store, tmp_path: Path
) -> None:
    """A mistyped files= path was recorded silently (the seed records a missing working
    directory rather than raising); it is now also among the create's warnings, which the CLI
    prints. Found in review."""
    info = store.create("wf", "p", files=tmp_path / "no-such-dir")
    assert any("does not exist" in w for w in info.warnings)
    assert store.load(info.id).files.error  # type: ignore[union-attr]


def test_cli_refuses_two_options_reading_stdin(tmp_path: Path) -> None:
    """--state - --resources - read stdin twice; the second read failed with a misleading JSON
    error. Found in review."""
    from ckdb.cli import main

    code = main(
        ["--store", str(tmp_path / "s"), "create", "wf", "p", "--state", "-", "--resources", "-"]
    )
    assert code == ckdb.InvalidInput.exit_code
