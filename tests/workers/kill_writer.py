"""A writer for SIGKILL crash rounds (tests/test_crash_kill.py).

    python kill_writer.py STORE_PATH SEED FIRST_N [SLOW_FSYNC_SECONDS]

Opens (or creates) the store and runs creates and deletes until it is killed. Every operation is
announced on stdout *before* the call (``begin-create`` / ``begin-delete``) and acknowledged
*after* the call returns (``create`` / ``delete``), one JSON object per line, flushed. So the
test knows exactly which operations were acknowledged and which single one was in flight.

With SLOW_FSYNC_SECONDS, ckdb's fsync helper sleeps that long before and after each fsync (a slow
disk), so that a kill soon after ``imported`` lands inside store creation rather than after it.

State contents are a pure function of (n, size class): the test regenerates them with
:func:`state_for` to compare a loaded checkpoint byte for byte.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

WORKFLOWS = ("w0", "w1", "w2")
SIZES = ("tiny", "medium", "large", "large-text")
SIZE_WEIGHTS = (50, 30, 8, 12)
MAX_OPS = 5000
MAX_SECONDS = 30.0
MAX_LIVE = 30  # beyond this, delete more often (keeps the store and the checks small)


def state_for(n: int, size: str) -> dict[str, Any]:
    """The state of the n-th checkpoint (deterministic)."""
    rng = random.Random(n)
    state: dict[str, Any] = {
        "meta": {"n": n, "size": size},
        "phase": {"step": n, "name": f"phase-{n % 7}"},
        "task": {"id": f"task-{n}", "items": [rng.randrange(1 << 40) for _ in range(5)]},
        "progress": {"done": n % 100, "ratio": n / 7},
    }
    if size == "medium":
        state["agent"] = {"blob": rng.randbytes(20_000), "notes": [f"note {i}" for i in range(300)]}
    elif size == "large":
        state["agent"] = {"blob": rng.randbytes(1 << 20)}  # ~1 MiB, incompressible
    elif size == "large-text":
        state["configuration"] = {"text": f"line {n}\n" * (1 << 17)}  # ~1 MiB, compressible
    return state


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def slow_fsyncs(seconds: float) -> None:
    import ckdb._env  # noqa: PLC0415
    import ckdb._open  # noqa: PLC0415

    real = ckdb._env.fsync_path

    def slow(path: Any, directory: bool = False) -> None:
        time.sleep(seconds)
        real(path, directory=directory)
        time.sleep(seconds)

    ckdb._env.fsync_path = slow  # used by create_environment
    ckdb._open.fsync_path = slow  # used by create_store (parent directory, key file)


def main() -> None:
    path, seed, first_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    emit({"op": "start"})
    import ckdb  # noqa: PLC0415 - imported after "start" so kills can land during the import

    if len(sys.argv) > 4:
        slow_fsyncs(float(sys.argv[4]))
    emit({"op": "imported"})
    store = ckdb.open(path, retention=None)  # the test counts every checkpoint
    emit({"op": "open"})
    live = [(i.id, i.raw_size) for i in store.list() if i.status == "valid"]
    n = first_n
    deadline = time.monotonic() + MAX_SECONDS
    for _ in range(MAX_OPS):
        if time.monotonic() > deadline:
            break
        if live and (rng.random() < 0.2 or (len(live) > MAX_LIVE and rng.random() < 0.7)):
            big = [e for e in live if e[1] > 100_000]
            victim = rng.choice(big) if big and rng.random() < 0.7 else rng.choice(live)
            live.remove(victim)
            emit({"op": "begin-delete", "id": victim[0]})
            store.delete(victim[0])
            emit({"op": "delete", "id": victim[0]})
            continue
        size = rng.choices(SIZES, SIZE_WEIGHTS)[0]
        wf = rng.choice(WORKFLOWS)
        manual = rng.random() < 0.2
        emit({"op": "begin-create", "n": n, "size": size, "wf": wf})
        info = store.create(
            wf,
            f"phase-{n % 7}",
            state=state_for(n, size),
            resources={"n": n} if n % 3 == 0 else None,
            kind="manual" if manual else "automatic",
            name=f"m{n}" if manual else None,
            compression=rng.choice([True, False, "lz4"]),
        )
        emit(
            {
                "op": "create",
                "id": info.id,
                "wf": wf,
                "seq": info.sequence,
                "n": n,
                "size": size,
                "raw_size": info.raw_size,
            }
        )
        live.append((info.id, info.raw_size))
        n += 1
    store.close()
    emit({"op": "done"})


if __name__ == "__main__":
    main()
