"""A ckdb process driven step by step for the I/O fault tests (tests/test_faults.py).

    python fault_worker.py STORE OP          OP: create | delete | prune

stdout lines, in the ckdb_worker.py format (so its checker reads them): ``OPENED``,
``TRY <json>`` / ``ACK <json>`` / ``FAIL <json>`` per call, and the control lines ``READY``,
``FAULTED``, ``RECOVER <json>``, ``DONE``.  Steps:

1. open STORE (no automatic retention), create six checkpoints in wf-a and one in wf-b;
   print READY and wait for ``GO`` on stdin (the test injects the fault meanwhile);
2. run OP once (create in wf-a / delete one wf-a checkpoint / prune wf-a to 2); print FAIL with
   the exception's class, its ckdb-ness and message if it raised; print FAULTED and wait for
   ``GO`` (the test clears the fault);
3. recover: create again on the same Store; if that raises a ckdb error, close the Store and
   open the path again, then create; load every acknowledged checkpoint; print DONE.

Runs in its own process so that an LMDB panic (or worse) cannot take the test runner down.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    import ckdb
    from ckdb.retention import RetentionPolicy

    store, what = sys.argv[1], sys.argv[2]

    def emit(tag, obj=None):
        sys.stdout.write(tag + ("" if obj is None else " " + json.dumps(obj, sort_keys=True)))
        sys.stdout.write("\n")
        sys.stdout.flush()

    def wait_go():
        if sys.stdin.readline().strip() != "GO":
            os._exit(4)

    def fail(e: BaseException):
        emit(
            "FAIL",
            {
                "type": type(e).__name__,
                "classes": [c.__name__ for c in type(e).__mro__],
                "ckdb": isinstance(e, ckdb.CkdbError),
                "error": str(e),
            },
        )

    acked: dict[str, dict] = {}
    n = 0

    def create(s, wf: str, tag: str) -> None:
        nonlocal n
        n += 1
        op = {
            "op": "create",
            "wf": wf,
            "phase": f"{tag}{n}",
            "kind": "automatic",
            "state": {"task": {"n": n, "pad": "x" * (300 * n)}, "progress": [n, tag]},
            "files": None,
        }
        emit("TRY", op)
        info = s.create(wf, op["phase"], state=op["state"])
        acked[info.id] = op
        emit("ACK", {**op, "id": info.id})

    s = ckdb.open(store, retention=None)
    emit("OPENED")
    for _ in range(6):
        create(s, "wf-a", "setup")
    create(s, "wf-b", "setup")
    emit("READY")
    wait_go()

    try:
        if what == "create":
            create(s, "wf-a", "faulted")
        elif what == "delete":
            victim = sorted(acked)[2]
            op = {"op": "delete", "id": victim}
            emit("TRY", op)
            s.delete(victim)
            emit("ACK", op)
        else:
            policy = RetentionPolicy(max_checkpoints=2)
            plan = s.prune("wf-a", policy, dry_run=True).planned
            op = {"op": "prune", "wf": "wf-a", "max": 2, "plan": list(plan)}
            emit("TRY", op)
            res = s.prune("wf-a", policy)
            emit("ACK", {**op, "deleted": list(res.deleted)})
    except BaseException as e:  # noqa: BLE001 - the test judges the class
        fail(e)
    emit("FAULTED")
    wait_go()

    recover: dict[str, object] = {}
    try:
        create(s, "wf-a", "same")
        recover["same_store"] = "ok"
    except BaseException as e:  # noqa: BLE001
        fail(e)
        recover["same_store"] = type(e).__name__
        recover["same_store_ckdb"] = isinstance(e, ckdb.CkdbError)
        recover["same_store_error"] = str(e)
        try:
            s.close()
            recover["close"] = "ok"
        except BaseException as e2:  # noqa: BLE001
            recover["close"] = f"{type(e2).__name__}: {e2}"
        s = ckdb.open(store, retention=None)
        recover["reopened"] = True
        create(s, "wf-a", "reopened")
    # every acknowledged checkpoint that was not deleted loads with its state, live
    gone = set()
    with s:
        for cid, op in acked.items():
            try:
                ck = s.load(cid)
            except ckdb.CheckpointNotFound:
                gone.add(cid)
                continue
            if ck.state != op["state"]:
                recover.setdefault("live_wrong_state", []).append(cid)  # type: ignore[union-attr]
    recover["live_missing"] = sorted(gone)
    emit("RECOVER", recover)
    emit("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
