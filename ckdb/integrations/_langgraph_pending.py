"""Pending writes held for the next checkpoint's commit (``CkdbSaver(pending_writes=...)``).

``"durable"`` (the default): every ``put_writes`` is its own durable commit, as in LangGraph's
own savers. ``"with_checkpoint"``: a task's regular writes are framed at once but committed in
the transaction of the saver's next ``put`` (one durable commit per step instead of one per task
plus one), or before the next read or other change through this saver, or at :meth:`flush`.
Special writes (errors, interrupts, resumes, scheduled) are never held: they commit at once,
together with whatever is held. What a crash can cost: the regular writes held since the last
commit. LangGraph then finds the step's checkpoint without them and runs those tasks again,
as it does for tasks that had not finished (docs/langgraph.md, "Durability of pending writes").
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ckdb._env import Txn

MODES = ("durable", "with_checkpoint")
MAX_HELD = 1024  # held functions before a put_writes commits them itself
MAX_HELD_BYTES = 8 << 20

Apply = Callable[[Txn], None]


class Held:
    """Thread-safe list of held write functions and the bytes they will write."""

    __slots__ = ("_bytes", "_items", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Apply] = []
        self._bytes = 0

    def add(self, apply: Apply, nbytes: int) -> bool:
        """Hold one; True if the caller should commit everything held now (over the bounds)."""
        with self._lock:
            self._items.append(apply)
            self._bytes += nbytes
            return len(self._items) >= MAX_HELD or self._bytes >= MAX_HELD_BYTES

    def take(self) -> tuple[list[Apply], int]:
        with self._lock:
            items, nbytes = self._items, self._bytes
            self._items, self._bytes = [], 0
            return items, nbytes

    def give_back(self, items: list[Apply], nbytes: int) -> None:
        """A commit that carried ``items`` failed: hold them again, first (order kept)."""
        if items:
            with self._lock:
                self._items[:0] = items
                self._bytes += nbytes

    def __len__(self) -> int:
        return len(self._items)


def commit_with(write: Callable[..., None], held: Held, apply: Apply | None, estimate: int) -> None:
    """One durable commit of everything held, then ``apply`` (if any), in ONE transaction.
    On failure the held functions are held again and the error propagates."""
    items, nbytes = held.take()
    if not items and apply is None:
        return

    def run(txn: Txn) -> None:
        for fn in items:
            fn(txn)
        if apply is not None:
            apply(txn)

    try:
        write(run, estimate=estimate + nbytes)
    except BaseException:
        held.give_back(items, nbytes)
        raise
