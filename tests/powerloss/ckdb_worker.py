"""ckdb writer / checker processes for the power-loss crash rounds.

writer:  python ckdb_worker.py write STORE --n N --seed S [--unsafe-nosync]
         ``with ckdb.open(STORE) as s:`` then a seeded stream of create/delete.
         Output lines (flushed): ``OPENED`` once open returned; ``TRY <json>``
         before and ``ACK <json>`` after each call returned.  json = {"op":
         "create", "wf", "phase", "state", "id" (ACK only)} or {"op": "delete", "id"}.
checker: python ckdb_worker.py check STORE --log FILE
         Opens STORE (create=False) and prints one JSON verdict line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import traceback
from pathlib import Path


def state_for(rnd: random.Random, i: int) -> dict:
    pad = rnd.choice([0, 10, 300, 3000, 9000])
    return {
        "progress": {"step": i, "pad": "p" * pad, "r": rnd.randrange(1 << 30)},
        "task": f"task-{i}",
        "agent": {"name": "a", "n": [i, i + 1]},
    }


def write(a) -> int:
    import ckdb

    rnd = random.Random(a.seed)
    out = sys.stdout

    def emit(tag, obj=None):
        out.write(tag + ("" if obj is None else " " + json.dumps(obj, sort_keys=True)) + "\n")
        out.flush()

    try:
        kw: dict[str, object] = {"retention": None}  # every acknowledged create must stay
        if a.unsafe_nosync:
            kw["_unsafe_nosync"] = True
        with ckdb.open(a.store, **kw) as s:
            emit("OPENED")
            live: list[str] = []
            for i in range(a.n):
                if live and rnd.random() < 0.3:
                    cid = live.pop(rnd.randrange(len(live)))
                    op = {"op": "delete", "id": cid}
                    emit("TRY", op)
                    s.delete(cid)
                    emit("ACK", op)
                else:
                    wf = f"wf{rnd.randrange(3)}"
                    op = {"op": "create", "wf": wf, "phase": f"ph{i}", "state": state_for(rnd, i)}
                    emit("TRY", op)
                    info = s.create(wf, op["phase"], state=op["state"])
                    live.append(info.id)
                    emit("ACK", {**op, "id": info.id})
    except BaseException as e:  # noqa: BLE001 - report anything, then die without cleanup
        emit("ERR", {"error": f"{type(e).__name__}: {e}"})
        os._exit(3)
    emit("DONE")
    return 0


def check(a) -> int:
    import ckdb

    tries, acks, opened = [], [], False
    for ln in Path(a.log).read_text().split("\n"):
        tag, _, payload = ln.partition(" ")
        if tag == "OPENED":
            opened = True
        elif tag == "TRY":
            tries.append(json.loads(payload))
        elif tag == "ACK":
            acks.append(json.loads(payload))
    res = {
        "store_acked": opened,
        "store_present": False,
        "opened": False,
        "error": None,
        "structural": [],
        "lost_creates": [],
        "wrong_state": [],
        "resurrected": [],
        "unexpected_listed": [],
        "n_acked": len(acks),
        "n_creates_checked": 0,
        "n_deletes_checked": 0,
    }
    store = a.store
    if not os.path.exists(os.path.join(store, "data.mdb")):
        if opened:
            res["error"] = "store missing although ckdb.open() returned"
        print(json.dumps(res))
        return 0
    res["store_present"] = True
    try:
        from ckdb._env import structural_check

        res["structural"] = structural_check(Path(store))
    except ImportError:
        pass
    try:
        with ckdb.open(store, create=False) as s:
            res["opened"] = True
            # a delete that was attempted but not acknowledged is in doubt: a commit
            # whose final sync failed may still be durable, so either outcome is fine
            delete_tried = {op["id"] for op in tries if op["op"] == "delete"}
            res["in_doubt_deletes"] = len(
                delete_tried - {op["id"] for op in acks if op["op"] == "delete"}
            )
            for op in acks:
                if op["op"] == "create":
                    if op["id"] in delete_tried:
                        continue
                    res["n_creates_checked"] += 1
                    try:
                        cp = s.load(op["id"])
                    except ckdb.CheckpointNotFound:
                        res["lost_creates"].append(op["id"])
                        continue
                    if cp.state != op["state"]:
                        res["wrong_state"].append(op["id"])
                else:
                    res["n_deletes_checked"] += 1
                    try:
                        s.load(op["id"])
                        res["resurrected"].append(op["id"])
                    except ckdb.CheckpointNotFound:
                        pass
            attempted = {(op["wf"], op["phase"]) for op in tries if op["op"] == "create"}
            for wf in sorted({w for w, _ in attempted}):
                for info in s.list(wf):
                    if (info.workflow_id, info.phase) not in attempted:
                        res["unexpected_listed"].append(info.id)
    except Exception as e:  # noqa: BLE001
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-2000:]
    print(json.dumps(res))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["write", "check"])
    ap.add_argument("store")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unsafe-nosync", action="store_true")
    ap.add_argument("--log")
    a = ap.parse_args(argv)
    return write(a) if a.mode == "write" else check(a)


if __name__ == "__main__":
    sys.exit(main())
