"""The readers-writer gate of an environment: transactions hold it shared, a map resize
(``set_mapsize``, which needs no transaction open anywhere in the process) holds it exclusive."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Gate:
    """Readers-writer gate: transactions hold it shared, a map resize holds it exclusive.

    Writer-preferring, so a stream of readers cannot starve a resize.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._waiting = 0
        self._mine = threading.local()  # this thread's shared holds (re-entrant)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        depth = getattr(self._mine, "depth", 0)
        with self._cond:
            # Re-entrant: a thread that already holds the gate (a keyring reload inside a read,
            # a read inside a write function) must not queue behind a waiting resize, which
            # itself waits for this thread's outer hold: that would deadlock.
            while depth == 0 and (self._exclusive or self._waiting):
                self._cond.wait()
            self._shared += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

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
