"""``ckdb demo`` end to end, and the demo agent as a reusable crash-resume subject."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ckdb
from ckdb import _demo_agent as agent
from ckdb.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent


def test_demo_in_process(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_demo(tmp_path / "demo", out=lines.append) == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "FAILED" not in text
    assert "returncode -9" in text
    assert "resuming at refactor/2" in text
    assert "restore_latest skipped #" in text
    assert "dedup ratio" in text
    assert lines[-1] == "demo finished: every step behaved."


def test_demo_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    with pytest.raises(ckdb.InvalidInput):
        run_demo(tmp_path)


def test_demo_command_as_a_process(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "ckdb", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every step behaved" in proc.stdout
    assert proc.stderr == ""
    # The temporary directory is gone and no default store was created.
    assert not (tmp_path / "data").exists()


def test_agent_runs_to_completion_and_is_idempotent(tmp_path: Path) -> None:
    store, work = tmp_path / "s.ckdb", tmp_path / "w"
    first = agent.run_agent(store, work)
    assert first.done and first.resumed_from is None
    assert len(first.checkpoints) == first.total + 1  # + the manual one
    assert agent.read_tree(work) == agent.expected_files(first.total)
    again = agent.run_agent(store, work)
    assert again.done and again.resumed_from == first.checkpoints[-1] and not again.checkpoints


class _Crash(Exception):
    pass


@pytest.mark.parametrize("hold", agent.plan_steps())
def test_agent_resumes_after_a_crash_at_any_step(tmp_path: Path, hold: tuple[str, int]) -> None:
    store, work = tmp_path / "s.ckdb", tmp_path / "w"

    def crash() -> None:
        raise _Crash

    with pytest.raises(_Crash):
        agent.run_agent(store, work, hold_at=hold, on_hold=crash)
    assert "scratch.tmp" in agent.read_tree(work)
    result = agent.run_agent(store, work)
    index = agent.plan_steps().index(hold)
    assert result.done and result.resumed_at == index
    assert agent.read_tree(work) == agent.expected_files(result.total)


def test_agent_skips_a_damaged_checkpoint(tmp_path: Path) -> None:
    from ckdb.layout import DB_PAYLOADS, RecordType

    store_path, work = tmp_path / "s.ckdb", tmp_path / "w"
    first = agent.run_agent(store_path, work)
    newest = first.checkpoints[-1]
    with ckdb.open(store_path) as store:
        key = store._payload_address(newest, RecordType.COMPONENT, "progress")
        with store._env.read() as txn:
            value = bytearray(txn.get(DB_PAYLOADS, key) or b"")
        value[-1] ^= 1
        store._env.write(lambda txn: txn.put(DB_PAYLOADS, key, bytes(value)))
    again = agent.run_agent(store_path, work)
    assert [cid for cid, _ in again.skipped] == [newest]
    assert again.resumed_at == first.total - 1 and again.done
    assert agent.read_tree(work) == agent.expected_files(first.total)


def test_agent_uses_a_given_open_store(tmp_path: Path) -> None:
    with ckdb.open(tmp_path / "s.ckdb") as store:
        result = agent.run_agent("unused", tmp_path / "w", store=store)
        assert result.done and not store.closed
        assert len(store.list(agent.WORKFLOW)) == result.total + 1


def test_fleet_demo_in_process(tmp_path: Path) -> None:
    from ckdb.demo_fleet import run_fleet_demo

    lines: list[str] = []
    assert run_fleet_demo(tmp_path / "fleet", out=lines.append) == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "FAILED" not in text
    assert "returncode -9" in text
    assert "resuming at refactor/2" in text
    assert "B owns demo-agent under epoch 2" in text
    assert "its next create raised Fenced" in text
    assert lines[-1] == "fleet demo finished: every step behaved."
