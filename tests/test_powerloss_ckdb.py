"""ckdb under simulated power loss (tests/powerloss).

Each round: a writer subprocess on the plfs mount opens a store and runs a
seeded stream of create/delete, printing every acknowledged op; the power is
cut at the N-th sync point (drop mode, or torn-sector subset mode in a third
of the rounds); a fresh subprocess opens the durable image with ckdb and checks
every acknowledged op.  Negative control: ``_unsafe_nosync=True`` must be caught.

CKDB_CRASH_ROUNDS (default 40) sets the number of rounds; CKDB_POWERLOSS_SRC
points the writer/checker subprocesses at another ckdb source tree.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from powerloss.harness import PowerLossFS, require_powerloss  # noqa: E402
from powerloss.rounds import fsync_dir, run_checker, run_writer  # noqa: E402

pytest.importorskip("ckdb")

pytestmark = pytest.mark.crash

REPO = Path(__file__).resolve().parents[1]
WORKER = str(Path(__file__).resolve().parent / "powerloss" / "ckdb_worker.py")
ROUNDS = int(os.environ.get("CKDB_CRASH_ROUNDS", "40"))
N_OPS = 24


def _env() -> dict:
    env = dict(os.environ)
    # CKDB_POWERLOSS_SRC: run the subprocesses against another ckdb source tree
    src = os.environ.get("CKDB_POWERLOSS_SRC", str(REPO))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.pop("CKDB_KEY_FILE", None)
    return env


def _writer_argv(store: Path, n: int, seed: int, unsafe: bool) -> list[str]:
    return [sys.executable, WORKER, "write", str(store), "--n", str(n), "--seed", str(seed)] + (
        ["--unsafe-nosync"] if unsafe else []
    )


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
            w = run_writer(_writer_argv(store, n, 1, unsafe), env=_env())
            assert w.returncode == 0 and w.lines[-1] == "DONE", (w.lines[-3:], w.stderr[-3000:])
            s1 = fs.stats()
        out[label] = {
            "sync": s1["sync_count"] - s0["sync_count"],
            "writes": s1["writes"] - s0["writes"],
        }
    return out


def _round(base: Path, seed: int, mode: str, unsafe: bool, cal: dict) -> dict:
    rnd = random.Random(seed)
    with PowerLossFS(base) as fs:
        store = _prepare(fs)
        if unsafe:
            # LMDB never syncs in this mode: cut at a random data write after open
            armed = fs.arm_cut_at_write(
                rnd.randint(cal["open"]["writes"] + 1, cal["full"]["writes"] + 5)
            )
        else:
            armed = fs.arm_cut_at_sync(rnd.randint(1, cal["full"]["sync"] + 2), seed=seed)
        w = run_writer(_writer_argv(store, N_OPS, seed, unsafe), env=_env())
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
        seed=seed,
        armed=armed,
        dead_reason=dead_reason,
        writer_rc=w.returncode,
        writer_tail=w.lines[-2:],
        writer_stderr=w.stderr[-800:],
    )
    return res


def _bad(r: dict) -> bool:
    if r.get("checker_crashed"):
        return True
    if not r.get("store_present"):
        return bool(r.get("store_acked")) or bool(r.get("error"))
    return bool(
        not r.get("opened")
        or r.get("error")
        or r.get("structural")
        or r.get("lost_creates")
        or r.get("wrong_state")
        or r.get("resurrected")
        or r.get("unexpected_listed")
    )


def _short(r: dict) -> str:
    return json.dumps(
        {k: (v[:3] if isinstance(v, list) else v) for k, v in r.items() if k not in ("traceback",)},
        default=str,
    )[:1500]


def test_ckdb_survives_power_loss(tmp_path, request):
    require_powerloss(request)
    cal = _calibrate(tmp_path, unsafe=False)
    results = [
        _round(tmp_path / f"r{i}", 1000 + i, "subset" if i % 3 == 2 else "drop", False, cal)
        for i in range(ROUNDS)
    ]
    bad = [r for r in results if _bad(r)]
    checked = sum(r.get("n_creates_checked", 0) + r.get("n_deletes_checked", 0) for r in results)
    interrupted = sum(1 for r in results if r["writer_rc"] != 0)
    print(
        f"\n[powerloss ckdb] rounds={len(results)} calibration={cal} acked_ops_checked={checked} "
        f"interrupted={interrupted} bad={len(bad)}"
    )
    assert not bad, "\n".join(_short(r) for r in bad)
    assert checked > 0
    assert interrupted >= len(results) // 2


def test_ckdb_unsafe_nosync_is_caught(tmp_path, request):
    """Negative control: with LMDB sync off, acknowledged checkpoints are lost."""
    require_powerloss(request)
    cal = _calibrate(tmp_path, unsafe=True)
    rounds = max(10, ROUNDS // 2)
    results = [
        _round(tmp_path / f"r{i}", 5000 + i, "subset" if i % 3 == 2 else "drop", True, cal)
        for i in range(rounds)
    ]
    caught = sum(1 for r in results if _bad(r))
    print(f"\n[powerloss ckdb unsafe] rounds={rounds} caught={caught} rate={caught / rounds:.0%}")
    assert caught / rounds >= 0.5, "\n".join(_short(r) for r in results)
