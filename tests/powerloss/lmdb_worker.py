"""Raw py-lmdb writer / checker processes for the power-loss self-test.

writer:  python lmdb_worker.py write ENV --n N --seed S [--nosync] [--nometasync]
         Creates ENV (dir-fsyncing it and its parent), then does N puts, each in
         its own transaction.  Prints ``TRY <key>`` before and ``ACK <key>``
         after each commit returned (flushed).  Exits 0 when done; on an error
         prints ``ERR <repr>`` and exits 3.
checker: python lmdb_worker.py check ENV --seed S --acked FILE --tried FILE
         Prints one JSON line: verify problems, whether the env opened, missing /
         wrong / unexpected keys.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import lmdb

DB_NAME = b"data"


def value_for(seed: int, key: str) -> bytes:
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    n = 40 + int.from_bytes(h[:2], "little") % 3000  # some values span pages
    return (h * (n // len(h) + 1))[:n]


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_env(path: str, nosync: bool, nometasync: bool, lib_version: int | None):
    kw = {
        "sync": not nosync,
        "metasync": not (nosync or nometasync),
        "writemap": False,
        "map_async": False,
        "subdir": True,
        "max_dbs": 4,
        "map_size": 64 << 20,
    }
    if lib_version is not None:
        kw["lib_version"] = lib_version
    return lmdb.open(path, **kw)


def write(a) -> int:
    env_path = os.path.abspath(a.env)
    os.makedirs(env_path, exist_ok=True)
    fsync_dir(env_path)
    fsync_dir(os.path.dirname(env_path))
    env = open_env(env_path, a.nosync, a.nometasync, a.lib_version)
    if not a.unsafe_create:
        # The two initial meta pages are written without any sync.  Make them
        # durable BEFORE the directory entry of data.mdb, or a torn power loss
        # can leave a data.mdb with one zeroed meta page -> MDB_INVALID forever.
        env.sync(True)
    fsync_dir(env_path)  # data.mdb / lock.mdb entries durable
    if a.setup_only:
        os._exit(0)
    db = env.open_db(DB_NAME)
    out = sys.stdout
    try:
        for i in range(a.n):
            key = f"k{i:06d}"
            out.write(f"TRY {key}\n")
            out.flush()
            try:
                with env.begin(write=True, db=db) as txn:
                    txn.put(key.encode(), value_for(a.seed, key), db=db)
            except lmdb.Error as e:
                if not a.continue_on_error:
                    raise
                out.write(f"FAIL {key} {type(e).__name__}:{e}".replace("\n", " ") + "\n")
                out.flush()
                continue
            out.write(f"ACK {key}\n")
            out.flush()
    except Exception as e:
        out.write(f"ERR {e!r}".replace("\n", " ") + "\n")
        out.flush()
        os._exit(3)  # do not let close()/atexit touch the dead filesystem
    env.close()
    out.write("DONE\n")
    out.flush()
    return 0


def check(a) -> int:
    acked = [k for k in Path(a.acked).read_text().split() if k]
    tried = {k for k in Path(a.tried).read_text().split() if k}
    res = {
        "opened": False,
        "verify": [],
        "missing": [],
        "wrong": [],
        "unexpected": [],
        "n_acked": len(acked),
        "n_present": 0,
        "error": None,
        "data_size": None,
    }
    data = os.path.join(a.env, "data.mdb")
    res["data_size"] = os.path.getsize(data) if os.path.exists(data) else None
    if res["data_size"]:  # an empty/absent data.mdb is a (valid) fresh env
        try:
            from lmdb import verify as lv

            res["verify"] = list(lv.verify(a.env, subdir=True))
        except Exception as e:
            res["verify"] = [f"verify raised {type(e).__name__}: {e}"]
    try:
        kw = {"subdir": True, "max_dbs": 4, "map_size": 64 << 20}
        if a.lib_version is not None:
            kw["lib_version"] = a.lib_version
        env = lmdb.open(a.env, **kw)
        res["opened"] = True
        db = env.open_db(DB_NAME)
        with env.begin(db=db) as txn:
            present = {k.decode(): v for k, v in txn.cursor()}
        res["n_present"] = len(present)
        for k in acked:
            if k not in present:
                res["missing"].append(k)
            elif present[k] != value_for(a.seed, k):
                res["wrong"].append(k)
        res["unexpected"] = sorted(k for k in present if k not in tried)
        env.close()
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(res))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["write", "check"])
    ap.add_argument("env")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nosync", action="store_true")
    ap.add_argument("--nometasync", action="store_true")
    ap.add_argument("--continue-on-error", action="store_true")
    ap.add_argument("--unsafe-create", action="store_true")
    ap.add_argument("--setup-only", action="store_true")
    ap.add_argument("--lib-version", type=int, default=None)
    ap.add_argument("--acked")
    ap.add_argument("--tried")
    a = ap.parse_args(argv)
    return write(a) if a.mode == "write" else check(a)


if __name__ == "__main__":
    sys.exit(main())
