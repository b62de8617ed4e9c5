"""The readers-writer gate of an environment: transactions hold it shared, a map resize
(``set_mapsize``, which needs no transaction open anywhere in the process) holds it exclusive."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from types import TracebackType


class Gate:
    """Readers-writer gate: transactions hold it shared, a map resize holds it exclusive.

    Writer-preferring, so a stream of readers cannot starve a resize.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._shared = 0
        self._exclusive = False
        self._waiting = 0
        self._mine = threading.local()  # this thread's shared holds (re-entrant)
        self._hold = _SharedHold(self)

    def shared(self) -> _SharedHold:
        """A shared hold, as a context manager (``with gate.shared(): ...``).

        A class rather than a generator context manager: every transaction takes it, and the
        generator form cost 1.7-2.5x as much per use (micro benchmark,
        side by side)."""
        return self._hold

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class _SharedHold:
    """``Gate.shared``'s context manager. It keeps no state of its own (a thread's depth lives
    in the gate's thread-local), so one instance serves every thread and every nesting."""

    __slots__ = ("_gate",)

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def __enter__(self) -> None:
        gate = self._gate
        mine = gate._mine
        depth = getattr(mine, "depth", 0)
        with gate._lock:
            # Re-entrant: a thread that already holds the gate (a keyring reload inside a read,
            # a read inside a write function) must not queue behind a waiting resize, which
            # itself waits for this thread's outer hold: that would deadlock.
            while depth == 0 and (gate._exclusive or gate._waiting):
                gate._cond.wait()
            gate._shared += 1
        mine.depth = depth + 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        gate = self._gate
        gate._mine.depth -= 1
        with gate._lock:
            gate._shared -= 1
            if not gate._shared and gate._waiting:  # only a resize waits for the count
                gate._cond.notify_all()
