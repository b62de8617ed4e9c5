"""Takes a backup until it is killed (tests/test_backup.py).

    python backup_worker.py STORE_PATH DEST_PATH

Prints ``ready`` (flushed) once the store is open, then ``done`` after ``store.backup(DEST)``
returned. The test SIGKILLs it at random delays.
"""

from __future__ import annotations

import sys


def main() -> None:
    import ckdb  # noqa: PLC0415

    store = ckdb.open(sys.argv[1], retention=None)
    print("ready", flush=True)
    store.backup(sys.argv[2])
    print("done", flush=True)
    store.close()


if __name__ == "__main__":
    main()
