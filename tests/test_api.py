"""The public API: opening, keys, formats, bad input (clear error, nothing written), ids."""

from __future__ import annotations

import os
import stat
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lmdb
import pytest

import ckdb
from ckdb.layout import FORMAT, ID_TEXT_LEN, id_from_text, id_to_text, new_id


def raw_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=32, subdir=True)


# --- opening and creating ------------------------------------------------------------------------


def test_create_makes_store_with_private_key_file(store_path: Path) -> None:
    with ckdb.open(store_path) as s:
        assert not s.closed
    key_file = store_path / "key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key_file.read_text().strip())) == 32
    # No temporary creation directory is left behind.
    assert [p.name for p in store_path.parent.iterdir()] == [store_path.name]


def test_create_into_existing_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    with ckdb.open(target) as s:
        s.create("wf", "p")
    with ckdb.open(target) as s:
        assert len(s.list()) == 1


def test_non_store_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "notastore"
    target.mkdir()
    (target / "precious.txt").write_text("user data")
    with pytest.raises(ckdb.FormatError):
        ckdb.open(target)
    assert (target / "precious.txt").read_text() == "user data"


def test_readonly_open_of_missing_store(tmp_path: Path) -> None:
    with pytest.raises(ckdb.StoreNotFound):
        ckdb.open(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()


def test_readonly_store_reads_but_refuses_writes(store_path: Path) -> None:
    with ckdb.open(store_path) as s:
        info = s.create("wf", "p", state={"a": 1})
    with ckdb.open(store_path, readonly=True) as s:
        assert s.load(info.id).state == {"a": 1}
        with pytest.raises(ckdb.ReadOnlyStore):
            s.create("wf", "p")
        with pytest.raises(ckdb.ReadOnlyStore):
            s.delete(info.id)


def test_explicit_key_writes_no_key_file(store_path: Path) -> None:
    key = os.urandom(32)
    with ckdb.open(store_path, key=key) as s:
        info = s.create("wf", "p", state={"a": 1})
    assert not (store_path / "key").exists()
    with ckdb.open(store_path, key=key) as s:
        assert s.load(info.id).state == {"a": 1}
    with pytest.raises(ckdb.WrongKey, match="no key"):
        ckdb.open(store_path)
    with pytest.raises(ckdb.WrongKey):
        ckdb.open(store_path, key=os.urandom(32))


def test_key_file_and_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "master.key"
    path = tmp_path / "s"
    with ckdb.open(path, key_file=key_file) as s:
        s.create("wf", "p")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (path / "key").exists()
    monkeypatch.setenv("CKDB_KEY_FILE", str(key_file))
    with ckdb.open(path) as s:
        assert len(s.list()) == 1
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    monkeypatch.setenv("CKDB_KEY_FILE", str(other))
    with pytest.raises(ckdb.WrongKey):
        ckdb.open(path)


@pytest.mark.parametrize("bad", [b"short", "a string key", 12345])
def test_bad_key_argument(store_path: Path, bad: object) -> None:
    with pytest.raises(ckdb.InvalidInput):
        ckdb.open(store_path, key=bad)  # type: ignore[arg-type]
    assert not store_path.exists()


def _rewrite_format(path: Path, **changes: int) -> None:
    env = raw_env(path)
    db = env.open_db(b"info")
    with env.begin(write=True) as txn:
        fields = list(FORMAT.unpack(txn.get(b"format", db=db)))
        if "version" in changes:
            fields[1] = changes["version"]
        if "incompat" in changes:
            fields[2] = changes["incompat"]
        txn.put(b"format", FORMAT.pack(*fields), db=db)
    env.close()


def test_newer_format_version_is_refused_before_the_key_is_used(store_path: Path) -> None:
    ckdb.open(store_path).close()
    _rewrite_format(store_path, version=2)
    with pytest.raises(ckdb.UnsupportedVersion, match="newer"):
        ckdb.open(store_path, key=os.urandom(32))  # a wrong key too: the version is checked first


def test_unknown_mandatory_feature_is_refused(store_path: Path) -> None:
    ckdb.open(store_path).close()
    _rewrite_format(store_path, incompat=0x80)
    with pytest.raises(ckdb.UnsupportedVersion, match="features"):
        ckdb.open(store_path)


def test_damaged_format_record_is_a_format_error(store_path: Path) -> None:
    ckdb.open(store_path).close()
    env = raw_env(store_path)
    db = env.open_db(b"info")
    with env.begin(write=True) as txn:
        txn.put(b"format", b"garbage", db=db)
    env.close()
    with pytest.raises(ckdb.FormatError):
        ckdb.open(store_path)


def test_plain_lmdb_environment_is_not_a_store(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "plain"))
    env.close()
    with pytest.raises(ckdb.FormatError):
        ckdb.open(tmp_path / "plain")


def test_unknown_durability(store_path: Path) -> None:
    with pytest.raises(ckdb.InvalidInput, match="durability"):
        ckdb.open(store_path, durability="fast")
    assert not store_path.exists()


def test_relaxed_durability_opens_and_writes(store_path: Path) -> None:
    with ckdb.open(store_path, durability="relaxed") as s:
        info = s.create("wf", "p", state={"x": 1})
    with ckdb.open(store_path) as s:
        assert s.load(info.id).state == {"x": 1}


def test_closed_store_refuses_use(store_path: Path) -> None:
    s = ckdb.open(store_path)
    s.close()
    s.close()  # idempotent
    with pytest.raises(ckdb.StoreClosed):
        s.create("wf", "p")
    with pytest.raises(ckdb.StoreClosed):
        s.list()


def test_one_environment_per_path_per_process(store_path: Path) -> None:
    with ckdb.open(store_path):
        with pytest.raises(ckdb.StoreLocked):
            ckdb.open(store_path)
        with pytest.raises(ckdb.StoreLocked):
            ckdb.open(Path(str(store_path) + "/."))  # another spelling of the same directory
    with ckdb.open(store_path):  # closed: may be opened again
        pass


def test_map_grows_from_a_tiny_map(store_path: Path) -> None:
    with ckdb.open(store_path, map_size=1 << 16, retention=None) as s:
        ids = [s.create("wf", "p", state={"blob": os.urandom(50_000)}).id for _ in range(40)]
        assert s.stats()["map_size"] > 1 << 16
    with ckdb.open(store_path, map_size=1 << 16, retention=None) as s:
        assert len(s.list("wf")) == 40
        for cid in ids:
            s.load(cid)


# --- bad input: a clear error, nothing written ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("", "p"), {}, "workflow_id must not be empty"),
        (("w" * 201, "p"), {}, "workflow_id is 201 bytes"),
        (("é" * 101, "p"), {}, "workflow_id is 202 bytes"),
        ((42, "p"), {}, "workflow_id must be a str"),
        ((None, "p"), {}, "workflow_id must be a str"),
        (("wf", ""), {}, "phase must not be empty"),
        (("wf", b"bytes"), {}, "phase must be a str"),
        (("wf", "p" * 300), {}, "phase is 300 bytes"),
        (("wf\x00x", "p"), {}, "NUL"),
        (("wf\ud800", "p"), {}, "not valid Unicode"),
        (("wf", "p"), {"kind": "weekly"}, "kind must be one of"),
        (("wf", "p"), {"kind": "manual"}, "manual checkpoint needs a name"),
        (("wf", "p"), {"kind": "manual", "name": ""}, "name must not be empty"),
        (("wf", "p"), {"state": ["not", "a", "mapping"]}, "state must be a mapping"),
        (("wf", "p"), {"state": {"": 1}}, "state component name must not be empty"),
        (("wf", "p"), {"state": {1: 1}}, "state component name must be a str"),
        (("wf", "p"), {"compression": "brotli"}, "compression must be"),
    ],
)
def test_bad_create_input_writes_nothing(
    store: ckdb.Store, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ckdb.InvalidInput, match=match):
        store.create(*args, **kwargs)  # type: ignore[arg-type]
    assert store.list() == []
    assert store.workflows() == []
    assert store.stats()["checkpoints"] == 0


def test_longest_names_are_accepted(store: ckdb.Store) -> None:
    wf, phase = "w" * 200, "é" * 100
    info = store.create(wf, phase, kind="manual", name="n" * 200)
    assert store.load(info.id).info.workflow_id == wf
    assert store.latest(wf) == store.get_info(info.id)


@pytest.mark.parametrize("bad", ["", "nope", "0" * 25, "0" * 27, "U" * 26, "8" + "0" * 25, None, 7])
def test_malformed_ids_are_not_found(store: ckdb.Store, bad: object) -> None:
    with pytest.raises(ckdb.CheckpointNotFound):
        store.load(bad)  # type: ignore[arg-type]
    with pytest.raises(ckdb.CheckpointNotFound):
        store.delete(bad)  # type: ignore[arg-type]
    with pytest.raises(KeyError):  # CheckpointNotFound is also a KeyError
        store.get_info(bad)  # type: ignore[arg-type]


def test_unknown_id_is_not_found(store: ckdb.Store) -> None:
    store.create("wf", "p")
    unknown = id_to_text(new_id())
    for op in (store.load, store.delete, store.pin, store.unpin, store.get_info):
        with pytest.raises(ckdb.CheckpointNotFound):
            op(unknown)


def test_unknown_workflow(store: ckdb.Store) -> None:
    assert store.latest("nobody") is None
    assert store.list("nobody") == []
    with pytest.raises(ckdb.WorkflowNotFound):
        store.delete_workflow("nobody")


def test_list_arguments_are_checked(store: ckdb.Store) -> None:
    with pytest.raises(ckdb.InvalidInput):
        store.list(kind="weekly")
    with pytest.raises(ckdb.InvalidInput):
        store.list(limit=-1)
    with pytest.raises(ckdb.InvalidInput, match="timezone-aware"):
        store.list(since=datetime(2020, 1, 1))  # noqa: DTZ001 - the point of the test


# --- behaviour -----------------------------------------------------------------------------------


def test_metadata_as_in_the_seed(store: ckdb.Store) -> None:
    before = datetime.now(UTC)
    a = store.create("wf", "planning", state={"task": {"t": 1}})
    b = store.create("wf", "review", kind="manual", name="before-refactor", compression=False)
    assert a.kind == "automatic" and a.type == "automatic"
    assert b.kind == "manual" and b.name == "before-refactor"
    assert a.checkpoint_id == a.id and len(a.id) == ID_TEXT_LEN
    assert a.created_at.tzinfo is not None and before - timedelta(seconds=5) <= a.created_at
    assert a.created_by
    assert (a.sequence, b.sequence) == (1, 2)
    assert a.parent_id is None and b.parent_id == a.id
    assert a.components[0].name == "task" and a.raw_size > 0 and a.stored_size > 0
    assert len(a.integrity) == 64


def test_ids_are_unique_and_time_sortable() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(id_from_text(id_to_text(i)) == i for i in ids[:500])
    assert [id_to_text(i) for i in ids] == sorted(id_to_text(i) for i in ids)


def test_list_filters_and_order(store: ckdb.Store) -> None:
    made = []
    for i in range(6):
        made.append(
            store.create(
                "wf" if i % 2 == 0 else "other",
                "even" if i % 3 == 0 else "odd",
                kind="manual" if i == 4 else "automatic",
                name="m" if i == 4 else None,
            )
        )
    assert [x.id for x in store.list()] == [m.id for m in reversed(made)]
    assert [x.id for x in store.list("wf")] == [made[4].id, made[2].id, made[0].id]
    assert [x.id for x in store.list("wf", kind="manual")] == [made[4].id]
    assert [x.id for x in store.list(phase="even")] == [made[3].id, made[0].id]
    assert [x.id for x in store.list(limit=2)] == [made[5].id, made[4].id]
    assert store.list(since=datetime.now(UTC) + timedelta(days=1)) == []
    assert len(store.list(until=datetime.now(UTC) + timedelta(days=1))) == 6
    assert store.workflows() == ["other", "wf"]


def test_latest_and_delete(store: ckdb.Store) -> None:
    a = store.create("wf", "p", state={"n": 1})
    b = store.create("wf", "p", state={"n": 2})
    latest = store.latest("wf")
    assert latest is not None and latest.id == b.id
    store.delete(b.id)
    latest = store.latest("wf")
    assert latest is not None and latest.id == a.id
    with pytest.raises(ckdb.CheckpointNotFound):
        store.load(b.id)
    c = store.create("wf", "p")
    assert c.sequence == 3  # sequences are never reused
    assert c.parent_id == a.id


def test_delete_workflow_removes_everything(store: ckdb.Store) -> None:
    keep = store.create("keep", "p", state={"x": 1})
    ids = [store.create("gone", "p", state={"x": i}).id for i in range(5)]
    assert store.delete_workflow("gone") == 5
    assert store.workflows() == ["keep"]
    for cid in ids:
        with pytest.raises(ckdb.CheckpointNotFound):
            store.load(cid)
    assert store.load(keep.id).state == {"x": 1}
    assert store.stats()["payload_frames"] == 1


def test_pin_and_unpin(store: ckdb.Store) -> None:
    a = store.create("wf", "p", pinned=True)
    assert a.pinned and store.get_info(a.id).pinned
    assert not store.unpin(a.id).pinned
    assert not store.load(a.id).info.pinned
    assert store.pin(a.id).pinned


def test_error_exit_codes_are_unique() -> None:
    from ckdb.errors import all_errors

    codes = [cls.exit_code for cls in all_errors()]
    assert len(codes) == len(set(codes))
    assert 0 not in codes and 1 not in codes
    assert issubclass(ckdb.CheckpointNotFound, KeyError)
    assert issubclass(ckdb.InvalidInput, ValueError)
    assert str(ckdb.CheckpointNotFound("plain message")) == "plain message"


def test_registry_value_layout_is_what_the_docs_say() -> None:
    from ckdb.layout import REGISTRY_VALUE

    assert struct.calcsize(REGISTRY_VALUE.format) == 43
