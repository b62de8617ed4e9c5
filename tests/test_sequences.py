"""Sequences and the workflow record (``INCOMPAT_SEQ_FLOOR``, docs/format.md).

A store created by ckdb 0.4 or later does not rewrite the workflow record on every create: its
``next_seq`` is a floor and the registry's newest entry decides the next sequence. Deleting the
newest entries raises the floor in the same transaction, so no sequence is ever handed out
twice. Stores written before keep the record exact on every create (golden stores), because the
ckdb that wrote them relies on it.
"""

from __future__ import annotations

import shutil
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import example, given, settings

import ckdb
from ckdb import encoding
from ckdb.codec import decode_frame
from ckdb.layout import (
    DB_INFO,
    DB_REGISTRY,
    DB_SETTINGS,
    DB_WORKFLOWS,
    FORMAT,
    INCOMPAT_SEQ_FLOOR,
    INFO_FORMAT,
    RecordType,
    workflow_key,
)
from ckdb.retention import RetentionPolicy
from ckdb.tables.workflows import FLOOR_PREFIX
from tests.test_scrub import flip, raw_env, raw_get

WF = "wf"
DATA = Path(__file__).resolve().parent / "data"
GOLDEN_KEY = b"golden-store-key-0123456789abcdef"


def _incompat(path: Path) -> int:
    fmt = raw_get(path, DB_INFO, INFO_FORMAT)
    assert fmt is not None
    return int(FORMAT.unpack(fmt)[2])


def _record(store: ckdb.Store, workflow_id: str = WF) -> dict[str, object]:
    """The workflow record as stored, verified (through the store's own keys)."""
    t = store.tables
    with t.env.read() as txn:
        raw = txn.get(DB_WORKFLOWS, t.keys.wf_key(workflow_id))
        assert raw is not None
        body = decode_frame(
            t.keys.mac,
            DB_WORKFLOWS,
            t.keys.wf_key(workflow_id),
            raw,
            RecordType.WORKFLOW,
            t.keys.aead,
        )
    doc = encoding.decode(body)
    assert isinstance(doc, dict)
    return doc


def test_a_new_store_has_the_flag_and_a_create_leaves_the_workflow_record_alone(
    store_path: Path,
) -> None:
    with ckdb.open(store_path, retention=None) as s:
        first = s.create(WF, "p", state={"n": 0})
    assert _incompat(store_path) & INCOMPAT_SEQ_FLOOR
    record = raw_get(store_path, DB_WORKFLOWS, workflow_key(WF))
    assert record is not None
    with ckdb.open(store_path, retention=None) as s:
        later = [s.create(WF, "p", state={"n": i}) for i in range(1, 6)]
        assert [i.sequence for i in later] == list(range(first.sequence + 1, first.sequence + 6))
        assert [i.sequence for i in s.list(WF)] == list(range(first.sequence + 5, 0, -1))
        assert s.load(s.latest(WF).id).state == {"n": 5}
        assert _record(s)["next_seq"] == first.sequence + 1  # a floor, not the next one
    assert raw_get(store_path, DB_WORKFLOWS, workflow_key(WF)) == record  # not rewritten


def test_deleting_the_newest_never_hands_its_sequence_out_again(store: ckdb.Store) -> None:
    infos = [store.create(WF, "p", state={"n": i}) for i in range(3)]
    store.delete(infos[2].id)
    assert _record(store)["next_seq"] == infos[2].sequence + 1  # raised with the delete
    after = store.create(WF, "p", state={"n": 3})
    assert after.sequence == infos[2].sequence + 1
    # Delete the newest two, the older first (that one is not the newest when deleted).
    store.delete(infos[1].id)
    store.delete(after.id)
    again = store.create(WF, "p", state={"n": 4})
    assert again.sequence == after.sequence + 1
    assert [i.sequence for i in store.list(WF)] == [again.sequence, infos[0].sequence]


def test_deleting_an_older_checkpoint_does_not_rewrite_the_record(store_path: Path) -> None:
    with ckdb.open(store_path, retention=None) as s:
        infos = [s.create(WF, "p", state={"n": i}) for i in range(3)]
    record = raw_get(store_path, DB_WORKFLOWS, workflow_key(WF))
    with ckdb.open(store_path, retention=None) as s:
        s.delete(infos[0].id)
        s.prune(WF, RetentionPolicy(max_checkpoints=1))
        assert [i.id for i in s.list(WF)] == [infos[2].id]
    assert raw_get(store_path, DB_WORKFLOWS, workflow_key(WF)) == record


def test_a_changed_working_directory_still_rewrites_the_record(
    store: ckdb.Store, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "f.txt").write_text(d.name)
    store.create(WF, "p", state={"n": 0}, files=a)
    store.create(WF, "p", state={"n": 1}, files=b)
    assert _record(store)["working_directory"] == str(b)
    third = store.create(WF, "p", state={"n": 2})  # the remembered directory: b
    store.restore(third.id, target_dir=tmp_path / "out")
    assert (tmp_path / "out" / "f.txt").read_text() == "b"


# One workflow, a random history of creates, deletes (newest, oldest, any), prunes, reopens and
# losses of the workflow record (what scrub does to a damaged one): every create takes a
# sequence above every sequence handed out before.
OPS = st.lists(
    st.one_of(
        st.just(("create",)),
        st.tuples(st.just("delete"), st.integers(0, 50)),
        st.just(("delete_newest",)),
        st.tuples(st.just("prune"), st.integers(1, 3)),
        st.just(("reopen",)),
        st.just(("drop_record",)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
@example(ops=[("create",), ("delete_newest",), ("drop_record",), ("create",)])
@example(ops=[("create",), ("drop_record",), ("delete", 0), ("create",)])
def test_no_sequence_is_handed_out_twice(tmp_path_factory: pytest.TempPathFactory, ops) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("seq") / "store.ckdb"
    handed_out: list[int] = []
    s = ckdb.open(path, retention=None)
    try:
        for op in ops:
            live = s.list(WF) if handed_out else []
            if op[0] == "create":
                info = s.create(WF, "p", state={"i": len(handed_out)})
                assert not handed_out or info.sequence > max(handed_out)
                handed_out.append(info.sequence)
            elif op[0] == "delete" and live:
                s.delete(live[op[1] % len(live)].id)
            elif op[0] == "delete_newest" and live:
                s.delete(live[0].id)
            elif op[0] == "prune" and live:
                s.prune(WF, RetentionPolicy(max_checkpoints=op[1]))
            elif op[0] == "reopen":
                s.close()
                s = ckdb.open(path, retention=None)
            elif op[0] == "drop_record":
                s.close()
                with raw_env(path) as (txn, db):
                    txn.delete(workflow_key(WF), db=db(DB_WORKFLOWS))
                s = ckdb.open(path, retention=None)
        final = s.create(WF, "p", state={"last": True})
        assert not handed_out or final.sequence > max(handed_out)
    finally:
        s.close()


@pytest.mark.parametrize("archive", ["golden-v1.tar.gz", "golden-v1-bundles.tar.gz"])
def test_an_older_store_keeps_its_workflow_record_exact(tmp_path: Path, archive: str) -> None:
    """ckdb 0.3 and before read ``next_seq`` as exact: in their stores every create still
    writes it, and the store does not gain the flag."""
    with tarfile.open(DATA / archive) as tar:
        tar.extractall(tmp_path, filter="data")
    path = tmp_path / "plain"
    assert not _incompat(path) & INCOMPAT_SEQ_FLOOR
    with ckdb.open(path, key=GOLDEN_KEY, retention=None) as s:
        for n in range(3):
            info = s.create("golden", "new", state={"n": n})
            assert _record(s, "golden")["next_seq"] == info.sequence + 1
        s.delete(info.id)
        assert s.create("golden", "new", state={"n": 9}).sequence == info.sequence + 1
    assert not _incompat(path) & INCOMPAT_SEQ_FLOOR
    shutil.rmtree(tmp_path / "plain")


def test_a_prune_that_deletes_the_newest_raises_the_floor(store: ckdb.Store) -> None:
    """Retention may delete a newest checkpoint that is marked corrupted (the newest *valid*
    one is what it keeps): the batch delete (``Registry.delete_many``) raises the floor too."""
    infos = [store.create(WF, "p", state={"n": i}) for i in range(4)]
    store.mark(infos[3].id, "test: damaged")
    later = datetime.now(UTC) + timedelta(days=2)
    result = store.prune(WF, RetentionPolicy(max_age=timedelta(days=1)), now=later)
    assert infos[3].id in result.deleted and infos[2].id not in result.deleted
    assert _record(store)["next_seq"] == infos[3].sequence + 1
    assert store.create(WF, "p", state={"n": 9}).sequence == infos[3].sequence + 1


def test_a_malformed_registry_key_does_not_block_a_delete(store_path: Path) -> None:
    """A damaged registry key (a byte too many) sorting last in the workflow is skipped when
    the floor is raised; the delete still happens and raises the floor past the real entries."""
    with ckdb.open(store_path, retention=None) as s:
        infos = [s.create(WF, "p", state={"n": i}) for i in range(2)]
    newest_key = workflow_key(WF) + infos[1].sequence.to_bytes(8, "big")
    value = raw_get(store_path, DB_REGISTRY, newest_key)
    assert value is not None
    with raw_env(store_path) as (txn, db):
        assert txn.put(newest_key + b"\xff", value, db=db(DB_REGISTRY))
    with ckdb.open(store_path, retention=None) as s:
        s.delete(infos[1].id)
        assert [i.id for i in s.list(WF) if i.status == "valid"] == [infos[0].id]
        assert _record(s)["next_seq"] == infos[1].sequence + 1


def test_a_malformed_registry_key_does_not_block_a_create(store_path: Path) -> None:
    """A damaged registry key sorting last in the workflow names no sequence: the next create
    takes one past the newest real entry, with that entry as its parent."""
    with ckdb.open(store_path, retention=None) as s:
        infos = [s.create(WF, "p", state={"n": i}) for i in range(2)]
    newest_key = workflow_key(WF) + infos[1].sequence.to_bytes(8, "big")
    value = raw_get(store_path, DB_REGISTRY, newest_key)
    assert value is not None
    with raw_env(store_path) as (txn, db):
        assert txn.put(newest_key + b"\xff", value, db=db(DB_REGISTRY))
    with ckdb.open(store_path, retention=None) as s:
        after = s.create(WF, "p", state={"n": 2})
        assert after.sequence == infos[1].sequence + 1
        assert after.parent_id == infos[1].id
        assert s.load(after.id).state == {"n": 2}


def _get(store: ckdb.Store, db: bytes, key: bytes) -> bytes | None:
    """A raw value read through the open store (a second LMDB handle is refused in-process)."""
    with store.tables.env.read() as txn:
        value = txn.get(db, key)
        return None if value is None else bytes(value)


def _damage_record(path: Path, how: str) -> None:
    with raw_env(path) as (txn, db):
        key = workflow_key(WF)
        if how == "removed":
            assert txn.delete(key, db=db(DB_WORKFLOWS))
        else:
            raw = txn.get(key, db=db(DB_WORKFLOWS))
            assert raw is not None
            assert txn.put(key, flip(bytes(raw)), db=db(DB_WORKFLOWS))


@pytest.mark.parametrize("how", ["removed", "damaged"])
def test_deleting_the_newest_without_a_workflow_record_keeps_the_floor(
    store_path: Path, how: str
) -> None:
    """With the record missing (scrub removed a damaged one) or damaged, deleting the newest
    checkpoint keeps its sequence in the settings floor; the create that rebuilds the record
    starts past it. A damaged record is not overwritten by the delete (scrub still finds it)."""
    with ckdb.open(store_path, retention=None) as s:
        infos = [s.create(WF, "p", state={"n": i}) for i in range(3)]
    _damage_record(store_path, how)
    before = raw_get(store_path, DB_WORKFLOWS, workflow_key(WF))
    floor_key = FLOOR_PREFIX + workflow_key(WF)
    with ckdb.open(store_path, retention=None) as s:
        s.delete(infos[2].id)
        assert _get(s, DB_WORKFLOWS, workflow_key(WF)) == before  # left alone
        assert _get(s, DB_SETTINGS, floor_key) is not None
        if how == "damaged":
            assert any(f.kind == "workflow" for f in s.scrub(repair=False).findings)
        after = s.create(WF, "p", state={"n": 3})
        assert after.sequence == infos[2].sequence + 1
        assert after.parent_id == infos[1].id
        assert _record(s)["next_seq"] == after.sequence + 1  # rebuilt, past the floor
        report = s.scrub(repair=False)
        assert report.findings == (), report.findings


def test_a_record_lost_after_the_floor_was_raised_is_rebuilt_past_it(store_path: Path) -> None:
    """The raise is kept twice (record and settings): losing the record afterwards (damage,
    then scrub's repair) does not hand the deleted newest sequence out again."""
    with ckdb.open(store_path, retention=None) as s:
        infos = [s.create(WF, "p", state={"n": i}) for i in range(3)]
        s.delete(infos[2].id)
    _damage_record(store_path, "damaged")
    with ckdb.open(store_path, retention=None) as s:
        assert [f.action for f in s.scrub(repair=True).findings] == ["removed"]
        assert _get(s, DB_WORKFLOWS, workflow_key(WF)) is None
        assert s.create(WF, "p", state={"n": 3}).sequence == infos[2].sequence + 1


def test_the_floor_is_kept_in_an_encrypted_store(tmp_path: Path) -> None:
    """The floor's key is the workflow key, so it needs no readable workflow id."""
    path = tmp_path / "enc.ckdb"
    with ckdb.open(path, encryption="aes-gcm", retention=None) as s:
        infos = [s.create(WF, "p", state={"n": i}) for i in range(2)]
        wf_key = s.tables.keys.wf_key(WF)
    with raw_env(path) as (txn, db):
        assert txn.delete(wf_key, db=db(DB_WORKFLOWS))
    with ckdb.open(path, retention=None) as s:
        s.delete(infos[1].id)
        assert s.create(WF, "p", state={"n": 2}).sequence == infos[1].sequence + 1


def _newest_deleted_without_record(path: Path, n: int) -> list[ckdb.CheckpointInfo]:
    """``n`` checkpoints, the workflow record removed (as scrub removes a damaged one), then the
    newest deleted: only the settings copy of the floor remembers its sequence."""
    with ckdb.open(path, retention=None) as s:
        infos = [s.create(WF, "p", state={"n": i}) for i in range(n)]
    _damage_record(path, "removed")
    with ckdb.open(path, retention=None) as s:
        s.delete(infos[-1].id)
        assert _get(s, DB_SETTINGS, FLOOR_PREFIX + workflow_key(WF)) is not None
    return infos


def test_a_damaged_floor_is_reported_and_removed(store_path: Path) -> None:
    infos = _newest_deleted_without_record(store_path, 3)
    floor_key = FLOOR_PREFIX + workflow_key(WF)
    with raw_env(store_path) as (txn, db):
        raw = txn.get(floor_key, db=db(DB_SETTINGS))
        assert raw is not None
        assert txn.put(floor_key, flip(bytes(raw)), db=db(DB_SETTINGS))
    with ckdb.open(store_path, retention=None) as s:
        found = [f for f in s.scrub(repair=False).findings if f.kind == "workflow"]
        assert [f.action for f in found] == ["reported"]
        assert found[0].where == f"settings/{floor_key.hex()}"
        assert [f.action for f in s.scrub(repair=True).findings] == ["removed"]
        assert _get(s, DB_SETTINGS, floor_key) is None
        # The floor is lost with the damage: the registry decides (documented exception).
        assert s.create(WF, "p", state={"n": 3}).sequence == infos[1].sequence + 1


def test_delete_workflow_drops_the_floor(store_path: Path) -> None:
    _newest_deleted_without_record(store_path, 2)
    with ckdb.open(store_path, retention=None) as s:
        assert s.delete_workflow(WF) == 1
        assert _get(s, DB_SETTINGS, FLOOR_PREFIX + workflow_key(WF)) is None
        assert s.create(WF, "p", state={"n": 0}).sequence == 1


def test_delete_workflow_of_nothing_but_a_floor(store_path: Path) -> None:
    """Record lost, then every checkpoint deleted: only the floor is left, and delete_workflow
    still finds the workflow (and removes the floor), so it can start again at 1."""
    _newest_deleted_without_record(store_path, 1)
    with ckdb.open(store_path, retention=None) as s:
        assert s.delete_workflow(WF) == 0
        with pytest.raises(ckdb.WorkflowNotFound):
            s.delete_workflow(WF)
        assert s.create(WF, "p", state={"n": 1}).sequence == 1


def test_a_prune_without_a_workflow_record_keeps_the_floor(store_path: Path) -> None:
    """The batch delete (Registry.delete_many) writes the settings floor too."""
    with ckdb.open(store_path, retention=None) as s:
        infos = [s.create(WF, "p", state={"n": i}) for i in range(4)]
        s.mark(infos[3].id, "test: damaged")
    _damage_record(store_path, "removed")
    with ckdb.open(store_path, retention=None) as s:
        later = datetime.now(UTC) + timedelta(days=2)
        result = s.prune(WF, RetentionPolicy(max_age=timedelta(days=1)), now=later)
        assert infos[3].id in result.deleted
        assert s.create(WF, "p", state={"n": 9}).sequence == infos[3].sequence + 1
