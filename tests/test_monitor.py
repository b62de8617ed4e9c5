"""The background integrity monitor: finds damage injected while a writer works, reports each
finding once, survives broken callbacks, stops promptly, and stands by in a second process while
another process holds the lease."""

from __future__ import annotations

import json
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
from ckdb.layout import DB_CHUNKS, DB_PAYLOADS, RecordType, id_from_text, payload_key
from ckdb.scrub import Finding

WORKER = Path(__file__).parent / "workers" / "monitor_worker.py"
ROOT = Path(__file__).resolve().parents[1]
WAIT = 60.0  # generous upper bound for "eventually" on a noisy machine (not a timing assertion)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def flip_payload(store: ckdb.Store, cid: str, component: str = "task") -> None:
    key = payload_key(id_from_text(cid), RecordType.COMPONENT, component)

    def apply(txn: Any) -> None:
        value = bytearray(txn.get(DB_PAYLOADS, key))
        value[len(value) // 2] ^= 0x40
        txn.put(DB_PAYLOADS, key, bytes(value))

    store._env.write(apply)


class Writer:
    """A thread creating checkpoints (with files) until stopped."""

    def __init__(self, store: ckdb.Store, work: Path) -> None:
        self.store, self.work = store, work
        work.mkdir()
        self.ids: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        i = 0
        try:
            while not self._stop.is_set():
                (self.work / "f").write_bytes(os.urandom(2000))
                self.ids.append(
                    self.store.create("busy", "x", state={"task": {"i": i}}, files=self.work).id
                )
                i += 1
                time.sleep(0.005)
        except BaseException as err:  # pragma: no cover - asserted empty
            self.errors.append(err)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        assert not self.errors


def test_monitor_finds_damage_injected_mid_run(store: ckdb.Store, tmp_path: Path) -> None:
    victims = [store.create("wf", "p", state={"task": {"n": n}}).id for n in range(3)]
    events: list[Finding] = []
    with Writer(store, tmp_path / "w") as writer:
        # A budget that covers the store in a few runs even while the writer adds checkpoints
        # (a cycle chasing a faster writer never ends: see test_scrub.py, cycle bound).
        monitor = store.monitor(interval=0.2, budget=200_000, on_corruption=events.append)
        try:
            wait_for(lambda: monitor.runs >= 2, "two clean runs")
            assert events == []
            flip_payload(store, victims[1])
            wait_for(lambda: any(f.checkpoint_id == victims[1] for f in events), "detection")
            runs = monitor.runs
            # Several more full cycles: the same damage is never reported again.
            wait_for(lambda: monitor.runs >= runs + 8, "more runs")
            flip_payload(store, victims[2])
            wait_for(lambda: any(f.checkpoint_id == victims[2] for f in events), "2nd detection")
            wait_for(lambda: len(writer.ids) > 3, "writes")
        finally:
            monitor.stop()
        assert not monitor.running
        assert not monitor.active
    keys = [(f.kind, f.where, f.problem) for f in events]
    assert len(keys) == len(set(keys)), "a finding was reported twice"
    assert {f.checkpoint_id for f in events} == {victims[1], victims[2]}
    assert all(isinstance(f, Finding) for f in events)
    assert monitor.errors == []
    # The monitor marked them: load refuses them, and the writer's checkpoints are intact.
    for cid in victims[1:]:
        with pytest.raises(ckdb.IntegrityError):
            store.load(cid)
    assert store.load(victims[0]).state == {"task": {"n": 0}}
    assert all(store.load(cid) for cid in writer.ids[-3:])


def test_monitor_stops_promptly_and_is_a_context_manager(store: ckdb.Store) -> None:
    store.create("wf", "p", state={"a": 1})
    with store.monitor(interval=3600) as monitor:
        wait_for(lambda: monitor.runs >= 1, "first run")
        assert monitor.running and monitor.active
    assert not monitor.running  # stop() returned without waiting out the hour
    assert not monitor._thread.is_alive()
    # The lease was released: another monitor becomes active at once.
    with store.monitor(interval=3600) as other:
        wait_for(lambda: other.runs >= 1, "second monitor's run")
        assert other.active


def test_callback_errors_never_kill_the_monitor(
    store: ckdb.Store, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [store.create("wf", "p", state={"task": {"n": n}}).id for n in range(4)]
    calls: list[Finding] = []

    def broken(finding: Finding) -> None:
        calls.append(finding)
        raise RuntimeError("pager is down")

    with store.monitor(interval=0.1, budget=10**9, on_corruption=broken) as monitor:
        flip_payload(store, ids[0])
        wait_for(lambda: len(calls) >= 1, "first callback")
        flip_payload(store, ids[3])
        wait_for(lambda: any(f.checkpoint_id == ids[3] for f in calls), "callback after error")
        assert monitor.running
        runs = monitor.runs
        wait_for(lambda: monitor.runs > runs, "still running")
    assert [f.checkpoint_id for f in calls] == [ids[0], ids[3]]
    assert any("handler failed" in r.getMessage() for r in caplog.records)


def test_store_handlers_and_monitor_callback_both_notified(store_path: Path) -> None:
    seen_store: list[Finding] = []
    seen_monitor: list[Finding] = []
    with ckdb.open(store_path, retention=None, on_corruption=seen_store.append) as store:
        cid = store.create("wf", "p", state={"task": 1}).id
        with store.monitor(interval=0.1, on_corruption=seen_monitor.append):
            flip_payload(store, cid)
            wait_for(lambda: len(seen_monitor) >= 1 and len(seen_store) >= 1, "notifications")
    assert seen_store == seen_monitor
    assert [f.checkpoint_id for f in seen_store] == [cid]


def test_monitor_repairs_from_backup(store: ckdb.Store, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "f").write_bytes(os.urandom(9000))
    cid = store.create("wf", "p", state={"task": 7}, files=work).id
    store.backup(tmp_path / "b.ckdb")
    with store._env.read() as txn:
        (chunk,) = [bytes(k) for k, _v in txn.range(DB_CHUNKS)]

    def damage(txn: Any) -> None:
        value = bytearray(txn.get(DB_CHUNKS, chunk))
        value[-1] ^= 1
        txn.put(DB_CHUNKS, chunk, bytes(value))

    events: list[Finding] = []
    with store.monitor(
        interval=0.1, repair=True, backup=tmp_path / "b.ckdb", on_corruption=events.append
    ):
        store._env.write(damage)
        wait_for(lambda: any(f.action == "repaired" for f in events), "repair")
    assert store.scrub().findings == ()
    assert store.load(cid).state == {"task": 7}


def test_bad_interval_is_refused(store: ckdb.Store) -> None:
    for bad in (0, -1, "1"):
        with pytest.raises(ckdb.InvalidInput):
            store.monitor(interval=bad)  # type: ignore[arg-type]


def test_second_monitor_in_another_process_stands_by(store: ckdb.Store) -> None:
    store.create("wf", "p", state={"a": 1})
    first = store.monitor(interval=0.2, budget=10**9, lease_seconds=60)
    try:
        wait_for(lambda: first.active and first.runs >= 1, "first monitor active")
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(store.path), "0.2", "60"],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "ready"
            # While we hold the lease, it stands by (several of its loops).
            states = [json.loads(proc.stdout.readline()) for _ in range(30)]
            assert not any(s["active"] for s in states)
            assert all(s["runs"] == 0 for s in states)
            assert first.active
            first.stop()
            assert not first.running
            # Once we stop, it takes over.
            while True:
                line = proc.stdout.readline()
                assert line, "worker ended before taking over"
                state = json.loads(line)
                if state["active"] and state["runs"] >= 1:
                    break
        finally:
            proc.kill()
            proc.wait(30)
    finally:
        first.stop()
    assert first.errors == []
