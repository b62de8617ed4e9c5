"""SIGKILL rounds of a shipping process: a writer with a ``file://`` remote attached is killed at
a random moment (while creating, deleting, inside ``sync_remote``, or while its shipper thread is
mid-upload), restarted on the same store, killed again.

After every kill:
- the local store passes ``lmdb.verify`` and holds every acknowledged create with its exact state
  (the shipper's cursor and the local store stay consistent);
- ``check_remote`` finds nothing wrong (tags, prev chains, contiguous numbers, blobs present);
- a second host pulls each workflow: every checkpoint live at an acknowledged ``sync_remote``
  (and not deleted since) is there with its exact state and sequence; nothing arrives that the
  writer never created; sequences are unique and ordered (no gap, duplicate or fork);
and after the last round a clean restart ships everything: the remote equals the local store.

Rounds: ``CKDB_REMOTE_KILL_ROUNDS`` (default 30; the ``crash`` tox tier runs 200).
Seed: ``CKDB_KILL_SEED`` (default random, printed).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lmdb import verify as lmdb_verify

import ckdb
from tests.workers.killable import Killable
from tests.workers.ship_writer import KEY, WORKFLOWS, state_for

WRITER = Path(__file__).resolve().parent / "workers" / "ship_writer.py"
ROUNDS = int(os.environ.get("CKDB_REMOTE_KILL_ROUNDS", "30"))
ROUND_TIMEOUT = 60.0

pytestmark = pytest.mark.crash


class Writer(Killable):
    """A shipping writer subprocess (tests/workers/ship_writer.py)."""

    def __init__(self, path: Path, url: str, seed: int, first_n: int) -> None:
        super().__init__([sys.executable, str(WRITER), str(path), url, str(seed), str(first_n)])


class Model:
    """What the writers acknowledged, across rounds."""

    def __init__(self) -> None:
        self.created: dict[str, dict[str, Any]] = {}  # every id ever created -> its record
        self.deleted: set[str] = set()
        self.synced: set[str] = set()  # live at an acknowledged sync_remote

    def live(self) -> set[str]:
        return set(self.created) - self.deleted

    def replay(self, lines: list[dict[str, Any]], local_ids: set[str], local: ckdb.Store) -> None:
        """Apply a round's acknowledgements; the one operation in flight is resolved by what the
        local store holds (it committed or it did not)."""
        pending_sync: set[str] | None = None
        for rec in lines:
            op = rec["op"]
            if op == "create":
                self.created[rec["id"]] = rec
            elif op == "delete":
                self.deleted.add(rec["id"])
            elif op == "begin-sync":
                pending_sync = self.live()
            elif op == "synced":
                assert pending_sync is not None
                self.synced |= pending_sync
                pending_sync = None
        last = lines[-1] if lines else {}
        if last.get("op") == "begin-create":
            extra = local_ids - self.live()
            assert len(extra) <= 1, f"unacknowledged checkpoints: {sorted(extra)}"
            for cid in extra:
                info = local.get_info(cid)
                self.created[cid] = {"id": cid, "wf": last["wf"], "seq": info.sequence,
                                     "n": last["n"]}  # fmt: skip
        elif last.get("op") == "begin-delete" and last["id"] not in local_ids:
            self.deleted.add(last["id"])


def check_local(path: Path, model: Model, lines: list[dict[str, Any]], tag: str) -> None:
    assert lmdb_verify.verify(str(path)) == [], f"{tag}: lmdb.verify"
    with ckdb.open(path, key=KEY, retention=None) as local:  # no remote: only reading
        ids = {i.id for i in local.list()}
        model.replay(lines, ids, local)
        assert ids == model.live(), f"{tag}: local {sorted(ids ^ model.live())}"
        for cid in ids:
            rec = model.created[cid]
            ck = local.load(cid)
            assert ck.state == state_for(rec["n"]) and ck.info.sequence == rec["seq"], tag


def check_remote_side(tmp: Path, url: str, model: Model, tag: str, deep: bool) -> set[str]:
    report = ckdb.check_remote(ckdb.Remote(url, key=KEY), deep=deep)
    assert report.ok, f"{tag}: {report.problems}"
    host = tmp / f"host-b-{time.monotonic_ns()}.ckdb"
    remote_ids: set[str] = set()
    with ckdb.open(host, key=KEY, retention=None, remote=ckdb.Remote(url)) as b:
        for wf in WORKFLOWS:
            try:
                b.pull(wf)
            except ckdb.CheckpointNotFound:
                continue  # never shipped yet
            infos = b.list(wf)
            seqs = [i.sequence for i in infos]
            assert seqs == sorted(set(seqs), reverse=True), f"{tag}: {wf} {seqs}"
            for info in infos:
                rec = model.created.get(info.id)
                assert rec is not None, f"{tag}: {info.id} arrived but was never created"
                assert info.sequence == rec["seq"] and rec["wf"] == wf, tag
                assert b.load(info.id).state == state_for(rec["n"]), tag
                remote_ids.add(info.id)
    lost = (model.synced - model.deleted) - remote_ids
    assert not lost, f"{tag}: acknowledged by sync_remote but not on the remote: {sorted(lost)}"
    return remote_ids


def test_sigkill_rounds_of_a_shipping_process(tmp_path: Path) -> None:
    seed = int(os.environ.get("CKDB_KILL_SEED", random.randrange(1 << 32)))
    print(f"CKDB_KILL_SEED={seed}")
    rng = random.Random(seed)
    path = tmp_path / "a.ckdb"
    url = f"file://{tmp_path / 'remote'}"
    model = Model()
    modes: dict[str, int] = {}
    for rnd in range(ROUNDS):
        tag = f"round {rnd} (CKDB_KILL_SEED={seed})"
        writer = Writer(path, url, rng.randrange(1 << 32), first_n=rnd * 100_000)
        try:
            writer.wait_for(lambda ls: any(x["op"] == "open" for x in ls), ROUND_TIMEOUT)
            mode = rng.choice(["time", "acks", "sync", "ship"])
            if mode == "time":
                time.sleep(rng.uniform(0.0, 1.0))
            elif mode == "acks":
                want = rng.randrange(1, 25)
                writer.wait_for(lambda ls, w=want: sum(x["op"] == "create" for x in ls) >= w,
                                ROUND_TIMEOUT)  # fmt: skip
            elif mode == "sync":  # inside sync_remote, while the shipper uploads
                writer.wait_for(lambda ls: ls and ls[-1]["op"] == "begin-sync", ROUND_TIMEOUT)
                time.sleep(rng.uniform(0.0, 0.03))
            else:  # right after a create: the shipper thread is woken and mid-round
                writer.wait_for(lambda ls: sum(x["op"] == "create" for x in ls) >= 3,
                                ROUND_TIMEOUT)  # fmt: skip
                time.sleep(rng.uniform(0.0, 0.02))
        finally:
            lines, stderr, code = writer.kill()
        assert code in (-signal.SIGKILL, 0), f"{tag}: writer failed ({code}):\n{stderr}"
        assert any(x["op"] == "open" for x in lines), f"{tag}: never opened:\n{stderr}"
        modes[mode] = modes.get(mode, 0) + 1
        check_local(path, model, lines, tag)
        check_remote_side(tmp_path, url, model, tag, deep=rnd % 5 == 4)
    print(f"kills by mode: {modes}; created {len(model.created)}, synced {len(model.synced)}")
    assert model.synced, "no sync_remote was acknowledged in any round: the rounds tested nothing"
    # A clean restart ships what the kills left behind: the remote converges to the local store.
    with ckdb.open(path, key=KEY, retention=None, remote=ckdb.Remote(url)) as a:
        assert a.sync_remote(timeout=60).ok
        local_ids = {i.id for i in a.list()}
    model.synced = set(local_ids)
    assert check_remote_side(tmp_path, url, model, "final", deep=True) == local_ids
