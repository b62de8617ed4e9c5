"""Benchmark: directory capture and restore.

    python benchmarks/capture_restore.py [--files 10000] [--big-mib 1024] [--reps 3]

Prints a markdown table of medians over ``--reps`` repetitions:

- capture of a tree of ``--files`` small files (1-8 KiB, half random, half text) in nested dirs,
  into a fresh store;
- re-capture, unchanged (incremental: files are older than the 2 s racy window, so not re-read);
- re-capture with 1 % of the files changed;
- restore into an empty directory (verify=True, the default);

and the peak anonymous memory (``RssAnon``, sampled from /proc/self/status every 2 ms in a thread)
of capturing one ``--big-mib`` file, measured in a fresh subprocess; ``ru_maxrss`` is printed as a
secondary figure (it counts mapped file pages too, which LMDB's read-only map adds). Everything is
generated under a temporary directory on /tmp and removed afterwards.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import ckdb

T = TypeVar("T")
RACY_S = 2.2  # just over ckdb.capture.RACY_NS


def make_tree(root: Path, n_files: int, rng: random.Random) -> list[Path]:
    files = []
    for i in range(n_files):
        d = root / f"d{i % 20:02d}" / f"s{(i // 20) % 25:02d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"file{i:05d}.dat"
        size = rng.randint(1024, 8192)
        if i % 2:
            data = os.urandom(size)
        else:
            data = (f"line {i} of some text that compresses well\n" * (size // 40 + 1)).encode()
        p.write_bytes(data[:size])
        files.append(p)
    past = time.time_ns() - 3600 * 1_000_000_000
    for p in files:
        os.utime(p, ns=(past, past))
    return files


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def small_files(base: Path, n_files: int, reps: int) -> dict[str, list[float]]:
    rng = random.Random(42)
    src = base / "tree"
    files = make_tree(src, n_files, rng)
    time.sleep(RACY_S)  # ctimes cannot be set back: let them age past the racy window
    results: dict[str, list[float]] = {"full": [], "unchanged": [], "changed": [], "restore": []}
    for rep in range(reps):
        store_path = base / f"store{rep}.ckdb"
        out = base / f"out{rep}"
        with ckdb.open(store_path) as s:
            t, _ = timed(lambda: s.create("bench", "full", files=src))
            results["full"].append(t)
            t, _ = timed(lambda: s.create("bench", "unchanged"))
            results["unchanged"].append(t)
            for p in rng.sample(files, max(1, n_files // 100)):
                p.write_bytes(os.urandom(p.stat().st_size))
            t, info = timed(lambda: s.create("bench", "changed"))
            results["changed"].append(t)
            restore = functools.partial(s.restore, info.id, target_dir=out)
            t, report = timed(restore)
            if not report.ok or report.files_written != n_files:
                raise SystemExit(f"restore went wrong: {report.findings}")
            results["restore"].append(t)
            size = s.stats().get("file_size", 0)
        print(f"  rep {rep + 1}/{reps}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in
              results.items()) + f", store {size / 2**20:.0f} MiB", file=sys.stderr)  # fmt: skip
        shutil.rmtree(out)
        shutil.rmtree(store_path)
        time.sleep(RACY_S)  # the changed files must age too before the next repetition
    return results


CHILD = r"""
import json, os, resource, sys, threading, time
import ckdb

def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0

peak = [0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_anon())
        time.sleep(0.002)

store_path, src = sys.argv[1], sys.argv[2]
with ckdb.open(store_path) as s:
    base = rss_anon()
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    info = s.create("big", "p", files=src)
    elapsed = time.perf_counter() - t0
    stop.set(); th.join()
    peak[0] = max(peak[0], rss_anon())
print(json.dumps({"baseline": base, "peak": peak[0], "elapsed": elapsed,
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def big_file(base: Path, mib: int) -> dict[str, float]:
    src = base / "big"
    src.mkdir()
    block = 16 << 20
    with open(src / "big.bin", "wb") as f:
        left = mib << 20
        while left:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(base / "big.ckdb"), str(src)],
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, float] = json.loads(res.stdout.strip().splitlines()[-1])
    shutil.rmtree(src)
    shutil.rmtree(base / "big.ckdb")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tmp", default="/tmp")  # noqa: S108 - a directory, mkdtemp makes ours
    args = ap.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="ckdb-bench-", dir=args.tmp))
    try:
        print(f"small files: {args.files} x 1-8 KiB, {args.reps} reps", file=sys.stderr)
        r = small_files(base, args.files, args.reps)
        print(f"big file: {args.big_mib} MiB", file=sys.stderr)
        big = big_file(base, args.big_mib)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    n = args.files
    med = {k: statistics.median(v) for k, v in r.items()}
    print(f"| operation ({n} files, median of {args.reps}) | time (s) | files/s |")
    print("|---|---:|---:|")
    rows = [
        ("capture, fresh store", "full"),
        ("re-capture, unchanged", "unchanged"),
        ("re-capture, 1 % changed", "changed"),
        ("restore into an empty dir (verify)", "restore"),
    ]
    for label, key in rows:
        print(f"| {label} | {med[key]:.3f} | {n / med[key]:,.0f} |")
    mib = args.big_mib
    print()
    print(f"| {mib} MiB single-file capture | value |")
    print("|---|---:|")
    print(f"| time | {big['elapsed']:.1f} s ({mib / big['elapsed']:.0f} MiB/s) |")
    print(f"| RssAnon before capture | {big['baseline'] / 2**20:.1f} MiB |")
    print(f"| peak RssAnon during capture | {big['peak'] / 2**20:.1f} MiB |")
    print(f"| ru_maxrss (incl. mapped file pages) | {big['maxrss'] / 2**20:.1f} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
