"""Headroom: data.mdb is kept written (with zeros) a little past LMDB's last page, so that a
commit's fdatasync finds its blocks already allocated (ckdb/_headroom.py, docs/format.md).

What must hold whatever the timing: the zeros are written only past every page in use, while
LMDB's writer lock is held (so no process writes pages meanwhile), never while commits grow the
store by much, and a failure to write them changes nothing. No timing assertions: the speed is
measured in docs/performance.md.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import ckdb
from ckdb import _headroom
from tests.test_concurrency import WORKER, assert_structurally_sound, finish
from tests.workers.concurrent_worker import SHARED, creator_state


def _used_and_size(store: ckdb.Store) -> tuple[int, int]:
    info = store._env.info()
    used = (info["last_pgno"] + 1) * info["stat_psize"]
    return used, os.path.getsize(Path(store.path) / "data.mdb")


def test_small_commits_keep_zeros_past_the_last_page(store_path: Path) -> None:
    with ckdb.open(store_path, retention=None) as s:
        for k in range(300):
            s.create("wf", "p", state={"k": {"k": k}, "blob": os.urandom(2000)})
        used, size = _used_and_size(s)
        assert size > used  # headroom was written ...
        assert size - used <= _headroom.HEADROOM_MAX  # ... and no more than the cap
        with open(Path(s.path) / "data.mdb", "rb") as f:
            f.seek(used)
            assert f.read() == bytes(size - used)  # zeros only: no page of LMDB's out there
        assert [i.sequence for i in s.list("wf", limit=3)] == [300, 299, 298]
    assert_structurally_sound(store_path)
    with ckdb.open(store_path, retention=None) as s:
        assert s.load(s.latest("wf").id).state["k"] == {"k": 299}
        assert s.scrub().findings == ()


def test_large_commits_keep_no_headroom(store_path: Path) -> None:
    """Commits that grow the store by much (here 1 MiB each, incompressible): writing zeros
    ahead of them would write every byte twice, so none are written."""
    with ckdb.open(store_path, retention=None) as s:
        for k in range(8):
            s.create("wf", "p", state={"blob": os.urandom(1 << 20), "k": {"k": k}})
        used, size = _used_and_size(s)
        assert size - used < _headroom.HEADROOM_MIN


def test_a_failed_fill_changes_nothing(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No space for the zeros (or any I/O error): the creates succeed, the file is given back
    to where it ended, and no fill is tried again for a while."""
    calls = []

    def full(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    with ckdb.open(store_path, retention=None) as s:
        s.create("wf", "p", state={"k": {"k": 0}})
        before = _used_and_size(s)[1]
        monkeypatch.setattr(_headroom.os, "pwrite", full)
        for k in range(1, 40):
            s.create("wf", "p", state={"k": {"k": k}, "blob": os.urandom(2000)})
        assert len(calls) == 1  # tried once, then not again before HEADROOM_RETRY_SECONDS
        used, size = _used_and_size(s)
        assert size <= max(used, before)  # nothing of the failed fill is left
        monkeypatch.undo()
        assert [s.load(i.id).state["k"] for i in s.list("wf", limit=2)] == [{"k": 39}, {"k": 38}]
        assert s.scrub().findings == ()


def test_processes_fill_while_others_commit(store_path: Path) -> None:
    """Three processes create at once with a 64 KiB headroom (a fill every few commits), so
    fills and other processes' commits interleave: every checkpoint must be intact."""
    ckdb.open(store_path, retention=None).close()
    env = {**os.environ, "CKDB_TEST_HEADROOM": str(64 << 10)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "creator", str(store_path), str(i), "150", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(3)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline()  # ready
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    ends = [finish(p)[-1] for p in procs]
    assert all(e["file_end"] > 0 for e in ends)  # every process wrote headroom
    results = {i: e["created"] for i, e in enumerate(ends)}
    assert_structurally_sound(store_path)
    with ckdb.open(store_path, retention=None) as s:
        assert len(s.list()) == 3 * 150
        for index, created in results.items():
            for c in created:
                assert s.load(c["id"]).state == creator_state(index, c["k"])
        assert len(s.list(SHARED)) == 3 * 75
        assert s.scrub().findings == ()
        used, size = _used_and_size(s)
        with open(Path(s.path) / "data.mdb", "rb") as f:
            f.seek(used)
            assert f.read() == bytes(size - used)


def test_an_interrupt_during_a_fill_leaves_writes_working(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the zeros are written: the interrupted call raises, the group-commit
    leadership is handed on (a later write does not wait forever), and nothing is lost."""
    calls = []

    def interrupted(fd: int, data: Any, offset: int) -> int:
        calls.append(offset)
        raise KeyboardInterrupt

    with ckdb.open(store_path, retention=None) as s:
        s.create("wf", "p", state={"k": {"k": 0}})
        monkeypatch.setattr(_headroom.os, "pwrite", interrupted)

        def create_many() -> None:
            for k in range(1, 40):  # the first fill comes after a commit or two
                s.create("wf", "p", state={"k": {"k": k}})

        with pytest.raises(KeyboardInterrupt):
            create_many()
        assert len(calls) == 1
        monkeypatch.undo()
        done: list[int] = []
        worker = threading.Thread(
            target=lambda: done.append(s.create("wf", "p", state={"k": {"k": 99}}).sequence),
            daemon=True,  # if it hangs, the test fails instead of pytest never exiting
        )
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "a write after the interrupted fill hangs"
        assert done and s.load(s.latest("wf").id).state["k"] == {"k": 99}
        assert s.scrub().findings == ()


def test_a_replaced_data_file_is_left_alone(store_path: Path) -> None:
    """If data.mdb is no longer the file the store opened (another inode at the path), no
    zeros are written to it."""
    with ckdb.open(store_path, retention=None) as s:
        room = s._env.headroom
        room._ident = (-1, -1)  # as if another file now stood at the path
        size = os.path.getsize(Path(s.path) / "data.mdb")
        for k in range(40):
            s.create("wf", "p", state={"k": {"k": k}, "blob": os.urandom(2000)})
        used, after = _used_and_size(s)
        assert after <= max(size, used)  # no zeros past the pages
        assert room.file_end == 0
