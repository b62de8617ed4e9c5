"""Rotates a store's key until it is killed (tests/test_key_rotation.py).

    python rotate_worker.py STORE_PATH OLD_KEY_HEX NEW_KEY_HEX RETAG_BATCH

Opens the store with the old master key, shrinks the re-tag batch (so re-tagging takes many
transactions and a kill lands between them), prints ``ready``, runs
``rotate_key(new, new_data_key=True)`` and prints ``done``.
"""

from __future__ import annotations

import sys


def main() -> None:
    import ckdb  # noqa: PLC0415
    from ckdb import keyrotation  # noqa: PLC0415

    path, old, new, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    keyrotation.RETAG_BATCH = batch
    store = ckdb.open(path, key=bytes.fromhex(old), retention=None)
    print("ready", flush=True)
    report = store.rotate_key(bytes.fromhex(new), new_data_key=True)
    print("done", report.complete, flush=True)
    store.close()


if __name__ == "__main__":
    main()
