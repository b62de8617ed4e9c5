"""The verified-bytes memo (ckdb/tables/verified.py) must never turn damage into data.

Repeated reads of a small value compare its bytes with bytes that verified at the same address
instead of recomputing the tag. These tests warm the memo with reads, then damage the stored
value *through the open store's own environment* (so the memo is not reset by a reopen) and check
that every read path still reports the damage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import ckdb
from ckdb._env import Txn
from ckdb.errors import IntegrityError
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_REGISTRY,
    DB_WORKFLOWS,
    FRAME_HEADER,
    id_from_text,
    registry_key,
    workflow_key,
)
from ckdb.tables.verified import MAX_BYTES, MAX_VALUE, Verified

WF = "wf"


def _flip(value: bytes, at: int) -> bytes:
    b = bytearray(value)
    b[at] ^= 0x01
    return bytes(b)


def _rewrite(store: ckdb.Store, db: bytes, key: bytes, change: Callable[[bytes], bytes]) -> None:
    def apply(txn: Txn) -> None:
        value = txn.get(db, key)
        assert value is not None
        txn.put(db, key, change(value))

    store._env.write(apply)


@pytest.fixture
def warm(tmp_path: Path) -> tuple[ckdb.Store, list[str]]:
    store = ckdb.open(tmp_path / "s", retention=None)
    ids = [store.create(WF, "p", state={"n": i}).id for i in range(3)]
    for _ in range(2):  # warm every memoised path
        assert store.latest(WF).id == ids[-1]  # type: ignore[union-attr]
        assert [i.id for i in store.list(WF)] == ids[::-1]
        store.load(ids[-1])
        store.get_info(ids[-1])
    assert len(store._verified) > 0
    return store, ids


@pytest.mark.parametrize("where", ["header", "body", "tag"])
def test_metadata_damaged_after_warm_reads_is_detected(
    warm: tuple[ckdb.Store, list[str]], where: str
) -> None:
    store, ids = warm
    at = {"header": 5, "body": FRAME_HEADER.size + 3, "tag": -1}[where]
    _rewrite(store, DB_CHECKPOINTS, id_from_text(ids[-1]), lambda v: _flip(v, at))
    with pytest.raises(IntegrityError):
        store.load(ids[-1])
    with pytest.raises(IntegrityError):
        store.get_info(ids[-1])
    newest = store.list(WF)[0]
    assert (newest.id, newest.status) == (ids[-1], "corrupted")
    assert store.latest(WF).id == ids[-2]  # type: ignore[union-attr]
    store.close()


def test_registry_entry_damaged_after_warm_reads_is_detected(
    warm: tuple[ckdb.Store, list[str]],
) -> None:
    store, ids = warm
    key = registry_key(workflow_key(WF), 3)
    _rewrite(store, DB_REGISTRY, key, lambda v: _flip(v, 20))  # the created_at field
    assert store.list(WF)[0].status == "corrupted"
    with pytest.raises(IntegrityError):
        store.load(ids[-1])
    assert store.latest(WF).id == ids[-2]  # type: ignore[union-attr]
    store.close()


def test_valid_value_from_another_address_is_not_taken_from_the_memo(
    warm: tuple[ckdb.Store, list[str]],
) -> None:
    """A frame that verified at one address, copied to another, fails there: the memo is keyed
    by address, and the tag binds the address."""
    store, ids = warm
    older = id_from_text(ids[0])
    newest = id_from_text(ids[-1])

    def apply(txn: Txn) -> None:
        txn.put(DB_CHECKPOINTS, newest, txn.get(DB_CHECKPOINTS, older))  # type: ignore[arg-type]
        old_entry = txn.get(DB_REGISTRY, registry_key(workflow_key(WF), 1))
        txn.put(DB_REGISTRY, registry_key(workflow_key(WF), 2), old_entry)  # type: ignore[arg-type]

    store._env.write(apply)
    with pytest.raises(IntegrityError):
        store.load(ids[-1])
    statuses = [(i.sequence, i.status) for i in store.list(WF)]
    assert statuses == [(3, "corrupted"), (2, "corrupted"), (1, "valid")]
    store.close()


def test_workflow_record_damage_after_a_create_is_detected(tmp_path: Path) -> None:
    store = ckdb.open(tmp_path / "s", retention=None)
    store.create(WF, "p", state={"n": 1})  # seeds the memo with the record it wrote
    _rewrite(store, DB_WORKFLOWS, workflow_key(WF), lambda v: _flip(v, FRAME_HEADER.size + 1))
    assert store.workflows() == []  # the damaged record does not verify
    info = store.create(WF, "p", state={"n": 2})  # ... and is rebuilt, not trusted
    assert info.sequence == 2
    assert store.workflows() == [WF]
    store.close()


def test_memo_is_bounded() -> None:
    memo = Verified()
    value = b"x" * 1000
    for i in range(3 * MAX_BYTES // 1000):
        memo.put(("db", i), value, i)
    assert len(memo) * (1000 + 160) <= MAX_BYTES + 2 * 1160
    assert memo.get(("db", 3 * MAX_BYTES // 1000 - 1), value) == 3 * MAX_BYTES // 1000 - 1
    memo.put(("db", "big"), b"y" * (MAX_VALUE + 1), "r")
    assert memo.get(("db", "big"), b"y" * (MAX_VALUE + 1)) is None
    assert memo.get(("db", 3 * MAX_BYTES // 1000 - 1), b"z" * 1000) is None  # other bytes miss
