"""SIGKILL during a large prune: every bounded transaction leaves a valid store.

The test process builds a template store once: 3,000 small checkpoints of one workflow (automatic
retention off), every fifth also capturing a small directory whose files change a little, so
chunks are shared and reference counts matter. Each round copies the template, starts
``tests/workers/prune_worker.py`` (``prune(wf, RetentionPolicy(max_checkpoints=10))``) and kills
it with SIGKILL at a random moment after it announced ``ready``. Then:

- ``lmdb.verify`` finds nothing; the store opens;
- between 10 and 3,000 checkpoints are left, the newest 10 among them, and every listed one loads;
- the deleted count is a whole number of transactions (no half-applied batch), and the stored
  counts agree: metadata == listing, payload frames == the survivors' frames (no half-deleted
  checkpoint);
- chunks and reference counts agree exactly with the survivors' manifests;
- running the prune again finishes the job: the newest 10 are left, accounting still exact.

Rounds: ``CKDB_PRUNE_KILL_ROUNDS`` (default 6), then up to 8 more, bisecting the kill delay, until at
least one kill landed in the middle of the prune. Seed: ``CKDB_PRUNE_KILL_SEED`` (default: random,
printed).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest
from lmdb import verify as lmdb_verify

import ckdb
from ckdb import pruning
from ckdb.capture import E_CHUNKS
from ckdb.layout import DB_CHUNKS, DB_PAYLOADS, DB_REFS, id_from_text
from ckdb.retention import RetentionPolicy
from ckdb.tables.chunks import decode_refs

pytestmark = pytest.mark.crash

WORKER = Path(__file__).resolve().parent / "workers" / "prune_worker.py"
ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("CKDB_PRUNE_KILL_ROUNDS", "6"))
EXTRA_ROUNDS = 8
TOTAL = 3000
KEEP = 10
WF = "wf-prune"
FILES_EVERY = 5


class Template:
    def __init__(
        self, path: Path, ids: list[str], frames: dict[str, int], chunks: dict[str, set[bytes]]
    ):
        self.path = path
        self.ids = ids  # oldest first
        self.frames = frames  # id -> payload frames it owns
        self.chunks = chunks  # id -> distinct chunks its manifest names


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    base = tmp_path_factory.mktemp("prune-template")
    path = base / "store.ckdb"
    work = base / "work"
    work.mkdir()
    (work / "shared.txt").write_bytes(b"shared content\n" * 300)
    (work / "sub").mkdir()
    ids: list[str] = []
    # Fast fill (no fsync): this process is not killed and the files stay in the page cache.
    with ckdb.open(path, retention=None, _unsafe_nosync=True) as s:
        for i in range(TOTAL):
            state = {"task": {"i": i, "items": list(range(i % 7))}, "progress": {"done": i}}
            if i % FILES_EVERY == 0:
                (work / "sub" / "changing.txt").write_bytes(f"version {i}\n".encode() * 50)
                (work / f"rot{i % 3}.txt").write_bytes(f"rot {i}".encode() * 20)
                info = s.create(WF, "p", state=state, files=work)
            else:
                info = s.create(WF, "p", state=state, include_files=False)
            ids.append(info.id)
        frames: dict[str, int] = {}
        chunks: dict[str, set[bytes]] = {}
        for cid in ids:
            raw_id = id_from_text(cid)
            with s._env.read() as txn:
                frames[cid] = sum(1 for _ in txn.prefix(DB_PAYLOADS, raw_id))
            _ck, manifest = ckdb.reading.load(s.tables, raw_id)
            entries = manifest["entries"] if manifest else []
            chunks[cid] = {bytes(c) for e in entries if e[E_CHUNKS] for c in e[E_CHUNKS]}
        st = s.stats()
    assert st["checkpoints"] == TOTAL
    assert sum(frames.values()) == st["payload_frames"]
    assert st["chunks"] > 0
    return Template(path, ids, frames, chunks)


def raw_chunk_state(path: Path) -> tuple[set[bytes], dict[bytes, int]]:
    with ckdb.open(path, retention=None, readonly=True) as s:
        keys = s._keys
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=32, subdir=True)
    try:
        chunks_db = env.open_db(DB_CHUNKS, create=False)
        refs_db = env.open_db(DB_REFS, create=False)
        with env.begin() as txn:
            chunk_keys = {bytes(k) for k, _ in txn.cursor(chunks_db)}
            refs = {bytes(k): decode_refs(keys, bytes(k), bytes(v)) for k, v in txn.cursor(refs_db)}
    finally:
        env.close()
    return chunk_keys, refs


def check_store(path: Path, t: Template) -> int:
    """Every invariant of an interrupted prune; returns how many checkpoints are left."""
    problems = lmdb_verify.verify(str(path))
    assert problems == [], problems[:5]
    with ckdb.open(path, retention=None) as s:
        listed = s.list(WF)
        left = [c.id for c in listed]
        assert KEEP <= len(left) <= TOTAL
        assert set(t.ids[-KEEP:]) <= set(left), "one of the newest 10 was deleted"
        assert set(left) <= set(t.ids)
        assert all(c.status != "corrupted" for c in listed)
        # The transactions prune makes for this plan (oldest first; every FILES_EVERY-th
        # checkpoint holds files, which makes a transaction smaller).
        work = [(b"", i, cid, b"", i % FILES_EVERY == 0) for i, cid in enumerate(t.ids[:-KEEP])]
        ends = {0, *itertools.accumulate(len(b) for b in pruning.prune_batches(work))}
        assert TOTAL - len(left) in ends or len(left) == KEEP, (
            f"{TOTAL - len(left)} deleted: not a whole number of transactions {sorted(ends)}"
        )
        assert set(left) == set(t.ids[TOTAL - len(left) :]), "not the oldest that were deleted"
        for cid in left:
            ck = s.load(cid)
            assert ck.info.id == cid
        st = s.stats()
        assert st["checkpoints"] == len(left) == len(s.list())
        assert st["payload_frames"] == sum(t.frames[c] for c in left)
        assert s.latest(WF).id == t.ids[-1]  # type: ignore[union-attr]
    expected: dict[bytes, int] = {}
    for cid in left:
        for c in t.chunks[cid]:
            expected[c] = expected.get(c, 0) + 1
    chunk_keys, refs = raw_chunk_state(path)
    assert chunk_keys == set(expected), "unreferenced or missing chunks after the kill"
    assert refs == expected, "reference counts disagree with the surviving manifests"
    return len(left)


def run_round(t: Template, dest: Path, delay: float) -> tuple[int, bool]:
    """Copy the template, prune in a worker, kill it ``delay`` s after it is ready. Returns
    (checkpoints left, whether the worker finished before the kill)."""
    shutil.copytree(t.path, dest)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(dest), WF, str(KEEP)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise AssertionError(f"worker died before ready: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
    assert json.loads(line)["op"] == "ready"
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    rest = proc.stdout.read().decode()
    proc.stdout.close()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    finished = '"done"' in rest
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"worker failed ({proc.returncode}): {err}")
    left = check_store(dest, t)
    if finished:
        assert left == KEEP
    return left, finished


def finish(dest: Path, t: Template) -> None:
    with ckdb.open(dest, retention=None) as s:
        before = len(s.list(WF))
        result = s.prune(WF, RetentionPolicy(max_checkpoints=KEEP))
        assert len(result.deleted) == before - KEEP
        assert result.skipped == ()
        assert [c.id for c in reversed(s.list(WF))] == t.ids[-KEEP:]
    assert check_store(dest, t) == KEEP


def test_sigkill_during_prune(template: Template, tmp_path: Path) -> None:
    seed = int(os.environ.get("CKDB_PRUNE_KILL_SEED", random.randrange(1 << 32)))
    print(f"CKDB_PRUNE_KILL_SEED={seed}")
    rng = random.Random(seed)

    # Round 0, in this process and not killed: how long the whole prune takes here.
    full = tmp_path / "measure"
    shutil.copytree(template.path, full)
    with ckdb.open(full, retention=None) as s:
        t0 = time.monotonic()
        s.prune(WF, RetentionPolicy(max_checkpoints=KEEP))
        duration = max(time.monotonic() - t0, 0.02)
    assert check_store(full, template) == KEEP

    outcomes: list[tuple[float, int, bool]] = []
    for n in range(ROUNDS):
        delay = rng.uniform(0, duration * 1.3)
        dest = tmp_path / f"round{n}"
        left, finished = run_round(template, dest, delay)
        outcomes.append((delay, left, finished))
        finish(dest, template)

    # Make sure at least one kill landed in the middle: bisect the delay if none did.
    lo, hi = 0.0, duration * 2
    for n in range(EXTRA_ROUNDS):
        if any(KEEP < left < TOTAL for _d, left, _f in outcomes):
            break
        delay = (lo + hi) / 2
        dest = tmp_path / f"extra{n}"
        left, finished = run_round(template, dest, delay)
        outcomes.append((delay, left, finished))
        if left == TOTAL:
            lo = delay
        else:
            hi = delay
        finish(dest, template)
    print("rounds (delay s, left, finished):", [(round(d, 3), n, f) for d, n, f in outcomes])
    assert any(KEEP < left < TOTAL for _d, left, _f in outcomes), outcomes
