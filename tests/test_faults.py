"""I/O faults under ckdb: EIO and ENOSPC on a chosen write or sync of data.mdb.

Each case runs ``tests/powerloss/fault_worker.py`` on a plfs mount (an LMDB panic cannot take
pytest down): seven acknowledged checkpoints, then the fault is injected (plfs: the n-th
matching operation on ``data.mdb`` fails with the errno; a failed sync forgets the inode's
unsynced data, as Linux does) and one ``create`` / ``delete`` / ``prune`` runs under it.

Checked:
- the call raises a ckdb error of the right class (ENOSPC -> ``StoreFull``, EIO ->
  ``StorageError``), never another exception type, and the fault really fired;
- once the fault is cleared, the same Store keeps working or fails with a ckdb error, and then a
  reopened Store works (a failed meta-page write makes LMDB 0.9 refuse every later transaction
  with MDB_PANIC until the environment is reopened);
- every acknowledged checkpoint still loads (live), and after a power cut the durable image passes
  the crash checker of tests/powerloss/ckdb_worker.py: lmdb structural verification, every
  acknowledged create present with its exact state, every acknowledged delete deleted, the
  faulted call's effect all or nothing, comprehensive validation and scrub clean, and a call that
  said "nothing was written" left nothing.

Sync points of one ckdb commit on data.mdb: #1 the fdatasync of the data pages, #2 the
synchronous (O_DSYNC) meta-page write.  Write #1 is the first data-page write.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from powerloss.harness import PowerLossFS, require_powerloss  # noqa: E402
from powerloss.rounds import fsync_dir, run_checker  # noqa: E402

pytest.importorskip("ckdb")

pytestmark = pytest.mark.crash

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "powerloss"
FAULT_WORKER = str(HERE / "fault_worker.py")
CHECKER = str(HERE / "ckdb_worker.py")
STEP_TIMEOUT = 120  # a hang guard, not a timing assertion
EXPECTED = {"EIO": "StorageError", "ENOSPC": "StoreFull"}

WHERE = {
    "write1": {"op": "write", "nth": 1},  # the first data-page write of the commit
    "datasync": {"op": "fsync", "nth": 1},  # fdatasync of the data pages
    "metasync": {"op": "fsync", "nth": 2},  # the O_DSYNC meta-page write
}
CASES = [
    (op, where, err, False)
    for op in ("create", "delete", "prune")
    for where in WHERE
    for err in ("EIO", "ENOSPC")
] + [
    # persistent: LMDB's own attempt to write the old meta page back fails too
    ("create", "metasync", "EIO", True),
    ("delete", "write1", "ENOSPC", True),
    ("prune", "datasync", "EIO", True),
]


def _env() -> dict:
    env = dict(os.environ)
    src = os.environ.get("CKDB_POWERLOSS_SRC", str(REPO))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.pop("CKDB_KEY_FILE", None)
    return env


class _Proc:
    """A worker subprocess read line by line, with a hang guard."""

    def __init__(self, argv: list[str]) -> None:
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
            cwd="/",
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._buf = b""

    def until(self, tag: str) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        fd = self.p.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                self.lines.append(line.decode())
                if line.decode().partition(" ")[0] == tag:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                pytest.fail(f"worker hung waiting for {tag}: {self.lines[-5:]}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.p.wait()
                    err = self.p.stderr.read().decode(errors="replace")
                    pytest.fail(
                        f"worker exited ({self.p.returncode}) before {tag}: "
                        f"{self.lines[-5:]}\n{err[-3000:]}"
                    )
                self._buf += chunk

    def send(self, text: str) -> None:
        self.p.stdin.write(text.encode() + b"\n")
        self.p.stdin.flush()

    def finish(self) -> str:
        out, err = self.p.communicate(timeout=STEP_TIMEOUT)
        self.lines += (self._buf + out).decode().split("\n")[:-1]
        self._buf = b""
        return err.decode(errors="replace")

    def kill(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, 9)
            self.p.wait()

    def tagged(self, tag: str) -> list[dict]:
        out = []
        for ln in self.lines:
            t, _, payload = ln.partition(" ")
            if t == tag:
                out.append(json.loads(payload) if payload else {})
        return out


def _run_case(base: Path, op: str, where: str, err: str, persistent: bool) -> dict:
    with PowerLossFS(base) as fs:
        os.mkdir(fs.mountpoint / "stores")
        fsync_dir(fs.mountpoint)
        store = fs.mountpoint / "stores" / "store"
        w = _Proc([sys.executable, FAULT_WORKER, str(store), op])
        try:
            w.until("READY")
            fs.inject_fault(
                errno=err, path_suffix="data.mdb", persistent=persistent, **WHERE[where]
            )
            w.send("GO")
            w.until("FAULTED")
            fired = fs.stats()["faults_fired"]
            fs.clear_faults()
            w.send("GO")
            stderr = w.finish()
        finally:
            w.kill()
        img = fs.cut("drop", seed=1)
    (base / "worker.log").write_text("\n".join(w.lines) + "\n")
    verdict = run_checker(
        [
            sys.executable,
            CHECKER,
            "check",
            str(img / "stores" / "store"),
            "--log",
            str(base / "worker.log"),
        ],
        env=_env(),
    )
    return {
        "fired": fired,
        "lines": w.lines,
        "returncode": w.p.returncode,
        "stderr": stderr,
        "fails": w.tagged("FAIL"),
        "recover": (w.tagged("RECOVER") or [None])[-1],
        "verdict": verdict,
    }


def _verdict_problems(v: dict) -> dict:
    keys = (
        "checker_crashed",
        "error",
        "structural",
        "lost_creates",
        "wrong_state",
        "resurrected",
        "unexpected_listed",
        "half_visible",
        "invalid",
        "latest_wrong",
        "claimed_unwritten",
    )
    out = {k: v[k] for k in keys if v.get(k)}
    if not v.get("opened"):
        out["opened"] = False
    if v.get("scrub") is not None and not v["scrub"]["ok"]:
        out["scrub"] = v["scrub"]
    return out


@pytest.mark.parametrize(
    ("op", "where", "err", "persistent"),
    CASES,
    ids=[f"{o}-{w}-{e}{'-persistent' if p else ''}" for o, w, e, p in CASES],
)
def test_io_fault(tmp_path, request, op, where, err, persistent):
    require_powerloss(request)
    r = _run_case(tmp_path, op, where, err, persistent)
    ctx = json.dumps({k: r[k] for k in ("fired", "fails", "recover", "returncode")})[:3000]
    print(f"\n[fault {op}/{where}/{err}] {ctx}")
    assert r["returncode"] == 0 and r["lines"][-1] == "DONE", (ctx, r["stderr"][-3000:])
    assert r["fired"] >= 1, f"the injected fault never fired: {ctx}"

    # 1. the faulted call raised a clear ckdb error of the right class
    faulted = r["fails"][0] if r["fails"] else None
    assert faulted is not None, f"{op} succeeded although {where} failed with {err}: {ctx}"
    assert faulted["ckdb"], f"not a ckdb error: {faulted}"
    assert EXPECTED[err] in faulted["classes"], f"{err} raised {faulted['type']}: {faulted}"

    # 2. after the fault: the same Store works or fails cleanly; a reopened one works
    rec = r["recover"]
    assert rec is not None, ctx
    if rec["same_store"] != "ok":
        assert rec["same_store_ckdb"], f"same Store after the fault raised non-ckdb: {rec}"
        assert rec["close"] == "ok", rec
        assert rec["reopened"]
    assert not rec.get("live_wrong_state"), rec

    # live: only what the faulted call (or an acknowledged delete) may delete is missing
    log = [(ln.partition(" ")[0], ln.partition(" ")[2]) for ln in r["lines"]]
    may_go: set[str] = set()
    for tag, payload in log:
        if tag in ("TRY", "ACK") and payload:
            o = json.loads(payload)
            if o["op"] == "delete":
                may_go.add(o["id"])
            elif o["op"] == "prune":
                may_go.update(o["plan"])
    assert set(rec["live_missing"]) <= may_go, (rec, may_go)

    # 3. after a power cut: nothing acknowledged lost, store verifies
    problems = _verdict_problems(r["verdict"])
    assert not problems, (problems, ctx)
    assert r["verdict"]["n_creates_checked"] >= 3


def test_panic_after_failed_meta_write_is_not_reported_as_damage(tmp_path, request):
    """Regression: after a failed meta-page write LMDB 0.9 panics (MDB_PANIC); ckdb used to call
    the environment "damaged" and advise restoring a backup, although reopening is all it takes."""
    require_powerloss(request)
    r = _run_case(tmp_path, "create", "metasync", "EIO", False)
    rec = r["recover"]
    assert rec is not None, r["stderr"][-3000:]
    # fixed either by recovering the same Store, or by an error that says "reopen"
    assert rec["same_store"] == "ok" or "restore from a backup" not in rec["same_store_error"], rec


def test_storefull_from_commit_sync_does_not_claim_nothing_written(tmp_path, request):
    """Regression: a StoreFull from a failed commit sync used to say both "its outcome is
    uncertain" and "nothing was written"; a caller trusting the latter repeats a create that may
    have committed."""
    require_powerloss(request)
    r = _run_case(tmp_path, "create", "metasync", "ENOSPC", False)
    msg = r["fails"][0]["error"]
    assert r["fails"][0]["type"] == "StoreFull", msg
    assert not ("uncertain" in msg and "nothing was written" in msg), msg
