"""Two parallel LangGraph nodes on CkdbSaver, for the held-writes kill test
(test_langgraph_graph.py::test_a_held_write_lost_to_a_kill_reruns_its_task).

    python langgraph_parallel.py STORE_PATH MODE      (CKDB_LG_PENDING_WRITES picks the saver mode)

``fast`` and ``slow`` run in the same superstep. MODE ``start``: ``slow`` waits until ``fast``'s
write has reached the saver (durable: committed, with_checkpoint: held in memory), writes
``slow-waiting`` to stdout and blocks, so the test kills the process while that write is exactly
where the mode puts it. MODE ``resume``: continue from the last checkpoint; prints the final
state. Every node run appends ``<pid> <name>`` to ``<store>.log`` (fsynced).
"""

from __future__ import annotations

import json
import operator
import os
import sys
import threading
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

import ckdb
from ckdb import encoding
from ckdb.integrations.langgraph import CkdbSaver
from ckdb.tables.langgraph_layout import DB_WRITES

THREAD = {"configurable": {"thread_id": "parallel-1"}}


class State(TypedDict, total=False):
    done: Annotated[list[str], operator.add]


def _say(**obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def _stored_writes(saver: CkdbSaver, node: str) -> int:
    """Pending writes of ``node``'s task committed to the store (a raw read, not through the
    saver, which would commit what it holds first)."""
    n = 0
    with saver.store._env.read() as txn:
        for key, value in txn.range(DB_WRITES):
            doc = encoding.decode(saver._unframe(DB_WRITES, bytes(key), bytes(value)))
            n += node in doc[5]  # [task id, index, channel, type, value, task path]
    return n


def build(log_path: str, saver: CkdbSaver, block: bool, mode: str) -> Any:
    def record(name: str) -> None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {name}\n")
            f.flush()
            os.fsync(f.fileno())

    def fast(state: State) -> State:
        record("fast")
        return {"done": ["fast"]}

    def slow(state: State) -> State:
        record("slow")
        if block:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                arrived = len(saver._pending.held) if mode == "with_checkpoint" else 0
                if mode == "durable":
                    arrived = _stored_writes(saver, "fast")
                if arrived:
                    break
                time.sleep(0.01)
            _say(
                event="slow-waiting",
                held=len(saver._pending.held),
                stored=_stored_writes(saver, "fast"),
            )
            threading.Event().wait()  # killed here
        return {"done": ["slow"]}

    graph = StateGraph(State)
    graph.add_node("fast", fast)
    graph.add_node("slow", slow)
    graph.add_edge(START, "fast")
    graph.add_edge(START, "slow")
    graph.add_edge("fast", END)
    graph.add_edge("slow", END)
    return graph.compile(checkpointer=saver)


def main() -> None:
    path, what = sys.argv[1], sys.argv[2]
    mode = os.environ.get("CKDB_LG_PENDING_WRITES", "durable")
    with ckdb.open(path, retention=None) as store:
        saver = CkdbSaver(store, pending_writes=mode)
        app = build(path + ".log", saver, what == "start", mode)
        out = app.invoke({"done": []} if what == "start" else None, THREAD, durability="sync")
        _say(event="finished", done=sorted(out["done"]))


if __name__ == "__main__":
    main()
