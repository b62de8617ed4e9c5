"""A second monitor in another process (tests/test_monitor.py).

    python monitor_worker.py STORE_PATH INTERVAL MAX_SECONDS

Opens the store, starts ``store.monitor(interval)``, prints ``ready``, then every 50 ms one JSON
line ``{"active": ..., "runs": ...}`` until MAX_SECONDS pass; then stops the monitor, prints
``stopped`` and exits 0.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import ckdb  # noqa: PLC0415

    path, interval, max_seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    store = ckdb.open(path, retention=None)
    monitor = store.monitor(interval=interval, budget=10**9, lease_seconds=60)
    print("ready", flush=True)
    end = time.monotonic() + max_seconds
    while time.monotonic() < end:
        print(json.dumps({"active": monitor.active, "runs": monitor.runs}), flush=True)
        time.sleep(0.05)
    monitor.stop()
    store.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
