"""The second process for tests/test_review_regressions.py.

    python review_worker.py open STORE_PATH
        Opens the store (its own generated key file) and closes it.
    python review_worker.py add-data-key STORE_PATH KEY_HEX
        Opens the store with the master key and runs ``rotate_key(key, new_data_key=True)``:
        the same master key, a new data key, everything re-tagged under it.

Prints ``done`` on success.
"""

from __future__ import annotations

import sys


def main() -> None:
    import ckdb  # noqa: PLC0415

    command, path = sys.argv[1], sys.argv[2]
    if command == "open":
        ckdb.open(path).close()
    elif command == "add-data-key":
        key = bytes.fromhex(sys.argv[3])
        with ckdb.open(path, key=key, retention=None) as store:
            report = store.rotate_key(key, new_data_key=True)
            assert report.complete, report
    else:
        raise SystemExit(f"unknown command {command!r}")
    print("done", flush=True)


if __name__ == "__main__":
    main()
