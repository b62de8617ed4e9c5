"""``ckdb demo --fleet``: two hosts share a remote; one dies, the other takes its workflow over.

1. Host A's agent (a separate process, its own store) ships every checkpoint to a ``file://``
   remote (a directory standing in for an S3 bucket) and waits for each to be remote.
2. Host A is killed with SIGKILL half way through a step.
3. Host B, a fresh store with the fleet's key, takes the workflow over: every checkpoint is
   imported and verified (tags computed on A, checked again on B), epoch 2 is claimed and A is
   fenced. B's agent restores the latest checkpoint and finishes the work; its working directory
   is byte for byte what an uninterrupted run produces.
4. Host A comes back: its next ship of the workflow meets the fence, and its ``create`` for it
   raises ``ckdb.Fenced``; its other workflows keep shipping.
5. ``check_remote`` verifies every object in the remote.

No server is needed. The exit code is 0 only if every step behaved as described.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import ckdb
from ckdb import _demo_agent as agent
from ckdb.demo import HOLD, Checks, run_agent_process, run_in


def run_fleet_demo(
    directory: str | os.PathLike[str] | None = None,
    *,
    keep: bool = False,
    out: Callable[[str], None] = print,
) -> int:
    """Run the fleet demo in ``directory`` (default: a temporary one, removed afterwards unless
    ``keep``). Returns 0 if every step behaved, 1 otherwise."""
    return run_in(directory, keep, out, _fleet)


def _fleet(base: Path, out: Callable[[str], None]) -> int:
    checks = Checks(out)
    url = f"file://{base / 'bucket'}"
    key_file = base / "fleet.key"
    key_file.write_text(os.urandom(32).hex() + "\n")
    os.chmod(key_file, 0o600)
    fleet_key = bytes.fromhex(key_file.read_text().strip())
    host_a, host_b = base / "host-a", base / "host-b"
    steps = agent.plan_steps()
    total, hold_index = len(steps), steps.index(HOLD)
    out(f"ckdb demo --fleet: remote {url}, hosts {host_a} and {host_b}")
    out("")

    out("1. Host A's agent works, shipping every checkpoint to the remote (sync after each).")
    extra = ["--remote", url, "--remote-key-file", str(key_file)]
    code, lines, stderr = run_agent_process(
        host_a / "agent.ckdb", host_a / "work", out, hold=True, extra=extra, label="host A"
    )
    shipped = sum(1 for line in lines if "shipped)" in line)
    out("")
    out("2. Host A died.")
    checks.check(code == -signal.SIGKILL, f"host A's agent died of SIGKILL (returncode {code})")
    if code != -signal.SIGKILL and stderr.strip():
        out("   host A stderr: " + stderr.strip().splitlines()[-1])
    report = ckdb.check_remote(ckdb.Remote(url, key=fleet_key))
    checks.check(
        report.ok and report.checkpoints == shipped + 1,  # + the manual one before the risky step
        f"the remote holds its {report.checkpoints} checkpoints, verified",
    )
    out("")

    out("3. Host B (a fresh store, the fleet's key) takes the workflow over and resumes it.")
    remote_b = ckdb.Remote(url, key=fleet_key, interval=0.2)
    with ckdb.open(host_b / "agent.ckdb", remote=remote_b) as b:
        taken = b.take_over(agent.WORKFLOW)
        checks.check(
            taken.ok and taken.epoch == 2 and taken.imported == report.checkpoints,
            f"imported {taken.imported} checkpoints, each verified end to end; B owns "
            f"{agent.WORKFLOW} under epoch {taken.epoch} and host A is fenced",
        )
        result = agent.run_agent(
            host_b / "agent.ckdb",
            host_b / "work",
            store=b,
            sync_remote=True,
            out=lambda msg: out(f"   host B | {msg}"),
        )
        checks.check(
            result.resumed_at == hold_index and result.done,
            f"B resumed at {HOLD[0]}/{HOLD[1]} (where A died) and finished",
        )
        checks.check(
            agent.read_tree(host_b / "work") == agent.expected_files(total),
            "B's working directory is byte for byte what an uninterrupted run produces",
        )
    out("")

    out("4. Host A comes back (it was only cut off) and tries to go on.")
    remote_a = ckdb.Remote(url, key=fleet_key, interval=0.2)
    with ckdb.open(host_a / "agent.ckdb", remote=remote_a) as a:
        a.create(agent.WORKFLOW, "zombie", state={"progress": {"completed": hold_index}})
        first = a.sync_remote(timeout=60)
        checks.check(
            agent.WORKFLOW in first.fenced,
            "its next ship of the workflow met B's fence (that checkpoint stays local only)",
        )
        try:
            a.create(agent.WORKFLOW, "zombie", state={"progress": {"completed": hold_index}})
            refused = "no error"
        except ckdb.Fenced as err:
            refused = str(err)
        checks.check(refused != "no error", f"its next create raised Fenced: {refused}")
        a.create("host-a-chores", "tidy", state={"task": {"goal": "other work"}})
        other = a.sync_remote(timeout=60)
        checks.check("host-a-chores" in other.shipped, "its other workflows keep shipping")
    out("")

    out("5. The remote, verified object by object (ckdb remote check --deep):")
    final = ckdb.check_remote(ckdb.Remote(url, key=fleet_key), deep=True)
    out(
        f"   {final.workflows} workflows, {final.segments} segments, {final.checkpoints} live "
        f"checkpoints, {final.blobs} blobs"
    )
    checks.check(final.ok, "every tag, chain and blob checks out")
    out("")
    if checks.failed:
        out(f"fleet demo FAILED: {len(checks.failed)} step(s) did not behave")
        return 1
    out("fleet demo finished: every step behaved.")
    return 0
