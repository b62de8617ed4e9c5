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

Riding along (``"durable"``): LangGraph submits a task's ``put_writes`` and the step's ``put``
to background threads one after the other, so they run at the same time, each with its own
durable commit. A ``put_writes`` of a namespace where this was seen (:class:`Offers`) offers
its writes instead and waits, up to ``JOIN_WAIT``, for the next ``put`` to commit them in its
own transaction: one commit for both, and the ``put_writes`` still returns only once its writes
are durable. Not taken in time, or the carrying commit failed: it commits alone, as before.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ckdb._env import Env, Txn

MODES = ("durable", "with_checkpoint")
MAX_HELD = 1024  # held functions before a put_writes commits them itself
MAX_HELD_BYTES = 8 << 20
#: how long a durable put_writes waits for a put to carry its writes (seconds)
JOIN_WAIT = 0.02
MAX_NAMESPACES = 4096  # namespaces whose ride-along state is kept

# Offer states
OPEN, TAKEN, COMMITTED, FAILED = range(4)

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


class Offer:
    """One durable ``put_writes`` waiting to ride in a ``put``'s commit."""

    __slots__ = ("apply", "nbytes", "state")

    def __init__(self, apply: Apply, nbytes: int) -> None:
        self.apply = apply
        self.nbytes = nbytes
        self.state = OPEN


class Offers:
    """The open offers of a saver in ``"durable"`` mode, and per namespace whether its
    ``put_writes`` should offer at all.

    A namespace becomes *joinable* when a ``put`` of it starts while one of its ``put_writes`` is
    still running (LangGraph's background threads overlap them), and stops being joinable when
    an offer of it is not taken within ``JOIN_WAIT``. Calls made one after the other (a script,
    or LangGraph waiting for the writes before its ``put``, as it does for delta channels) never
    overlap, so they never wait."""

    __slots__ = ("_cond", "_open", "_spaces")

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open: list[Offer] = []
        self._spaces: dict[bytes, list[int]] = {}  # namespace -> [put_writes running, joinable]

    @contextlib.contextmanager
    def running(self, space: bytes) -> Iterator[bool]:
        """Around a ``put_writes`` of ``space``: yields whether it should offer its writes."""
        with self._cond:
            state = self._spaces.get(space)
            if state is None:
                if len(self._spaces) >= MAX_NAMESPACES:
                    self._spaces = {k: v for k, v in self._spaces.items() if v[0]}
                state = self._spaces[space] = [0, 0]
            state[0] += 1
            joinable = bool(state[1])
        try:
            yield joinable
        finally:
            with self._cond:
                state[0] -= 1

    def saw_put(self, space: bytes) -> None:
        """A ``put`` of ``space`` starts: joinable if one of its ``put_writes`` is running."""
        with self._cond:
            state = self._spaces.get(space)
            if state is not None and state[0]:
                state[1] = 1

    def take(self) -> list[Offer]:
        """Every open offer, for the caller's commit (settle them when it ends)."""
        with self._cond:
            if not self._open:
                return []
            taken, self._open = self._open, []
            for offer in taken:
                offer.state = TAKEN
            return taken

    def settle(self, taken: list[Offer], *, committed: bool) -> None:
        with self._cond:
            for offer in taken:
                offer.state = COMMITTED if committed else FAILED
            self._cond.notify_all()

    def ride(self, apply: Apply, nbytes: int, space: bytes, timeout: float) -> bool:
        """Offer ``apply`` and wait: True once a commit carried it; False if none took it
        within ``timeout`` (it is withdrawn, and ``space`` is no longer joinable) or the commit
        that took it failed: the caller then commits its writes itself."""
        offer = Offer(apply, nbytes)
        with self._cond:
            try:
                self._open.append(offer)
                self._cond.wait_for(lambda: offer.state != OPEN, timeout)
                if offer.state == OPEN:
                    self._open.remove(offer)
                    self._spaces[space][1] = 0
                    return False
                self._cond.wait_for(lambda: offer.state != TAKEN)
            except BaseException:
                # Interrupted while waiting: withdrawn if no commit took it. If one did, it
                # may still commit it (outcome unknown to this caller, as in Env.write).
                if offer.state == OPEN:
                    self._open.remove(offer)
                raise
            return offer.state == COMMITTED


def commit_with(
    write: Callable[..., None],
    held: Held,
    apply: Apply | None,
    estimate: int,
    offers: Offers | None = None,
) -> int:
    """One durable commit of every open offer, everything held, then ``apply`` (if any), in ONE
    transaction. On failure the held functions are held again (``apply`` is not), the offers
    are told (their callers commit them alone) and the error propagates.
    -> the batch number (``Held.wait_for(it + 1)`` waits for this commit and every earlier)."""
    items, nbytes, batch = held.take()
    taken: list[Offer] = []

    def run(txn: Txn) -> None:
        for offer in taken:
            offer.apply(txn)
        for fn in items:
            fn(txn)
        if apply is not None:
            apply(txn)

    committed = False
    try:  # from the take on: taken offers are always settled (their callers wait for it)
        taken = [] if offers is None else offers.take()
        if not items and not taken and apply is None:
            return batch
        write(run, estimate=estimate + nbytes + sum(o.nbytes for o in taken))
        committed = True
    finally:
        held.finish(items, nbytes, batch, committed=committed)
        if taken:
            assert offers is not None
            offers.settle(taken, committed=committed)
    return batch


class Pending:
    """When a saver's pending writes commit: its mode, the writes held (``"with_checkpoint"``)
    and the offers waiting to ride in a ``put``'s commit (``"durable"``)."""

    __slots__ = ("_env", "held", "hold", "offers")

    def __init__(self, env: Env, mode: str) -> None:
        self._env = env  # its write looked up at each commit (tests count the calls)
        self.hold = mode == "with_checkpoint"
        self.held = Held()
        self.offers = Offers()

    def writes(self, apply: Apply, estimate: int, *, regular: bool, space: bytes) -> None:
        """One ``put_writes`` call's rows (``regular``: no special write among them; ``space``:
        their namespace): held, carried by a ``put``'s commit, or committed now with what is
        held (on failure this one is not held: ``put_writes`` raised, nothing of it written)."""
        if self.hold:
            if regular and self.held.fits(estimate):
                self.held.add(apply, estimate)
                return
            commit_with(self._env.write, self.held, apply, estimate)
            return
        with self.offers.running(space) as joinable:
            # Durable: ride in the commit of the put LangGraph runs beside this call, or commit.
            # (Never from inside a write function: the put could not commit until it returned.)
            ride = regular and joinable and not self._env.in_write()
            if not ride or not self.offers.ride(apply, estimate, space, JOIN_WAIT):
                commit_with(self._env.write, self.held, apply, estimate)

    def checkpoint(self, apply: Apply, estimate: int) -> None:
        """A ``put``: one commit of it, the open offers and everything held."""
        commit_with(self._env.write, self.held, apply, estimate, self.offers)

    def flush(self) -> None:
        if self.hold:
            flush(self._env.write, self.held)


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
