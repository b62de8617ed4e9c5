"""Pending writes held for the next checkpoint's commit (``CkdbSaver(pending_writes=...)``).

``"durable"`` (the default): every ``put_writes`` is its own durable commit, as in LangGraph's
own savers. ``"with_checkpoint"``: a task's regular writes are framed at once but committed in
the transaction of the saver's next ``put`` (one durable commit per step instead of one per task
plus one), or before the next read or other change through this saver (which also waits for a
commit another thread took them into), at :meth:`flush`, or when the store closes.
Special writes (errors, interrupts, resumes, scheduled) are never held: they commit at once,
together with whatever is held. What a crash can cost: the regular writes held since the last
commit. LangGraph then finds the step's checkpoint without them and runs those tasks again,
as it does for tasks that had not finished (docs/langgraph.md, "Durability of pending writes").
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from ckdb._env import Txn

MODES = ("durable", "with_checkpoint")
MAX_HELD = 1024  # held functions before a put_writes commits them itself
MAX_HELD_BYTES = 8 << 20

Apply = Callable[[Txn], None]


class Held:
    """Thread-safe list of held write functions and the bytes they will write, and the batches
    taken from it that are still being committed (so that a reader can wait for them)."""

    __slots__ = ("_bytes", "_cond", "_items", "_next_batch", "_unfinished")

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[Apply] = []
        self._bytes = 0
        self._next_batch = 0
        self._unfinished: set[int] = set()

    def fits(self, nbytes: int) -> bool:
        """Would holding one more function of ``nbytes`` stay within the bounds?"""
        with self._cond:
            return len(self._items) + 1 < MAX_HELD and self._bytes + nbytes < MAX_HELD_BYTES

    def add(self, apply: Apply, nbytes: int) -> None:
        with self._cond:
            self._items.append(apply)
            self._bytes += nbytes

    def take(self) -> tuple[list[Apply], int, int]:
        """Everything held, as a batch being committed: (functions, bytes, batch number)."""
        with self._cond:
            items, nbytes = self._items, self._bytes
            self._items, self._bytes = [], 0
            batch = self._next_batch
            self._next_batch += 1
            if items:
                self._unfinished.add(batch)
            return items, nbytes, batch

    def finish(self, items: list[Apply], nbytes: int, batch: int, *, committed: bool) -> None:
        """A batch's commit ended. Not committed: its functions are held again, first (order
        kept)."""
        with self._cond:
            if not committed and items:
                self._items[:0] = items
                self._bytes += nbytes
            self._unfinished.discard(batch)
            self._cond.notify_all()

    def wait_for(self, batch: int) -> None:
        """Until every batch taken before ``batch`` has finished committing."""
        with self._cond:
            while any(b < batch for b in self._unfinished):
                self._cond.wait()

    def __len__(self) -> int:
        return len(self._items)


def commit_with(write: Callable[..., None], held: Held, apply: Apply | None, estimate: int) -> int:
    """One durable commit of everything held, then ``apply`` (if any), in ONE transaction.
    On failure the held functions are held again (``apply`` is not) and the error propagates.
    -> the batch number (``Held.wait_for(it + 1)`` waits for this commit and every earlier)."""
    items, nbytes, batch = held.take()
    if not items and apply is None:
        return batch

    def run(txn: Txn) -> None:
        for fn in items:
            fn(txn)
        if apply is not None:
            apply(txn)

    committed = False
    try:
        write(run, estimate=estimate + nbytes)
        committed = True
    finally:
        held.finish(items, nbytes, batch, committed=committed)
    return batch


def flush(write: Callable[..., None], held: Held) -> None:
    """Commit what is held, and wait for the commits other threads took held functions into:
    after it, every ``put_writes`` that returned before it began is durable (or this raised)."""
    batch = commit_with(write, held, None, 0)
    held.wait_for(batch + 1)
    if len(held):  # another thread's commit failed and gave its functions back: commit them
        batch = commit_with(write, held, None, 0)
        held.wait_for(batch + 1)


def flush_if_alive(flush: weakref.WeakMethod[Any]) -> None:
    """A store's close hook: flush the saver's held writes, if the saver still exists."""
    method = flush()
    if method is not None:
        method()
