"""ckdb under simulated power loss (tests/powerloss).

Each round: a writer subprocess on the plfs mount opens a store and runs a seeded stream of
creates (plain, manual, with ``files=`` a working directory it mutates, and on ``wf-ret`` whose
automatic retention keeps 3), deletes and explicit prunes, printing every acknowledged op and what
it saw; the power is cut; a fresh subprocess opens the durable image with ckdb and checks it
(``tests/powerloss/ckdb_worker.py`` lists the checks).

Round kinds (``CKDB_CRASH_ROUNDS``, default 150, sets the total; ``tox -e crash`` sets 500):

- four rounds in five ("sync-point rounds"): the power fails at a random sync point of the run
  (before or after it is applied); every unsynced change is dropped;
- one round in five ("subset rounds"): the power fails at a random sync point or at a random data
  write, and a random subset of the unsynced 4 KiB sectors survives (torn writes).

Negative control: the same workload with ``_unsafe_nosync=True`` (LMDB sync off) must be caught
as loss or corruption in most rounds.  ``CKDB_POWERLOSS_SRC`` points the writer and checker
subprocesses at another ckdb source tree.
"""

from __future__ import annotations

import json
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from powerloss.harness import PowerLossFS, require_powerloss  # noqa: E402
from powerloss.rounds import fsync_dir, run_checker, run_writer  # noqa: E402

pytest.importorskip("ckdb")

pytestmark = pytest.mark.crash

REPO = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).resolve().parent / "powerloss" / "ckdb_worker.py")
ROUNDS = int(os.environ.get("CKDB_CRASH_ROUNDS", "150"))
# rounds run this many at a time, each on its own mount (they are mostly process start-up and
# waiting on the FUSE daemon, so two overlap well even on two cores)
JOBS = int(os.environ.get("CKDB_CRASH_JOBS", str(min(2, os.cpu_count() or 1))))
N_OPS = 20
PROBLEMS = (
    "structural",
    "lost_creates",
    "wrong_state",
    "wrong_files",
    "resurrected",
    "unexpected_listed",
    "half_visible",
    "invalid",
    "latest_wrong",
    "ret_violations",
    "claimed_unwritten",
    "backup_problems",
)


def _env() -> dict:
    env = dict(os.environ)
    # CKDB_POWERLOSS_SRC: run the subprocesses against another ckdb source tree
    src = os.environ.get("CKDB_POWERLOSS_SRC", str(REPO))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.pop("CKDB_KEY_FILE", None)
    return env


def _writer_argv(store: Path, workdir: Path, n: int, seed: int, unsafe: bool) -> list[str]:
    argv = [sys.executable, WORKER, "write", str(store), "--workdir", str(workdir)]
    argv += ["--n", str(n), "--seed", str(seed)]
    return argv + (["--unsafe-nosync"] if unsafe else [])


def _prepare(fs: PowerLossFS) -> Path:
    os.mkdir(fs.mountpoint / "stores")
    fsync_dir(fs.mountpoint)
    return fs.mountpoint / "stores" / "store"


def _calibrate(base: Path, unsafe: bool) -> dict:
    """Counts of sync points / writes of an uninterrupted run (and of open alone)."""
    out = {}
    for label, n in (("open", 0), ("full", N_OPS)):
        with PowerLossFS(base / f"cal-{label}") as fs:
            store = _prepare(fs)
            s0 = fs.stats()
            w = run_writer(
                _writer_argv(store, base / f"cal-{label}" / "wd", n, 1, unsafe), env=_env()
            )
            assert w.returncode == 0 and w.lines[-1] == "DONE", (w.lines[-3:], w.stderr[-3000:])
            s1 = fs.stats()
        out[label] = {
            "sync": s1["sync_count"] - s0["sync_count"],
            "writes": s1["writes"] - s0["writes"],
        }
    return out


def _round(base: Path, seed: int, mode: str, cut: str, unsafe: bool, cal: dict) -> dict:
    rnd = random.Random(seed)
    with PowerLossFS(base) as fs:
        store = _prepare(fs)
        if cut == "write":
            armed = fs.arm_cut_at_write(
                rnd.randint(cal["open"]["writes"] + 1, cal["full"]["writes"] + 5)
            )
        else:
            # one round in eight may cut while the store is being created; the rest cut in the
            # workload (opening takes a third of the sync points)
            lo = 1 if rnd.random() < 0.125 else cal["open"]["sync"] + 1
            armed = fs.arm_cut_at_sync(rnd.randint(lo, cal["full"]["sync"] + 2), seed=seed)
        w = run_writer(_writer_argv(store, base / "wd", N_OPS, seed, unsafe), env=_env())
        assert not w.timed_out, w.stderr[-3000:]
        img = fs.cut(mode, seed=seed)
        dead_reason = fs.last_cut.get("dead_reason")
    (base / "writer.log").write_text("\n".join(w.lines) + "\n")
    res = run_checker(
        [
            sys.executable,
            WORKER,
            "check",
            str(img / "stores" / "store"),
            "--log",
            str(base / "writer.log"),
        ],
        env=_env(),
    )
    res.update(
        mode=mode,
        cut=cut,
        seed=seed,
        armed=armed,
        dead_reason=dead_reason,
        writer_rc=w.returncode,
        writer_tail=w.lines[-2:],
        writer_stderr=w.stderr[-800:],
    )
    return res


def _rounds(base: Path, specs: list[tuple], unsafe: bool, cal: dict) -> list[dict]:
    """Run rounds (name, seed, mode, cut) JOBS at a time; results in spec order."""
    with ThreadPoolExecutor(max_workers=max(1, JOBS)) as pool:
        futures = [
            pool.submit(_round, base / name, seed, mode, cut, unsafe, cal)
            for name, seed, mode, cut in specs
        ]
        return [f.result() for f in futures]


def _bad(r: dict) -> bool:
    if r.get("checker_crashed"):
        return True
    if not r.get("store_present"):
        return bool(r.get("store_acked")) or bool(r.get("error"))
    scrub = r.get("scrub")
    return bool(
        not r.get("opened")
        or r.get("error")
        or any(r.get(k) for k in PROBLEMS)
        or (scrub is not None and not scrub["ok"])
    )


def _short(r: dict) -> str:
    return json.dumps(
        {k: (v[:3] if isinstance(v, list) else v) for k, v in r.items() if k not in ("traceback",)},
        default=str,
    )[:1500]


def _checked(results: list[dict]) -> int:
    keys = ("n_creates_checked", "n_deletes_checked", "n_ret_checked")
    return sum(r.get(k, 0) for r in results for k in keys)


def _plan(rounds: int) -> list[tuple[str, str]]:
    """(mode, cut) per round: 4 in 5 drop at a sync point; 1 in 5 subset, alternately cut at
    a sync point and at a data write."""
    out = []
    for i in range(rounds):
        if i % 5 == 4:
            out.append(("subset", "sync" if (i // 5) % 2 == 0 else "write"))
        else:
            out.append(("drop", "sync"))
    return out


def test_ckdb_survives_power_loss(tmp_path, request):
    require_powerloss(request)
    cal = _calibrate(tmp_path, unsafe=False)
    specs = [(f"r{i}", 1000 + i, mode, cut) for i, (mode, cut) in enumerate(_plan(ROUNDS))]
    results = _rounds(tmp_path, specs, False, cal)
    bad = [r for r in results if _bad(r)]
    interrupted = sum(1 for r in results if r["writer_rc"] != 0)
    fig = {
        "rounds": len(results),
        "sync_point_rounds": sum(1 for r in results if r["mode"] == "drop"),
        "subset_rounds": sum(1 for r in results if r["mode"] == "subset"),
        "acked_ops_checked": _checked(results),
        "files_restored_checked": sum(r.get("n_files_checked", 0) for r in results),
        "visible_checked": sum(r.get("n_visible_checked", 0) for r in results),
        "backups_checked": sum(r.get("n_backups_checked", 0) for r in results),
        "scrubbed": sum(1 for r in results if r.get("scrub") is not None),
        "interrupted": interrupted,
        "bad": len(bad),
        "calibration": cal,
    }
    print(f"\n[powerloss ckdb] {json.dumps(fig)}")
    assert not bad, "\n".join(_short(r) for r in bad)
    assert fig["acked_ops_checked"] > 0
    assert fig["files_restored_checked"] > 0
    assert interrupted >= len(results) // 2


def test_ckdb_unsafe_nosync_is_caught(tmp_path, request):
    """Negative control: with LMDB sync off, acknowledged checkpoints are lost or the store is
    corrupt after most power cuts, and the checker must see it."""
    require_powerloss(request)
    cal = _calibrate(tmp_path, unsafe=True)
    rounds = max(10, ROUNDS // 10)
    # LMDB never syncs in this mode: the cut comes at a random data write after open
    specs = [
        (f"r{i}", 5000 + i, "subset" if i % 3 == 2 else "drop", "write") for i in range(rounds)
    ]
    results = _rounds(tmp_path, specs, True, cal)
    caught = sum(1 for r in results if _bad(r))
    kinds: dict[str, int] = {}
    for r in results:
        for k in ("error", "checker_crashed", *PROBLEMS):
            if r.get(k):
                kinds[k] = kinds.get(k, 0) + 1
    print(
        f"\n[powerloss ckdb unsafe] rounds={rounds} caught={caught} rate={caught / rounds:.0%} "
        f"acked_ops_checked={_checked(results)} by_kind={json.dumps(kinds)}"
    )
    assert caught / rounds >= 0.5, "\n".join(_short(r) for r in results)
