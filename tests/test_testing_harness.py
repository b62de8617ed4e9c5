"""ckdb.testing: the crash-resume runner catches a broken workflow and prints a minimal kill
schedule, passes a correct one over many kill points, shrinks multi-kill schedules; the
strategies produce what ckdb round-trips; the pytest fixtures work in a user's test file.

The workflows below are referenced by import path ("tests.test_testing_harness:...") because the
runner runs them in child processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

import ckdb
from ckdb.testing import CrashResume, CrashResumeFailure, Effects, KillPoint, check_crash_resume
from ckdb.testing import strategies as cst
from ckdb.testing.trees import FileTree, snapshot

pytestmark = pytest.mark.crash

WF = "harness-wf"
STEPS = 5
HERE = "tests.test_testing_harness"


def _resume(store: ckdb.Store, workdir: Path) -> dict[str, Any] | None:
    if store.latest(WF) is None:
        return None
    report = store.restore_latest(WF, target_dir=workdir)
    return dict(report.checkpoint.state["progress"])


# --- workflows ---------------------------------------------------------------------------------


def correct_workflow(store: ckdb.Store, workdir: Path, effects: Effects) -> dict[str, Any]:
    """Write-ahead: checkpoint that message i is being sent BEFORE sending it, and send
    idempotently (the message is its own idempotency key), so a resend after a kill is a no-op.
    Also writes a file per step into the checkpointed working directory."""
    progress = _resume(store, workdir) or {"done": 0, "total": 0}
    done, total = progress["done"], progress["total"]
    for i in range(done, STEPS):
        store.create(
            WF,
            "sending",
            state={"progress": {"done": i, "total": total, "sending": i}},
            files=workdir,
        )
        effects.append("outbox.log", f"message {i}", once=True)
        total += i * i
        (workdir / f"step-{i}.txt").write_text(f"total after step {i}: {total}\n")
        store.create(WF, "sent", state={"progress": {"done": i + 1, "total": total}}, files=workdir)
    return {"total": total, "sent": len(effects.read("outbox.log"))}


def broken_workflow(store: ckdb.Store, workdir: Path, effects: Effects) -> dict[str, Any]:
    """Forgets to checkpoint the counter before the side effect (and the effect is not
    idempotent): a kill between the effect and the next checkpoint sends a message twice."""
    progress = _resume(store, workdir) or {"done": 0, "total": 0}
    done, total = progress["done"], progress["total"]
    for i in range(done, STEPS):
        effects.append("outbox.log", f"message {i}")
        total += i * i
        store.create(WF, "sent", state={"progress": {"done": i + 1, "total": total}})
    return {"total": total, "sent": len(effects.read("outbox.log"))}


def resumes_twice_workflow(store: ckdb.Store, workdir: Path, effects: Effects) -> dict[str, Any]:
    """Correct after one crash, wrong after the second resume: it needs two kills, each after a
    checkpoint committed, so only the multi-kill search finds it."""
    progress = _resume(store, workdir) or {"done": 0, "total": 0, "resumes": -1}
    done, total, resumes = progress["done"], progress["total"], progress["resumes"] + 1
    for i in range(done, STEPS):
        if resumes < 2 or i != done:  # the bug: the second resume skips a step
            total += i + 1
        store.create(
            WF, "step", state={"progress": {"done": i + 1, "total": total, "resumes": resumes}}
        )
    return {"total": total}


def _runner(tmp_path: Path, workflow: str, **options: Any) -> CrashResume:
    return CrashResume(f"{HERE}:{workflow}", tmp_path / "runs", **options)


# --- the runner --------------------------------------------------------------------------------


def test_broken_workflow_is_caught_with_a_minimal_schedule(tmp_path: Path) -> None:
    with _runner(tmp_path, "broken_workflow") as runner:
        report = runner.run(max_examples=10, seed=1)
    print(report.summary())
    assert not report.ok
    # The earliest kill that separates the side effect from its checkpoint.
    assert report.minimal_schedule == (KillPoint("after-effect", 1),)
    assert report.minimal is not None and not report.minimal.ok  # the replay reproduces it
    summary = report.summary()
    assert "minimal kill schedule" in summary
    assert "attempt 1: kill at after-effect#1 (outbox.log)" in summary
    assert "outbox.log" in summary and "message 0" in summary
    with pytest.raises(CrashResumeFailure, match="after-effect#1"):
        report.raise_for_failure()


def test_correct_workflow_passes_over_many_kill_points(tmp_path: Path) -> None:
    with _runner(tmp_path, "correct_workflow") as runner:
        report = runner.run(max_examples=15, max_kills=3, random_kills=5, seed=7)
        assert len(runner.reference_points) == 6 * STEPS
    print(report.summary())
    assert report.ok, report.summary()
    assert report.reference_result == {"total": sum(i * i for i in range(STEPS)), "sent": STEPS}
    assert len([k for k in report.kills if k.point is not None]) >= 50
    # Every reference point was a kill point in the first attempt (the sweep).
    assert {p for a, p in report.kill_points if a == 1} == {
        e.point for e in report.reference_points
    }
    assert any(a > 1 for a, _ in report.kill_points)  # the search killed resumed attempts too


def test_search_shrinks_a_two_kill_schedule(tmp_path: Path) -> None:
    with _runner(tmp_path, "resumes_twice_workflow", compare_checkpoints=False) as runner:
        report = runner.run(max_examples=60, max_kills=3, seed=3)
    print(report.summary())
    assert not report.ok and report.search_ran
    # Every single kill passed; the smallest failing schedule has two kills.
    assert report.minimal_schedule == (
        KillPoint("after-checkpoint", 1),
        KillPoint("after-checkpoint", 1),
    )


def test_replay_is_deterministic(tmp_path: Path) -> None:
    with _runner(tmp_path, "broken_workflow") as runner:
        for schedule in ([("after-effect", 2)], ["after-effect#2"], [KillPoint("after-effect", 2)]):
            trial = runner.replay(schedule)
            assert not trial.ok
            assert trial.effective_schedule == (KillPoint("after-effect", 2),)
            assert trial.attempts == 2
        # A kill before the effect is harmless even for the broken workflow.
        assert runner.replay([("before-effect", 3)]).ok
        # A point the attempt never reaches does not fire: the schedule is effectively empty.
        unreached = runner.replay([("after-effect", 99)])
        assert unreached.ok and unreached.kills == () and unreached.attempts == 1


def test_spawn_start_method(tmp_path: Path) -> None:
    with _runner(tmp_path, "broken_workflow", start_method="spawn") as runner:
        trial = runner.replay([("after-effect", 1)])
    assert not trial.ok and "message 0" in (trial.problem or "")


def test_check_crash_resume_raises_assertion_error(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="minimal kill schedule"):
        check_crash_resume(f"{HERE}:broken_workflow", tmp_path, sweep=True, max_examples=0)


# --- strategies --------------------------------------------------------------------------------


@settings(max_examples=30)
@given(wf=cst.workflow_ids(), phase=cst.phases(), state=cst.states())
def test_strategies_round_trip_through_a_store(
    tmp_path_factory: pytest.TempPathFactory, wf: str, phase: str, state: dict[str, Any]
) -> None:
    assert 0 < len(wf.encode("utf-8")) <= cst.MAX_NAME_BYTES and "\x00" not in wf
    assert 0 < len(phase.encode("utf-8")) <= cst.MAX_NAME_BYTES and "\x00" not in phase
    path = tmp_path_factory.mktemp("rt") / "s.ckdb"
    with ckdb.open(path, retention=None) as store:
        info = store.create(wf, phase, state=state)
        loaded = store.load(info.id)
    assert loaded.info.workflow_id == wf and loaded.info.phase == phase
    assert cst.same_value(dict(loaded.state), state)


@settings(max_examples=20)
@given(tree=cst.file_trees(max_file_size=100_000))
def test_file_trees_materialise_capture_and_restore(
    tmp_path_factory: pytest.TempPathFactory, tree: FileTree
) -> None:
    base = tmp_path_factory.mktemp("tree")
    src = tree.materialize(base / "src")
    assert snapshot(src) == tree.expected_snapshot()
    with ckdb.open(base / "s.ckdb", retention=None) as store:
        info = store.create("wf", "files", files=src)
        report = store.restore(info.id, target_dir=base / "dst")
    assert report.ok
    assert snapshot(base / "dst") == tree.expected_snapshot()


def test_value_strategy_covers_the_edge_cases() -> None:
    seen: set[str] = set()

    @settings(max_examples=300, database=None)
    @given(cst.state_values())
    def collect(value: Any) -> None:
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, list):
                stack.extend(v)
            elif isinstance(v, dict):
                stack.extend(v.values())
            elif isinstance(v, float):
                seen.add(
                    "nan"
                    if v != v
                    else "inf"
                    if abs(v) == float("inf")
                    else "-0.0"
                    if str(v) == "-0.0"
                    else "float"
                )
            elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**64:
                seen.add("bigint")
            else:
                seen.add(type(v).__name__)

    collect()
    assert {"nan", "inf", "-0.0", "bigint", "bytes", "str", "NoneType", "bool"} <= seen


def test_same_value_is_exact() -> None:
    nan = float("nan")
    assert cst.same_value({"a": [nan, b"x"]}, {"a": [nan, b"x"]})
    assert not cst.same_value(0.0, -0.0)
    assert not cst.same_value(1, True)
    assert not cst.same_value([1], [1, 2])


def test_importing_ckdb_testing_does_not_import_hypothesis() -> None:
    code = (
        "import sys, ckdb.testing, ckdb.testing.pytest_plugin\n"
        "assert 'hypothesis' not in sys.modules, 'eager import'\n"
        "ckdb.testing.strategies.state_values()\n"
        "assert 'hypothesis' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_file_tree_rejects_bad_paths() -> None:
    for bad in ("", "/abs", "a/../b", "a//b", "./a"):
        with pytest.raises(ValueError, match="relative"):
            FileTree(files={bad: b""})
    with pytest.raises(ValueError, match="both a file and a directory"):
        FileTree(files={"a": b"", "a/b": b""})


# --- pytest fixtures, as a user's test file uses them ------------------------------------------

USER_TESTS = """
from pathlib import Path

import ckdb
from ckdb.testing import Effects

WF = "user-wf"


def agent(store: ckdb.Store, workdir: Path, effects: Effects) -> int:
    done = 0
    if store.latest(WF) is not None:
        done = store.restore_latest(WF, target_dir=workdir).checkpoint.state["progress"]["done"]
    for i in range(done, 3):
        store.create(WF, "step", state={"progress": {"done": i + 1}})
    return done


def broken(store: ckdb.Store, workdir: Path, effects: Effects) -> int:
    return agent(store, workdir, effects)  # returns where it resumed from: differs after a kill


def test_store_fixture(ckdb_store):
    ckdb_store.create("wf", "p", state={"task": {"n": 1}})
    assert len(ckdb_store.list("wf")) == 1


def test_agent_resumes(crash_resume):
    report = crash_resume("test_user:agent_ok", max_examples=3)
    assert report.ok and len(report.kills) >= 6


def test_broken_agent(crash_resume):
    crash_resume("test_user:broken", max_examples=0)


def agent_ok(store, workdir, effects):
    agent(store, workdir, effects)
    return "done"
"""


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    return tmp_path


def test_pytest_plugin_fixtures(user_project: Path) -> None:
    # A fresh pytest, as a user runs it; -p loads the plugin whether or not the entry point is
    # installed (autoload off, so an installed entry point does not register it twice).
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "ckdb.testing.pytest_plugin",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(user_project),
            str(user_project),
        ],
        cwd=user_project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert "1 failed, 2 passed" in out, out
    assert "test_broken_agent" in out and "minimal kill schedule" in out, out
    assert "attempt 1: kill at after-checkpoint#1" in out, out


# --- ckdb's own demo agent under the harness ---------------------------------------------------


class _Borrowed:
    """``ckdb.open(...)`` for the demo agent: the harness's (hooked) store, left open."""

    def __init__(self, store: ckdb.Store) -> None:
        self.store = store

    def __enter__(self) -> ckdb.Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        return None


def demo_agent_workflow(store: ckdb.Store, workdir: Path, effects: Effects) -> dict[str, Any]:
    """Adapter: ``run_agent`` opens its store by path, so (in this disposable child process
    only) ``ckdb.open`` hands it the harness's store, whose checkpoints fire the hooks."""
    from ckdb import _demo_agent as demo

    real_open = ckdb.open
    ckdb.open = lambda *_a, **_k: _Borrowed(store)  # type: ignore[assignment]
    try:
        result = demo.run_agent("unused", workdir)
    finally:
        ckdb.open = real_open
    return {"completed": result.completed, "total": result.total}


def _without_pid(final: dict[str, Any]) -> dict[str, Any]:
    # The demo agent records its pid in the "agent" component: legitimately different.
    for state in final.get("checkpoints", {}).values():
        if state and isinstance(state.get("agent"), dict):
            state["agent"].pop("pid", None)
    return final


def test_demo_agent_survives_kills(tmp_path: Path) -> None:
    demo = pytest.importorskip("ckdb._demo_agent")
    with _runner(tmp_path, "demo_agent_workflow", normalize=_without_pid) as runner:
        report = runner.run(max_examples=10, max_kills=3, random_kills=3, seed=11)
        reference = runner.reference()
    print(report.summary())
    assert report.ok, report.summary()
    total = len(demo.plan_steps())
    assert reference.result == {"completed": total, "total": total}
    files = {k: v for k, v in reference.final["workdir"].items() if isinstance(v, bytes)}
    assert files == demo.expected_files(total)
    # Two hook points per checkpoint: one per step plus the manual one before the risky phase.
    assert len(report.reference_points) == 2 * (total + 1)
    assert len([k for k in report.kills if k.point is not None]) >= 2 * (total + 1)


def test_docs_example_passes(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "crash_resume"
    for name in ("agent.py", "test_agent.py"):
        (tmp_path / name).write_text((example / name).read_text())
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "ckdb.testing.pytest_plugin",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "3 passed" in proc.stdout, proc.stdout + proc.stderr
