"""What runs inside the workflow's process: hook points, the Store proxy and side effects.

A hook point is a named event with a per-process occurrence count: ``("after-checkpoint", 3)``
is the third checkpoint this process committed. The harness gives the process at most one point
to die at; when it fires, the process records it in its trace file and SIGKILLs itself, so the
kill lands at exactly that point and a schedule can be replayed.

Outside the harness (in production) every hook is a no-op: :class:`Effects` without hooks and the
module-level :func:`side_effect` / :func:`kill_point` cost a function call.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ckdb.store import Store

__all__ = [
    "AFTER_CHECKPOINT",
    "AFTER_EFFECT",
    "BEFORE_CHECKPOINT",
    "BEFORE_EFFECT",
    "Effects",
    "HookedStore",
    "Hooks",
    "kill_point",
    "side_effect",
]

BEFORE_CHECKPOINT = "before-checkpoint"
AFTER_CHECKPOINT = "after-checkpoint"
BEFORE_EFFECT = "before-effect"
AFTER_EFFECT = "after-effect"
POINT_PREFIX = "point:"


class Hooks:
    """Counts hook occurrences, appends each to a trace file, and kills the process at the one
    occurrence it was told to (``kill_at``). The trace is flushed line by line: the page cache
    outlives a SIGKILL, so the parent reads every point that fired before the kill."""

    def __init__(
        self, trace: IO[str] | None = None, kill_at: tuple[str, int] | None = None
    ) -> None:
        self._trace = trace
        self._kill_at = kill_at
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def fire(self, hook: str, detail: str = "") -> int:
        """Record one occurrence of ``hook``; die here if this is the scheduled point."""
        with self._lock:
            n = self._counts.get(hook, 0) + 1
            self._counts[hook] = n
            kill = self._kill_at == (hook, n)
            self._write({"hook": hook, "n": n, "detail": detail, "kill": kill})
            if kill:
                os.kill(os.getpid(), signal.SIGKILL)
        return n

    def kill_now(self, why: str) -> None:
        """Die now (random-time kills): record the reason, then SIGKILL."""
        with self._lock:
            self._write({"random": why})
            os.kill(os.getpid(), signal.SIGKILL)

    def _write(self, record: dict[str, Any]) -> None:
        if self._trace is not None:
            self._trace.write(json.dumps(record) + "\n")
            self._trace.flush()


_NO_HOOKS = Hooks()
_active: Effects | None = None


class Effects:
    """Side effects of a workflow, made visible to the harness.

    ``directory`` is the workflow's "outside world": what lands there (an append-only log, an
    outbox of sent messages) is part of the final state the harness compares with an
    uninterrupted run. Wrap each side effect in :meth:`side_effect` so the harness can kill the
    process just before and just after it; :meth:`point` adds a named kill point anywhere (for
    example inside a multi-step effect). Outside the harness, ``Effects(directory)`` only performs
    the effects.
    """

    def __init__(self, directory: str | os.PathLike[str], hooks: Hooks | None = None) -> None:
        self.directory = Path(directory)
        self._hooks = hooks or _NO_HOOKS

    @contextmanager
    def side_effect(self, name: str) -> Iterator[None]:
        """Fire ``before-effect`` on entry and ``after-effect`` when the block completes."""
        self._hooks.fire(BEFORE_EFFECT, name)
        yield
        self._hooks.fire(AFTER_EFFECT, name)

    def point(self, name: str) -> None:
        """A named kill point: hook ``"point:<name>"``."""
        self._hooks.fire(POINT_PREFIX + name, name)

    def append(self, name: str, line: str, *, once: bool = False) -> bool:
        """Append ``line`` to the log file ``directory/name`` as one side effect.

        ``once=True`` makes the effect idempotent (the line itself is the idempotency key, as a
        payment API's request id is): a line already in the log is not appended again. Returns
        whether the line was appended. One ``write`` of the whole line under ``O_APPEND``.
        """
        if "\n" in line:
            raise ValueError("a log line must not contain a newline")
        path = self.directory / name
        with self.side_effect(name):
            if once and line in self.read(name):
                return False
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode("utf-8"))
            finally:
                os.close(fd)
            return True

    def read(self, name: str) -> list[str]:
        """The lines of the log ``directory/name`` (empty if it does not exist)."""
        path = self.directory / name
        if not path.exists():
            return []
        return path.read_text("utf-8").splitlines()


@contextmanager
def side_effect(name: str) -> Iterator[None]:
    """Mark a side effect in code that has no :class:`Effects` at hand: the same hook points as
    :meth:`Effects.side_effect` when run under the harness, nothing otherwise."""
    if _active is None:
        yield
        return
    with _active.side_effect(name):
        yield


def kill_point(name: str) -> None:
    """A named kill point (hook ``"point:<name>"``) when run under the harness; else nothing."""
    if _active is not None:
        _active.point(name)


def activate(effects: Effects | None) -> None:
    global _active
    _active = effects


class HookedStore:
    """A :class:`ckdb.Store` whose ``create`` fires ``before-checkpoint`` and
    ``after-checkpoint`` around the real call (``after`` only once the checkpoint is durable).
    Everything else is the store's own attribute."""

    def __init__(self, store: Store, hooks: Hooks) -> None:
        self._store = store
        self._hooks = hooks

    def create(self, workflow_id: str, phase: str, **kwargs: Any) -> Any:
        self._hooks.fire(BEFORE_CHECKPOINT, phase)
        info = self._store.create(workflow_id, phase, **kwargs)
        self._hooks.fire(AFTER_CHECKPOINT, phase)
        return info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def __repr__(self) -> str:
        return f"HookedStore({self._store!r})"
