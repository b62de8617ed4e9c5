"""Run every fuzz target for a set time each (what ``tox -e fuzz`` runs).

    python fuzz/run_all.py [--seconds 60]

Exits non-zero if any target found a crash (written to fuzz/crashes/ by run.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from targets import HYPOTHESIS_TARGETS, TARGETS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    failed = []
    runs = [(name, []) for name in TARGETS] + [
        (name, ["--hypothesis"]) for name in HYPOTHESIS_TARGETS if name not in TARGETS
    ]
    for name, extra in runs:
        print(f"== {name} for {args.seconds} s", flush=True)
        proc = subprocess.run(
            [sys.executable, str(HERE / "run.py"), name, *extra, f"-max_total_time={args.seconds}"],
            check=False,
        )
        if proc.returncode != 0:
            failed.append(name)
    if failed:
        print(f"crashes in: {', '.join(failed)} (see fuzz/crashes/)")
        return 1
    print("no crashes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
