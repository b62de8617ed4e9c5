"""A pruner for SIGKILL crash rounds (tests/test_prune_crash.py).

    python prune_worker.py STORE_PATH WORKFLOW KEEP

Opens the store with automatic retention off, announces ``ready`` on stdout, then runs
``store.prune(WORKFLOW, RetentionPolicy(max_checkpoints=KEEP))`` and announces ``done`` with the
number deleted. The test kills it at a random moment after ``ready``.
"""

from __future__ import annotations

import json
import sys


def emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    path, workflow, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import ckdb  # noqa: PLC0415 - after argv parsing: the import is most of the start-up time
    from ckdb.retention import RetentionPolicy  # noqa: PLC0415

    with ckdb.open(path, retention=None) as store:
        emit({"op": "ready"})
        result = store.prune(workflow, RetentionPolicy(max_checkpoints=keep))
        emit({"op": "done", "deleted": len(result.deleted), "skipped": len(result.skipped)})


if __name__ == "__main__":
    main()
