"""Damage through the layer below: every stored value of a checkpoint, flipped, truncated,
deleted or replaced by a valid frame from another address, is an IntegrityError — never data.

The store is damaged with raw py-lmdb transactions (the ckdb ``Store`` is closed first: one
environment per path per process), then reopened with ckdb. A pristine store is built once per
module and copied for each test, so every test starts from the same bytes.

Only ckdb's *values* are damaged here; damage to LMDB's own pages can crash the process and
belongs in a subprocess (see test_crash_kill.py for structural checks).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ckdb
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_INFO,
    DB_PAYLOADS,
    DB_REGISTRY,
    DB_WORKFLOWS,
    FRAME_HEADER,
    INFO_FORMAT,
    INFO_KEYCHECK,
    INFO_KEYRING,
    REGISTRY_VALUE,
    TAG_SIZE,
    RecordType,
    id_from_text,
    payload_key,
    registry_key,
    workflow_key,
)


def open_store(path: Any, **kwargs: Any) -> ckdb.Store:
    """``ckdb.open`` with automatic retention off: these tests count every checkpoint."""
    return ckdb.open(path, retention=None, **kwargs)


WF = "wf"
OTHER = "other"

Damage = Callable[[bytes], "bytes | None"]  # new value, or None to delete


# --- raw access ----------------------------------------------------------------------------------


@contextlib.contextmanager
def raw_txn(path: Path) -> Iterator[Callable[[bytes], Any]]:
    """A raw write transaction on the store's environment; yields ``db(name) -> handle``."""
    env = lmdb.open(str(path), max_dbs=32, subdir=True, create=False)
    try:
        with env.begin(write=True) as txn:
            yield lambda name: (txn, env.open_db(name, txn=txn, create=False))
    finally:
        env.close()


def raw_get(path: Path, db: bytes, key: bytes) -> bytes | None:
    with raw_txn(path) as handle:
        txn, dbi = handle(db)
        value = txn.get(key, db=dbi)
        return None if value is None else bytes(value)


def raw_put(path: Path, db: bytes, key: bytes, value: bytes | None) -> None:
    with raw_txn(path) as handle:
        txn, dbi = handle(db)
        if value is None:
            assert txn.delete(key, db=dbi)
        else:
            txn.put(key, value, db=dbi)


def damage(path: Path, db: bytes, key: bytes, how: Damage) -> bytes:
    """Apply ``how`` to the value at ``db``/``key``; returns the original value."""
    with raw_txn(path) as handle:
        txn, dbi = handle(db)
        old = txn.get(key, db=dbi)
        assert old is not None, (db, key)
        old = bytes(old)
        new = how(old)
        if new is None:
            assert txn.delete(key, db=dbi)
        else:
            assert new != old, "the damage must change the value"
            txn.put(key, new, db=dbi)
    return old


def flip(pos: int, mask: int = 0x01) -> Damage:
    def apply(value: bytes) -> bytes:
        i = pos % len(value)
        out = bytearray(value)
        out[i] ^= mask
        return bytes(out)

    apply.__name__ = f"flip[{pos}]"
    return apply


def truncate(length: int) -> Damage:
    def apply(value: bytes) -> bytes:
        n = length % len(value) if length < 0 else min(length, len(value) - 1)
        return value[:n]

    return apply


def delete(_value: bytes) -> None:
    return None


def extend(value: bytes) -> bytes:
    return value + b"\x00"


# --- the pristine store --------------------------------------------------------------------------


def _state(tag: str, n: int) -> dict[str, Any]:
    return {
        "small": {"tag": tag, "n": n, "ok": True},  # below the compression threshold
        # Over BUNDLE_MAX encoded: a frame of its own; "small" and "float" share the bundle.
        "big": {"lines": [f"{tag} line {i} " * 4 for i in range(2000)], "blob": bytes(range(256))},
        "float": [1.5, -0.0, float("inf"), 2**70, -(2**65), None, b"\x00\xff", "é"],
    }


def _extra(tag: str) -> dict[str, Any]:
    return {"resources": {"gpu": tag, "mem": 123}, "dependencies": {"pkg": [tag, "1.0"]}}


class Pristine:
    """Ids and expected contents of the pristine store (built once per module)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.expected: dict[str, tuple[dict[str, Any], Any, Any]] = {}
        with open_store(path) as store:
            self.a = self._create(store, WF, "first", "A", 1)  # the target's predecessor
            self.b = self._create(store, WF, "second", "B", 2)  # the target
            self.c = self._create(store, OTHER, "third", "C", 3)  # another workflow
            self.d = self._create(store, OTHER, "fourth", "D", 4)
            self.seq = {cid: store.get_info(cid).sequence for cid in self.expected}
            self.where = {
                (cid, name): store._payload_address(cid, RecordType.COMPONENT, name)
                for cid in self.expected
                for name in _state("x", 0)
            }
        assert self.where[self.a, "small"] == self.where[self.a, "float"]  # the bundle
        assert self.where[self.a, "big"] == payload_key(
            id_from_text(self.a), RecordType.COMPONENT, "big"
        )
        self.wf_of = {self.a: WF, self.b: WF, self.c: OTHER, self.d: OTHER}

    def _create(self, store: ckdb.Store, wf: str, phase: str, tag: str, n: int) -> str:
        extra = _extra(tag)
        info = store.create(wf, phase, state=_state(tag, n), **extra)
        self.expected[info.id] = (_state(tag, n), extra["resources"], extra["dependencies"])
        return info.id

    def reg_key(self, cid: str) -> bytes:
        return registry_key(workflow_key(self.wf_of[cid]), self.seq[cid])

    def address(self, cid: str, component: str) -> tuple[bytes, bytes]:
        """(sub-db, key) of one stored value of a checkpoint."""
        raw = id_from_text(cid)
        if component == "metadata":
            return DB_CHECKPOINTS, raw
        if component == "registry":
            return DB_REGISTRY, self.reg_key(cid)
        if component == "resources":
            return DB_PAYLOADS, payload_key(raw, RecordType.RESOURCES, "resources")
        if component == "dependencies":
            return DB_PAYLOADS, payload_key(raw, RecordType.DEPENDENCIES, "dependencies")
        return DB_PAYLOADS, self.where[cid, component]


PAYLOADS = ("small", "big", "float", "resources", "dependencies")
VALUES = ("metadata", "registry", *PAYLOADS)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    return Pristine(tmp_path_factory.mktemp("pristine") / "store.ckdb")


@pytest.fixture
def ps(pristine: Pristine, tmp_path: Path) -> Pristine:
    """A private copy of the pristine store (same ids, same bytes)."""
    copy = Pristine.__new__(Pristine)
    copy.__dict__.update(pristine.__dict__)
    copy.path = tmp_path / "store.ckdb"
    shutil.copytree(pristine.path, copy.path)
    return copy


def assert_loads_exactly(store: ckdb.Store, ps: Pristine, cid: str) -> None:
    ck = store.load(cid)
    state, resources, dependencies = ps.expected[cid]
    assert ck.info.id == cid
    assert ck.state == state
    assert repr(ck.state) == repr(state)  # -0.0 vs 0.0 and int vs float too
    assert ck.resources == resources
    assert ck.dependencies == dependencies


def assert_rejected(store: ckdb.Store, ps: Pristine, cid: str, *, missing_ok: bool = False) -> None:
    """``load`` must fail with IntegrityError (CheckpointNotFound if ``missing_ok``)."""
    allowed: tuple[type[Exception], ...] = (ckdb.IntegrityError,)
    if missing_ok:
        allowed = (ckdb.IntegrityError, ckdb.CheckpointNotFound)
    try:
        ck = store.load(cid)
    except allowed:
        return
    state, resources, dependencies = ps.expected[cid]
    identical = ck.state == state and ck.resources == resources and ck.dependencies == dependencies
    pytest.fail(
        f"load() of a damaged checkpoint returned {'the original' if identical else 'DIFFERENT'} "
        "data instead of raising IntegrityError"
    )


# --- damage to one value of a checkpoint ---------------------------------------------------------

FRAME_POSITIONS = [
    0,  # magic
    2,
    3,  # frame version
    4,  # record type
    5,  # codec
    6,  # key id (high byte)
    7,  # key id (low byte)
    8,  # raw length (high)
    15,  # raw length (low)
    FRAME_HEADER.size,  # first body byte
    -TAG_SIZE - 1,  # last body byte
    -TAG_SIZE,  # first tag byte
    -1,  # last tag byte
]
REGISTRY_POSITIONS = [0, 15, 16, 23, 24, 25, 26, 27, 34, 42]  # id, created, flags, key id, tag

FRAME_DAMAGES: list[tuple[str, Damage]] = [
    *[(f"flip@{p}", flip(p)) for p in FRAME_POSITIONS],
    ("flip-all@body", flip(FRAME_HEADER.size, 0xFF)),
    ("truncate-0", truncate(0)),
    ("truncate-1", truncate(1)),
    ("truncate-header", truncate(FRAME_HEADER.size)),
    ("truncate-tag", truncate(-TAG_SIZE)),
    ("truncate-last", truncate(-1)),
    ("extend", extend),
    ("delete", delete),
]
REGISTRY_DAMAGES: list[tuple[str, Damage]] = [
    *[(f"flip@{p}", flip(p)) for p in REGISTRY_POSITIONS],
    ("flip-flags-pinned", flip(24, 0x01)),
    ("flip-flags-marked", flip(24, 0x02)),
    ("truncate-0", truncate(0)),
    ("truncate-15", truncate(15)),
    ("truncate-id", truncate(16)),
    ("truncate-tagged", truncate(REGISTRY_VALUE.size - 16)),
    ("truncate-last", truncate(-1)),
    ("extend", extend),
    ("delete", delete),
]

CASES = [
    pytest.param(component, how, id=f"{component}-{name}")
    for component in ("metadata", *PAYLOADS)
    for name, how in FRAME_DAMAGES
] + [pytest.param("registry", how, id=f"registry-{name}") for name, how in REGISTRY_DAMAGES]


@pytest.mark.parametrize(("component", "how"), CASES)
def test_damaged_value_is_an_error_never_data(ps: Pristine, component: str, how: Damage) -> None:
    db, key = ps.address(ps.b, component)
    damage(ps.path, db, key, how)
    deleted = how is delete
    with open_store(ps.path) as store:
        assert_rejected(store, ps, ps.b, missing_ok=deleted and component == "metadata")

        # The undamaged siblings, in the same and in another workflow, still load exactly.
        for cid in (ps.a, ps.c, ps.d):
            assert_loads_exactly(store, ps, cid)

        latest = store.latest(WF)
        assert latest is not None
        if component in ("metadata", "registry"):
            # The newest checkpoint's index entry or metadata is damaged: skip it.
            assert latest.id == ps.a
        else:
            # latest() checks metadata, not payloads (ARCHITECTURE.md §1); either is fine, and
            # it never returns anything else.
            assert latest.id in (ps.a, ps.b)
        assert store.latest(OTHER).id == ps.d  # type: ignore[union-attr]

        # list() never crashes and never presents the damaged checkpoint as valid when its
        # metadata or registry entry is damaged.
        listed = store.list(WF)
        everything = store.list()
        for entries in (listed, everything):
            valid = {i.id for i in entries if i.status == "valid"}
            assert ps.a in valid
            if component in ("metadata", "registry"):
                assert ps.b not in valid
        if component == "metadata" or (component == "registry" and not deleted):
            corrupted = [i for i in listed if i.status == "corrupted"]
            assert len(corrupted) == 1, listed
            assert corrupted[0].sequence == ps.seq[ps.b]
        assert [i.id for i in listed if i.status == "valid"][-1] == ps.a
        assert {i.id for i in store.list(OTHER)} == {ps.c, ps.d}

        # The workflow continues: a new checkpoint gets a new sequence and loads. One
        # exception (docs/format.md, flag 0x10): where damage removed the newest registry entry
        # itself, the registry no longer says its sequence was handed out, and the workflow
        # record of a seq-floor store is a floor, so the number is given again.
        new = store.create(WF, "after", state={"x": 1})
        reused = component == "registry" and deleted
        assert new.sequence == ps.seq[ps.b] + (0 if reused else 1)
        assert store.load(new.id).state == {"x": 1}
        assert store.latest(WF).id == new.id  # type: ignore[union-attr]
        # ...and the damaged one is still refused.
        assert_rejected(store, ps, ps.b, missing_ok=deleted and component == "metadata")


def test_undamaged_pristine_store_loads(ps: Pristine) -> None:
    """Control: the copy itself is fine, so every failure above is caused by the damage."""
    with open_store(ps.path) as store:
        for cid in ps.expected:
            assert_loads_exactly(store, ps, cid)
        assert store.latest(WF).id == ps.b  # type: ignore[union-attr]
        assert all(i.status == "valid" for i in store.list())


@pytest.fixture(scope="module")
def scratch(pristine: Pristine) -> Iterator[Pristine]:
    """One copy of the pristine store that Hypothesis examples damage and then repair."""
    tmp = Path(tempfile.mkdtemp(prefix="ckdb-corrupt-"))
    copy = Pristine.__new__(Pristine)
    copy.__dict__.update(pristine.__dict__)
    copy.path = tmp / "store.ckdb"
    shutil.copytree(pristine.path, copy.path)
    yield copy
    shutil.rmtree(tmp, ignore_errors=True)


@settings(max_examples=150)
@given(data=st.data())
def test_any_flipped_bits_are_detected(scratch: Pristine, data: st.DataObject) -> None:
    component = data.draw(st.sampled_from(VALUES), label="component")
    cid = data.draw(st.sampled_from(sorted(scratch.expected)), label="checkpoint")
    db, key = scratch.address(cid, component)
    original = raw_get(scratch.path, db, key)
    assert original is not None
    pos = data.draw(st.integers(0, len(original) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="xor mask")
    damage(scratch.path, db, key, flip(pos, mask))
    try:
        with open_store(scratch.path) as store:
            assert_rejected(store, scratch, cid)
            for other in scratch.expected:
                if other != cid:
                    assert_loads_exactly(store, scratch, other)
            store.list()  # never crashes
            store.latest(scratch.wf_of[cid])
    finally:
        raw_put(scratch.path, db, key, original)


@settings(max_examples=100)
@given(data=st.data())
def test_any_replacement_value_is_detected(scratch: Pristine, data: st.DataObject) -> None:
    """Arbitrary bytes (a frame-looking header included) in place of a stored value."""
    component = data.draw(st.sampled_from(VALUES), label="component")
    db, key = scratch.address(scratch.b, component)
    original = raw_get(scratch.path, db, key)
    assert original is not None
    head = st.just(original[: FRAME_HEADER.size]) if component != "registry" else st.just(b"")
    prefix = data.draw(st.one_of(st.just(b""), head), label="prefix")
    value = prefix + data.draw(st.binary(min_size=1, max_size=len(original) + 40), label="value")
    if value == original:
        return
    raw_put(scratch.path, db, key, value)
    try:
        with open_store(scratch.path) as store:
            assert_rejected(store, scratch, scratch.b)
            assert_loads_exactly(store, scratch, scratch.a)
            store.list()
            store.list(WF)
            latest = store.latest(WF)
            assert latest is not None
            assert latest.id in (scratch.a, scratch.b)
    finally:
        raw_put(scratch.path, db, key, original)


# --- valid frames copied under another address ---------------------------------------------------

COPIES = [
    # (source checkpoint attr, source component, destination component) -> into checkpoint b
    pytest.param("a", "small", "small", id="payload-of-A-under-B"),
    pytest.param("a", "big", "big", id="big-payload-of-A-under-B"),
    pytest.param("c", "small", "small", id="payload-of-other-workflow-under-B"),
    pytest.param("b", "small", "big", id="bundle-under-a-component-name"),
    pytest.param("b", "big", "small", id="component-under-the-bundle-key"),
    pytest.param("b", "resources", "dependencies", id="resources-as-dependencies"),
    pytest.param("a", "resources", "resources", id="resources-of-A-under-B"),
    pytest.param("a", "metadata", "metadata", id="metadata-of-A-under-B"),
    pytest.param("c", "metadata", "metadata", id="metadata-of-other-workflow-under-B"),
    pytest.param("a", "registry", "registry", id="registry-of-A-in-B-slot"),
    pytest.param("c", "registry", "registry", id="registry-of-other-workflow-in-B-slot"),
]


@pytest.mark.parametrize(("src", "src_component", "dst_component"), COPIES)
def test_valid_frame_under_another_key_is_rejected(
    ps: Pristine, src: str, src_component: str, dst_component: str
) -> None:
    source = getattr(ps, src)
    value = raw_get(ps.path, *ps.address(source, src_component))
    assert value is not None
    db, key = ps.address(ps.b, dst_component)
    damage(ps.path, db, key, lambda _old: value)
    with open_store(ps.path) as store:
        assert_rejected(store, ps, ps.b)
        for cid in (ps.a, ps.c, ps.d):
            assert_loads_exactly(store, ps, cid)
        if dst_component in ("metadata", "registry"):
            assert store.latest(WF).id == ps.a  # type: ignore[union-attr]
        store.list()


def test_swapped_metadata_of_two_checkpoints(ps: Pristine) -> None:
    key_a = ps.address(ps.a, "metadata")
    key_b = ps.address(ps.b, "metadata")
    meta_a = raw_get(ps.path, *key_a)
    meta_b = raw_get(ps.path, *key_b)
    raw_put(ps.path, *key_a, meta_b)
    raw_put(ps.path, *key_b, meta_a)
    with open_store(ps.path) as store:
        assert_rejected(store, ps, ps.a)
        assert_rejected(store, ps, ps.b)
        assert store.latest(WF) is None
        assert [i.status for i in store.list(WF)] == ["corrupted", "corrupted"]
        assert_loads_exactly(store, ps, ps.c)


def test_swapped_registry_entries(ps: Pristine) -> None:
    key_a = ps.address(ps.a, "registry")
    key_b = ps.address(ps.b, "registry")
    reg_a = raw_get(ps.path, *key_a)
    reg_b = raw_get(ps.path, *key_b)
    raw_put(ps.path, *key_a, reg_b)
    raw_put(ps.path, *key_b, reg_a)
    with open_store(ps.path) as store:
        assert_rejected(store, ps, ps.a)
        assert_rejected(store, ps, ps.b)
        assert store.latest(WF) is None
        assert [i.status for i in store.list(WF)] == ["corrupted", "corrupted"]


def test_extra_payload_is_not_returned(ps: Pristine) -> None:
    """A stray frame under a checkpoint's prefix that its metadata does not list is not data."""
    value = raw_get(ps.path, *ps.address(ps.b, "small"))
    raw_put(
        ps.path, DB_PAYLOADS, payload_key(id_from_text(ps.b), RecordType.COMPONENT, "evil"), value
    )
    with open_store(ps.path) as store:
        ck = store.load(ps.b)
        assert "evil" not in ck.state
        assert_loads_exactly(store, ps, ps.b)


# --- the workflow record -------------------------------------------------------------------------

WORKFLOW_DAMAGES = [
    pytest.param(flip(0), id="flip-magic"),
    pytest.param(flip(6), id="flip-key-id"),
    pytest.param(flip(FRAME_HEADER.size), id="flip-body"),
    pytest.param(flip(-1), id="flip-tag"),
    pytest.param(truncate(0), id="truncate-0"),
    pytest.param(truncate(-1), id="truncate-last"),
    pytest.param(extend, id="extend"),
    pytest.param("copy-other", id="copy-of-other-workflow"),
]


def _snapshot(path: Path) -> dict[bytes, list[tuple[bytes, bytes]]]:
    out = {}
    with raw_txn(path) as handle:
        for name in (DB_CHECKPOINTS, DB_PAYLOADS, DB_REGISTRY, DB_WORKFLOWS):
            txn, dbi = handle(name)
            out[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=dbi)]
    return out


@pytest.mark.parametrize("how", WORKFLOW_DAMAGES)
def test_damaged_workflow_record_is_rebuilt_by_the_next_create(
    pristine: Pristine, tmp_path: Path, how: Any
) -> None:
    """A damaged workflow record must not block the workflow forever (the review found every
    later create refused): the next create rebuilds it, its sequence comes after every existing
    one (the registry decides), and nothing that existed is changed or lost."""
    path = tmp_path / "store.ckdb"
    shutil.copytree(pristine.path, path)
    wf_key = workflow_key(WF)
    if how == "copy-other":
        other = raw_get(path, DB_WORKFLOWS, workflow_key(OTHER))
        damage(path, DB_WORKFLOWS, wf_key, lambda _old: other)
    else:
        damage(path, DB_WORKFLOWS, wf_key, how)
    before = _snapshot(path)
    with open_store(path) as store:
        newest_before = max(i.sequence for i in store.list(WF))
        info = store.create(WF, "after-damage", state={"x": 1}, resources={"r": 1})
        assert info.sequence == newest_before + 1
        assert store.load(info.id).state == {"x": 1}
        assert WF in store.workflows()  # the record verifies again
        second = store.create(WF, "again", kind="manual", name="again")
        assert second.sequence == info.sequence + 1
    after = _snapshot(path)
    for db in (DB_CHECKPOINTS, DB_PAYLOADS, DB_REGISTRY):
        assert set(before[db]) <= set(after[db]), f"{db!r}: an existing record changed or vanished"
    with open_store(path) as store:
        assert_loads_exactly(store, pristine, pristine.a)
        assert_loads_exactly(store, pristine, pristine.b)
        assert store.scrub().ok


def test_deleted_workflow_record_does_not_reuse_sequences(ps: Pristine) -> None:
    """With the workflow record gone, a create must not overwrite or shadow an existing entry."""
    damage(ps.path, DB_WORKFLOWS, workflow_key(WF), delete)
    with open_store(ps.path) as store:
        try:
            info = store.create(WF, "x", state={"x": 1})
        except ckdb.IntegrityError:
            pass
        else:
            assert info.sequence > ps.seq[ps.b]
            assert store.load(info.id).state == {"x": 1}
        assert_loads_exactly(store, ps, ps.a)
        assert_loads_exactly(store, ps, ps.b)


# --- the store header: key ring, key check, format record ----------------------------------------

HEADER_ERRORS = (ckdb.WrongKey, ckdb.IntegrityError, ckdb.FormatError)
HEADER_DAMAGES = [
    pytest.param(flip(0), id="flip-first"),
    pytest.param(flip(5), id="flip-5"),
    pytest.param(flip(12), id="flip-12"),
    pytest.param(flip(20), id="flip-20"),
    pytest.param(flip(-1), id="flip-last"),
    pytest.param(flip(-17), id="flip-last-17"),
    pytest.param(truncate(0), id="truncate-0"),
    pytest.param(truncate(11), id="truncate-11"),
    pytest.param(truncate(-1), id="truncate-last"),
    pytest.param(extend, id="extend"),
    pytest.param(delete, id="delete"),
]


@pytest.mark.parametrize("record", [INFO_KEYRING, INFO_KEYCHECK, INFO_FORMAT])
@pytest.mark.parametrize("how", HEADER_DAMAGES)
def test_damaged_store_header_fails_open(
    pristine: Pristine, tmp_path: Path, record: bytes, how: Damage
) -> None:
    path = tmp_path / "store.ckdb"
    shutil.copytree(pristine.path, path)
    original = damage(path, DB_INFO, record, how)
    for readonly in (False, True):
        with pytest.raises(HEADER_ERRORS):
            open_store(path, readonly=readonly)
    # A failed open closes what it opened: after a repair the same process can open it again.
    raw_put(path, DB_INFO, record, original)
    with open_store(path) as store:
        assert_loads_exactly(store, pristine, pristine.b)


def test_keyring_of_another_store_fails_open(pristine: Pristine, tmp_path: Path) -> None:
    path = tmp_path / "store.ckdb"
    shutil.copytree(pristine.path, path)
    other = tmp_path / "other.ckdb"
    shutil.copy(pristine.path / "key", tmp_path / "key")
    open_store(other, key_file=tmp_path / "key").close()  # same master key, another uuid
    for record in (INFO_KEYRING, INFO_KEYCHECK):
        value = raw_get(other, DB_INFO, record)
        original = damage(path, DB_INFO, record, lambda _old, v=value: v)
        with pytest.raises(HEADER_ERRORS):
            open_store(path)
        raw_put(path, DB_INFO, record, original)


# --- wrong keys ----------------------------------------------------------------------------------


def test_wrong_master_key_fails_open(tmp_path: Path) -> None:
    path = tmp_path / "store.ckdb"
    with open_store(path, key=b"k" * 32) as store:
        info = store.create(WF, "p", state={"secret": 1})
    for readonly in (False, True):
        with pytest.raises(ckdb.WrongKey):
            open_store(path, key=b"j" * 32, readonly=readonly)
        with pytest.raises(ckdb.WrongKey):
            open_store(path, key=b"k" * 31 + b"j", readonly=readonly)
        with pytest.raises(ckdb.WrongKey):
            open_store(path, readonly=readonly)  # no key given and no generated key file
    key_file = tmp_path / "wrong.key"
    key_file.write_text("ab" * 32 + "\n")
    with pytest.raises(ckdb.WrongKey):
        open_store(path, key_file=key_file)
    with pytest.raises(ckdb.WrongKey):
        open_store(path, key_file=tmp_path / "missing.key")
    with open_store(path, key=b"k" * 32) as store:  # the right key still works
        assert store.load(info.id).state == {"secret": 1}


def test_generated_key_file_replaced_fails_open(ps: Pristine) -> None:
    (ps.path / "key").write_text("cd" * 32 + "\n")
    with pytest.raises(ckdb.WrongKey):
        open_store(ps.path)
    (ps.path / "key").unlink()
    with pytest.raises(ckdb.WrongKey):
        open_store(ps.path)


def test_list_survives_an_empty_registry_value(ps: Pristine) -> None:
    """Regression: a registry value truncated to zero bytes made ``list()`` look up the
    zero-length checkpoint id b"" (``Store._entry_info``), which LMDB rejects with
    MDB_BAD_VALSIZE, so list() raised StorageError instead of listing the entry as corrupted."""
    damage(ps.path, *ps.address(ps.b, "registry"), truncate(0))
    with open_store(ps.path) as store:
        for listed in (store.list(WF), store.list()):
            statuses = {i.sequence: i.status for i in listed if i.workflow_id == WF}
            assert statuses == {ps.seq[ps.a]: "valid", ps.seq[ps.b]: "corrupted"}


def test_rolled_back_workflow_record_never_reuses_a_sequence(
    pristine: Pristine, tmp_path: Path
) -> None:
    """A valid but older workflow record (say, restored by hand) names a next sequence that is
    already taken. The registry decides: the next create gets a sequence after every existing one
    and nothing is overwritten."""
    path = tmp_path / "store.ckdb"
    shutil.copytree(pristine.path, path)
    wf_key = workflow_key(WF)
    old_record = raw_get(path, DB_WORKFLOWS, wf_key)
    with open_store(path) as store:
        # A delete of the newest raises next_seq (and so rewrites the record) in every store.
        store.delete(store.create(WF, "scratch", state={"n": 0}).id)
        newer = store.create(WF, "newer", state={"n": 1})
    damage(path, DB_WORKFLOWS, wf_key, lambda _old: old_record)
    with open_store(path) as store:
        info = store.create(WF, "after-rollback", state={"x": 1})
        assert info.sequence == newer.sequence + 1
        assert store.load(newer.id).state == {"n": 1}
        assert [i.sequence for i in store.list(WF)] == sorted(
            (i.sequence for i in store.list(WF)), reverse=True
        )
        assert_loads_exactly(store, pristine, pristine.a)


def test_a_removed_newest_entry_whose_number_was_given_again_keeps_its_checkpoint(
    ps: Pristine,
) -> None:
    """The one case where a sequence is given twice (the newest registry entry removed by
    damage, in a seq-floor store): scrub's repair keeps both checkpoints' records, reports the
    slot conflict, and deletes nothing."""
    damage(ps.path, *ps.address(ps.b, "registry"), delete)
    with open_store(ps.path) as store:
        new = store.create(WF, "after", state={"x": 1})
        assert new.sequence == ps.seq[ps.b]
        report = store.scrub(repair=True)
        assert report.deleted == 0
        actions = {(f.kind, f.action) for f in report.findings if f.checkpoint_id == ps.b}
        assert ("registry", "conflict") in actions, report.findings
        assert ("checkpoint", "kept (its slot holds another)") in actions, report.findings
        assert store.load(new.id).state == {"x": 1}
        assert_loads_exactly(store, ps, ps.a)
    assert raw_get(ps.path, *ps.address(ps.b, "metadata")) is not None  # kept, not deleted
