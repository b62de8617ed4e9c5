"""The free-space check before a write: StoreFull with nothing written, and the short cache of
one ``statvfs`` that never lets writes together spend more than half of what it found."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

import ckdb
from ckdb import _env
from ckdb.errors import StoreFull

Usage = namedtuple("Usage", "total used free")


def test_full_disk_is_store_full_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ckdb.open(tmp_path / "s", retention=None)
    store.create("wf", "p", state={"n": 1})
    free = {"bytes": 10 << 30}
    calls = []

    def fake(path: object) -> Usage:
        calls.append(path)
        return Usage(100 << 30, 0, free["bytes"])

    monkeypatch.setattr(shutil, "disk_usage", fake)
    store._env._disk_until = 0.0  # forget the check made before the patch
    store.create("wf", "p", state={"n": 2})
    assert len(calls) == 1
    store.create("wf", "p", state={"n": 3})
    assert len(calls) == 1  # vouched for by the first check (plenty of room)
    free["bytes"] = _env.DISK_MARGIN + 1000  # the disk fills up meanwhile
    # A write larger than what the cached check still vouches for checks again.
    store._env._disk_budget = 10
    with pytest.raises(StoreFull, match="Nothing was written"):
        store.create("wf", "p", state={"blob": b"x" * 5000})
    assert len(calls) == 2
    with pytest.raises(StoreFull):  # and a failed check is not cached
        store.create("wf", "p", state={"n": 4})
    assert len(calls) == 3
    assert [c.sequence for c in store.list("wf")] == [3, 2, 1]
    store.close()


def test_cached_check_expires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ckdb.open(tmp_path / "s", retention=None)
    calls = []
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: calls.append(p) or Usage(100 << 30, 0, 10 << 30)
    )
    store._env._disk_until = 0.0
    store.create("wf", "p", state={"n": 1})
    store.create("wf", "p", state={"n": 2})
    assert len(calls) == 1
    store._env._disk_until = 0.0  # as if DISK_CHECK_SECONDS had passed
    store.create("wf", "p", state={"n": 3})
    assert len(calls) == 2
    store.close()
