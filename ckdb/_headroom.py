"""Headroom: data.mdb kept written (with zeros) a little past LMDB's last page.

A commit that appends pages past the end of the file changes its size and block map, so its
``fdatasync`` also commits the file system's journal; a commit into blocks already allocated
and written flushes data only (measured: docs/performance.md, "What changed in 0.4.1"). Kept
only while commits grow the store by little on average: the zeros are a second write of every
byte the store grows by. The byte-level rules are in docs/format.md ("One environment").

The zeros are written only past LMDB's last page, inside an empty LMDB write transaction: the
writer lock keeps every process from writing pages meanwhile, and no reader reads past the last
page of its snapshot. A failure changes nothing a reader or writer sees.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckdb.errors import StoreFull

HEADROOM_MIN = 1 << 20
HEADROOM_MAX = 16 << 20
HEADROOM_FRACTION = 16  # the headroom kept: this fraction of the pages in use, clamped
HEADROOM_MAX_GROWTH = 64 << 10  # average growth per commit above which no headroom is kept
HEADROOM_RETRY_SECONDS = 60.0  # after a failure (disk nearly full, an I/O error)
FILL_STEP = 2 << 20  # zeros written by one fill at most: bounds the wait of queued writers
_ZEROS = bytes(1 << 20)


def target(used: int) -> int:
    """The headroom kept past ``used`` bytes of pages."""
    return min(HEADROOM_MAX, max(HEADROOM_MIN, used // HEADROOM_FRACTION))


class Headroom:
    """The headroom of one environment's data file. Called by the committing leader only
    (``due``) and under the environment's write lock (``extend``)."""

    def __init__(self, data_file: Path, page_size: int, *, writable: bool) -> None:
        self.data_file = data_file
        self.page_size = page_size
        self.max_growth = HEADROOM_MAX_GROWTH  # -1: no headroom (side-by-side measurements)
        self.file_end = 0  # where data.mdb ends, as last seen (another process may extend it)
        self._fd: int | None = None  # data.mdb, written only by extend
        self._ident: tuple[int, int] | None = None  # its (device, inode) when opened
        self._last_used = -1  # bytes of pages after the last commit (-1: not seen yet)
        self._growth = float(HEADROOM_MAX_GROWTH)  # moving average of one commit's growth
        self._after = 0.0  # monotonic time before which nothing is written
        if writable:
            # Opened with the environment, not later by path: a data.mdb replaced meanwhile
            # (a compacted copy moved in) is another file, which extend then leaves alone.
            with contextlib.suppress(OSError):
                self._fd = os.open(data_file, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
                st = os.fstat(self._fd)
                self._ident = (st.st_dev, st.st_ino)

    def due(self, last_pgno: int) -> bool:
        """After a commit whose environment now ends at page ``last_pgno``: is the written end
        of data.mdb getting close, while commits grow the store by little?"""
        used = (last_pgno + 1) * self.page_size
        last, self._last_used = self._last_used, used
        if last < 0 or self._fd is None:
            return False  # the first commit seen (no growth measured yet), or no descriptor
        self._growth = 0.875 * self._growth + 0.125 * max(0, used - last)
        if self._growth > self.max_growth or self.file_end - used >= target(used) // 2:
            return False
        return time.monotonic() >= self._after

    def extend(self, env: Any, check_disk: Callable[[int], None]) -> None:
        """Write zeros from data.mdb's end towards the target past LMDB's last page (at most
        FILL_STEP per call), then fdatasync, inside an empty write transaction of ``env``.
        Raises only LMDB's own errors (the caller, which owns LMDB, calls ``pause``): headroom
        is only speed, and a failure (e.g. a nearly full disk) turns it off for
        HEADROOM_RETRY_SECONDS."""
        fd = self._fd
        if fd is None:
            return
        try:
            st = os.stat(self.data_file)
            if (st.st_dev, st.st_ino) != self._ident:
                self.close()  # data.mdb was replaced: not this environment's file any more
                return
            txn = env.begin(write=True)
            try:
                info = env.info()
                used = (int(info["last_pgno"]) + 1) * self.page_size
                size = os.fstat(fd).st_size
                start = max(size, used)
                end = min(used + target(used), int(info["map_size"]), start + FILL_STEP)
                if end > start:
                    check_disk(end - start)  # StoreFull: no headroom for now
                    try:
                        for off in range(start, end, len(_ZEROS)):
                            os.pwrite(fd, _ZEROS[: min(len(_ZEROS), end - off)], off)
                        getattr(os, "fdatasync", os.fsync)(fd)
                    except OSError:
                        # Give back what was written past the old end (never a used page).
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, start)
                        raise
                self.file_end = max(size, end)
                if end == int(info["map_size"]) and self.file_end - used < target(used) // 2:
                    self.pause()  # the map ends first: wait for it to grow
            finally:
                txn.abort()
        except (OSError, StoreFull):
            self.pause()

    def pause(self) -> None:
        """Write nothing for HEADROOM_RETRY_SECONDS."""
        self._after = time.monotonic() + HEADROOM_RETRY_SECONDS

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
