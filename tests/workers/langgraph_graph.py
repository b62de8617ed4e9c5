"""A real LangGraph graph on CkdbSaver, for the SIGKILL/resume test (test_langgraph_graph.py).

    python langgraph_graph.py STORE_PATH MODE

MODE ``start``: invoke the graph on a fresh thread; the ``work`` node writes ``work-started`` to
stdout and then blocks forever, so the test kills the process inside the node.
MODE ``resume``: invoke with no input (continue from the last checkpoint); the graph stops at
the ``review`` node's interrupt; prints the interrupt value.
MODE ``approve``: resume the interrupt with ``Command(resume="approved")``; prints the final state.

Every node appends its name to ``<store>.log`` (fsynced) before returning, so the test can tell
which nodes ran in which process. Output: one JSON object per line, flushed.
"""

from __future__ import annotations

import json
import operator
import os
import sys
import threading
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

import ckdb
from ckdb.integrations.langgraph import CkdbSaver

THREAD = {"configurable": {"thread_id": "conversation-1"}}


class State(TypedDict, total=False):
    topic: str
    steps: Annotated[list[str], operator.add]
    plan: str
    draft: str
    verdict: str


def _say(**obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def build(log_path: str, block_in_work: bool) -> StateGraph[State]:
    def record(name: str) -> None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {name}\n")
            f.flush()
            os.fsync(f.fileno())

    def plan(state: State) -> State:
        record("plan")
        return {"plan": f"outline for {state['topic']}", "steps": ["plan"]}

    def work(state: State) -> State:
        record("work")
        if block_in_work:
            _say(event="work-started", pid=os.getpid())
            threading.Event().wait()  # the test SIGKILLs us here
        return {"draft": state["plan"].upper(), "steps": ["work"]}

    def review(state: State) -> State:
        answer = interrupt({"question": "approve the draft?", "draft": state["draft"]})
        record("review")
        return {"verdict": str(answer), "steps": [f"review:{answer}"]}

    def finish(state: State) -> State:
        record("finish")
        return {"steps": ["finish"]}

    g: StateGraph[State] = StateGraph(State)
    g.add_node("plan", plan)
    g.add_node("work", work)
    g.add_node("review", review)
    g.add_node("finish", finish)
    g.add_edge(START, "plan")
    g.add_edge("plan", "work")
    g.add_edge("work", "review")
    g.add_edge("review", "finish")
    g.add_edge("finish", END)
    return g


def main(argv: list[str]) -> int:
    path, mode = argv[1], argv[2]
    log_path = path + ".log"
    with ckdb.open(path, retention=None) as store:
        saver = CkdbSaver(store, pending_writes=os.environ.get("CKDB_LG_PENDING_WRITES", "durable"))
        graph = build(log_path, block_in_work=mode == "start").compile(checkpointer=saver)
        if mode == "start":
            graph.invoke({"topic": "ckdb", "steps": []}, THREAD, durability="sync")
            _say(event="unexpected-return")
            return 1
        if mode == "resume":
            out = graph.invoke(None, THREAD, durability="sync")
            interrupts = [i.value for i in out.get("__interrupt__", [])]
            _say(event="interrupted", interrupts=interrupts, steps=out.get("steps"))
            return 0
        if mode == "approve":
            out = graph.invoke(Command(resume="approved"), THREAD, durability="sync")
            snapshot = graph.get_state(THREAD)
            _say(event="done", state=dict(out), next=list(snapshot.next))
            return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
