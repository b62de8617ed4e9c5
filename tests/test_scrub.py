"""Scrub: damage every kind of stored value through the layer below, then detect → repair → clean.

A pristine store (two workflows, checkpoints with captured files so that ``chunks`` and ``refs``
exist, one pinned checkpoint) and a backup of it are built once per module and copied for each
test. Damage goes in through raw py-lmdb transactions while no ``Store`` is open on the path (one
environment per path per process). Every injected damage must be named by at least one finding
(its checkpoint id, or its key in ``where``), ``load`` must never return damaged data, repair from
the backup must restore the raw LMDB values byte for byte, and repair without a backup must remove
the damaged checkpoint cleanly (a pinned one stays, marked). After every repair a second scrub is
clean and the store reopens.

Only ckdb's *values* are damaged; damage to LMDB's own pages can crash the process and belongs in
a subprocess.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import lmdb
import pytest

import ckdb
from ckdb.capture import manifest_chunks
from ckdb.errors import CkdbError, IntegrityError
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_CHUNKS,
    DB_MARKS,
    DB_PAYLOADS,
    DB_REFS,
    DB_REGISTRY,
    DB_SETTINGS,
    RecordType,
    id_from_text,
    payload_key,
    registry_key,
)
from ckdb.scrub import Finding
from ckdb.tables.chunks import encode_refs, put_lease

# The sub-databases whose every record must come back byte-identical after a repair from backup.
DATA_DBS = (DB_CHECKPOINTS, DB_PAYLOADS, DB_CHUNKS, DB_REGISTRY, DB_REFS, DB_MARKS)

# --- raw access (no Store open on the path) ------------------------------------------------------


@contextlib.contextmanager
def raw_env(path: Path, *, write: bool = True) -> Iterator[tuple[Any, Callable[[bytes], Any]]]:
    env = lmdb.open(str(path), max_dbs=32, subdir=True, create=False, readonly=not write)
    try:
        with env.begin(write=write) as txn:
            yield txn, lambda name: env.open_db(name, txn=txn, create=False)
    finally:
        env.close()


def dump(path: Path, dbs: tuple[bytes, ...] = DATA_DBS) -> dict[bytes, dict[bytes, bytes]]:
    out: dict[bytes, dict[bytes, bytes]] = {}
    with raw_env(path, write=False) as (txn, db):
        for name in dbs:
            out[name] = {bytes(k): bytes(v) for k, v in txn.cursor(db=db(name))}
    return out


def raw_get(path: Path, dbname: bytes, key: bytes) -> bytes | None:
    with raw_env(path, write=False) as (txn, db):
        value = txn.get(key, db=db(dbname))
        return None if value is None else bytes(value)


def flip(value: bytes) -> bytes:
    out = bytearray(value)
    out[len(out) // 2] ^= 0x10
    return bytes(out)


def truncate(value: bytes) -> bytes:
    return value[: len(value) // 2]


def inject(path: Path, dbname: bytes, key: bytes, how: str, other: bytes | None = None) -> None:
    """Damage one record: ``flip`` a byte, ``truncate`` it, ``delete`` it, or ``swap`` its (valid)
    value with the record at ``other`` in the same sub-database."""
    with raw_env(path) as (txn, db):
        handle = db(dbname)
        old = txn.get(key, db=handle)
        assert old is not None, (dbname, key)
        old = bytes(old)
        if how == "flip":
            txn.put(key, flip(old), db=handle)
        elif how == "truncate":
            txn.put(key, truncate(old), db=handle)
        elif how == "delete":
            assert txn.delete(key, db=handle)
        elif how == "swap":
            assert other is not None
            theirs = bytes(txn.get(other, db=handle))
            assert theirs != old
            txn.put(key, theirs, db=handle)
            txn.put(other, old, db=handle)
        else:  # pragma: no cover
            raise AssertionError(how)


# --- the pristine store --------------------------------------------------------------------------

COMMON = b"shared by every checkpoint\n" * 40


def state_for(n: int) -> dict[str, Any]:
    return {
        "phase": {"n": n, "name": f"phase-{n}"},
        "task": {"id": f"task-{n}", "items": list(range(n, n + 30))},
        "agent": {"notes": [f"note {n}.{i}" for i in range(50)]},
        "progress": {"done": n},
        "configuration": {"model": "m", "n": n},
    }


def unique_for(n: int) -> bytes:
    return random.Random(n).randbytes(3000 + n)


class Pristine:
    """A store with checkpoints over two workflows, their files, and a backup of it."""

    # (workflow, n); n indexes state_for / unique_for.
    PLAN = (("wf-a", 0), ("wf-a", 1), ("wf-a", 2), ("wf-b", 3), ("wf-a", 4), ("wf-b", 5))
    PINNED = 1  # index into PLAN

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "store.ckdb"
        self.backup = root / "backup.ckdb"
        work = root / "work"
        work.mkdir()
        self.ids: list[str] = []
        self.states: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        with ckdb.open(self.path, retention=None) as store:
            for wf, n in self.PLAN:
                (work / "common.txt").write_bytes(COMMON)
                (work / "unique.bin").write_bytes(unique_for(n))
                info = store.create(wf, f"p{n}", state=state_for(n), files=work)
                self.ids.append(info.id)
                self.states[info.id] = state_for(n)
                self.files[info.id] = {"common.txt": COMMON, "unique.bin": unique_for(n)}
            store.pin(self.ids[self.PINNED])
            store.backup(self.backup)
            self.chunks: dict[str, set[bytes]] = {}
            with store._env.read() as txn:
                for cid in self.ids:
                    manifest = store.tables.payloads.read_manifest(txn, id_from_text(cid))
                    assert manifest is not None
                    self.chunks[cid] = set(manifest_chunks(manifest))
                self.reg_keys = {}
                for cid in self.ids:
                    meta = store.tables.checkpoints.read(txn, id_from_text(cid))
                    self.reg_keys[cid] = registry_key(
                        store._keys.wf_key(meta.workflow_id), meta.seq
                    )
        self.common_chunk = set.intersection(*self.chunks.values())
        assert len(self.common_chunk) == 1
        self.raw = dump(self.path)
        assert self.raw[DB_MARKS] == {}

    def unique_chunk(self, cid: str) -> bytes:
        (chunk,) = self.chunks[cid] - self.common_chunk
        return chunk

    def holders(self, chunk: bytes) -> set[str]:
        return {cid for cid, chunks in self.chunks.items() if chunk in chunks}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return Pristine(tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def ps(pristine: Pristine, tmp_path: Path) -> Pristine:
    """A private copy of the pristine store (and its backup) for one test."""
    copy = Pristine.__new__(Pristine)
    copy.__dict__.update(pristine.__dict__)
    copy.root = tmp_path
    copy.path = tmp_path / "store.ckdb"
    copy.backup = tmp_path / "backup.ckdb"
    shutil.copytree(pristine.path, copy.path)
    shutil.copytree(pristine.backup, copy.backup)
    return copy


# --- targets: what to damage, and which findings must name it ------------------------------------

VICTIM = 2  # an unpinned checkpoint of wf-a (PLAN index)
PARTNER = 3  # a checkpoint of wf-b: the other side of a swap


def target(ps: Pristine, kind: str) -> tuple[bytes, bytes, bytes, set[str]]:
    """(sub-db, key, swap partner key, checkpoints the damage concerns) for one kind of record."""
    victim, partner = ps.ids[VICTIM], ps.ids[PARTNER]
    v, p = id_from_text(victim), id_from_text(partner)
    if kind == "metadata":
        return DB_CHECKPOINTS, v, p, {victim, partner}
    if kind == "state":
        return (
            DB_PAYLOADS,
            payload_key(v, RecordType.BUNDLE, ""),
            payload_key(p, RecordType.BUNDLE, ""),
            {victim, partner},
        )
    if kind == "manifest":
        return (
            DB_PAYLOADS,
            payload_key(v, RecordType.MANIFEST, "files"),
            payload_key(p, RecordType.MANIFEST, "files"),
            {victim, partner},
        )
    if kind == "chunk":
        mine, theirs = ps.unique_chunk(victim), ps.unique_chunk(partner)
        return DB_CHUNKS, mine, theirs, {victim, partner}
    if kind == "registry":
        return DB_REGISTRY, ps.reg_keys[victim], ps.reg_keys[partner], {victim, partner}
    if kind == "refs":
        (common,) = ps.common_chunk
        return DB_REFS, ps.unique_chunk(victim), common, set()
    raise AssertionError(kind)


KINDS = ("metadata", "state", "manifest", "chunk", "registry", "refs")
HOWS = ("flip", "truncate", "delete", "swap")

BUG_MARK_DROPS_FLAGS = (
    "BUG: Store.mark (ckdb/store.py, mark(): the `except IntegrityError` branch) rebuilds a "
    "registry entry whose tag fails with flags = MANUAL only, dropping PINNED and FILES; the "
    "non-repair scrub marks through it, the entry then verifies, and the repair scrub clears "
    "the mark ('verifies now'): the damage is laundered, the pinned flag lost for good"
)
BUG_SWAPPED_OCCUPANT = (
    "BUG: Scrubber._repair_from_backup (ckdb/scrub.py, apply(): `occupant ... != cid: return "
    "False`) refuses the backup's copy when the registry slot holds a swapped-in entry that "
    "does not even verify at that key, so the intact checkpoint is deleted despite a good backup"
)
BUG_REGISTRY_DELETES = (
    "BUG: scrub(repair=True) deletes an intact checkpoint whose only damage is its registry "
    "entry: validate() fails on the registry tag, _handle_corrupt -> _delete_unless_pinned, where "
    "_registry_slot returns flags None (tag fails) which is taken as 'not pinned' (ckdb/scrub.py); "
    "the registry pass that would rebuild it from the intact metadata never runs for it"
)


def _cases(bugs: dict[tuple[str, str], str]) -> list[Any]:
    return [pytest.param(kind, how) for kind in KINDS for how in HOWS]


BACKUP_CASES = _cases(
    {
        ("registry", "flip"): BUG_MARK_DROPS_FLAGS,
        ("registry", "truncate"): BUG_MARK_DROPS_FLAGS,
        ("registry", "swap"): BUG_SWAPPED_OCCUPANT,
    }
)
NO_BACKUP_CASES = [
    case
    for case in _cases(
        {
            ("registry", "flip"): BUG_REGISTRY_DELETES,
            ("registry", "truncate"): BUG_REGISTRY_DELETES,
            ("registry", "swap"): BUG_REGISTRY_DELETES,
            ("registry", "delete"): BUG_REGISTRY_DELETES,
        }
    )
    if case.values[0] != "chunk"  # a checkpoint whose only damage is a chunk is salvaged
]


def damaged_keys(key: bytes, other: bytes, how: str) -> list[bytes]:
    return [key, other] if how == "swap" else [key]


def named(findings: tuple[Finding, ...], key: bytes, cids: set[str]) -> bool:
    """Does some finding name the damaged record (its key) or one of its checkpoints?"""
    return any(key.hex() in f.where or f.checkpoint_id in cids or f.where in cids for f in findings)


def assert_never_damaged_data(store: ckdb.Store, ps: Pristine) -> None:
    """Every checkpoint either loads exactly as created or is an error."""
    for cid in ps.ids:
        try:
            ck = store.load(cid)
        except CkdbError:
            continue
        assert ck.state == ps.states[cid], cid


def assert_restores_exactly(store: ckdb.Store, ps: Pristine, cids: list[str], root: Path) -> None:
    for cid in cids:
        ck = store.load(cid)
        assert ck.state == ps.states[cid]
        assert store.validate(cid, level="comprehensive").ok
        target_dir = root / f"restored-{cid}"
        store.restore(cid, target_dir=target_dir)
        got = {p.name: p.read_bytes() for p in target_dir.iterdir() if p.is_file()}
        assert got == ps.files[cid]


def assert_clean(store: ckdb.Store) -> None:
    again = store.scrub()
    assert again.ok, again.findings
    assert again.findings == ()
    assert again.complete


# --- detection and repair of every kind of damage ------------------------------------------------


@pytest.mark.parametrize(("kind", "how"), BACKUP_CASES)
def test_damage_is_found_and_repaired_from_backup(
    ps: Pristine, kind: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    dbname, key, other, cids = target(ps, kind)
    inject(ps.path, dbname, key, how, other)
    events: list[Finding] = []
    with ckdb.open(ps.path, retention=None, on_corruption=events.append) as store:
        assert_never_damaged_data(store, ps)
        with caplog.at_level(logging.CRITICAL, logger="ckdb"):
            report = store.scrub()
        assert report.complete
        assert not report.ok
        for k in damaged_keys(key, other, how):
            assert named(report.findings, k, cids), (k.hex(), report.findings)
        # Every finding went to the callback as the Finding itself, and to the log at CRITICAL.
        assert events == list(report.findings)
        critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert len(critical) >= len(report.findings)
        # Marked checkpoints are refused by load and skipped by latest (never damaged data).
        assert_never_damaged_data(store, ps)

        repaired = store.scrub(repair=True, backup=ps.backup)
        assert repaired.ok, repaired.findings
        assert_clean(store)
    assert dump(ps.path) == ps.raw  # byte-identical with the pristine store (= the backup)
    assert dump(ps.backup) == ps.raw  # and the backup was only read
    with ckdb.open(ps.path, retention=None) as store:
        assert_restores_exactly(store, ps, ps.ids, ps.root)
        assert_clean(store)


@pytest.mark.parametrize(("kind", "how"), NO_BACKUP_CASES)
def test_damage_without_backup_is_removed_cleanly(ps: Pristine, kind: str, how: str) -> None:
    dbname, key, other, cids = target(ps, kind)
    inject(ps.path, dbname, key, how, other)
    with ckdb.open(ps.path, retention=None) as store:
        report = store.scrub(repair=True)
        for k in damaged_keys(key, other, how):
            assert named(report.findings, k, cids), (k.hex(), report.findings)
        # Nothing is left wrong: every finding was repaired, removed, rebuilt or deleted (a
        # deletion loses data, so ``ok`` stays False for it: it is not "repaired").
        assert {f.action for f in report.findings} <= {"repaired", "removed", "rebuilt", "deleted"}
        assert report.deleted == sum(1 for f in report.findings if f.action == "deleted")
        assert_clean(store)
        remaining = {i.id for i in store.list()}
        deleted = set(ps.ids) - remaining
        assert deleted <= cids
        if kind in ("metadata", "state", "manifest"):
            assert deleted == (cids if how == "swap" else {ps.ids[VICTIM]})
        else:
            # The registry entry is rebuilt from intact metadata, counts from the manifests:
            # nothing of value was damaged, nothing is deleted.
            assert deleted == set()
        for cid in deleted:
            with pytest.raises(ckdb.CheckpointNotFound):
                store.load(cid)
    with ckdb.open(ps.path, retention=None) as store:
        assert_clean(store)
        assert_restores_exactly(store, ps, sorted(remaining), ps.root)
    raw = dump(ps.path)
    assert raw[DB_MARKS] == {}
    for cid in deleted:  # removed cleanly: nothing of it is left anywhere
        prefix = id_from_text(cid)
        assert prefix not in raw[DB_CHECKPOINTS]
        assert not any(k.startswith(prefix) for k in raw[DB_PAYLOADS])
        assert not any(v[:16] == prefix for v in raw[DB_REGISTRY].values())


@pytest.mark.parametrize("how", HOWS)
def test_chunk_damage_without_backup_is_salvaged(ps: Pristine, how: str) -> None:
    """Every way of damaging a chunk, no backup: its checkpoints are kept with their state and
    the file the chunk held is marked damaged; nothing is deleted; the rest restores exactly."""
    dbname, key, other, cids = target(ps, "chunk")
    inject(ps.path, dbname, key, how, other)
    hit = cids if how == "swap" else {ps.ids[VICTIM]}
    with ckdb.open(ps.path, retention=None) as store:
        report = store.scrub(repair=True)
        assert not report.ok  # data was lost: salvaging is not repairing
        assert report.deleted == 0
        assert report.salvaged == len(hit)
        actions = {f.checkpoint_id: f.action for f in report.findings if f.kind == "checkpoint"}
        assert set(actions) == hit
        assert all("1 damaged file(s): unique.bin" in a for a in actions.values()), actions
        assert {i.id for i in store.list()} == set(ps.ids)
        for cid in hit:
            info = store.get_info(cid)
            assert (info.status, info.damaged_files) == ("damaged", ("unique.bin",))
            assert store.load(cid).state == ps.states[cid]
            target_dir = ps.root / f"salvaged-{cid}"
            restored = store.restore(cid, target_dir=target_dir)
            assert not restored.ok
            assert restored.unrestored == (
                "unique.bin: its content is damaged (salvaged by scrub); not restored",
            )
            assert {p.name: p.read_bytes() for p in target_dir.iterdir()} == {"common.txt": COMMON}
        # A second scrub (with or without repair) keeps them as they are, and says so.
        for repair in (False, True):
            again = store.scrub(repair=repair)
            assert {f.checkpoint_id: f.action for f in again.findings} == dict.fromkeys(
                hit, "kept (damaged files)"
            )
        # The damaged chunk's record is gone (never data); its count stays with the manifests.
        assert_restores_exactly(store, ps, sorted(set(ps.ids) - hit), ps.root)
    raw = dump(ps.path)
    for chunk in damaged_keys(key, other, how):
        assert chunk not in raw[DB_CHUNKS]
        assert chunk in raw[DB_REFS]
    with ckdb.open(ps.path, retention=None) as store:  # the backup still makes it whole
        assert store.scrub(repair=True, backup=ps.backup).repaired == len(hit)
        assert_clean(store)
    assert dump(ps.path) == ps.raw


@pytest.mark.parametrize("kind", ["metadata", "state"])
def test_pinned_damaged_checkpoint_stays_marked(ps: Pristine, kind: str) -> None:
    pinned = ps.ids[Pristine.PINNED]
    pid = id_from_text(pinned)
    if kind == "metadata":
        inject(ps.path, DB_CHECKPOINTS, pid, "flip")
    else:
        inject(ps.path, DB_PAYLOADS, payload_key(pid, RecordType.BUNDLE, ""), "flip")
    with ckdb.open(ps.path, retention=None) as store:
        report = store.scrub(repair=True)
        (finding,) = [f for f in report.findings if f.checkpoint_id == pinned]
        assert finding.action.startswith("kept (pinned)")
        assert not report.ok
        assert report.deleted == 0
        with pytest.raises(IntegrityError):
            store.load(pinned)
        infos = {i.id: i for i in store.list()}
        assert set(infos) == set(ps.ids)
        if kind != "metadata":
            assert infos[pinned].pinned
        assert infos[pinned].status is not None
        assert store.latest("wf-a").id != pinned
        # A later repair from the backup brings it back, still pinned.
        assert store.scrub(repair=True, backup=ps.backup).ok
        assert_clean(store)
        assert store.get_info(pinned).pinned
    assert dump(ps.path) == ps.raw


def test_pinned_checkpoint_with_flipped_registry_entry_is_not_deleted(ps: Pristine) -> None:
    pinned = ps.ids[Pristine.PINNED]
    inject(ps.path, DB_REGISTRY, ps.reg_keys[pinned], "flip")
    with ckdb.open(ps.path, retention=None) as store:
        store.scrub(repair=True)  # no backup
        assert pinned in {i.id for i in store.list()}
        assert store.load(pinned).state == ps.states[pinned]
        assert store.get_info(pinned).pinned


def test_scrub_does_not_unpin_through_a_flipped_registry_entry(ps: Pristine) -> None:
    pinned = ps.ids[Pristine.PINNED]
    inject(ps.path, DB_REGISTRY, ps.reg_keys[pinned], "flip")
    with ckdb.open(ps.path, retention=None) as store:
        store.scrub()  # marks it (rewriting the entry)
        store.scrub(repair=True, backup=ps.backup)
        assert store.get_info(pinned).pinned
        assert_clean(store)
    assert dump(ps.path) == ps.raw


def test_pristine_scrubs_clean(ps: Pristine) -> None:
    with ckdb.open(ps.path, retention=None) as store:
        report = store.scrub()
        assert report.ok and report.findings == () and report.complete
        assert report.checkpoints_checked == len(ps.ids)
        assert report.bytes_checked > 0


def test_random_damage_is_always_found(pristine: Pristine, tmp_path: Path) -> None:
    """Seeded random damages over every record of the data sub-databases: the findings rate."""
    rng = random.Random(20240611)
    records = [
        (db, k)
        for db in (DB_CHECKPOINTS, DB_PAYLOADS, DB_CHUNKS, DB_REGISTRY, DB_REFS)
        for k in pristine.raw[db]
    ]
    injected = found = 0
    for round_ in range(24):
        path = tmp_path / f"r{round_}"
        shutil.copytree(pristine.path, path)
        dbname, key = rng.choice(records)
        how = rng.choice(("flip", "truncate", "delete", "bitflip-any"))
        if how == "bitflip-any":
            value = pristine.raw[dbname][key]
            out = bytearray(value)
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            with raw_env(path) as (txn, db):
                txn.put(key, bytes(out), db=db(dbname))
        else:
            inject(path, dbname, key, how)
        cids = _owners(pristine, dbname, key)
        injected += 1
        with ckdb.open(path, retention=None) as store:
            assert_never_damaged_data(store, pristine)
            report = store.scrub()
            if named(report.findings, key, cids):
                found += 1
            store.scrub(repair=True, backup=pristine.backup)
            assert_clean(store)
        if dbname != DB_REGISTRY:  # registry: see the xfail cases above (flags dropped by mark)
            assert dump(path) == pristine.raw
        shutil.rmtree(path)
    assert found == injected, f"found {found} of {injected} injected damages"


def _owners(ps: Pristine, dbname: bytes, key: bytes) -> set[str]:
    if dbname in (DB_CHECKPOINTS, DB_PAYLOADS):
        return {cid for cid in ps.ids if key.startswith(id_from_text(cid))}
    if dbname == DB_CHUNKS:
        return ps.holders(key)
    if dbname == DB_REGISTRY:
        return {cid for cid, k in ps.reg_keys.items() if k == key}
    return set()


# --- orphans, leases and reference counts --------------------------------------------------------


def test_orphans_and_expired_leases_are_found_and_removed(ps: Pristine) -> None:
    orphan_cid = secrets.token_bytes(16)
    orphan_payload = payload_key(orphan_cid, RecordType.COMPONENT, "task")
    orphan_chunk = secrets.token_bytes(32)
    protected_chunk = secrets.token_bytes(32)
    with ckdb.open(ps.path, retention=None) as store:
        some_payload = ps.raw[DB_PAYLOADS][
            payload_key(id_from_text(ps.ids[0]), RecordType.BUNDLE, "")
        ]
        some_chunk = ps.raw[DB_CHUNKS][ps.unique_chunk(ps.ids[0])]
        now = ckdb.meta.now_us()

        def plant(txn: Any) -> None:
            txn.put(DB_PAYLOADS, orphan_payload, some_payload)
            txn.put(DB_CHUNKS, orphan_chunk, some_chunk)
            txn.put(DB_CHUNKS, protected_chunk, some_chunk)
            put_lease(txn, store._keys, b"E" * 16, [orphan_chunk], now - 10_000_000, 1)
            put_lease(txn, store._keys, b"L" * 16, [protected_chunk], now + 3_600_000_000, 1)

        store._env.write(plant)
        report = store.scrub()
        assert not report.ok
        kinds = {(f.kind, f.where) for f in report.findings}
        assert ("orphan-payload", f"payloads/{orphan_payload.hex()}") in kinds
        assert ("orphan-chunk", f"chunks/{orphan_chunk.hex()}") in kinds
        assert any(
            f.kind == "lease" and (b"lease/" + b"E" * 16).hex() in f.where for f in report.findings
        )
        # The live lease protects its chunk, and is not itself a finding.
        assert not any(protected_chunk.hex() in f.where for f in report.findings)
        assert not any((b"lease/" + b"L" * 16).hex() in f.where for f in report.findings)
        assert all(f.action == "reported" for f in report.findings)

        fixed = store.scrub(repair=True)
        assert fixed.ok
        assert {f.action for f in fixed.findings} == {"removed"}
        # The live lease and its chunk stay; drop them to compare with the pristine bytes.
        store._env.write(
            lambda txn: (
                txn.delete(DB_SETTINGS, b"lease/" + b"L" * 16),
                txn.delete(DB_CHUNKS, protected_chunk),
            )
        )
        leftover = store.scrub(repair=True)
        assert leftover.ok and leftover.findings == ()
        assert_clean(store)
    raw = dump(ps.path)
    assert raw == ps.raw
    with raw_env(ps.path, write=False) as (txn, db):
        settings = {bytes(k) for k, _v in txn.cursor(db=db(DB_SETTINGS))}
    assert not any(k.startswith(b"lease/") for k in settings)


@pytest.mark.parametrize("count", [0, 1, 7, 2**40])
def test_wrong_reference_counts_are_rebuilt(ps: Pristine, count: int) -> None:
    (common,) = ps.common_chunk
    unique = ps.unique_chunk(ps.ids[0])
    with ckdb.open(ps.path, retention=None) as store:
        store._env.write(
            lambda txn: (
                txn.put(DB_REFS, common, encode_refs(store._keys, common, count)),
                txn.put(DB_REFS, unique, encode_refs(store._keys, unique, count + 2)),
            )
        )
        report = store.scrub()
        wrong = {f.where for f in report.findings if f.kind == "refs"}
        if count != len(ps.ids):
            assert f"refs/{common.hex()}" in wrong
        assert f"refs/{unique.hex()}" in wrong
        fixed = store.scrub(repair=True)
        assert fixed.ok
        assert {f.action for f in fixed.findings} == {"rebuilt"}
        assert_clean(store)
    assert dump(ps.path) == ps.raw
    # The rebuilt counts are right: deleting every checkpoint frees every chunk, and only then.
    with ckdb.open(ps.path, retention=None) as store:
        for cid in ps.ids[:-1]:
            store.unpin(cid) if cid == ps.ids[Pristine.PINNED] else None
            store.delete(cid)
            assert store.has_chunk(common)
        store.delete(ps.ids[-1])
        assert not store.has_chunk(common)
        assert_clean(store)


def test_lost_reference_count_is_rebuilt(ps: Pristine) -> None:
    (common,) = ps.common_chunk
    inject(ps.path, DB_REFS, common, "delete")
    with ckdb.open(ps.path, retention=None) as store:
        report = store.scrub()
        assert any(f.kind == "refs" and common.hex() in f.where for f in report.findings)
        assert store.scrub(repair=True).ok
        assert_clean(store)
    assert dump(ps.path) == ps.raw


def test_scrub_by_workflow_only_checks_that_workflow(ps: Pristine) -> None:
    victim = ps.ids[PARTNER]  # wf-b
    inject(
        ps.path,
        DB_PAYLOADS,
        payload_key(id_from_text(victim), RecordType.BUNDLE, ""),
        "flip",
    )
    with ckdb.open(ps.path, retention=None) as store:
        a = store.scrub(workflow_id="wf-a")
        assert a.ok and a.findings == ()
        assert a.checkpoints_checked == sum(1 for wf, _n in Pristine.PLAN if wf == "wf-a")
        b = store.scrub(workflow_id="wf-b")
        assert [f.checkpoint_id for f in b.findings] == [victim]


def test_failing_callback_does_not_stop_scrub(ps: Pristine) -> None:
    inject(ps.path, DB_CHUNKS, ps.unique_chunk(ps.ids[VICTIM]), "flip")
    inject(ps.path, DB_CHUNKS, ps.unique_chunk(ps.ids[PARTNER]), "flip")
    calls: list[Finding] = []

    def broken(finding: Finding) -> None:
        calls.append(finding)
        raise RuntimeError("alerting is down")

    with ckdb.open(ps.path, retention=None, on_corruption=broken) as store:
        seen: list[Finding] = []
        store.add_corruption_handler(seen.append)
        report = store.scrub()
        assert {f.checkpoint_id for f in report.findings} >= {ps.ids[VICTIM], ps.ids[PARTNER]}
        assert calls == seen == list(report.findings)


# --- incremental scrub ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "budget",
    [
        1,
        2000,
        timedelta(seconds=5),
        timedelta(microseconds=1),
    ],
)
def test_budgeted_scrub_covers_the_store_in_one_cycle(ps: Pristine, budget: Any) -> None:
    # Damage the checkpoint that sorts last in id order (the cycle's last one) and the first.
    ordered = sorted(ps.ids, key=id_from_text)
    first, last = ordered[0], ordered[-1]
    for cid in (first, last):
        inject(
            ps.path,
            DB_PAYLOADS,
            payload_key(id_from_text(cid), RecordType.BUNDLE, ""),
            "flip",
        )
    with ckdb.open(ps.path, retention=None) as store:
        found: set[str] = set()
        checked = 0
        runs = 0
        while True:
            report = store.scrub(budget=budget)
            runs += 1
            checked += report.checkpoints_checked
            found |= {f.checkpoint_id for f in report.findings if f.kind == "checkpoint"}
            if report.complete:
                break
            assert runs <= 4 * len(ps.ids), "an incremental scrub must make progress"
        assert found == {first, last}
        assert checked >= len(ps.ids)  # every checkpoint checked within one cycle
        if budget == 1:
            assert runs >= len(ps.ids)  # one checkpoint per run: truly incremental
        # The next cycle starts over from the beginning.
        report = store.scrub(budget=10**9)
        assert report.complete
        assert report.checkpoints_checked == len(ps.ids)


def test_budgeted_scrub_union_of_checked_covers_all(ps: Pristine) -> None:
    """Each checkpoint damaged in turn is found within one full cycle of one-checkpoint runs."""
    with ckdb.open(ps.path, retention=None) as store:
        for cid in ps.ids:
            key = payload_key(id_from_text(cid), RecordType.BUNDLE, "")
            good = ps.raw[DB_PAYLOADS][key]
            store._env.write(lambda txn, key=key, good=good: txn.put(DB_PAYLOADS, key, flip(good)))
            found = set()
            for _ in range(len(ps.ids) + 1):
                report = store.scrub(budget=1)
                found |= {f.checkpoint_id for f in report.findings}
                if cid in found:
                    break
            assert cid in found
            assert store.scrub(repair=True, backup=ps.backup).ok
        assert_clean(store)
    assert dump(ps.path) == ps.raw


def test_budgeted_cycle_completes_while_writes_outpace_it(ps: Pristine) -> None:
    with ckdb.open(ps.path, retention=None) as store:
        complete = False
        for i in range(4 * len(ps.ids)):
            complete = complete or store.scrub(budget=1).complete
            for j in range(2):
                store.create("wf-c", "x", state={"i": i, "j": j})
        assert complete


def test_budget_must_be_bytes_or_time(store: ckdb.Store) -> None:
    for bad in (0, -1, 1.5, "1s", True):
        with pytest.raises(ckdb.InvalidInput):
            store.scrub(budget=bad)


def test_scrub_of_a_store_changing_between_runs(ps: Pristine, tmp_path: Path) -> None:
    """Checkpoints created and deleted between incremental runs never break the cycle."""
    work = tmp_path / "w"
    work.mkdir()
    with ckdb.open(ps.path, retention=None) as store:
        for i in range(12):
            store.scrub(budget=1)
            (work / "f").write_bytes(unique_for(100 + i))
            store.create("wf-c", "x", state={"i": i}, files=work)
            if i % 3 == 0:
                store.delete(store.list("wf-c")[-1].id)
        while not store.scrub(budget=1).complete:
            pass
        assert_clean(store)
