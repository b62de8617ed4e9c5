"""The ckdb error hierarchy: one root, one exit code per class.

Every error ckdb raises on purpose is a :class:`CkdbError`. Classes that a caller would naturally
catch as a builtin also inherit it (``CheckpointNotFound`` is a ``KeyError``, ``InvalidInput`` a
``ValueError``), as attrs' ``FrozenError`` is an ``AttributeError``.

Exit code 1 is reserved for "the command ran, and found problems" (validation, scrub); 0 is
success. ``tests/test_errors.py`` checks that codes are unique and that ``docs/errors.md`` lists
every class.
"""

from __future__ import annotations

from typing import ClassVar


class CkdbError(Exception):
    """Root of every error ckdb raises on purpose."""

    exit_code: ClassVar[int] = 2

    def __str__(self) -> str:
        # KeyError.__str__ quotes its argument; every ckdb error prints its message plainly.
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidInput(CkdbError, ValueError):
    """An argument is malformed or out of range. Nothing was written."""

    exit_code = 3


class CheckpointNotFound(CkdbError, KeyError):
    """No checkpoint has this id (or the id is malformed)."""

    exit_code = 4


class WorkflowNotFound(CheckpointNotFound):
    """No workflow has this id."""

    exit_code = 5


class StoreNotFound(CkdbError, FileNotFoundError):
    """There is no store at this path and it may not be created (read-only open)."""

    exit_code = 6


class IntegrityError(CkdbError):
    """A stored value failed verification: its tag, its digest or a cross-reference.

    A corrupt record is an error, never data.
    """

    exit_code = 7


class FormatError(CkdbError):
    """The path holds something that is not a ckdb store, or a damaged store header."""

    exit_code = 8


class UnsupportedVersion(FormatError):
    """The store was written by a newer ckdb (format version or mandatory feature)."""

    exit_code = 9


class WrongKey(CkdbError):
    """The master key does not open this store (or no key was found)."""

    exit_code = 10


class StoreFull(CkdbError):
    """The disk cannot hold this write. Nothing was written, unless the message says the outcome
    is uncertain (the disk filled up while the commit itself was being synced)."""

    exit_code = 11


class StoreLocked(CkdbError):
    """The store is already open in this process, or locked against this operation."""

    exit_code = 12


class StoreClosed(CkdbError):
    """The store was closed, or is being used in a process forked after it was opened."""

    exit_code = 13


class ReadOnlyStore(CkdbError):
    """A write was attempted on a store opened with ``readonly=True``."""

    exit_code = 14


class StorageError(CkdbError):
    """The storage engine or the operating system failed (I/O error, LMDB panic)."""

    exit_code = 15


class RestoreFailed(CkdbError):
    """A registered state restorer failed (resource restorer failures are warnings instead)."""

    exit_code = 16


class RemoteError(CkdbError):
    """The remote (object storage) could not be reached or answered unusably, after retries.
    Local checkpoints are never lost to it: they are shipped when the remote answers again."""

    exit_code = 17


class Fenced(RemoteError):
    """Another host took this workflow over (a higher ownership epoch in the remote): this store
    no longer ships it, and ``create`` for it is refused so that a zombie agent stops instead of
    forking the workflow's history. ``take_over`` makes this store the owner again."""

    exit_code = 18


class RemoteUnsafe(RemoteError):
    """The object store does not honour create-only writes (``If-None-Match: *``), which the
    remote protocol needs to keep one owner per workflow; nothing was written."""

    exit_code = 19


def all_errors() -> list[type[CkdbError]]:
    """Every error class, root first, in definition order (used by the docs and the CLI)."""
    seen: list[type[CkdbError]] = []

    def walk(cls: type[CkdbError]) -> None:
        if cls not in seen:
            seen.append(cls)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(CkdbError)
    return seen
