"""The LMDB environment. The only module that imports ``lmdb``; it translates its errors.

Facts this module is built around (measured here, see ARCHITECTURE.md §4):

- ``sync=True, metasync=True, writemap=False, map_async=False``. ``sync=False`` and ``writemap``
  corrupt stores under simulated power loss, so they are never offered (``_unsafe_nosync`` exists
  only for the power-loss harness's negative control).
- The map size only reserves address space. On ``MapFullError`` the write is aborted, the map is
  grown at a process-wide gate once every transaction of this environment has ended
  (``set_mapsize`` needs that), and the whole write is run again.
- One environment per path per process; never used across ``fork()``.
- A new environment's first meta pages are not fsynced by LMDB: stores are created in a temporary
  directory, fsynced, renamed into place, and the parent directory fsynced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import lmdb

# Everything ckdb needs is imported when ckdb is: py-lmdb 3 imports this submodule the first time
# an environment opens, and a process that opens its store only after dropping privileges (a
# capture or restore run as another user) may no longer be able to read the virtual environment
# (issue 17: a checkout under a 0700 directory). tests/test_lazy_imports.py checks that a whole
# store's life imports nothing more once ckdb is imported.
import lmdb._envid
from lmdb import verify as lmdb_verify

from ckdb._gate import Gate
from ckdb._headroom import Headroom
from ckdb.errors import (
    CkdbError,
    FormatError,
    ReadOnlyStore,
    StorageError,
    StoreClosed,
    StoreFull,
    StoreLocked,
)
from ckdb.layout import ALL_DBS, MAX_DBS, OPTIONAL_DBS, prefix_end

T = TypeVar("T")

DEFAULT_MAP_SIZE = 1 << 30  # 1 GiB of address space to start; grows on demand
MAX_MAP_SIZE = 1 << 44  # 16 TiB
DISK_MARGIN = 16 << 20  # keep this much free beyond what a write needs
DISK_CHECK_SECONDS = 0.5
MAX_WRITE_RETRIES = 64

_open_lock = threading.RLock()  # reentrant: closing an inherited env happens under it
_open_envs: dict[tuple[int, int], Env] = {}


def translate(err: Exception, what: str, *, uncertain: bool = False) -> CkdbError:
    """An lmdb or OS error as the ckdb error a caller can act on. ``uncertain``: the error came
    from a commit's sync, so the write may or may not be durable (never say "nothing written")."""
    text = str(err)
    if isinstance(err, lmdb.PanicError):
        return StorageError(
            f"{what}: LMDB stopped using this environment after a failed write ({text}); the "
            "data on disk is intact: close the store and open it again"
        )
    if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left" in text:
        tail = "" if uncertain else "; nothing was written"
        return StoreFull(f"{what}: the disk is full ({text}){tail}")
    if isinstance(err, lmdb.ReadonlyError) or ("Permission denied" in text and "readonly" in text):
        return ReadOnlyStore(f"{what}: the store is open read-only")
    if isinstance(err, lmdb.InvalidError | lmdb.VersionMismatchError | lmdb.IncompatibleError):
        return FormatError(f"{what}: not a usable LMDB environment ({text})")
    if isinstance(err, lmdb.CorruptedError | lmdb.PageNotFoundError):
        return StorageError(
            f"{what}: LMDB reports the environment damaged ({text}); "
            "restore from a backup or run `ckdb scrub`"
        )
    if isinstance(err, lmdb.LockError):
        return StoreLocked(f"{what}: cannot take the store's lock ({text})")
    return StorageError(f"{what}: {type(err).__name__}: {text}")


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


MAX_GROUP = 64  # callers per group commit


class _Handled(Exception):
    pass


class _Pending:
    __slots__ = ("done", "error", "estimate", "fn", "promoted", "result", "wake")

    def __init__(self, fn: Callable[[Txn], Any], estimate: int) -> None:
        self.fn = fn
        self.estimate = estimate
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False  # its batch has committed (or failed)
        # Set when done or promoted to leader; only a caller that waits has one (an Event
        # costs a Condition and a lock: a lone writer never needs it).
        self.wake: threading.Event | None = None
        self.promoted = False


def _wake(item: _Pending) -> None:
    if item.wake is not None:
        item.wake.set()


class Txn:
    """A thin view of an lmdb transaction with the sub-database handles bound."""

    __slots__ = ("_dbs", "_env", "_txn", "write")

    def __init__(self, txn: Any, dbs: dict[bytes, Any], write: bool, env: Any = None) -> None:
        self._txn = txn
        self._dbs = dbs
        self.write = write
        self._env = env

    @contextlib.contextmanager
    def nested(self) -> Iterator[Txn]:
        """A nested write transaction: its changes join this one on success and vanish if the
        block raises (the exception propagates)."""
        if self._env is None or not self.write:
            raise StorageError("nested transactions need a write transaction")
        child = self._env.begin(write=True, parent=self._txn)
        try:
            yield Txn(child, self._dbs, True, self._env)
        except BaseException:
            child.abort()
            raise
        child.commit()

    def get(self, db: bytes, key: bytes) -> bytes | None:
        value: bytes | None = self._txn.get(key, db=self._dbs[db])
        return value

    def put(self, db: bytes, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        ok: bool = self._txn.put(key, value, db=self._dbs[db], overwrite=overwrite)
        return ok

    def delete(self, db: bytes, key: bytes) -> bool:
        ok: bool = self._txn.delete(key, db=self._dbs[db])
        return ok

    def range(
        self, db: bytes, lo: bytes = b"", hi: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``lo <= key < hi`` (``hi=None``: to the end), in key order or reversed."""
        cur = self._txn.cursor(db=self._dbs[db])
        if not reverse:
            if not cur.set_range(lo):
                return
            for key, value in cur:
                if hi is not None and key >= hi:
                    return
                yield key, value
            return
        positioned = cur.set_range(hi) if hi is not None else cur.last()
        if hi is not None:
            positioned = cur.prev() if positioned else cur.last()
        while positioned:
            key = cur.key()
            if key < lo:
                return
            yield key, cur.value()
            positioned = cur.prev()

    def prefix(
        self, db: bytes, prefix: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        return self.range(db, prefix, prefix_end(prefix), reverse=reverse)

    def delete_range(self, db: bytes, lo: bytes, hi: bytes | None) -> int:
        """Delete ``lo <= key < hi``. Deleting moves the cursor to the next record, so this never
        iterates with ``for`` (which would skip every other record)."""
        cur = self._txn.cursor(db=self._dbs[db])
        n = 0
        if not cur.set_range(lo):
            return 0
        while True:
            key = cur.key()
            if not key or (hi is not None and key >= hi):
                return n
            if not cur.delete():
                return n
            n += 1

    def delete_prefixes(self, db: bytes, prefixes: list[bytes]) -> int:
        """Delete every key that starts with one of ``prefixes`` (sorted, none a prefix of
        another), moving one cursor forward: one ``delete_range`` per prefix would open a
        cursor each."""
        cur = self._txn.cursor(db=self._dbs[db])
        n = 0
        for prefix in prefixes:
            if not cur.set_range(prefix):
                return n
            while True:
                key = cur.key()
                if not key or not key.startswith(prefix):
                    break
                if not cur.delete():
                    return n
                n += 1
        return n

    def delete_keys_in_range(self, db: bytes, lo: bytes, hi: bytes, keys: set[bytes]) -> int:
        """One cursor pass over ``lo <= key < hi`` deleting the members of ``keys``."""
        cur = self._txn.cursor(db=self._dbs[db])
        n = 0
        if not cur.set_range(lo):
            return 0
        while True:
            key = cur.key()
            if not key or key >= hi:
                return n
            if key in keys:
                if not cur.delete():
                    return n
                n += 1
            elif not cur.next():
                return n

    def delete_matching(
        self, db: bytes, lo: bytes, hi: bytes, expected: dict[bytes, bytes]
    ) -> list[bytes]:
        """One cursor pass over ``lo <= key < hi`` deleting each key of ``expected`` whose value
        is still exactly ``expected[key]``. Returns the keys deleted, in key order."""
        cur = self._txn.cursor(db=self._dbs[db])
        out: list[bytes] = []
        if not cur.set_range(lo):
            return out
        while True:
            key = cur.key()
            if not key or key >= hi:
                return out
            want = expected.get(key)
            if want is not None and cur.value() == want:
                if not cur.delete():
                    return out
                out.append(key)
            elif not cur.next():
                return out

    def pages_in_use(self) -> int:
        """Branch, leaf and overflow pages of every sub-database and the main database."""
        total = 0
        stats = [self._txn.stat(handle) for handle in self._dbs.values()]
        stats.append(self._txn.stat())
        for st in stats:
            total += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return total

    def count(self, db: bytes) -> int:
        entries: int = self._txn.stat(self._dbs[db])["entries"]
        return entries


class Env:
    """One LMDB environment with ckdb's named sub-databases."""

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool,
        durability: str,
        map_size: int,
        unsafe_nosync: bool = False,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self.pid = os.getpid()
        self._gate = Gate()
        self._write_lock = threading.RLock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False
        self._disk_until = 0.0  # _check_disk: a recent statvfs vouches until then ...
        self._disk_budget = 0  # ... for this many more bytes
        self._disk_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        st = os.stat(path)
        self._ident = (st.st_dev, st.st_ino)
        with _open_lock:
            other = _open_envs.get(self._ident)
            if other is not None and other.pid != self.pid:
                # Inherited through fork(): release the parent's handle in this process, or
                # py-lmdb would refuse to open the path again here.
                other.close()
                other = None
            if other is not None and not other._closed:
                raise StoreLocked(
                    f"{path} is already open in this process; share that Store between threads "
                    "(LMDB allows one environment per path per process)"
                )
            _open_envs[self._ident] = self
        try:
            self._env = self._open_lmdb(map_size, durability, unsafe_nosync)
        except BaseException:
            with _open_lock:
                if _open_envs.get(self._ident) is self:
                    del _open_envs[self._ident]
            raise

    def _open_lmdb(self, map_size: int, durability: str, unsafe_nosync: bool) -> Any:
        if not (self.path / "data.mdb").exists():
            raise FormatError(f"{self.path} is not a ckdb store (no data.mdb)")
        try:
            env = lmdb.open(
                str(self.path),
                map_size=map_size,
                subdir=True,
                readonly=self.readonly,
                sync=not unsafe_nosync,
                metasync=durability == "sync" and not unsafe_nosync,
                writemap=False,
                map_async=False,
                lock=True,
                max_dbs=MAX_DBS,
                max_readers=510,
                create=False,
                # An existing environment: leaving lib_version unset lets its own format pick
                # the engine.
            )
        except lmdb.Error as err:
            raise translate(err, f"cannot open {self.path}") from None
        try:
            env.reader_check()  # clear reader slots left by dead processes
            # Handles opened inside a read transaction die with it; open_db without a txn keeps
            # them for the environment's lifetime.
            self._dbs = {name: env.open_db(name, create=False) for name in ALL_DBS}
            psize = int(env.stat()["psize"])
        except lmdb.NotFoundError:
            env.close()
            raise FormatError(f"{self.path} is an LMDB environment but not a ckdb store") from None
        except lmdb.Error as err:
            env.close()
            raise translate(err, f"cannot open {self.path}") from None
        self.headroom = Headroom(self.path / "data.mdb", psize, writable=not self.readonly)
        return env

    # -- lifecycle -------------------------------------------------------------------------------

    def check(self) -> None:
        if self._closed:
            raise StoreClosed(f"the store at {self.path} is closed")
        if os.getpid() != self.pid:
            raise StoreClosed(
                f"the store at {self.path} was opened in process {self.pid} and cannot be used "
                f"after fork() (this is process {os.getpid()}); open it again in the child"
            )

    def close(self) -> None:
        if self._closed:
            return
        if os.getpid() == self.pid:
            with self._write_lock, self._gate.exclusive():
                self._closed = True
                self._env.close()
                self.headroom.close()
        else:
            # After fork() the child must not use the parent's environment; closing it only
            # releases this process's handle (the parent keeps working), and lets the child open
            # the store again (test_concurrency.py::test_forked_child_can_open_the_store_again).
            self._closed = True
            with contextlib.suppress(Exception):
                self._env.close()
            self.headroom.close()  # this process's copy of the descriptor
        with _open_lock:
            if _open_envs.get(self._ident) is self:
                del _open_envs[self._ident]

    @property
    def closed(self) -> bool:
        return self._closed

    def map_size(self) -> int:
        size: int = self._env.info()["map_size"]
        return size

    def info(self) -> dict[str, int]:
        self.check()
        # Under the gate: env.stat()/info() during a concurrent set_mapsize fail with EINVAL
        # (tests/test_concurrency.py::test_map_grows_while_threads_write_and_read).
        with self._gate.shared():
            try:
                out: dict[str, int] = dict(self._env.info())
                out.update({f"stat_{k}": v for k, v in self._env.stat().items()})
            except lmdb.Error as err:
                raise translate(err, "cannot read the environment's statistics") from None
        return out

    # -- transactions ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[Txn]:
        """A short read transaction (keep it short: a long one stops page reuse)."""
        self.check()
        for _ in range(MAX_WRITE_RETRIES):
            with self._gate.shared():
                try:
                    txn = self._env.begin(write=False)
                except lmdb.MapResizedError:
                    txn = None
                except lmdb.Error as err:
                    raise translate(err, "cannot begin a read transaction") from None
                if txn is not None:
                    try:
                        yield Txn(txn, self._dbs, False)
                    except lmdb.Error as err:
                        raise translate(err, "read failed") from None
                    finally:
                        txn.abort()
                    return
            self._adopt_map_size()
        raise StorageError("the map size kept changing under this reader")

    def in_write(self) -> bool:
        """Is this thread running a write function (where ``write`` would deadlock)?"""
        return bool(getattr(self._local, "in_write", False))

    def write(self, fn: Callable[[Txn], T], *, estimate: int = 0) -> T:
        """Run ``fn`` in a write transaction and return only once it is durably committed.

        ``fn`` must be re-runnable whole: on a full map the transaction is aborted, the map grown
        and ``fn`` called again. ``estimate`` is the bytes the write adds (for the disk check).

        Group commit: concurrent callers in this process queue their functions; one of them (the
        leader) runs a batch in ONE transaction, each function in a nested transaction of its own
        (so one caller's error aborts only its own changes), and commits once: one fsync pair
        serves every caller in the batch.
        """
        self.check()
        if self.readonly:
            raise ReadOnlyStore(f"{self.path} is open read-only")
        if self.in_write():
            raise StorageError("Env.write called from inside a write function (would deadlock)")
        if estimate:
            self._check_disk(estimate)
        item = _Pending(fn, estimate)
        with self._queue_lock:
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                item.wake = threading.Event()
            self._queue.append(item)
        if lead:
            self._lead(item)
        else:
            try:
                self._follow(item)
            except BaseException:  # KeyboardInterrupt while waiting: never strand the queue
                self._abandon(item)
                raise
        if item.error is not None:
            raise item.error
        return cast(T, item.result)

    def _follow(self, item: _Pending) -> None:
        """Wait until this caller's batch has committed, leading when promoted."""
        wake = item.wake
        assert wake is not None
        while not item.done:
            wake.wait()
            wake.clear()
            if item.promoted and not item.done:
                item.promoted = False
                self._lead(item)

    def _abandon(self, item: _Pending) -> None:
        """A waiting caller was interrupted. If its function has not run, it never will
        (nothing of it is written); if it was just handed the leadership, hand it on. If its
        batch is already running, the leader finishes it (outcome unknown to this caller)."""
        with self._queue_lock:
            for i, queued in enumerate(self._queue):
                if queued is item:
                    del self._queue[i]
                    break
            if item.promoted and not item.done:
                item.promoted = False
                self._hand_on()

    def _hand_on(self) -> None:
        """Give up the leadership: to the first queued caller, or to nobody. Under _queue_lock."""
        if self._queue:
            self._queue[0].promoted = True
            _wake(self._queue[0])
        else:
            self._leading = False

    def _lead(self, mine: _Pending) -> None:
        """Run queued batches until this caller's own item has committed, then hand the
        leadership to the next waiting caller (or give it up): a leader never serves others
        forever while its own call waits to return."""
        while True:
            with self._queue_lock:
                if mine.done:
                    self._hand_on()
                    return
                batch = self._queue[:MAX_GROUP]
                del self._queue[:MAX_GROUP]
            interrupted: BaseException | None = None
            try:
                self.check()  # closed (or forked) since these callers queued: StoreClosed
                with self._write_lock:
                    self.check()  # close() takes the write lock: closed while we waited for it
                    self._local.in_write = True
                    try:
                        self._commit_batch(batch)
                    finally:
                        self._local.in_write = False
            except Exception as err:  # a failure of the shared commit reaches every caller
                for item in batch:
                    if item.error is None:
                        item.error = err
            except BaseException as err:  # KeyboardInterrupt, SystemExit: in the leader's thread
                interrupted = err
                for item in batch:
                    if item.error is None:
                        item.error = StorageError(
                            f"the write was interrupted ({type(err).__name__}) in another thread; "
                            "its outcome is uncertain"
                        )
            finally:
                for item in batch:  # every dequeued caller is always released
                    item.done = True
                    _wake(item)
            if interrupted is not None:
                with self._queue_lock:  # hand the queue on before re-raising
                    self._hand_on()
                raise interrupted
            if self._headroom_due():  # the batch's callers are released; the queue waits
                try:
                    with self._write_lock, self._gate.shared():
                        if not self._closed:
                            self.headroom.extend(self._env, self._check_disk)
                except lmdb.Error:
                    self.headroom.pause()
                except BaseException:  # KeyboardInterrupt during the fill: never strand the queue
                    with self._queue_lock:
                        if mine in self._queue:  # not run yet: it never will be (nothing written)
                            self._queue.remove(mine)
                        self._hand_on()
                    raise

    def _headroom_due(self) -> bool:
        """After a commit (one ``env.info()``: a read of the meta page); ckdb/_headroom.py."""
        if self._closed:
            return False
        with self._gate.shared():
            try:
                last_pgno = int(self._env.info()["last_pgno"])
            except lmdb.Error:
                return False
        return self.headroom.due(last_pgno)

    def _commit_batch(self, batch: list[_Pending]) -> None:
        estimate = sum(i.estimate for i in batch)
        for _ in range(MAX_WRITE_RETRIES):
            grow = False
            with self._gate.shared():
                try:
                    txn = self._env.begin(write=True)
                except lmdb.MapResizedError:
                    txn = None
                except lmdb.Error as err:
                    raise translate(err, "cannot begin a write transaction") from None
                if txn is not None:
                    try:
                        for item in batch:
                            item.error = None
                            if len(batch) == 1:
                                self._run_item(item, txn, txn)
                            else:
                                child = self._env.begin(write=True, parent=txn)
                                if self._run_item(item, txn, child):
                                    child.commit()
                                else:
                                    child.abort()
                    except _Handled:
                        return  # the single caller's function raised; its error is recorded
                    except lmdb.MapFullError:
                        txn.abort()
                        grow = True
                    except lmdb.Error as err:
                        txn.abort()
                        raise translate(err, "write failed; nothing was written") from None
                    except BaseException:
                        txn.abort()
                        raise
                    else:
                        if all(item.error is not None for item in batch):
                            txn.abort()  # nothing to commit
                            return
                        try:
                            txn.commit()
                            return
                        except lmdb.MapFullError:
                            grow = True  # LMDB aborted the transaction: nothing written
                        except lmdb.Error as err:
                            # A failed data or meta sync: the commit may or may not have reached
                            # the disk. Say so rather than "nothing was written".
                            raise translate(
                                err,
                                "commit failed and its outcome is uncertain (it may or may "
                                "not be durable); check before repeating it",
                                uncertain=True,
                            ) from None
            if grow:
                self._grow(estimate)
            else:
                self._adopt_map_size()
        raise StorageError("could not complete a write after growing the map repeatedly")

    def _run_item(self, item: _Pending, parent: Any, txn: Any) -> bool:
        """Run one caller's function; True if its changes should be kept. MapFullError and
        engine errors propagate (they concern the whole transaction)."""
        try:
            item.result = item.fn(Txn(txn, self._dbs, True, self._env))
            return True
        except lmdb.MapFullError:
            raise
        except lmdb.Error as err:
            item.error = translate(err, "write failed; nothing was written")
            if txn is parent:
                raise
            return False
        except Exception as err:
            item.error = err
            if txn is parent:
                txn.abort()
                raise _Handled() from None
            return False

    def _check_disk(self, needed: int) -> None:
        """StoreFull unless the disk has room for ``needed`` bytes plus DISK_MARGIN. One
        ``statvfs`` vouches for the next DISK_CHECK_SECONDS as long as those writes together
        stay within half of what it found beyond the margin."""
        now = time.monotonic()
        with self._disk_lock:
            if now < self._disk_until and needed <= self._disk_budget:
                self._disk_budget -= needed
                return
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            return
        if free < needed + DISK_MARGIN:
            self._disk_until = 0.0
            raise StoreFull(
                f"the disk holding {self.path} has {free} bytes free; this write needs about "
                f"{needed} bytes plus a {DISK_MARGIN}-byte margin. Nothing was written."
            )
        with self._disk_lock:
            self._disk_budget = (free - DISK_MARGIN - needed) // 2
            self._disk_until = now + DISK_CHECK_SECONDS

    def _grow(self, estimate: int) -> None:
        with self._gate.exclusive():
            current = self.map_size()
            new = min(MAX_MAP_SIZE, max(current * 2, current + 4 * estimate + (64 << 20)))
            if new <= current:
                raise StoreFull(f"the map of {self.path} is at its maximum size ({current} bytes)")
            self._check_disk(estimate)
            try:
                self._env.set_mapsize(new)
            except lmdb.Error as err:
                raise translate(err, "cannot grow the map") from None

    def _adopt_map_size(self) -> None:
        """Another process grew the map: adopt its size (set_mapsize(0))."""
        with self._gate.exclusive():
            try:
                self._env.set_mapsize(0)
            except lmdb.Error as err:
                raise translate(err, "cannot adopt the map size") from None

    def _db_names(self) -> list[bytes]:
        self.check()
        with self._gate.shared():
            try:
                with self._env.begin(write=False) as txn:
                    return [bytes(k) for k, _v in txn.cursor()]
            except lmdb.Error as err:
                raise translate(err, "cannot list sub-databases") from None

    def extra_dbs(self) -> list[bytes]:
        """Names of the sub-databases beyond ckdb's own (integrations'), sorted."""
        return sorted(n for n in self._db_names() if n not in ALL_DBS and n not in OPTIONAL_DBS)

    def is_open(self, name: bytes) -> bool:
        """Is the named sub-database open in this environment (transactions can address it)?"""
        return name in self._dbs

    def has_db(self, name: bytes) -> bool:
        """Does the named sub-database exist (opened here, or created by another process)?"""
        return name in self._dbs or name in self._db_names()

    def sync(self) -> None:
        """Make every committed transaction durable now (an fdatasync, which with
        ``metasync=False`` also flushes the last commit's meta page)."""
        self.check()
        with self._gate.shared():
            try:
                self._env.sync(True)
            except lmdb.Error as err:
                raise translate(err, "cannot sync the store", uncertain=True) from None

    def ensure_db(self, name: bytes) -> None:
        """Open (creating if missing) an extra named sub-database, e.g. an integration's own.
        Transactions then address it by ``name`` like the built-in ones."""
        self.check()
        if name in self._dbs:
            return
        if not name or len(name) > 64 or name in (b"data", b"lock"):
            raise StorageError(f"invalid sub-database name {name!r}")
        with self._write_lock, self._gate.exclusive():
            try:
                self._dbs[name] = self._env.open_db(name, create=not self.readonly)
            except lmdb.NotFoundError:
                raise StorageError(
                    f"sub-database {name!r} does not exist (read-only store)"
                ) from None
            except lmdb.Error as err:
                raise translate(err, f"cannot open sub-database {name!r}") from None

    # -- copies ----------------------------------------------------------------------------------

    def copy_to(self, dest: Path, *, compact: bool = True) -> None:
        self.check()
        with self._gate.shared():  # a map resize must not overlap the copy's read transaction
            try:
                self._env.copy(str(dest), compact=compact)
            except lmdb.Error as err:
                raise translate(err, f"cannot copy the store to {dest}") from None


def create_environment(tmp_dir: Path, init: Callable[[Txn], None]) -> None:
    """Create a fresh environment in ``tmp_dir`` with every sub-database, run ``init`` in the first
    write transaction, close it and fsync its files and directory. The caller renames it."""
    try:
        env = lmdb.open(
            str(tmp_dir),
            map_size=DEFAULT_MAP_SIZE,
            subdir=True,
            sync=True,
            metasync=True,
            writemap=False,
            map_async=False,
            lock=True,
            max_dbs=MAX_DBS,
            create=True,
            lib_version=0,  # the 0.9 file format (readable by every LMDB tool and py-lmdb release)
        )
    except lmdb.Error as err:
        raise translate(err, f"cannot create a store in {tmp_dir}") from None
    try:
        with env.begin(write=True) as txn:
            dbs = {name: env.open_db(name, txn=txn, create=True) for name in ALL_DBS}
            init(Txn(txn, dbs, True))
        env.sync(True)
    except lmdb.Error as err:
        raise translate(err, f"cannot initialise a store in {tmp_dir}") from None
    finally:
        env.close()
    for name in os.listdir(tmp_dir):
        fsync_path(tmp_dir / name)
    fsync_path(tmp_dir, directory=True)


def structural_check(path: Path) -> list[str]:
    """LMDB's own structural verification of an environment (problems as text; [] = clean).

    py-lmdb's verifier is a pure-Python byte walker that never hands the file to liblmdb, so a
    damaged file cannot crash the caller.
    """
    try:
        report = lmdb_verify.verify(str(path))  # type: ignore[no-untyped-call]
    except (lmdb_verify.VerifyError, OSError) as err:
        return [f"cannot verify: {err}"]
    return [str(p) for p in report]
