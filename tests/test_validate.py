"""Validation levels detect exactly the damage they cover, and restore_latest skips damage.

Damage goes through the layer below: the Store is closed (one environment per path per process),
one byte of a ckdb value is flipped in a raw py-lmdb write transaction, and the store reopened.

| damaged value        | basic | standard | comprehensive |
|----------------------|-------|----------|---------------|
| metadata frame       | fail  | fail     | fail          |
| state component      | fail  | fail     | fail          |
| manifest frame       | ok    | fail     | fail          |
| resources frame      | ok    | ok       | fail          |
| dependencies frame   | ok    | ok       | fail          |
| content chunk        | ok    | ok       | fail          |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lmdb
import pytest

import ckdb
from ckdb.errors import IntegrityError, InvalidInput
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_CHUNKS,
    DB_PAYLOADS,
    FRAME_HEADER,
    RecordType,
    id_from_text,
    payload_key,
)

LEVELS = ("basic", "standard", "comprehensive")


def flip_value(path: Path, db: bytes, key: bytes, *, at: int | None = None) -> None:
    """Flip one bit of the value at db/key (inside the frame body unless ``at`` is given)."""
    env = lmdb.open(str(path), max_dbs=32, subdir=True, create=False)
    try:
        with env.begin(write=True) as txn:
            handle = env.open_db(db, txn=txn, create=False)
            value = txn.get(key, db=handle)
            assert value is not None, (db, key)
            buf = bytearray(value)
            pos = at if at is not None else FRAME_HEADER.size + (len(buf) - FRAME_HEADER.size) // 3
            buf[pos] ^= 0x10
            txn.put(key, bytes(buf), db=handle)
    finally:
        env.close()


def chunk_keys(path: Path) -> list[bytes]:
    env = lmdb.open(str(path), max_dbs=32, subdir=True, create=False, readonly=True)
    try:
        with env.begin() as txn:
            handle = env.open_db(DB_CHUNKS, txn=txn, create=False)
            return [bytes(k) for k, _v in txn.cursor(db=handle)]
    finally:
        env.close()


def make_checkpoint(store_path: Path, src: Path, wf: str = "wf", tag: str = "") -> str:
    src.mkdir(exist_ok=True)
    (src / "f.bin").write_bytes(os.urandom(50_000) + tag.encode())
    with ckdb.open(store_path) as s:
        return s.create(
            wf,
            "p",
            state={"task": {"t": "x" * 500 + tag}, "phase": "planning"},
            resources={"gpu": [1, 2] * 100},
            dependencies={"pkg": "1.0" * 100},
            files=src,
        ).id


def key_of(what: str, cid: str, store_path: Path) -> tuple[bytes, bytes]:
    c = id_from_text(cid)
    if what == "component":  # "task": its own frame, or the bundle it shares with "phase"
        with ckdb.open(store_path, readonly=True) as s:
            return DB_PAYLOADS, s._payload_address(cid, RecordType.COMPONENT, "task")
    return {
        "metadata": (DB_CHECKPOINTS, c),
        "manifest": (DB_PAYLOADS, payload_key(c, RecordType.MANIFEST, "files")),
        "resources": (DB_PAYLOADS, payload_key(c, RecordType.RESOURCES, "resources")),
        "dependencies": (DB_PAYLOADS, payload_key(c, RecordType.DEPENDENCIES, "dependencies")),
    }[what]


# (what, first level that fails, flag that goes False)
DAMAGE = [
    ("metadata", "basic", "metadata_valid"),
    ("component", "basic", "workflow_state_valid"),
    ("manifest", "standard", "file_state_valid"),
    ("resources", "comprehensive", "resource_state_valid"),
    ("dependencies", "comprehensive", "dependency_state_valid"),
    ("chunk", "comprehensive", "chunks_valid"),
]


@pytest.mark.parametrize(("what", "first_fail", "flag"), DAMAGE)
def test_each_level_detects_what_it_covers(
    store_path: Path, tmp_path: Path, what: str, first_fail: str, flag: str
) -> None:
    cid = make_checkpoint(store_path, tmp_path / "src")
    with ckdb.open(store_path) as s:
        assert all(s.validate(cid, level=lv).ok for lv in LEVELS)
    if what == "chunk":
        (key,) = chunk_keys(store_path)
        flip_value(store_path, DB_CHUNKS, key)
    else:
        flip_value(store_path, *key_of(what, cid, store_path))
    with ckdb.open(store_path) as s:
        for level in LEVELS:
            report = s.validate(cid, level=level)
            should_fail = LEVELS.index(level) >= LEVELS.index(first_fail)
            assert report.ok is not should_fail, (level, report)
            assert report.level == level and report.checkpoint_id == cid
            if should_fail:
                assert getattr(report, flag) is False, (level, report)
                assert report.findings
            else:
                assert report.findings == ()
        # flags of deeper levels are not claimed by shallower ones
        basic = s.validate(cid, level="basic")
        if basic.metadata_valid:
            assert basic.file_state_valid is None and basic.integrity_valid is None
            assert basic.resource_state_valid is None and basic.chunks_valid is None
        standard = s.validate(cid, level="standard")
        if standard.metadata_valid:
            assert standard.resource_state_valid is None and standard.chunks_valid is None


def test_flags_of_a_healthy_checkpoint(store_path: Path, tmp_path: Path) -> None:
    cid = make_checkpoint(store_path, tmp_path / "src")
    with ckdb.open(store_path) as s:
        r = s.validate(cid, level="comprehensive")
        assert r.ok and r.findings == ()
        assert (r.metadata_valid, r.workflow_state_valid, r.file_state_valid) == (True,) * 3
        assert (r.integrity_valid, r.resource_state_valid, r.dependency_state_valid) == (True,) * 3
        assert r.chunks_valid is True and r.chunks_checked == 1
        assert s.validate(cid).level == "standard"  # the default


def test_damaged_frame_header_tag(store_path: Path, tmp_path: Path) -> None:
    """A flip in the tag itself (last byte) is as much damage as one in the body."""
    cid = make_checkpoint(store_path, tmp_path / "src")
    db, key = key_of("manifest", cid, store_path)
    env = lmdb.open(str(store_path), max_dbs=32, subdir=True, create=False)
    with env.begin() as txn:
        value = txn.get(key, db=env.open_db(db, txn=txn, create=False))
        assert value is not None
        n = len(value)
    env.close()
    flip_value(store_path, db, key, at=n - 1)
    with ckdb.open(store_path) as s:
        assert s.validate(cid, level="basic").ok
        assert not s.validate(cid, level="standard").ok


def test_unknown_level_is_invalid_input(store: ckdb.Store) -> None:
    info = store.create("wf", "p", state={"task": 1})
    for bad in ("", "full", "BASIC", None, 3):
        with pytest.raises(InvalidInput):
            store.validate(info.id, level=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        store.create("wf", "p", kind="manual", name="n", verification_level="paranoid")
    with pytest.raises(InvalidInput):
        store.restore_latest("wf", level="nope")
    assert store.stats()["checkpoints"] == 1  # the refused create wrote nothing


@pytest.mark.parametrize("level", LEVELS)
def test_verification_level_on_manual_create(
    store: ckdb.Store, tmp_path: Path, monkeypatch: Any, level: str
) -> None:
    calls: list[tuple[str, str]] = []
    real = store.validate

    def spy(cid: str, level: str = "standard") -> Any:
        calls.append((cid, level))
        return real(cid, level=level)

    monkeypatch.setattr(store, "validate", spy)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    info = store.create(
        "wf", "p", kind="manual", name="before-refactor", files=src, verification_level=level
    )
    assert calls == [(info.id, level)]
    assert info.kind == "manual" and info.name == "before-refactor"
    calls.clear()
    store.create("wf", "p", kind="manual", name="no-check")
    assert calls == []


def test_verification_level_failure_raises(
    store: ckdb.Store, tmp_path: Path, monkeypatch: Any
) -> None:
    import ckdb.integrity

    monkeypatch.setattr(ckdb.integrity, "check_chunk", lambda *_a: "chunk is bad (injected)")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    with pytest.raises(IntegrityError, match="injected"):
        store.create("wf", "p", kind="manual", name="n", files=src,
                     verification_level="comprehensive")  # fmt: skip


# --- restore_latest ------------------------------------------------------------------------------


def _two_checkpoints(store_path: Path, tmp_path: Path) -> tuple[Path, str, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("old")
    with ckdb.open(store_path) as s:
        old = s.create("wf", "p1", files=src, state={"task": "old"}).id
        (src / "f.txt").write_text("new content")
        (src / "g.txt").write_text("only in new")
        new = s.create("wf", "p2", state={"task": "new"}).id
    return src, old, new


@pytest.mark.parametrize("what", ["manifest", "component", "metadata"])
def test_restore_latest_skips_damaged_newest(store_path: Path, tmp_path: Path, what: str) -> None:
    _src, old, new = _two_checkpoints(store_path, tmp_path)
    flip_value(store_path, *key_of(what, new, store_path))
    out = tmp_path / "out"
    with ckdb.open(store_path) as s:
        report = s.restore_latest("wf", target_dir=out)
        assert report.checkpoint.id == old
        assert report.checkpoint.state == {"task": "old"}
        assert [cid for cid, _why in report.skipped_checkpoints] == [new]
        assert report.ok
        assert (out / "f.txt").read_text() == "old" and not (out / "g.txt").exists()
        first = s.list("wf")[0]
        assert first.id == new and first.status == "corrupted"
        with pytest.raises(IntegrityError):
            s.load(new)
        # a second call skips it as already marked
        again = s.restore_latest("wf", target_dir=tmp_path / "out2")
        assert again.checkpoint.id == old
        assert [cid for cid, _why in again.skipped_checkpoints] == [new]
        assert s.latest("wf").id == old  # type: ignore[union-attr]


def test_restore_latest_comprehensive_skips_damaged_chunk(store_path: Path, tmp_path: Path) -> None:
    _src, old, new = _two_checkpoints(store_path, tmp_path)
    with ckdb.open(store_path) as s:
        s.delete(new)
        old_chunks = set(chunk_keys_open(s))
        new = s.create("wf", "p2", state={"task": "new"}).id
        mine = min(set(chunk_keys_open(s)) - old_chunks)  # a chunk only "new" references
    flip_value(store_path, DB_CHUNKS, mine)
    with ckdb.open(store_path) as s:
        report = s.restore_latest("wf", target_dir=tmp_path / "out", level="comprehensive")
        assert report.checkpoint.id == old
        assert [cid for cid, _why in report.skipped_checkpoints] == [new]
        # Only its chunk is damaged: set aside as salvaged ("damaged", state readable), as a
        # repairing scrub would, not marked corrupted.
        info = s.list("wf")[0]
        assert (info.id, info.status) == (new, "damaged")
        assert s.load(new).state == {"task": "new"}
        assert (tmp_path / "out" / "f.txt").read_text() == "old"


def chunk_keys_open(s: ckdb.Store) -> list[bytes]:
    with s._env.read() as txn:
        return [bytes(k) for k, _v in txn.range(DB_CHUNKS)]


def test_restore_latest_default_level_skips_damaged_chunk(store_path: Path, tmp_path: Path) -> None:
    _src, old, new = _two_checkpoints(store_path, tmp_path)
    with ckdb.open(store_path) as s:
        s.delete(new)
        old_chunks = set(chunk_keys_open(s))
        new = s.create("wf", "p2", state={"task": "new"}).id
        mine = min(set(chunk_keys_open(s)) - old_chunks)
    flip_value(store_path, DB_CHUNKS, mine)
    with ckdb.open(store_path) as s:
        report = s.restore_latest("wf", target_dir=tmp_path / "out")
        assert report.checkpoint.id == old
        assert [cid for cid, _why in report.skipped_checkpoints] == [new]


def test_restore_of_damaged_chunk_is_an_error_not_data(store_path: Path, tmp_path: Path) -> None:
    cid = make_checkpoint(store_path, tmp_path / "src")
    (key,) = chunk_keys(store_path)
    flip_value(store_path, DB_CHUNKS, key)
    out = tmp_path / "out"
    with ckdb.open(store_path) as s, pytest.raises(IntegrityError):
        s.restore(cid, target_dir=out)
    assert not (out / "f.bin").exists()  # nothing half-written under the real name
    assert not any(n.startswith(".ckdb-restore-") for n in os.listdir(out))


def test_restore_latest_all_damaged(store_path: Path, tmp_path: Path) -> None:
    _src, old, new = _two_checkpoints(store_path, tmp_path)
    flip_value(store_path, *key_of("component", old, store_path))
    flip_value(store_path, *key_of("component", new, store_path))
    with ckdb.open(store_path) as s:
        with pytest.raises(IntegrityError, match="no valid checkpoint"):
            s.restore_latest("wf", target_dir=tmp_path / "out")
        assert all(i.status == "corrupted" for i in s.list("wf"))
