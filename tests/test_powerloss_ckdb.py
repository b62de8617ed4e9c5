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

Relaxed rounds (``CKDB_RELAXED_ROUNDS``; default 20, or a fifth of ``CKDB_CRASH_ROUNDS`` when
that is above 150, e.g. 100 in the deep tier): the same workload and cut mix with
``ckdb.open(..., durability="relaxed")`` (LMDB metasync=False).  The promise is weaker: after a
power cut the store opens, verifies and scrubs clean, nothing is half-visible, and the surviving
acknowledged operations are a PREFIX of the acknowledged sequence (the last commits may be lost,
never an earlier one while a later one survives).  The number of acknowledged operations lost per
round is reported as a distribution.

Negative control: the same workload with ``_unsafe_nosync=True`` (LMDB sync off) must be caught
as loss or corruption in most rounds.  ``CKDB_POWERLOSS_SRC`` points the writer and checker
subprocesses at another ckdb source tree.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
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
# relaxed-durability rounds: 20 in the fast tier, a fifth of a deeper CKDB_CRASH_ROUNDS
RELAXED_ROUNDS = int(
    os.environ.get("CKDB_RELAXED_ROUNDS", str(20 if ROUNDS <= 150 else ROUNDS // 5))
)
N_OPS = 20
# rounds with a remote attached: 6 in the fast tier, a fifth of a deeper CKDB_CRASH_ROUNDS
REMOTE_ROUNDS = int(
    os.environ.get("CKDB_REMOTE_CRASH_ROUNDS", str(6 if ROUNDS <= 150 else ROUNDS // 5))
)
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
    "prefix_violation",
    "remote_problems",
)


def _env() -> dict:
    env = dict(os.environ)
    # CKDB_POWERLOSS_SRC: run the subprocesses against another ckdb source tree
    src = os.environ.get("CKDB_POWERLOSS_SRC", str(REPO))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.pop("CKDB_KEY_FILE", None)
    return env


def _remote_args(base: Path) -> list[str]:
    """A file:// remote and the fleet key, next to the round (outside the power-loss mount:
    the bucket is another machine, which keeps its power)."""
    key = base / "fleet.key"
    if not key.exists():
        base.mkdir(parents=True, exist_ok=True)
        key.write_text(os.urandom(32).hex())
    return ["--remote", f"file://{base / 'bucket'}", "--remote-key-file", str(key)]


def _writer_argv(
    store: Path,
    workdir: Path,
    n: int,
    seed: int,
    unsafe: bool,
    durability: str = "sync",
    remote: list[str] | None = None,
) -> list[str]:
    argv = [sys.executable, WORKER, "write", str(store), "--workdir", str(workdir)]
    argv += ["--n", str(n), "--seed", str(seed), *(remote or [])]
    if durability != "sync":
        argv += ["--durability", durability]
    return argv + (["--unsafe-nosync"] if unsafe else [])


def _prepare(fs: PowerLossFS) -> Path:
    os.mkdir(fs.mountpoint / "stores")
    fsync_dir(fs.mountpoint)
    return fs.mountpoint / "stores" / "store"


def _calibrate(base: Path, unsafe: bool, durability: str = "sync", remote: bool = False) -> dict:
    """Counts of sync points / writes of an uninterrupted run (and of open alone)."""
    out = {}
    for label, n in (("open", 0), ("full", N_OPS)):
        with PowerLossFS(base / f"cal-{label}") as fs:
            store = _prepare(fs)
            s0 = fs.stats()
            extra = _remote_args(base / f"cal-{label}") if remote else None
            w = run_writer(
                _writer_argv(store, base / f"cal-{label}" / "wd", n, 1, unsafe, durability, extra),
                env=_env(),
            )
            assert w.returncode == 0 and w.lines[-1] == "DONE", (w.lines[-3:], w.stderr[-3000:])
            s1 = fs.stats()
        out[label] = {
            "sync": s1["sync_count"] - s0["sync_count"],
            "writes": s1["writes"] - s0["writes"],
        }
    return out


def _round(
    base: Path,
    seed: int,
    mode: str,
    cut: str,
    unsafe: bool,
    cal: dict,
    durability: str = "sync",
    remote: bool = False,
) -> dict:
    rnd = random.Random(seed)
    extra = _remote_args(base) if remote else None
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
        w = run_writer(
            _writer_argv(store, base / "wd", N_OPS, seed, unsafe, durability, extra), env=_env()
        )
        assert not w.timed_out, w.stderr[-3000:]
        img = fs.cut(mode, seed=seed)
        dead_reason = fs.last_cut.get("dead_reason")
    (base / "writer.log").write_text("\n".join(w.lines) + "\n")
    check = [sys.executable, WORKER, "check", str(img / "stores" / "store")]
    check += ["--log", str(base / "writer.log")]
    if durability != "sync":
        check += ["--durability", durability]
    res = run_checker(check + (extra or []), env=_env())
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


def _rounds(
    base: Path,
    specs: list[tuple],
    unsafe: bool,
    cal: dict,
    durability: str = "sync",
    remote: bool = False,
) -> list[dict]:
    """Run rounds (name, seed, mode, cut) JOBS at a time; results in spec order."""
    with ThreadPoolExecutor(max_workers=max(1, JOBS)) as pool:
        futures = [
            pool.submit(_round, base / name, seed, mode, cut, unsafe, cal, durability, remote)
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


def test_ckdb_power_loss_with_a_remote_attached(tmp_path, request):
    """The same rounds with a file:// remote attached and sync_remote after some creates: the
    checks above hold, the remote holds nothing the durable store lost (the shipper ships only
    what it made durable), and the store reopened with its remote ships on to a remote equal to
    it (the cursor and the store stay consistent after a cut mid-ship)."""
    require_powerloss(request)
    cal = _calibrate(tmp_path, unsafe=False, remote=True)
    specs = [(f"m{i}", 7000 + i, mode, cut) for i, (mode, cut) in enumerate(_plan(REMOTE_ROUNDS))]
    results = _rounds(tmp_path, specs, False, cal, remote=True)
    bad = [r for r in results if _bad(r)]
    checked = [r for r in results if "remote_problems" in r]
    fig = {
        "rounds": len(results),
        "remote_checked": len(checked),
        "acked_ops_checked": _checked(results),
        "interrupted": sum(1 for r in results if r["writer_rc"] != 0),
        "bad": len(bad),
    }
    print(f"\n[powerloss ckdb remote] {json.dumps(fig)}")
    assert not bad, "\n".join(_short(r) for r in bad)
    assert len(checked) >= len(results) // 2, "too few rounds reached the remote checks"


def test_ckdb_relaxed_loses_only_a_suffix(tmp_path, request):
    """durability="relaxed" (LMDB metasync=False): after a power cut the store is consistent
    and what survives is a prefix of the acknowledged operations; only the tail may be lost."""
    require_powerloss(request)
    cal = _calibrate(tmp_path, unsafe=False, durability="relaxed")
    specs = [(f"x{i}", 3000 + i, mode, cut) for i, (mode, cut) in enumerate(_plan(RELAXED_ROUNDS))]
    results = _rounds(tmp_path, specs, False, cal, durability="relaxed")
    bad = [r for r in results if _bad(r)]
    checked = [r for r in results if r.get("n_lost") is not None]
    losses = Counter(r["n_lost"] for r in checked)
    lost_kinds = Counter(x.split()[0] for r in checked for x in r.get("lost_ops", []))
    fig = {
        "rounds": len(results),
        "sync_point_rounds": sum(1 for r in results if r["mode"] == "drop"),
        "subset_rounds": sum(1 for r in results if r["mode"] == "subset"),
        "store_absent": sum(1 for r in results if not r.get("store_present")),
        "acked_store_ops": sum(r.get("n_store_ops_acked") or 0 for r in results),
        "acked_ops_lost": sum(r["n_lost"] for r in checked),
        "losses_per_round": {str(k): v for k, v in sorted(losses.items())},
        "lost_op_kinds": dict(lost_kinds),
        "in_flight_applied": sum(1 for r in results if r.get("pending_applied")),
        "files_restored_checked": sum(r.get("n_files_checked", 0) for r in results),
        "visible_checked": sum(r.get("n_visible_checked", 0) for r in results),
        "backups_checked": sum(r.get("n_backups_checked", 0) for r in results),
        "scrubbed": sum(1 for r in results if r.get("scrub") is not None),
        "interrupted": sum(1 for r in results if r["writer_rc"] != 0),
        "bad": len(bad),
        "calibration": cal,
    }
    print(f"\n[powerloss ckdb relaxed] {json.dumps(fig)}")
    assert not bad, "\n".join(_short(r) for r in bad)
    assert fig["acked_store_ops"] > 0
    # every round whose store exists was classified (a prefix was found)
    assert len(checked) == len(results) - fig["store_absent"]


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


def test_ckdb_relaxed_rotate_key_power_loss(tmp_path, request):
    """A power cut at each sync point of a relaxed-mode rotate_key (after it takes effect) and
    just before the next operation's first sync point: the store must still open."""
    require_powerloss(request)
    seed = 3000  # its workload rotates the key (new_data_key=False) mid-way
    cal_dir = tmp_path / "cal"
    with PowerLossFS(cal_dir) as fs:
        w = run_writer(
            _writer_argv(_prepare(fs), cal_dir / "wd", N_OPS, seed, False, "relaxed"), env=_env()
        )
    assert w.lines[-1] == "DONE", w.stderr[-3000:]
    # every loop iteration prints one TRY; the first TRY is set_retention
    tries = [json.loads(p) for p in w.tagged("TRY")][1:]
    at = next(i for i, op in enumerate(tries) if op["op"] == "rotate")

    def syncs(n: int) -> int:
        d = tmp_path / f"n{n}"
        with PowerLossFS(d) as fs:
            store = _prepare(fs)
            s0 = fs.sync_count()
            r = run_writer(_writer_argv(store, d / "wd", n, seed, False, "relaxed"), env=_env())
            assert r.lines[-1] == "DONE", r.stderr[-3000:]
            return fs.sync_count() - s0

    before, after = syncs(at), syncs(at + 1)
    # (sync point, cut after it takes effect?): the rotation's own, then the next operation's
    cuts = [(n, True) for n in range(before + 1, after + 1)] + [(after + 1, False)]
    failures = []
    for n, cut_after in cuts:
        d = tmp_path / f"cut{n}{'a' if cut_after else 'b'}"
        with PowerLossFS(d) as fs:
            store = _prepare(fs)
            fs.arm_cut_at_sync(n, seed=seed, after=cut_after)
            w = run_writer(_writer_argv(store, d / "wd", N_OPS, seed, False, "relaxed"), env=_env())
            img = fs.cut("drop", seed=seed)
            dead = fs.last_cut.get("dead_reason")
        (d / "writer.log").write_text("\n".join(w.lines) + "\n")
        check = [sys.executable, WORKER, "check", str(img / "stores" / "store")]
        res = run_checker(
            [*check, "--log", str(d / "writer.log"), "--durability", "relaxed"], env=_env()
        )
        if _bad(res):
            failures.append(f"{dead}: {res.get('error') or _short(res)}")
    assert not failures, "\n".join(failures)
