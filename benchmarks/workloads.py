"""Agent-like workloads shared by the benchmark suite (``python -m benchmarks``).

Everything here is deterministic (seeded): every system in a run gets the same state.
"""

from __future__ import annotations

import random
from typing import Any

from ckdb import encoding

_WORDS = (  # noqa: SIM905 - a sentence reads better than a list of 64 literals
    "the agent plan step tool call result file test module function error retry search query "
    "answer user assistant context summary token budget refactor billing invoice customer "
    "database migration schema index latency cache request response review patch diff commit "
    "branch merge deploy rollback metric alert trace span log warning failure success partial "
    "next previous because therefore however update create delete list read write open close"
).split()

TOOLS = ("search", "read_file", "write_file", "run_tests", "shell", "http_get")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + "."


def message(rng: random.Random, i: int) -> dict[str, Any]:
    """One chat message: text, sometimes tool calls, numbers (token counts, scores)."""
    role = ("user", "assistant", "tool")[i % 3]
    msg: dict[str, Any] = {
        "id": f"msg-{i:06d}",
        "role": role,
        "content": " ".join(_sentence(rng, rng.randint(8, 20)) for _ in range(rng.randint(1, 4))),
        "tokens": rng.randint(20, 900),
        "latency_ms": round(rng.uniform(5, 4000), 3),
    }
    if role == "assistant" and rng.random() < 0.6:
        msg["tool_calls"] = [
            {
                "id": f"call-{i}-{k}",
                "name": rng.choice(TOOLS),
                "args": {"q": _sentence(rng, 5), "k": rng.randint(1, 20), "strict": k % 2 == 0},
            }
            for k in range(rng.randint(1, 3))
        ]
    if role == "tool":
        msg["tool_call_id"] = f"call-{i - 1}-0"
        msg["score"] = rng.random()
    return msg


def static_parts(rng: random.Random) -> dict[str, Any]:
    """Components that rarely change: task, agent, configuration (with tool schemas)."""
    return {
        "phase": {"name": "implementation", "entered_at": 1_700_000_000.25, "attempt": 1},
        "task": {
            "id": "task-42",
            "goal": _sentence(rng, 25),
            "acceptance": [_sentence(rng, 12) for _ in range(5)],
            "budget": {"tokens": 2_000_000, "usd": 12.5},
        },
        "agent": {"name": "coder", "model": "some-model-2025", "temperature": 0.2, "seed": 7},
        "configuration": {
            "max_steps": 500,
            "tools": [
                {
                    "name": t,
                    "description": _sentence(rng, 30),
                    "parameters": {
                        p: {"type": "string", "description": _sentence(rng, 8)}
                        for p in ("q", "path", "mode")
                    },
                }
                for t in TOOLS
            ],
        },
    }


def agent_state(target_bytes: int, seed: int = 1) -> dict[str, Any]:
    """A state of about ``target_bytes`` encoded (msgpack): grows the message list."""
    rng = random.Random(seed)
    state = static_parts(rng)
    messages: list[dict[str, Any]] = []
    state["progress"] = {"step": 0, "done": 0, "ratio": 0.0, "costs": []}
    state["messages"] = messages
    base = len(encoding.encode(state))
    size = base
    while size < target_bytes:
        m = message(rng, len(messages))
        messages.append(m)
        size += len(encoding.encode(m)) + 1
    state["progress"] = {
        "step": len(messages),
        "done": len(messages) // 2,
        "ratio": len(messages) / 1000,
        "costs": [round(rng.random(), 6) for _ in range(8)],
    }
    return state


def vary(state: dict[str, Any], step: int) -> dict[str, Any]:
    """A per-step variant (progress changes); shares the big parts with ``state``."""
    out = dict(state)
    out["progress"] = {**state["progress"], "step": step, "ratio": step / 1e6}
    return out


def conversation(steps: int, seed: int = 3) -> list[dict[str, Any]]:
    """A growing agent conversation: one state per step, 1-2 new messages per step; the task,
    agent and configuration components never change."""
    rng = random.Random(seed)
    static = static_parts(rng)
    messages: list[dict[str, Any]] = []
    states = []
    for step in range(steps):
        for _ in range(rng.randint(1, 2)):
            messages.append(message(rng, len(messages)))
        states.append(
            {
                **static,
                "progress": {"step": step, "done": step // 3, "ratio": step / steps},
                "messages": list(messages),
            }
        )
    return states
