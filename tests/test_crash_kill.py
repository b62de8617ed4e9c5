"""SIGKILL crash rounds: a real writer process is killed at a random moment, then the store is
reopened and checked against what the writer acknowledged.

One store is reused across rounds (each round reopens it and continues, as an agent restarted
after a crash would). The first round may kill the writer while it is still creating the store.

After every kill:
- the path holds no store, or a complete one that opens (never a half store);
- LMDB's structural verifier (``lmdb.verify``) finds nothing;
- every acknowledged create loads with exactly the state it was given, with its sequence;
- every acknowledged delete stays deleted;
- every listed checkpoint loads, is valid, and is either acknowledged or the one create that was
  in flight (nothing half-written is visible); nothing is missing except the one delete that was
  in flight; the stored counts agree with the listing (no orphaned metadata or payloads);
- sequences per workflow increase strictly in creation order.

Rounds: ``CKDB_KILL_ROUNDS`` (default 60). Seed: ``CKDB_KILL_SEED`` (default: random, printed).
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
from tests.workers.kill_writer import state_for
from tests.workers.killable import Killable


def open_store(path: Any, **kwargs: Any) -> ckdb.Store:
    """``ckdb.open`` with automatic retention off: these tests count every checkpoint."""
    return ckdb.open(path, retention=None, **kwargs)


WRITER = Path(__file__).resolve().parent / "workers" / "kill_writer.py"
ROUNDS = int(os.environ.get("CKDB_KILL_ROUNDS", "60"))
ROUND_TIMEOUT = 60.0
MAX_CREATION_ROUNDS = 4
SLOW_FSYNC = 0.02  # creation rounds: each fsync sleeps this long before and after

pytestmark = pytest.mark.crash


class Writer(Killable):
    """A writer subprocess (tests/workers/kill_writer.py)."""

    def __init__(self, path: Path, seed: int, first_n: int, slow_fsync: float | None) -> None:
        argv = [sys.executable, str(WRITER), str(path), str(seed), str(first_n)]
        if slow_fsync is not None:
            argv.append(str(slow_fsync))
        super().__init__(argv, cwd=path.parent)


class Model:
    """What the writers acknowledged so far, across rounds."""

    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}  # id -> create record
        self.deleted: set[str] = set()
        self.seqs: dict[str, list[int]] = {}  # workflow -> sequences in creation order

    def apply(self, rec: dict[str, Any]) -> None:
        if rec["op"] == "create":
            assert rec["id"] not in self.live and rec["id"] not in self.deleted, rec
            self.live[rec["id"]] = rec
            self.seqs.setdefault(rec["wf"], []).append(rec["seq"])
        elif rec["op"] == "delete":
            assert rec["id"] in self.live, f"deleted an unknown checkpoint: {rec}"
            del self.live[rec["id"]]
            self.deleted.add(rec["id"])


def in_flight(lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The operation announced but not acknowledged when the writer died."""
    if lines and lines[-1]["op"] in ("begin-create", "begin-delete"):
        return lines[-1]
    return None


def check_loaded(ck: ckdb.Checkpoint, n: int, size: str) -> None:
    expected = state_for(n, size)
    assert ck.state == expected, f"checkpoint {ck.info.id} (n={n}) has different state"
    assert ck.info.status == "valid"
    assert ck.resources == ({"n": n} if n % 3 == 0 else None)


def no_half_store(path: Path) -> bool:
    """True if the path holds a store; asserts it is not a half-created one."""
    if not path.exists():
        return False
    names = set(os.listdir(path))
    assert {"data.mdb", "key"} <= names, f"half-created store at {path}: {sorted(names)}"
    return True


def verify_round(path: Path, model: Model, lines: list[dict[str, Any]], tag: str) -> None:
    structural = lmdb_verify.verify(str(path))
    assert structural == [], f"{tag}: lmdb.verify found {structural}"
    flight = in_flight(lines)
    with open_store(path) as store:
        listed = store.list()
        assert all(i.status == "valid" for i in listed), f"{tag}: {listed}"
        ids = {i.id for i in listed}
        assert len(ids) == len(listed), f"{tag}: duplicate ids listed"

        # Nothing acknowledged is missing, except the one delete in flight.
        missing = set(model.live) - ids
        if flight is not None and flight["op"] == "begin-delete" and flight["id"] in missing:
            missing.discard(flight["id"])
            model.apply({"op": "delete", "id": flight["id"]})
        assert not missing, f"{tag}: acknowledged checkpoints lost: {sorted(missing)}"

        # Nothing unacknowledged is visible, except the one create in flight.
        extra = ids - set(model.live)
        assert not (extra & model.deleted), f"{tag}: deleted checkpoints came back"
        if extra:
            assert len(extra) == 1, f"{tag}: unacknowledged checkpoints: {sorted(extra)}"
            assert flight is not None, f"{tag}: a checkpoint nobody created: {extra}"
            assert flight["op"] == "begin-create", f"{tag}: {flight}"
            (cid,) = extra
            ck = store.load(cid)
            check_loaded(ck, flight["n"], flight["size"])
            assert ck.info.workflow_id == flight["wf"]
            # It committed: from now on it must persist like an acknowledged one.
            model.apply(
                {
                    "op": "create",
                    "id": cid,
                    "wf": flight["wf"],
                    "seq": ck.info.sequence,
                    "n": flight["n"],
                    "size": flight["size"],
                }
            )

        # Every acknowledged create loads exactly, with the sequence it was given.
        for cid, rec in model.live.items():
            ck = store.load(cid)
            check_loaded(ck, rec["n"], rec["size"])
            assert ck.info.sequence == rec["seq"], f"{tag}: {cid} changed sequence"
            assert ck.info.workflow_id == rec["wf"]

        # Every acknowledged delete stays deleted.
        for cid in model.deleted:
            with pytest.raises(ckdb.CheckpointNotFound):
                store.load(cid)

        # Sequences: strictly increasing in creation order, strictly decreasing in listings.
        for wf, seqs in model.seqs.items():
            assert seqs == sorted(set(seqs)), f"{tag}: {wf} sequences out of order: {seqs}"
        for wf in store.workflows():
            listed_seqs = [i.sequence for i in store.list(wf)]
            assert listed_seqs == sorted(set(listed_seqs), reverse=True), f"{tag}: {wf}"
            latest = store.latest(wf)
            if listed_seqs:
                assert latest is not None
                assert latest.sequence == listed_seqs[0]

        # No orphans: stored counts agree with the listing.
        stats = store.stats()
        assert stats["checkpoints"] == len(listed), f"{tag}: orphaned metadata: {stats}"
        frames = sum(1 for i in listed for c in i.components if c.stored_size)  # own frames
        assert stats["payload_frames"] == frames, f"{tag}: orphaned payloads: {stats}"


def test_sigkill_rounds(tmp_path: Path) -> None:
    seed = int(os.environ.get("CKDB_KILL_SEED", random.randrange(1 << 32)))
    print(f"CKDB_KILL_SEED={seed}")
    rng = random.Random(seed)
    path = tmp_path / "store.ckdb"
    model = Model()
    kills_during_creation = 0
    creation_rounds = 0
    outcomes: list[str] = []
    acked = 0
    for rnd in range(ROUNDS):
        tag = f"round {rnd} (CKDB_KILL_SEED={seed})"
        existed = path.exists()
        creating = not existed and creation_rounds < MAX_CREATION_ROUNDS
        slow = SLOW_FSYNC if creating else None
        writer = Writer(path, rng.randrange(1 << 32), first_n=rnd * 100_000, slow_fsync=slow)
        try:
            if creating:
                # Kill while the store is (probably) being created: after the writer imported
                # ckdb, before its open returned. Repeated while no store exists yet.
                mode = "creation"
                creation_rounds += 1
                writer.wait_for(lambda ls: any(x["op"] == "imported" for x in ls), ROUND_TIMEOUT)
                time.sleep(rng.uniform(0.0, 15 * SLOW_FSYNC))
            elif rng.random() < 0.3:
                mode = "time"
                time.sleep(rng.uniform(0.0, 1.5))
            else:
                mode = "acks"
                want = rng.randrange(0, 40)
                writer.wait_for(
                    lambda ls, w=want: (
                        sum(1 for x in ls if x["op"] in ("create", "delete")) >= w
                        or any(x["op"] == "done" for x in ls)
                    ),
                    ROUND_TIMEOUT,
                )
                time.sleep(rng.uniform(0.0, 0.05))
        finally:
            lines, stderr, code = writer.kill()
        assert code == -signal.SIGKILL or (code == 0 and lines[-1]["op"] == "done"), (
            f"{tag}: writer failed (exit {code}):\n{stderr}"
        )
        opened = any(x["op"] == "open" for x in lines)
        if not opened and not existed:
            kills_during_creation += 1
            outcomes.append("store" if path.exists() else "no store")
        for rec in lines:
            model.apply(rec)
        acked += sum(1 for x in lines if x["op"] in ("create", "delete"))
        if not no_half_store(path):
            assert not existed and not opened, f"{tag} ({mode}): the store vanished"
            continue
        verify_round(path, model, lines, f"{tag} ({mode})")
    assert path.exists()
    assert acked > 0
    print(
        f"{ROUNDS} rounds, {acked} acknowledged ops, {len(model.live)} live checkpoints, "
        f"{kills_during_creation} kill(s) before the store was open, leaving {outcomes}"
    )
