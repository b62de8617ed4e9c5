"""The floor under prune: raw LMDB deleting 9,000 of 10,000 keys, by layout.

    python -m benchmarks.range_delete_floor [--repeats 5]

No ckdb code runs here: py-lmdb alone, ``sync=True`` (an fsync at commit, as ckdb's default).
Each case builds a fresh environment of 10,000 checkpoints of one workflow, then times one write
transaction that deletes the oldest 9,000 and commits:

- ``N sub-dbs, contiguous``: every checkpoint has one key ``workflow key ‖ u64 seq`` in each of N
  sub-databases (a 43-byte value in the first, 600 bytes in the others); one cursor per
  sub-database deletes from the first key forward. N = 1 is "a small checkpoint is one record".
- ``1 sub-db + id index``: the same single record plus an index from a random 16-byte id to the
  slot, whose 9,000 entries are deleted by key (they are not contiguous).
- ``1 sub-db, slot-sized``: one record per checkpoint of ``SLOT`` bytes (head, metadata frame and
  bundle of ``benchmarks/prune.py``'s small states in one value, as the slot layout would store
  them), deleted by one cursor; ``+ ids read`` also reads each doomed record's 16-byte id before
  deleting it, and ``+ id texts`` turns each into its 26-character text (ckdb's
  ``id_to_text``, uncached): what a prune's result (the ids it deleted) needs.

This is what the slot layout in docs/design.md is measured against: prune's goal (20x faster than
the SQL delete of ``benchmarks/prune.py``) is at or below the one-sub-database case. Medians of
``--repeats`` fresh builds; markdown to stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import lmdb

from ckdb.layout import id_to_text  # pure Python, no store: the text form a result carries

_text = id_to_text

CHECKPOINTS = 10_000
DELETE = 9_000
PREFIX = b"\x05wf-00"
SLOT = 1_500  # bytes: a small checkpoint's head, metadata frame and bundle in one value


def _build(
    path: str, sub_dbs: int, index: bool, first: int = 43
) -> tuple[lmdb.Environment, list, object]:
    env = lmdb.open(path, max_dbs=8, map_size=1 << 30, sync=True)
    dbs = [env.open_db(f"d{i}".encode()) for i in range(sub_dbs)]
    idx = env.open_db(b"ids") if index else None
    with env.begin(write=True) as txn:
        for seq in range(CHECKPOINTS):
            key = PREFIX + seq.to_bytes(8, "big")
            for i, db in enumerate(dbs):
                txn.put(key, os.urandom(first if i == 0 else 600), db=db)
            if idx is not None:
                txn.put(os.urandom(16), key, db=idx)
    return env, dbs, idx


def _prune(env: lmdb.Environment, dbs: list, idx: object, ids: int = 0) -> float:
    doomed_ids: list[bytes] = []
    if idx is not None:  # which ids point at the doomed slots (found before the timed part)
        with env.begin() as txn:
            last = PREFIX + DELETE.to_bytes(8, "big")
            doomed_ids = [bytes(k) for k, v in txn.cursor(db=idx) if bytes(v) < last]
    start = time.perf_counter()
    with env.begin(write=True) as txn:
        for db in dbs:
            cur = txn.cursor(db=db)
            cur.set_range(PREFIX)
            n = 0
            if ids:  # the prune's result: the id (text) of every record it deletes
                texts = []
                while n < DELETE:
                    cid = cur.value()[:16]
                    texts.append(_text(cid) if ids > 1 else cid)
                    if not cur.delete():
                        break
                    n += 1
            else:
                while n < DELETE and cur.delete():
                    n += 1
            assert n == DELETE, n
        for k in doomed_ids:
            txn.delete(k, db=idx)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cases = [
        ("1 sub-db, contiguous", 1, False, 43, 0),
        ("2 sub-dbs, contiguous", 2, False, 43, 0),
        ("3 sub-dbs, contiguous", 3, False, 43, 0),
        ("1 sub-db + id index", 1, True, 43, 0),
        (f"1 sub-db, slot-sized ({SLOT:,} B)", 1, False, SLOT, 0),
        (f"1 sub-db, slot-sized ({SLOT:,} B) + ids read", 1, False, SLOT, 1),
        (f"1 sub-db, slot-sized ({SLOT:,} B) + id texts", 1, False, SLOT, 2),
    ]
    print(
        f"delete {DELETE:,} of {CHECKPOINTS:,} keys per sub-db, one transaction, fsync; "
        f"median of {args.repeats} fresh builds\n"
    )
    print("| layout | delete + commit (ms) | runs (ms) |")
    print("|---|---:|---|")
    for name, sub_dbs, index, first, ids in cases:
        runs = []
        for _ in range(args.repeats):
            path = tempfile.mkdtemp(prefix="ckdb-floor-")
            try:
                env, dbs, idx = _build(path, sub_dbs, index, first)
                runs.append(_prune(env, dbs, idx, ids))
                env.close()
            finally:
                shutil.rmtree(path)
        shown = ", ".join(f"{r:.1f}" for r in runs)
        print(f"| {name} | {statistics.median(runs):.1f} | {shown} |")


if __name__ == "__main__":
    main()
