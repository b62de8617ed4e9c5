"""End to end: a real LangGraph graph (four nodes, an interrupt) on CkdbSaver, in a subprocess
that is SIGKILLed inside a node, then resumed from the store by fresh processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.graph")

import ckdb
from ckdb.integrations.langgraph import CkdbSaver

WORKER = Path(__file__).parent / "workers" / "langgraph_graph.py"
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}


def _run(path: Path, mode: str, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(path), mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _log(path: Path) -> list[tuple[int, str]]:
    lines = Path(str(path) + ".log").read_text().split()
    return [(int(lines[i]), lines[i + 1]) for i in range(0, len(lines), 2)]


@pytest.mark.parametrize("pending_writes", ["durable", "with_checkpoint"])
def test_graph_killed_mid_node_then_resumed(tmp_path: Path, pending_writes: str) -> None:
    path = tmp_path / "graph.ckdb"
    env = {**ENV, "CKDB_LG_PENDING_WRITES": pending_writes}
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(path), "start"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the work node runs (or the worker dies)
        assert json.loads(line)["event"] == "work-started", (
            proc.stderr.read() if proc.stderr else ""
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_pid = proc.pid

    # What the killed run left: the checkpoint after "plan", with "work" still to run.
    with ckdb.open(path, retention=None) as store:
        tup = CkdbSaver(store).get_tuple({"configurable": {"thread_id": "conversation-1"}})
        assert tup is not None
        assert tup.checkpoint["channel_values"]["steps"] == ["plan"]
        assert tup.metadata["step"] == 1

    interrupted = _run(path, "resume", env)
    assert interrupted["event"] == "interrupted"
    assert interrupted["interrupts"] == [
        {"question": "approve the draft?", "draft": "OUTLINE FOR CKDB"}
    ]
    assert interrupted["steps"] == ["plan", "work"]

    done = _run(path, "approve", env)
    assert done["event"] == "done"
    assert done["next"] == []
    assert done["state"]["steps"] == ["plan", "work", "review:approved", "finish"]
    assert done["state"]["verdict"] == "approved"
    assert done["state"]["draft"] == "OUTLINE FOR CKDB"

    log = _log(path)
    # plan ran once, in the killed process; work started there, was killed, and ran again
    # after the resume; review and finish ran once each, after approval.
    assert [n for p, n in log if p == killed_pid] == ["plan", "work"]
    assert [n for _p, n in log] == ["plan", "work", "work", "review", "finish"]

    # History: every step's checkpoint is listed, newest first, and verifies.
    with ckdb.open(path, retention=None) as store:
        saver = CkdbSaver(store)
        history = list(saver.list({"configurable": {"thread_id": "conversation-1"}}))
        steps = [t.metadata["step"] for t in history]
        assert steps == sorted(steps, reverse=True)
        assert steps[-1] == -1


PARALLEL = Path(__file__).parent / "workers" / "langgraph_parallel.py"


@pytest.mark.parametrize(("pending_writes", "fast_runs"), [("durable", 1), ("with_checkpoint", 2)])
def test_a_held_write_lost_to_a_kill_reruns_its_task(
    tmp_path: Path, pending_writes: str, fast_runs: int
) -> None:
    """Two parallel nodes; the process is SIGKILLed after ``fast`` finished and while ``slow``
    runs. Durable: fast's write was committed, so the resume runs only ``slow``. with_checkpoint:
    fast's write was only held, so the kill costs exactly what docs/langgraph.md says: ``fast``
    runs again. The final state is the same either way."""
    path = tmp_path / "parallel.ckdb"
    env = {**ENV, "CKDB_LG_PENDING_WRITES": pending_writes}
    proc = subprocess.Popen(
        [sys.executable, str(PARALLEL), str(path), "start"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        waiting = json.loads(line) if line else {}
        assert waiting.get("event") == "slow-waiting", proc.stderr.read() if proc.stderr else ""
        # Where the mode put fast's write at the moment of the kill.
        if pending_writes == "durable":
            assert (waiting["held"], waiting["stored"]) == (0, 1)
        else:
            assert (waiting["held"], waiting["stored"]) == (1, 0)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # also when an assertion above failed
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    resumed = subprocess.run(
        [sys.executable, str(PARALLEL), str(path), "resume"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == {
        "event": "finished",
        "done": ["fast", "slow"],
    }
    runs = [name for _pid, name in _log(path)]
    assert runs.count("fast") == fast_runs
    assert runs.count("slow") == 2  # killed once, then finished


@pytest.mark.parametrize("pending_writes", ["durable", "with_checkpoint"])
def test_interrupts_are_stored_with_the_default_durability(
    tmp_path: Path, pending_writes: str
) -> None:
    """With LangGraph's default durability ("async") a node's interrupt is written while its
    checkpoint's put may still be running. Found in review: CkdbSaver dropped it (as if
    retention had deleted the checkpoint), in about every run, so ``get_state`` showed no
    interrupt. Every thread's interrupt must be stored and the resume must see its answer."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt

    class State(TypedDict, total=False):
        x: int
        answer: str

    def step(state: State) -> State:
        return {"x": state["x"] + 1}

    def ask(state: State) -> State:
        return {"answer": interrupt("question?")}

    graph = StateGraph(State)
    graph.add_node("step", step)
    graph.add_node("ask", ask)
    graph.add_edge(START, "step")
    graph.add_edge("step", "ask")
    graph.add_edge("ask", END)
    with CkdbSaver.from_path(tmp_path / "s", pending_writes=pending_writes) as saver:
        app = graph.compile(checkpointer=saver)
        for i in range(20):
            config: Any = {"configurable": {"thread_id": f"t{i}"}}
            app.invoke({"x": 0}, config)  # LangGraph's default durability
            state = app.get_state(config)
            assert [it.value for t in state.tasks for it in t.interrupts] == ["question?"]
            assert app.invoke(Command(resume=f"yes {i}"), config)["answer"] == f"yes {i}"
