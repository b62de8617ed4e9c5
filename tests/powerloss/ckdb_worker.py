"""ckdb writer / checker processes for the power-loss crash rounds.

writer:  python ckdb_worker.py write STORE --workdir DIR --n N --seed S [--unsafe-nosync]
                [--durability relaxed]
         ``with ckdb.open(STORE, retention=None) as s:`` then a seeded stream of operations
         (``durability="relaxed"`` added with ``--durability relaxed``).
         Output lines (flushed): ``OPENED`` once open returned; ``TRY <json>`` before and
         ``ACK <json>`` after each call returned; ``DONE`` at the end.  Operations:

         - ``setret``  ``store.set_retention("wf-ret", RetentionPolicy(max_checkpoints=3))``
           (always the first operation; wf-ret is only written after its ACK);
         - ``create``  {"wf", "phase", "kind", "state", "files"}: ``files`` is the digest map
           {relative path: sha256 hex} of DIR when the create captures it (workflow
           ``wf-files``; DIR is mutated before each such create), else null.  ACK adds ``id``;
           for wf-ret also ``listed`` (``store.list("wf-ret")`` ids after the call, newest
           first) and ``gone`` (ids the previous listing had: deleted by retention);
         - ``delete``  {"id"};
         - ``prune``   {"wf" (null: every workflow), "max" (explicit count policy, null: each
           workflow's own), "plan" (ids a dry run planned to delete)}; ACK adds ``deleted``
           and, when wf-ret was involved, ``listed`` / ``gone``;
         - ``backup``  {"dest"}: ``store.backup(<store's parent>/dest)``; ACK adds ``ids``
           (every checkpoint the store held); when the store has ``backup``;
         - ``rotate``  {"new_data_key"}: ``store.rotate_key(new_data_key=...)`` (a new master
           key in the store's own key file); when the store has ``rotate_key``.

         DIR lives outside the power-loss mount: it is the agent's input, not the store.
         A call that raised is followed by ``FAIL {"error": ...}`` (tests/test_faults.py).
checker: python ckdb_worker.py check STORE --log FILE [--durability relaxed]
         Opens STORE (create=False) and prints one JSON verdict line: lmdb structural
         verification, every acknowledged create present with its exact state (and files,
         restored byte-for-byte), every acknowledged delete still deleted, every visible
         checkpoint whole (loads, validates "comprehensive", was attempted with exactly this
         state), wf-ret exactly as the writer last listed it (or with the one in-flight
         create applied), nothing retention deleted reappearing, every acknowledged backup
         opening and holding exactly what the store held, and ``store.scrub()`` clean when the
         store has it.

         ``--durability relaxed`` (the writer ran with ``durability="relaxed"``, LMDB
         metasync=False: "consistent after a power loss, but the last commits may be lost"):
         checks 1, 2 and 4 (no acknowledged loss, exact retention listing) are replaced by the
         PREFIX rule.  The acknowledged store operations (setret, create, delete, prune,
         rotate; backups and prunes that deleted nothing do not change the store) are replayed
         in commit order, giving the expected store after each prefix of k operations (the set
         of visible checkpoint ids, whether wf-ret has its own policy, the active data key).  The observed store must equal one of them, or the whole
         sequence plus the in-flight call applied whole.  The largest matching k is the
         surviving prefix; ``n_lost`` = acknowledged store operations minus k (``lost_ops`` names
         them).  Anything else is a ``prefix_violation`` (an earlier commit lost while a later
         one survived, a delete undone while a later create survived, a partial operation).  An
         acknowledged ``rotate_key`` must survive whenever the store opens with its key file (the
         key file holds that rotation's key).  Checks 3 (nothing half-visible), 5, 6 (backups are
         fsynced on their own) and 7 (scrub) are unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

RET_WF = "wf-ret"
RET_MAX = 3
FILES_WF = "wf-files"
PLAIN_WFS = ("wf0", "wf1")


def state_for(rnd: random.Random, i: int) -> dict:
    pad = rnd.choice([0, 10, 300, 3000, 9000])
    return {
        "progress": {"step": i, "pad": "p" * pad, "r": rnd.randrange(1 << 30)},
        "task": f"task-{i}",
        "agent": {"name": "a", "n": [i, i + 1]},
    }


def digest_map(root: str | os.PathLike) -> dict[str, str]:
    """{relative path: sha256 hex} of every regular file under root."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def mutate(rnd: random.Random, root: Path) -> None:
    """A few seeded edits of the working directory: add, overwrite (often same size, to
    defeat size+mtime change detection), delete, nested paths, empty and multi-sector files."""
    existing = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    for _ in range(rnd.randint(1, 3)):
        r = rnd.random()
        if existing and r < 0.35:
            rel = rnd.choice(existing)
            size = (root / rel).stat().st_size if rnd.random() < 0.6 else rnd.choice([1, 700, 9000])
            (root / rel).write_bytes(rnd.randbytes(size))
        elif existing and r < 0.5:
            rel = existing.pop(rnd.randrange(len(existing)))
            (root / rel).unlink()
        else:
            sub = rnd.choice(["", "", "src", "src/deep"])
            rel = os.path.join(sub, f"f{rnd.randrange(40)}.bin")
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(rnd.randbytes(rnd.choice([0, 5, 700, 4096, 9000, 70000])))
            existing.append(rel)


def write(a) -> int:
    import ckdb
    from ckdb.retention import RetentionPolicy

    rnd = random.Random(a.seed)
    out = sys.stdout
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    def emit(tag, obj=None):
        out.write(tag + ("" if obj is None else " " + json.dumps(obj, sort_keys=True)) + "\n")
        out.flush()

    try:
        # No store-wide automatic retention: every acknowledged create outside wf-ret must stay
        # until the writer deletes or prunes it.
        kw: dict[str, object] = {"retention": None}
        if a.unsafe_nosync:
            kw["_unsafe_nosync"] = True
        if a.durability != "sync":
            kw["durability"] = a.durability
        if a.remote:
            kw["remote"] = ckdb.Remote(a.remote, key_file=a.remote_key_file, interval=0.01)
        sync_rnd = random.Random(a.seed ^ 0x5EED)  # the op stream stays that of the seed
        with ckdb.open(a.store, **kw) as s:
            emit("OPENED")
            op = {"op": "setret", "wf": RET_WF, "max": RET_MAX}
            emit("TRY", op)
            s.set_retention(RET_WF, RetentionPolicy(max_checkpoints=RET_MAX))
            emit("ACK", op)
            live: dict[str, list[str]] = {w: [] for w in (*PLAIN_WFS, FILES_WF)}
            ret_listed: list[str] = []

            def ret_listing() -> dict:
                nonlocal ret_listed
                now = [i.id for i in s.list(RET_WF)]
                gone = [c for c in ret_listed if c not in now]
                ret_listed = now
                return {"listed": now, "gone": gone}

            for i in range(a.n):
                r = rnd.random()
                deletable = [c for w in live for c in live[w]]
                if deletable and r < 0.18:
                    cid = rnd.choice(deletable)
                    for ids in live.values():
                        if cid in ids:
                            ids.remove(cid)
                    op = {"op": "delete", "id": cid}
                    emit("TRY", op)
                    s.delete(cid)
                    emit("ACK", op)
                elif r < 0.28:
                    # explicit prune: a plain workflow under a count policy, wf-ret under its
                    # own policy, or every workflow under its own (only wf-ret has one)
                    which = rnd.choice([*PLAIN_WFS, RET_WF, None])
                    pol = (
                        RetentionPolicy(max_checkpoints=rnd.randint(1, 3))
                        if (which in PLAIN_WFS)
                        else None
                    )
                    plan = s.prune(which, pol, dry_run=True).planned
                    op = {
                        "op": "prune",
                        "wf": which,
                        "max": None if pol is None else pol.max_checkpoints,
                        "plan": list(plan),
                    }
                    emit("TRY", op)
                    res = s.prune(which, pol)
                    for ids in live.values():
                        ids[:] = [c for c in ids if c not in res.deleted]
                    ack = {**op, "deleted": list(res.deleted)}
                    if which in (RET_WF, None):
                        ack.update(ret_listing())
                    emit("ACK", ack)
                elif r < 0.32 and hasattr(s, "backup"):
                    # a hot backup next to the store (on the same power-loss mount)
                    ids = sorted(i.id for i in s.list())
                    op = {"op": "backup", "dest": f"backup-{i}"}
                    emit("TRY", op)
                    s.backup(Path(a.store).parent / op["dest"])
                    emit("ACK", {**op, "ids": ids})
                elif r < 0.36 and hasattr(s, "rotate_key"):
                    # a new master key in the store's own key file; sometimes a new data key too
                    op = {"op": "rotate", "new_data_key": rnd.random() < 0.5}
                    emit("TRY", op)
                    rep = s.rotate_key(new_data_key=op["new_data_key"])
                    emit("ACK", {**op, "active": rep.active_key_id})
                else:
                    wf = rnd.choice([*PLAIN_WFS, FILES_WF, RET_WF])
                    kind = "manual" if wf in PLAIN_WFS and rnd.random() < 0.2 else "automatic"
                    files = None
                    if wf == FILES_WF:
                        mutate(rnd, workdir)
                        files = digest_map(workdir)
                    op = {
                        "op": "create",
                        "wf": wf,
                        "phase": f"ph{i}",
                        "kind": kind,
                        "state": state_for(rnd, i),
                        "files": files,
                    }
                    emit("TRY", op)
                    info = s.create(
                        wf,
                        op["phase"],
                        state=op["state"],
                        kind=kind,
                        name=f"m{i}" if kind == "manual" else None,
                        files=workdir if wf == FILES_WF else None,
                    )
                    ack = {**op, "id": info.id}
                    if wf == RET_WF:
                        ack.update(ret_listing())
                    else:
                        live[wf].append(info.id)
                    emit("ACK", ack)
                    if a.remote and sync_rnd.random() < 0.3:
                        s.sync_remote(timeout=30)  # mid-ship cuts come from the shipper too
                        emit("SYNCED")
    except BaseException as e:  # noqa: BLE001 - report anything, then die without cleanup
        emit("ERR", {"error": f"{type(e).__name__}: {e}"})
        os._exit(3)
    emit("DONE")
    return 0


def _read_log(path: str) -> tuple[bool, list[tuple[str, dict]]]:
    opened, events = False, []
    for ln in Path(path).read_text().split("\n"):
        tag, _, payload = ln.partition(" ")
        if tag == "OPENED":
            opened = True
        elif tag in ("TRY", "ACK", "FAIL"):
            events.append((tag, json.loads(payload)))
    return opened, events


def check(a) -> int:  # noqa: PLR0912, PLR0915 - one linear list of checks reads best
    import ckdb

    opened, events = _read_log(a.log)
    relaxed = a.durability == "relaxed"
    tries = [op for tag, op in events if tag == "TRY"]
    acks = [op for tag, op in events if tag == "ACK"]
    res: dict = {
        "durability": a.durability,
        "store_acked": opened,
        "store_present": False,
        "opened": False,
        "error": None,
        "structural": [],
        "lost_creates": [],
        "wrong_state": [],
        "wrong_files": [],
        "resurrected": [],
        "unexpected_listed": [],
        "half_visible": [],
        "invalid": [],
        "latest_wrong": [],
        "ret_violations": [],
        "claimed_unwritten": [],
        "backup_problems": [],
        "prefix_violation": [],
        "scrub": None,
        "n_acked": len(acks),
        "n_creates_checked": 0,
        "n_files_checked": 0,
        "n_deletes_checked": 0,
        "n_ret_checked": 0,
        "n_visible_checked": 0,
        "n_backups_checked": 0,
    }
    if relaxed:
        res.update(n_store_ops_acked=None, n_lost=None, lost_ops=[], pending_applied=None)
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

    # What the log says.  A TRY without its ACK is in doubt: a commit whose final sync failed
    # (or whose ACK line was never printed) may or may not be durable.
    tried_by_key = {(op["wf"], op["phase"]): op for op in tries if op["op"] == "create"}
    acked_deleted: set[str] = set()
    for op in acks:
        if op["op"] == "delete":
            acked_deleted.add(op["id"])
        elif op["op"] == "prune":
            acked_deleted.update(op["deleted"])
    # in flight: a TRY not followed by its ACK (the writer died, or the call raised: FAIL)
    pending = [
        op
        for k, (tag, op) in enumerate(events)
        if tag == "TRY" and (k + 1 == len(events) or events[k + 1][0] != "ACK")
    ]
    # a call that raised saying "nothing was written" (and not "uncertain") must have no effect
    unwritten = [
        events[k - 1][1]
        for k, (tag, op) in enumerate(events)
        if tag == "FAIL"
        and k > 0
        and events[k - 1][0] == "TRY"
        and "nothing was written" in op.get("error", "")
        and "uncertain" not in op.get("error", "")
    ]
    in_doubt: set[str] = set()
    for op in pending:
        if op["op"] == "delete":
            in_doubt.add(op["id"])
        elif op["op"] == "prune":
            in_doubt.update(op["plan"])
    ret_acks = [op for op in acks if "listed" in op]
    ret_gone = {c for op in ret_acks for c in op["gone"]}
    ret_last = ret_acks[-1]["listed"] if ret_acks else []

    scratch = tempfile.mkdtemp(prefix="ckdb-check-")
    # relaxed: no store-wide default policy, so get_retention("wf-ret") tells whether the
    # acknowledged set_retention survived
    open_kw: dict = {"retention": None} if relaxed else {}
    try:
        with ckdb.open(store, create=False, **open_kw) as s:
            res["opened"] = True

            files_checked: set[str] = set()

            def files_ok(cid: str, expected: dict) -> bool:
                target = os.path.join(scratch, cid)
                rep = s.restore(cid, target_dir=target)
                got = digest_map(target)
                shutil.rmtree(target, ignore_errors=True)
                res["n_files_checked"] += 1
                files_checked.add(cid)
                return rep.ok and got == expected

            # 1. every acknowledged create outside wf-ret present, exact state and files
            #    (relaxed: the prefix rule below instead)
            for op in [] if relaxed else acks:
                if op["op"] != "create" or op["wf"] == RET_WF:
                    continue
                if op["id"] in acked_deleted or op["id"] in in_doubt:
                    continue
                res["n_creates_checked"] += 1
                try:
                    cp = s.load(op["id"])
                except ckdb.CheckpointNotFound:
                    res["lost_creates"].append(op["id"])
                    continue
                except ckdb.CkdbError as e:
                    res["half_visible"].append([op["id"], f"{type(e).__name__}: {e}"])
                    continue
                if cp.state != op["state"]:
                    res["wrong_state"].append(op["id"])
                if op["files"] is not None and not files_ok(op["id"], op["files"]):
                    res["wrong_files"].append(op["id"])

            # 2. every acknowledged delete (explicit or by prune) still deleted
            for cid in [] if relaxed else sorted(acked_deleted):
                res["n_deletes_checked"] += 1
                try:
                    s.load(cid)
                    res["resurrected"].append(cid)
                except ckdb.CheckpointNotFound:
                    pass
                except ckdb.CkdbError as e:
                    res["resurrected"].append(f"{cid} ({type(e).__name__}: {e})")

            # 3. every visible checkpoint whole, and attempted with exactly this content
            visible = s.list()
            acked_ids = {op["id"]: op for op in acks if op["op"] == "create"}
            acked_keys = {(op["wf"], op["phase"]) for op in acked_ids.values()}
            for info in visible:
                res["n_visible_checked"] += 1
                key = (info.workflow_id, info.phase)
                op = tried_by_key.get(key)
                if op is None or (info.id not in acked_ids and key in acked_keys):
                    # never attempted, or a second copy of an acknowledged create
                    res["unexpected_listed"].append(info.id)
                    continue
                if info.status != "valid":
                    res["half_visible"].append([info.id, f"status {info.status}"])
                    continue
                try:
                    cp = s.load(info.id)
                except ckdb.CkdbError as e:
                    res["half_visible"].append([info.id, f"{type(e).__name__}: {e}"])
                    continue
                if cp.state != op["state"]:
                    res["wrong_state"].append(info.id)
                rep = s.validate(info.id, "comprehensive")
                if not rep.ok:
                    res["invalid"].append([info.id, list(rep.findings)[:3]])
                if (
                    op["files"] is not None
                    and info.id not in files_checked
                    and not files_ok(info.id, op["files"])
                ):
                    res["wrong_files"].append(info.id)
            for wf in sorted({i.workflow_id for i in visible}):
                newest = s.list(wf, limit=1)
                latest = s.latest(wf)
                if latest is None or not newest or latest.id != newest[0].id:
                    res["latest_wrong"].append(wf)

            # 4. retention results monotonic: wf-ret is exactly what the writer last listed,
            #    or that plus the in-flight create with retention applied.
            #    relaxed: the surviving operations are a prefix of the acknowledged ones
            if relaxed:
                _check_prefix(s, acks, pending, ret_last, visible, res)
            present = [i.id for i in s.list(RET_WF)]
            res["n_ret_checked"] = len(ret_acks)
            back = sorted(set(present) & ret_gone)
            if back and not relaxed:
                res["ret_violations"].append(f"deleted by retention, back after the cut: {back}")
            if ret_last and ret_last[0] not in present and not relaxed:
                res["ret_violations"].append(f"newest acknowledged {ret_last[0]} missing")
            allowed = [ret_last]
            for op in pending:
                if op["op"] == "create" and op["wf"] == RET_WF:
                    new = [i.id for i in s.list(RET_WF) if i.phase == op["phase"]]
                    if new:
                        allowed.append(new + ret_last[: RET_MAX - 1])
            if not relaxed and not any(sorted(present) == sorted(opt) for opt in allowed):
                res["ret_violations"].append(f"wf-ret holds {present}, expected one of {allowed}")

            # 5. "nothing was written" is true
            for op in unwritten:
                if op["op"] == "create" and any(
                    i.workflow_id == op["wf"] and i.phase == op["phase"] for i in visible
                ):
                    res["claimed_unwritten"].append(f"create {op['wf']}/{op['phase']} visible")
                elif op["op"] == "delete":
                    try:
                        s.get_info(op["id"])
                    except ckdb.CheckpointNotFound:
                        res["claimed_unwritten"].append(f"delete {op['id']} took effect")

            # 6. every acknowledged backup opens and holds exactly what the store held
            for op in acks:
                if op["op"] != "backup":
                    continue
                res["n_backups_checked"] += 1
                problem = _check_backup(ckdb, Path(store).parent / op["dest"], op["ids"], acks)
                if problem:
                    res["backup_problems"].append(f"{op['dest']}: {problem}")

            # 7. the store's own scrub, once it exists
            if hasattr(s, "scrub"):
                rep = s.scrub()
                res["scrub"] = {"ok": rep.ok, "findings": [str(f) for f in rep.findings][:5]}
    except Exception as e:  # noqa: BLE001
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-2000:]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if a.remote and res.get("opened") and not res["error"]:
        res["remote_problems"] = _check_remote(ckdb, store, a, deleted_ids(acks, events))
    print(json.dumps(res))
    return 0


def deleted_ids(acks: list[dict], events: list[tuple[str, dict]]) -> set[str]:
    """Checkpoints that deletes or prunes (acknowledged or attempted) may have removed."""
    out: set[str] = set()
    for _tag, op in events:
        if op.get("op") == "delete":
            out.add(op["id"])
        elif op.get("op") == "prune":
            out.update(op.get("plan", ()))
            out.update(op.get("deleted", ()))
        elif op.get("op") == "create" and "gone" in op:
            out.update(op["gone"])
    for op in acks:
        out.update(op.get("gone", ()))
    return out


def _pulled(ckdb, tmp: str, url: str, key: bytes) -> dict[str, tuple[int, object]]:
    """Every checkpoint the remote holds, pulled into a fresh store: id -> (sequence, state)."""
    out: dict[str, tuple[int, object]] = {}
    with ckdb.open(os.path.join(tmp, f"pull-{len(os.listdir(tmp))}"), key=key, retention=None,
                   remote=ckdb.Remote(url, key=key)) as b:  # fmt: skip
        for wf in (*PLAIN_WFS, FILES_WF, RET_WF):
            try:
                b.pull(wf)
            except ckdb.CheckpointNotFound:
                continue
            infos = b.list(wf)
            seqs = [i.sequence for i in infos]
            if seqs != sorted(set(seqs), reverse=True):
                raise AssertionError(f"{wf}: remote sequences {seqs} (a duplicate or fork)")
            for info in infos:
                out[info.id] = (info.sequence, b.load(info.id).state)
    return out


def _check_remote(ckdb, store: str, a, deleted: set[str]) -> list[str]:
    """After the cut: the remote holds nothing the durable store lost (only what it deleted
    since), the store reopened with its remote ships on without a conflict, and then the remote
    equals the store."""
    from ckdb.keys import read_key_file

    problems: list[str] = []
    key = read_key_file(a.remote_key_file)
    tmp = tempfile.mkdtemp(prefix="ckdb-pull-")
    try:
        report = ckdb.check_remote(ckdb.Remote(a.remote, key=key), deep=True)
        problems += [f"check_remote: {p}" for p in report.problems]
        before = _pulled(ckdb, tmp, a.remote, key)
        with ckdb.open(store, create=False, retention=None) as s:
            local = {i.id: (i.sequence, s.load(i.id).state) for i in s.list()}
        for cid, got in before.items():
            if cid in local and local[cid] != got:
                problems.append(f"{cid}: differs between the remote and the store")
            elif cid not in local and cid not in deleted:
                problems.append(f"{cid}: in the remote, lost by the store")
        with ckdb.open(store, create=False, retention=None,
                       remote=ckdb.Remote(a.remote, key=key, interval=0.01)) as s:  # fmt: skip
            rep = s.sync_remote(timeout=60)
            if not rep.ok:
                problems.append(f"sync after the cut: {rep.failed or rep.fenced}")
        after = _pulled(ckdb, tmp, a.remote, key)
        if after != local:
            problems.append(
                f"after a sync the remote differs: missing {sorted(set(local) - set(after))[:5]}, "
                f"extra {sorted(set(after) - set(local))[:5]}, differing "
                f"{sorted(c for c in set(after) & set(local) if after[c] != local[c])[:5]}; "
                f"before the sync the remote held {sorted(before)[:8]}, the store {sorted(local)[:8]}"
            )
        report = ckdb.check_remote(ckdb.Remote(a.remote, key=key), deep=True)
        problems += [f"check_remote after sync: {p}" for p in report.problems]
    except Exception as e:  # noqa: BLE001
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return problems


# acknowledged operations that change the store (a backup only reads it)
STORE_OPS = ("setret", "create", "delete", "prune", "rotate")


def _check_prefix(s, acks: list[dict], pending: list[dict], ret_last, visible, res) -> None:
    """Relaxed durability: the store must be exactly the result of the first k acknowledged
    store operations (for some k), or of all of them plus the in-flight call applied whole."""
    from ckdb.retention import RetentionPolicy

    # an explicit prune that deleted nothing changes nothing (and is indistinguishable from lost)
    ops = [
        op
        for op in acks
        if op["op"] in STORE_OPS and not (op["op"] == "prune" and not op["deleted"])
    ]
    res["n_store_ops_acked"] = len(ops)
    # expected store after each prefix: (visible ids, wf-ret has its own policy)
    live: set[str] = set()
    has_policy = False
    states = [(frozenset(live), has_policy)]
    born: dict[str, int] = {}  # id -> position of the create that made it (1-based)
    for k, op in enumerate(ops, 1):
        if op["op"] == "setret":
            has_policy = True
        elif op["op"] == "create":
            live.add(op["id"])
            born[op["id"]] = k
            live.difference_update(op.get("gone", []))
        elif op["op"] == "delete":
            live.discard(op["id"])
        elif op["op"] == "prune":
            live.difference_update(op["deleted"])
        states.append((frozenset(live), has_policy))
    seen_ids = frozenset(i.id for i in visible)
    seen = (seen_ids, s.get_retention(RET_WF) == RetentionPolicy(max_checkpoints=RET_MAX))
    # an acknowledged rotation moved `key` to its new key: a store that opened with it holds
    # that rotation (so at least everything up to it)
    rotations = [k for k, op in enumerate(ops, 1) if op["op"] == "rotate"]
    floor = rotations[-1] if rotations else 0
    # the data key active in the store: the last surviving rotation's
    active_at: list[int | None] = [None] * (len(ops) + 1)
    if rotations:
        first = ops[rotations[0] - 1]
        cur = first["active"] - (1 if first["new_data_key"] else 0)  # the store's first key
        for k in range(len(ops) + 1):
            if k and ops[k - 1]["op"] == "rotate":
                cur = ops[k - 1]["active"]
            active_at[k] = cur
    seen_active = s._keys.active
    matches = [
        k
        for k, st in enumerate(states)
        if st == seen and k >= floor and (active_at[k] is None or active_at[k] == seen_active)
    ]
    # the in-flight call (after every acknowledged one), applied whole
    applied = None
    for op in pending:
        ids, pol = states[-1]
        if op["op"] == "create":
            new = [i.id for i in visible if (i.workflow_id, i.phase) == (op["wf"], op["phase"])]
            if len(new) != 1:
                continue
            ids = ids | {new[0]}
            if op["wf"] == RET_WF:
                ids = ids - set(ret_last[RET_MAX - 1 :])
        elif op["op"] == "delete":
            ids = ids - {op["id"]}
        elif op["op"] == "prune":
            ids = ids - set(op["plan"])
        elif op["op"] == "setret":
            pol = True
        elif op["op"] != "rotate":  # a rotation changes no checkpoint (maybe the data key)
            continue
        if (ids, pol) == seen:
            applied = op["op"]
    if applied is not None:
        res["pending_applied"] = applied
        res["n_lost"] = 0
    elif matches:
        k = max(matches)
        res["n_lost"] = len(ops) - k
        res["lost_ops"] = [
            f"{op['op']} {op.get('id') or op.get('wf') or ''}".strip() for op in ops[k:]
        ]
        res["pending_applied"] = False
    else:
        # describe the violation: which acknowledged effects are missing / extra, and where
        full, pol_full = states[-1]
        missing = sorted(full - seen_ids, key=lambda c: born.get(c, 0))
        extra = sorted(seen_ids - full)
        res["prefix_violation"].append(
            {
                "n_store_ops": len(ops),
                "missing_acked_ids": [[c, born.get(c)] for c in missing],
                "present_not_expected": [
                    [c, born.get(c), "deleted at " + str(_deleted_at(ops, c))] for c in extra
                ],
                "policy_expected": pol_full,
                "policy_seen": seen[1],
                "rotation_floor": floor,
                "active_key_seen": seen_active,
                "active_key_expected": active_at[-1],
                "pending": [op["op"] for op in pending],
                "ops": [f"{op['op']} {op.get('id') or op.get('wf') or ''}" for op in ops],
            }
        )


def _deleted_at(ops: list[dict], cid: str) -> int | None:
    for k, op in enumerate(ops, 1):
        if (
            (op["op"] == "delete" and op["id"] == cid)
            or (op["op"] == "prune" and cid in op["deleted"])
            or (op["op"] == "create" and cid in op.get("gone", []))
        ):
            return k
    return None


def _check_backup(ckdb, path: Path, ids: list[str], acks: list[dict]) -> str | None:
    """None if the backup at path verifies and holds exactly ``ids`` with their states."""
    from ckdb._env import structural_check

    if not (path / "data.mdb").exists():
        return "missing although backup() returned"
    problems = structural_check(path)
    if problems:
        return f"structural: {problems[:3]}"
    states = {op["id"]: op["state"] for op in acks if op["op"] == "create"}
    try:
        with ckdb.open(path, create=False, retention=None) as b:
            held = sorted(i.id for i in b.list())
            if held != ids:
                return f"holds {len(held)} checkpoints, the store held {len(ids)}"
            for cid in ids:
                if b.load(cid).state != states.get(cid):
                    return f"{cid}: wrong state"
    except ckdb.CkdbError as e:
        return f"{type(e).__name__}: {e}"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["write", "check"])
    ap.add_argument("store")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unsafe-nosync", action="store_true")
    ap.add_argument("--workdir")
    ap.add_argument("--log")
    ap.add_argument("--durability", choices=["sync", "relaxed"], default="sync")
    ap.add_argument("--remote", help="write: ship to this remote; check: verify it too")
    ap.add_argument("--remote-key-file", help="the fleet key (outside the power-loss mount)")
    a = ap.parse_args(argv)
    if a.mode == "write" and not a.workdir:
        ap.error("write needs --workdir")
    return write(a) if a.mode == "write" else check(a)


if __name__ == "__main__":
    sys.exit(main())
