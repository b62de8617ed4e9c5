"""Processes for tests/test_concurrency.py.

    python concurrent_worker.py creator PATH INDEX COUNT MAP_SIZE
    python concurrent_worker.py stream  PATH COUNT SIZE MAP_SIZE
    python concurrent_worker.py opener  PATH INDEX

Each opens the store, prints ``{"op": "ready"}``, waits for a line on stdin (the start signal,
so every process starts at once), works, and prints one JSON object per acknowledged operation
(``stream``) or one result object at the end (``creator``, ``opener``). MAP_SIZE 0 means the
default.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

import ckdb
from ckdb import _headroom

SHARED = "shared"

if "CKDB_TEST_HEADROOM" in os.environ:  # tests/test_headroom.py: fill often, in small steps
    _headroom.HEADROOM_MIN = _headroom.HEADROOM_MAX = int(os.environ["CKDB_TEST_HEADROOM"])


def open_store(path: Any, **kwargs: Any) -> ckdb.Store:
    """``ckdb.open`` with automatic retention off: these tests count every checkpoint."""
    return ckdb.open(path, retention=None, **kwargs)


def blob(k: int, size: int) -> bytes:
    return random.Random(k).randbytes(size)


def creator_state(index: int, k: int) -> dict[str, Any]:
    return {"who": {"proc": index, "k": k}, "data": {"blob": blob(index * 100_000 + k, 4096)}}


def stream_state(k: int, size: int) -> dict[str, Any]:
    return {"k": {"k": k}, "data": {"blob": blob(k, size)}}


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def wait_for_go() -> None:
    emit({"op": "ready"})
    if not sys.stdin.readline():
        sys.exit(3)


def creator(path: str, index: int, count: int, map_size: int) -> None:
    """``count`` creates, alternating between this process's own workflow and the shared one."""
    with open_store(path, map_size=map_size or None) as store:
        wait_for_go()
        done = []
        for k in range(count):
            wf = f"own-{index}" if k % 2 == 0 else SHARED
            info = store.create(wf, f"p{k % 5}", state=creator_state(index, k))
            done.append({"k": k, "wf": wf, "id": info.id, "seq": info.sequence})
        emit({"op": "result", "created": done, "file_end": store._env.headroom.file_end})


def stream(path: str, count: int, size: int, map_size: int) -> None:
    """``count`` creates in workflow "stream", one acknowledgement line each."""
    with open_store(path, map_size=map_size or None) as store:
        wait_for_go()
        for k in range(count):
            info = store.create("stream", "p", state=stream_state(k, size))
            emit({"op": "create", "k": k, "id": info.id, "seq": info.sequence})
        emit({"op": "done"})


def opener(path: str, index: int) -> None:
    """Race to open (and so create) a store that does not exist yet; then create one checkpoint."""
    wait_for_go()
    with open_store(path) as store:
        info = store.create("race", "p", state={"who": {"proc": index}})
        emit({"op": "result", "id": info.id, "uuid": store.uuid})


def main() -> None:
    mode, path, *rest = sys.argv[1:]
    if mode == "creator":
        creator(path, int(rest[0]), int(rest[1]), int(rest[2]))
    elif mode == "stream":
        stream(path, int(rest[0]), int(rest[1]), int(rest[2]))
    elif mode == "opener":
        opener(path, int(rest[0]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
