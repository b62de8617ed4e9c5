"""Interrupted callers and interpreter shutdown must never strand a store (review findings)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import ckdb


class Interrupted(BaseException):
    """Stands in for KeyboardInterrupt (which pytest would take as "stop the run")."""


def test_a_follower_interrupted_while_waiting_leaves_the_store_usable(tmp_path: Path) -> None:
    store = ckdb.open(tmp_path / "s", retention=None, _unsafe_nosync=True)
    started, gate = threading.Event(), threading.Event()

    def hold(_txn: Any) -> None:  # the leader's batch: blocks until the gate opens
        started.set()
        assert gate.wait(10)

    leader = threading.Thread(target=store._env.write, args=(hold,), daemon=True)
    leader.start()
    assert started.wait(10)

    def interrupt(_signum: int, _frame: object) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGUSR1, interrupt)
    try:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        with pytest.raises(Interrupted):
            store.create("wf", "p", state={"x": 1})  # queued behind the leader, interrupted
    finally:
        signal.signal(signal.SIGUSR1, old)
    gate.set()
    leader.join(10)
    done: list[str] = []
    later = threading.Thread(
        target=lambda: done.append(store.create("wf", "p", state={"y": 2}).id), daemon=True
    )
    later.start()
    later.join(10)
    assert not later.is_alive(), "the store deadlocked after an interrupted caller"
    # The interrupted create never ran: nothing of it was written.
    assert [store.load(i.id).state for i in store.list("wf")] == [{"y": 2}]
    store.close()


SHUTDOWN_SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading
    import ckdb
    big = {"lines": ["line %d of a long conversation " % i for i in range(40000)]}  # > 512 KiB
    store = ckdb.open(sys.argv[1], retention=None)

    def late():  # a thread that outlives the main thread
        import time
        time.sleep(0.3)
        store.create("wf", "thread", state={"big": big, "n": 1})

    threading.Thread(target=late).start()
    atexit.register(lambda: store.create("wf", "atexit", state={"big": big, "n": 2}))
    """
)


def test_large_checkpoints_during_interpreter_shutdown(tmp_path: Path) -> None:
    """concurrent.futures refuses new work once the interpreter shuts down; a large body must
    then be compressed in one piece, not fail the create."""
    path = tmp_path / "s"
    proc = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Error" not in proc.stderr, proc.stderr
    with ckdb.open(path, retention=None) as store:
        phases = sorted(i.phase for i in store.list("wf"))
        assert phases == ["atexit", "thread"]
        for info in store.list("wf"):
            assert store.load(info.id).state["big"]["lines"][-1].startswith("line 39999")
            assert info.raw_size > 1 << 19


def test_zstd_pool_refusing_work_falls_back_to_one_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckdb import codec  # noqa: PLC0415
    from ckdb.layout import Codec  # noqa: PLC0415

    class Refusing:
        def submit(self, *_a: object, **_k: object) -> None:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    monkeypatch.setattr(codec, "_pool", Refusing)
    raw = bytes(range(256)) * 4096 + os.urandom(4096)  # 1 MiB + 4 KiB: parallel-sized
    used, body = codec.compress(raw, Codec.AUTO)
    assert used is Codec.ZSTD
    assert codec.decompress(used, body, len(raw)) == raw


def test_close_while_a_write_waits_for_the_lock_is_store_closed(tmp_path: Path) -> None:
    """close() racing a queued write: the write reports StoreClosed, not an engine error."""
    store = ckdb.open(tmp_path / "s", retention=None, _unsafe_nosync=True)
    env = store._env
    errors: list[BaseException] = []
    env._write_lock.acquire()  # as close() holds it while closing
    try:
        worker = threading.Thread(
            target=lambda: errors.append(_error_of(lambda: store.create("wf", "p", state={}))),
            daemon=True,
        )
        worker.start()
        deadline = 50
        while not env._leading and deadline:  # the worker is leading, blocked on the lock
            deadline -= 1
            threading.Event().wait(0.02)
        env._closed = True  # what close() does under the lock (then closes LMDB)
    finally:
        env._write_lock.release()
    worker.join(10)
    assert len(errors) == 1 and isinstance(errors[0], ckdb.StoreClosed), errors
    env._closed = False
    store.close()


def _error_of(fn: Any) -> BaseException | None:
    try:
        fn()
    except BaseException as err:  # noqa: BLE001 - the test inspects it
        return err
    return None
