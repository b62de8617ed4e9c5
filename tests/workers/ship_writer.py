"""A shipping writer for the remote SIGKILL rounds (tests/test_remote_kill.py).

    python ship_writer.py STORE_PATH REMOTE_URL SEED FIRST_N

Opens (or creates) the store with the remote attached (the shipper thread runs), then creates,
deletes and calls ``sync_remote`` until it is killed. Every operation is announced before the
call and acknowledged after it returns, one JSON line each, flushed: ``begin-create`` /
``create``, ``begin-delete`` / ``delete``, ``begin-sync`` / ``synced`` (the last: everything
acknowledged before ``begin-sync`` is remote). States are a pure function of ``n``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

WORKFLOWS = ("w0", "w1")
KEY = bytes(range(32))
MAX_SECONDS = 20.0
MAX_LIVE = 12


def state_for(n: int) -> dict[str, Any]:
    rng = random.Random(n)
    state: dict[str, Any] = {"progress": {"n": n}, "task": {"items": [rng.randrange(1 << 30)]}}
    if n % 5 == 0:
        state["agent"] = {"blob": rng.randbytes(300_000)}  # over BLOB_FROM: ships as a blob
    return state


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    path, url, seed, first_n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    import ckdb  # noqa: PLC0415

    store = ckdb.open(path, key=KEY, retention=None, remote=ckdb.Remote(url, interval=0.02))
    emit({"op": "open"})
    live = {wf: [i.id for i in store.list(wf)] for wf in WORKFLOWS}
    n = first_n
    deadline = time.monotonic() + MAX_SECONDS
    while time.monotonic() < deadline:
        wf = rng.choice(WORKFLOWS)
        roll = rng.random()
        if roll < 0.15:
            emit({"op": "begin-sync"})
            store.sync_remote(timeout=30)
            emit({"op": "synced"})
        elif live[wf] and (roll < 0.3 or len(live[wf]) > MAX_LIVE):
            victim = live[wf].pop(rng.randrange(len(live[wf])))
            emit({"op": "begin-delete", "id": victim})
            store.delete(victim)
            emit({"op": "delete", "id": victim})
        else:
            emit({"op": "begin-create", "n": n, "wf": wf})
            info = store.create(wf, f"p{n}", state=state_for(n))
            emit({"op": "create", "id": info.id, "wf": wf, "seq": info.sequence, "n": n})
            live[wf].insert(0, info.id)
            n += 1
    store.close()
    emit({"op": "done"})


if __name__ == "__main__":
    main()
