"""Self-test of the power-loss harness (tests/powerloss): proves that the
durability model is real, with plain files and raw py-lmdb (not ckdb).

Fast tier: a few seconds to ~a minute.  Longer variants are marked slow.
Round counts: PLFS_SELFTEST_ROUNDS (default 16) for the LMDB crash rounds.
"""

from __future__ import annotations

import errno
import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from powerloss.harness import PowerLossFS, require_powerloss  # noqa: E402
from powerloss.rounds import fsync_dir, run_checker, run_writer  # noqa: E402

LMDB_WORKER = str(Path(__file__).resolve().parent / "powerloss" / "lmdb_worker.py")
ROUNDS = int(os.environ.get("PLFS_SELFTEST_ROUNDS", "16"))


@pytest.fixture
def plfs(tmp_path, request):
    require_powerloss(request)
    with PowerLossFS(tmp_path / "pl") as fs:
        yield fs


def write_file(path, data: bytes, fsync: bool, mode=os.O_CREAT | os.O_WRONLY | os.O_TRUNC):
    fd = os.open(path, mode, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------- plain files


def test_unsynced_write_is_lost(plfs):
    m = plfs.mountpoint
    write_file(m / "f", b"", fsync=True)
    fsync_dir(m)
    write_file(m / "f", b"volatile", fsync=False, mode=os.O_WRONLY)
    assert (m / "f").read_bytes() == b"volatile"  # the live view is normal
    img = plfs.cut("drop")
    assert (img / "f").read_bytes() == b""


def test_fsynced_write_survives(plfs):
    m = plfs.mountpoint
    write_file(m / "f", b"durable data", fsync=True)
    fsync_dir(m)
    img = plfs.cut("drop")
    assert (img / "f").read_bytes() == b"durable data"


def test_create_needs_directory_fsync(plfs):
    m = plfs.mountpoint
    os.mkdir(m / "d")
    fsync_dir(m)
    write_file(m / "d" / "nodirsync", b"x" * 100, fsync=True)
    write_file(m / "d" / "withdirsync", b"y" * 100, fsync=True)
    fsync_dir(m / "d")
    write_file(m / "d" / "late", b"z" * 100, fsync=True)  # created after the dir fsync
    stats = plfs.stats()
    assert stats["fsyncdir"] == 2 and stats["fsync"] == 3, stats
    img = plfs.cut("drop")
    assert sorted(os.listdir(img / "d")) == ["nodirsync", "withdirsync"]
    assert (img / "d" / "withdirsync").read_bytes() == b"y" * 100


def test_create_without_dir_fsync_absent(plfs):
    m = plfs.mountpoint
    write_file(m / "orphan", b"data", fsync=True)
    img = plfs.cut("drop")
    assert not (img / "orphan").exists()


def test_rename_needs_directory_fsync(plfs):
    m = plfs.mountpoint
    write_file(m / "old", b"content", fsync=True)
    fsync_dir(m)
    os.rename(m / "old", m / "new")
    write_file(m / "a", b"A", fsync=True)
    fsync_dir(m)  # now 'a' durable, and 'new' too
    os.rename(m / "a", m / "b")  # not made durable
    img = plfs.cut("drop")
    assert sorted(os.listdir(img)) == ["a", "new"]
    assert (img / "new").read_bytes() == b"content"


def test_atomic_replace_pattern(plfs):
    m = plfs.mountpoint
    write_file(m / "cfg", b"v1", fsync=True)
    fsync_dir(m)
    write_file(m / "cfg.tmp", b"v2", fsync=False)  # forgot the fsync of the tmp file
    os.rename(m / "cfg.tmp", m / "cfg")
    fsync_dir(m)
    img = plfs.cut("drop")
    assert (img / "cfg").read_bytes() == b""  # the classic zero-length file


def test_unlink_needs_directory_fsync(plfs):
    m = plfs.mountpoint
    write_file(m / "gone", b"still here", fsync=True)
    fsync_dir(m)
    os.unlink(m / "gone")
    img = plfs.cut("drop")
    assert (img / "gone").read_bytes() == b"still here"


def test_truncate_semantics(plfs):
    m = plfs.mountpoint
    write_file(m / "t", b"a" * 10000, fsync=True)
    fsync_dir(m)
    os.truncate(m / "t", 10)
    img = plfs.cut("drop")
    assert (img / "t").read_bytes() == b"a" * 10000


def test_subset_mode_tears_writes(tmp_path, request):
    require_powerloss(request)
    sector = 4096
    old = [bytes([65 + i % 26]) * sector for i in range(16)]
    new = [bytes([97 + i % 26]) * sector for i in range(16)]
    outcomes = set()
    for seed in range(6):
        with PowerLossFS(tmp_path / f"r{seed}") as fs:
            m = fs.mountpoint
            write_file(m / "f", b"".join(old), fsync=True)
            fsync_dir(m)
            write_file(m / "f", b"".join(new), fsync=False, mode=os.O_WRONLY)
            img = fs.cut("subset", seed=seed)
            data = (img / "f").read_bytes()
        assert len(data) == 16 * sector
        kept = []
        for i in range(16):
            s = data[i * sector : (i + 1) * sector]
            assert s in (old[i], new[i]), "a sector must be old or new, never garbage"
            kept.append(s == new[i])
        outcomes.add(tuple(kept))
    torn = [o for o in outcomes if any(o) and not all(o)]
    assert torn, f"subset mode never produced a torn write: {outcomes}"
    assert len(outcomes) > 1


def test_armed_cut_before_and_after(tmp_path, request):
    require_powerloss(request)
    for after in (False, True):
        with PowerLossFS(tmp_path / f"a{after}") as fs:
            m = fs.mountpoint
            write_file(m / "f", b"", fsync=True)
            fsync_dir(m)
            fs.arm_cut_at_sync(1, after=after)
            fd = os.open(m / "f", os.O_WRONLY)
            os.write(fd, b"payload")
            if after:
                os.fsync(fd)  # acknowledged, then power dies
            else:
                with pytest.raises(OSError) as ei:
                    os.fsync(fd)
                assert ei.value.errno == errno.EIO
            with pytest.raises(OSError) as ei:
                os.write(fd, b"more")
            assert ei.value.errno == errno.EIO
            with pytest.raises(OSError):
                os.stat(m / "f")
            with contextlib.suppress(OSError):
                os.close(fd)
            assert fs.is_dead()
            img = fs.cut("drop")
            assert (img / "f").read_bytes() == (b"payload" if after else b"")


def test_fault_injection_plain(plfs):
    m = plfs.mountpoint
    plfs.inject_fault("write", nth=2, errno="ENOSPC", path_suffix="/w")
    fd = os.open(m / "w", os.O_CREAT | os.O_WRONLY, 0o644)
    os.pwrite(fd, b"1", 0)
    with pytest.raises(OSError) as ei:
        os.pwrite(fd, b"2", 1)
    assert ei.value.errno == errno.ENOSPC
    os.pwrite(fd, b"3", 1)  # once only
    plfs.inject_fault("fsync", nth=1, errno="EIO", path_suffix="/w")
    with pytest.raises(OSError) as ei:
        os.fsync(fd)
    assert ei.value.errno == errno.EIO
    os.fsync(fd)  # succeeds, but the data whose writeback failed is lost (Linux semantics)
    os.pwrite(fd, b"4", 8192)  # another 4 KiB sector (a rewrite of sector 0 would re-dirty it)
    os.fsync(fd)
    os.close(fd)
    fsync_dir(m)
    assert (m / "w").read_bytes()[:2] == b"13"
    img = plfs.cut("drop")
    assert (img / "w").read_bytes() == b"\0" * 8192 + b"4"


# --------------------------------------------------------------- raw LMDB


def _lmdb_round(
    base: Path,
    rnd: random.Random,
    n_txn: int,
    writer_flags: list[str],
    cut: str,
    mode: str,
    fault: dict | None = None,
) -> dict:
    """One crash round; returns the checker's verdict plus bookkeeping."""
    seed = rnd.randrange(1 << 30)
    with PowerLossFS(base) as fs:
        m = fs.mountpoint
        os.mkdir(m / "store")
        fsync_dir(m)
        armed = None
        if cut == "sync":
            # ~2 sync points per commit (fdatasync + O_DSYNC meta write) + 3 dir fsyncs
            armed = fs.arm_cut_at_sync(rnd.randint(1, 2 * n_txn + 3), seed=seed)
        elif cut == "write":
            armed = fs.arm_cut_at_write(rnd.randint(3, 4 * n_txn))
        if fault:
            fs.inject_fault(**fault)
        w = run_writer(
            [
                sys.executable,
                LMDB_WORKER,
                "write",
                str(m / "store" / "env"),
                "--n",
                str(n_txn),
                "--seed",
                str(seed),
                *writer_flags,
            ]
        )
        assert not w.timed_out, w.stderr
        stats = fs.stats()
        img = fs.cut(mode, seed=seed)
    acked, tried = w.tagged("ACK"), w.tagged("TRY")
    (base / "acked").write_text("\n".join(acked))
    (base / "tried").write_text("\n".join(tried))
    envdir = img / "store" / "env"
    if not envdir.exists():
        # legitimate only if nothing was acknowledged yet (cut during setup)
        res = {
            "opened": not acked,
            "error": None if not acked else "env dir missing",
            "missing": acked,
            "wrong": [],
            "verify": [],
            "unexpected": [],
            "env_absent": True,
        }
    else:
        res = run_checker(
            [
                sys.executable,
                LMDB_WORKER,
                "check",
                str(envdir),
                "--seed",
                str(seed),
                "--acked",
                str(base / "acked"),
                "--tried",
                str(base / "tried"),
            ]
        )
    res.update(
        n_acked=len(acked),
        n_tried=len(tried),
        armed=armed,
        stats=stats,
        writer_rc=w.returncode,
        writer_tail=w.lines[-3:],
        fails=w.tagged("FAIL"),
        writer_stderr=w.stderr[-1500:],
    )
    return res


def _bad(res: dict) -> bool:
    return bool(
        res.get("checker_crashed")
        or not res.get("opened")
        or res.get("error")
        or res.get("verify")
        or res.get("missing")
        or res.get("wrong")
        or res.get("unexpected")
    )


def _describe(res: dict) -> str:
    keys = (
        "opened",
        "error",
        "verify",
        "missing",
        "wrong",
        "unexpected",
        "n_acked",
        "n_tried",
        "armed",
        "writer_rc",
        "writer_tail",
        "checker_crashed",
        "stderr",
        "writer_stderr",
    )
    return repr(
        {
            k: (res.get(k)[:5] if isinstance(res.get(k), list) else res.get(k))
            for k in keys
            if k in res
        }
    )


def _crash_rounds(tmp_path, rounds: int, flags: list[str], cut: str, seed: int, n_txn: int = 30):
    rnd = random.Random(seed)
    results = []
    for i in range(rounds):
        mode = "drop" if i % 2 == 0 else "subset"
        results.append((mode, _lmdb_round(tmp_path / f"round{i}", rnd, n_txn, flags, cut, mode)))
    return results


def test_lmdb_safe_settings_survive_power_loss(tmp_path, request):
    """sync=True, metasync=True: every acknowledged commit survives a power cut
    at a random sync point (drop and torn-subset modes), and the file verifies."""
    require_powerloss(request)
    results = _crash_rounds(tmp_path, ROUNDS, [], "sync", seed=1234)
    bad = [(mode, r) for mode, r in results if _bad(r)]
    total_acked = sum(r["n_acked"] for _, r in results)
    cut_mid = sum(1 for _, r in results if r["writer_rc"] != 0)
    print(
        f"\n[powerloss lmdb safe] rounds={len(results)} acked_checked={total_acked} "
        f"cut_mid_run={cut_mid} bad={len(bad)}"
    )
    assert not bad, "\n".join(f"{mode}: {_describe(r)}" for mode, r in bad)
    assert total_acked > 0
    assert cut_mid >= len(results) // 2, "most cuts should interrupt the writer"


def test_lmdb_unsafe_settings_are_caught(tmp_path, request):
    """Negative control: sync=False, metasync=False loses acknowledged commits
    (LMDB never syncs, so the cut is armed on the N-th write)."""
    require_powerloss(request)
    results = _crash_rounds(tmp_path, max(ROUNDS, 20), ["--nosync"], "write", seed=99)
    caught = sum(1 for _, r in results if _bad(r))
    print(
        f"\n[powerloss lmdb nosync] rounds={len(results)} caught={caught} "
        f"rate={caught / len(results):.0%}"
    )
    assert caught / len(results) >= 0.5, [_describe(r) for _, r in results]


@pytest.mark.slow
def test_lmdb_nometasync_last_commit_loss_is_caught(tmp_path, request):
    """sync=True, metasync=False: only the last commit can be lost; the harness
    must see it at least sometimes (sync=True data, unsynced meta)."""
    require_powerloss(request)
    results = _crash_rounds(tmp_path, 30, ["--nometasync"], "sync", seed=7, n_txn=10)
    caught = [r for _, r in results if _bad(r)]
    print(f"\n[powerloss lmdb nometasync] rounds={len(results)} caught={len(caught)}")
    assert caught
    for r in caught:  # never more than the last acknowledged commit, never corruption
        assert not r.get("verify") and not r.get("wrong") and len(r.get("missing", [])) <= 1, (
            _describe(r)
        )


@pytest.mark.slow
def test_lmdb_safe_settings_many_rounds(tmp_path, request):
    require_powerloss(request)
    rounds = int(os.environ.get("PLFS_SLOW_ROUNDS", "100"))
    results = _crash_rounds(tmp_path, rounds, [], "sync", seed=4321, n_txn=40)
    bad = [(mode, r) for mode, r in results if _bad(r)]
    print(
        f"\n[powerloss lmdb safe slow] rounds={len(results)} "
        f"acked_checked={sum(r['n_acked'] for _, r in results)} bad={len(bad)}"
    )
    assert not bad, "\n".join(f"{mode}: {_describe(r)}" for mode, r in bad)


@pytest.mark.slow
def test_lmdb_engine_1_0_safe_settings(tmp_path, request):
    """The same crash rounds with py-lmdb's bundled LMDB 1.0 engine (lib_version=1)."""
    require_powerloss(request)
    results = _crash_rounds(tmp_path, ROUNDS, ["--lib-version", "1"], "sync", seed=555)
    bad = [(mode, r) for mode, r in results if _bad(r)]
    assert not bad, "\n".join(f"{mode}: {_describe(r)}" for mode, r in bad)


def test_lmdb_env_creation_hazard_is_visible(tmp_path, request):
    """LMDB writes the two initial meta pages of a new env without syncing.  If
    the env dir is fsynced before any data sync, a torn power loss can leave
    a data.mdb that LMDB refuses to open (MDB_INVALID).  The harness must be able
    to show this (the writer avoids it with env.sync(True) before the dir fsync)."""
    require_powerloss(request)
    import lmdb

    outcomes = []
    for seed in range(8):
        with PowerLossFS(tmp_path / f"s{seed}") as fs:
            m = fs.mountpoint
            os.mkdir(m / "store")
            fsync_dir(m)
            w = run_writer(
                [
                    sys.executable,
                    LMDB_WORKER,
                    "write",
                    str(m / "store" / "env"),
                    "--unsafe-create",
                    "--setup-only",
                ]
            )
            assert w.returncode == 0, w.stderr
            img = fs.cut("subset", seed=seed)
        try:
            lmdb.open(str(img / "store" / "env"), max_dbs=4).close()
            outcomes.append("ok")
        except lmdb.Error as e:
            outcomes.append(type(e).__name__)
    assert "ok" in outcomes and any(o != "ok" for o in outcomes), outcomes


@pytest.mark.parametrize("err", ["EIO", "ENOSPC"])
def test_lmdb_fsync_error_fails_commit_and_keeps_acked(tmp_path, request, err):
    """An fsync error makes the commit raise; acknowledged data stays intact."""
    require_powerloss(request)
    rnd = random.Random(hash(err) & 0xFFFF)
    seen_fail = 0
    # data.mdb sync points: #1 env.sync after create, #2,#3 = open_db commit; then
    # per commit fdatasync (even #) and the O_DSYNC meta-page write (odd #).  A failed meta write makes LMDB
    # 0.9 panic (every later txn fails with MDB_PANIC); a failed fdatasync only
    # fails that commit.
    for i, nth in enumerate((6, 9, 12)):
        res = _lmdb_round(
            tmp_path / f"f{i}",
            rnd,
            12,
            ["--continue-on-error"],
            "none",
            "drop",
            fault={"op": "fsync", "nth": nth, "errno": err, "path_suffix": "data.mdb"},
        )
        assert res["stats"]["faults_fired"] == 1, res["stats"]
        assert res["fails"], f"commit did not raise on injected {err}: {_describe(res)}"
        seen_fail += len(res["fails"])
        assert not _bad(res), _describe(res)
        assert res["n_acked"] >= 1
    assert seen_fail >= 3
