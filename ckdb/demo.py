"""``ckdb demo``: what ckdb is for, in a few seconds.

1. A simulated agent (:mod:`ckdb._demo_agent`, a separate process) works through phases on a
   small working directory, checkpointing after every step, with a pinned manual checkpoint
   before the risky phase.
2. The demo kills it with SIGKILL half way through a step (files half written, nothing
   checkpointed).
3. It starts the agent again: the agent restores the latest valid checkpoint (files rolled back,
   stray files removed) and resumes to completion; its working directory matches an
   uninterrupted run byte for byte.
4. It damages one byte of the newest checkpoint: validation catches it and ``restore_latest``
   skips it, restoring the one before.
5. It prints the store's statistics.

The exit code is 0 only if every step behaved as described.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import ckdb
from ckdb import _demo_agent as agent
from ckdb.errors import InvalidInput
from ckdb.summary import collect_stats, print_stats
from ckdb.testing.damage import corrupt_component

HOLD = (agent.RISKY_PHASE, 2)


class Checks:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.failed: list[str] = []

    def check(self, ok: bool, what: str) -> bool:
        self.out(f"   {'ok' if ok else 'FAILED'}: {what}")
        if not ok:
            self.failed.append(what)
        return ok


def _agent_cmd(store: Path, workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ckdb._demo_agent",
        "--store",
        str(store),
        "--workdir",
        str(workdir),
        *extra,
    ]


def _agent_env() -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(ckdb.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_agent_process(
    store: Path,
    workdir: Path,
    out: Callable[[str], None],
    hold: bool,
    extra: Sequence[str] = (),
    label: str = "agent",
) -> tuple[int, list[str], str]:
    """Run the agent as a process, echoing its lines; with ``hold``, SIGKILL it at the hold
    point. Returns (returncode, lines, stderr)."""
    extra = [*extra, "--hold-at", f"{HOLD[0]}:{HOLD[1]}"] if hold else list(extra)
    lines: list[str] = []
    with subprocess.Popen(
        _agent_cmd(store, workdir, *extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_agent_env(),
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if line == agent.HOLD_MARKER:
                out(f"   >> killing the agent (pid {proc.pid}) with SIGKILL, mid-step")
                proc.send_signal(signal.SIGKILL)
                break
            lines.append(line)
            out(f"   {label} | {line}")
        proc.stdout.read()
        stderr = proc.stderr.read()
        # The agent's stdin stays open until here: it blocks on it at the hold point.
        returncode = proc.wait()
    return returncode, lines, stderr


@contextlib.contextmanager
def _quiet_ckdb_log() -> Iterator[None]:
    # restore_latest marks the damaged checkpoint and logs it at CRITICAL; the demo prints it.
    log = logging.getLogger("ckdb")
    handler = logging.NullHandler()
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


def run_demo(
    directory: str | os.PathLike[str] | None = None,
    *,
    keep: bool = False,
    out: Callable[[str], None] = print,
) -> int:
    """Run the demo in ``directory`` (default: a temporary one, removed afterwards unless
    ``keep``). Returns 0 if every step behaved, 1 otherwise."""
    return run_in(directory, keep, out, _demo)


def run_in(
    directory: str | os.PathLike[str] | None,
    keep: bool,
    out: Callable[[str], None],
    body: Callable[[Path, Callable[[str], None]], int],
) -> int:
    """Run a demo ``body(base, out)`` in ``directory`` (which must be empty) or a temporary
    directory, removed afterwards unless ``keep``."""
    if directory is None:
        base = Path(tempfile.mkdtemp(prefix="ckdb-demo-"))
        remove = not keep
    else:
        base = Path(directory).absolute()
        if base.exists() and any(base.iterdir()):
            raise InvalidInput(f"demo directory {base} is not empty")
        base.mkdir(parents=True, exist_ok=True)
        remove = False
    try:
        with _quiet_ckdb_log():
            return body(base, out)
    finally:
        if remove:
            shutil.rmtree(base, ignore_errors=True)
        elif directory is None:
            out(f"(kept {base})")


def _demo(base: Path, out: Callable[[str], None]) -> int:
    store_path = base / "agent.ckdb"
    workdir = base / "workdir"
    checks = Checks(out)
    steps = agent.plan_steps()
    total = len(steps)
    hold_index = steps.index(HOLD)
    out(f"ckdb demo: store {store_path}, working directory {workdir}")
    out("")

    out(
        f"1. An agent works through {total} steps in phases {', '.join(agent.PHASES)}, "
        "checkpointing after each (state + files)."
    )
    code, _lines, stderr = run_agent_process(store_path, workdir, out, hold=True)
    checks.check(code == -signal.SIGKILL, f"the agent died of SIGKILL (returncode {code})")
    if code != -signal.SIGKILL and stderr.strip():
        out("   agent stderr: " + stderr.strip().splitlines()[-1])
    on_disk = agent.read_tree(workdir)
    checks.check(
        on_disk != agent.expected_files(hold_index) and "scratch.tmp" in on_disk,
        "it left a half-written report.md and a stray scratch file behind",
    )
    out("")

    out("2. Starting the agent again: it restores the latest valid checkpoint and resumes.")
    code, lines, stderr = run_agent_process(store_path, workdir, out, hold=False)
    if code != 0 and stderr.strip():
        out("   agent stderr: " + stderr.strip().splitlines()[-1])
    resumed = any(f"resuming at {HOLD[0]}/{HOLD[1]}" in line for line in lines)
    checks.check(code == 0 and resumed, f"it resumed at {HOLD[0]}/{HOLD[1]} and finished")
    checks.check(
        agent.read_tree(workdir) == agent.expected_files(total),
        "its working directory is byte for byte what an uninterrupted run produces",
    )
    out("")

    with ckdb.open(store_path) as store:
        infos = store.list(agent.WORKFLOW)
        out(f"3. The store holds {len(infos)} checkpoints of {agent.WORKFLOW} (newest first):")
        for info in infos:
            label = f"'{info.name}' (manual, pinned)" if info.name else info.kind
            out(f"   #{info.sequence:<2} {info.id}  {info.phase:<9} {label}")
        out("")

        newest = infos[0]
        out(
            f"4. Damaging one byte of checkpoint #{newest.sequence} (the frame holding its "
            "'progress' component)."
        )
        try:
            corrupt_component(store, newest.id, "progress")
            damaged = True
        except InvalidInput:
            damaged = False
        checks.check(damaged, "found the payload to damage")
        report = store.validate(newest.id, level="standard")
        why = report.findings[0] if report.findings else "no finding"
        checks.check(not report.ok, f"validate #{newest.sequence} fails: {why}")
        target = base / "restored"
        restored = store.restore_latest(agent.WORKFLOW, target_dir=target)
        skipped_ids = [cid for cid, _why in restored.skipped_checkpoints]
        checks.check(
            skipped_ids == [newest.id],
            f"restore_latest skipped #{newest.sequence} and marked it corrupted",
        )
        got = restored.checkpoint.info
        checks.check(
            got.id == infos[1].id
            and agent.read_tree(target) == agent.expected_files(total - 1)
            and restored.ok,
            f"it restored #{got.sequence} ({got.phase}) instead, files verified",
        )
        status = store.get_info(newest.id).status
        checks.check(status == "corrupted", f"#{newest.sequence} is now listed as {status}")
        out("")

        out("5. Statistics (ckdb stats):")
        print_stats(collect_stats(store), indent="   ", out=out)
    out("")
    if checks.failed:
        out(f"demo FAILED: {len(checks.failed)} step(s) did not behave")
        return 1
    out("demo finished: every step behaved.")
    return 0
