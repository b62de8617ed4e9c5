"""The systems the suite compares, behind one small interface.

Each peer stores a workflow's checkpoints of agent state and answers: create (durably, unless the
peer says it is not durable), latest + load, list the newest 100, and its size on disk. Peers other
than ckdb and raw LMDB are optional (``pip install langgraph-checkpoint-sqlite diskcache``); a peer
whose library is missing is left out of the table with a note.

- ``ckdb``: ``ckdb.open(path, retention=None)``, durability "sync" (fsync per commit, tags,
  read-back verification, group commit across threads).
- ``floor`` and ``floor-1``: raw py-lmdb doing the work every ckdb create and read must do, and
  nothing else, in ckdb's layout and in one record per checkpoint (``benchmarks/floors.py``).
- ``lmdb``: raw py-lmdb, the engine floor: one put of the same encoded bytes (msgpack of the
  state, what ckdb frames) per write transaction, ``sync=True, metasync=True``, the options ckdb
  uses. Reads are lookups only (no decode, no verification).
- ``sqlite``: LangGraph ``SqliteSaver`` as ``setup()`` configures it (``journal_mode=WAL``) plus
  ``PRAGMA synchronous=FULL`` (WAL fsynced at every commit); one connection,
  ``check_same_thread=False``; SqliteSaver serialises threads with its lock.
- ``diskcache``: ``diskcache.Cache`` with its default settings: WAL with ``synchronous=NORMAL``
  (a commit is not fsynced; values >= 32 KiB go to files that are not fsynced): NOT durable.
- ``files``: the naive design: one JSON file per checkpoint (gzip above 1 MiB), written to a
  temporary name, fsynced, renamed, directory fsynced.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import lmdb

import ckdb
from ckdb import encoding, layout
from ckdb import meta as ckmeta
from ckdb.retention import RetentionPolicy

GZIP_ABOVE = 1 << 20


class Peer:
    name = "?"
    durable = True
    note = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, *, fast: bool = False) -> None:
        """(Re)open; ``fast``: without fsync, for filling only (never measured)."""

    def close(self) -> None:
        pass

    def create(self, wf: str, step: int, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def latest_load(self, wf: str) -> Any:
        raise NotImplementedError

    def list100(self, wf: str) -> list[Any]:
        raise NotImplementedError

    def trim(self, wf: str, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints of ``wf`` (not timed)."""
        raise NotImplementedError

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def forget(store: Any) -> None:
    """Empty a ckdb store's memo of verified values and its parse caches (a cold read next)."""
    store._verified.clear()  # noqa: SLF001 - a benchmark may look inside
    ckmeta._parse_cached.cache_clear()  # noqa: SLF001
    getattr(layout.id_to_text, "cache_clear", lambda: None)()  # cached before 0.5.1


class CkdbPeer(Peer):
    name = "ckdb"
    note = "ckdb.open(retention=None), durability sync: fsync per commit, tags, read-back"

    def open(self, *, fast: bool = False) -> None:
        self.store = ckdb.open(self.root / "store", retention=None, _unsafe_nosync=fast)

    def close(self) -> None:
        self.store.close()

    def create(self, wf: str, step: int, state: dict[str, Any]) -> None:
        self.store.create(wf, "step", state=state)

    def latest_load(self, wf: str) -> Any:
        info = self.store.latest(wf)
        assert info is not None
        return self.store.load(info.id).state

    def list100(self, wf: str) -> list[Any]:
        return self.store.list(wf, limit=100)

    def trim(self, wf: str, keep: int) -> None:
        self.store.prune(wf, RetentionPolicy(max_checkpoints=keep))

    def size(self) -> int:
        return os.path.getsize(self.root / "store" / "data.mdb")

    def forget(self) -> None:
        """Empty what ckdb remembers about verified values (as right after opening the store)."""
        forget(self.store)

    def used(self) -> int:
        """Bytes up to the last page in use (the file may also hold LMDB's free pages)."""
        info = self.store._env.info()  # noqa: SLF001 - a benchmark may look inside
        return int((info["last_pgno"] + 1) * info["stat_psize"])


def open_env(path: Path, *, fast: bool, max_dbs: int) -> Any:
    """A raw py-lmdb environment with the options ckdb uses (``fast``: no fsync, filling only)."""
    path.mkdir(exist_ok=True)
    return lmdb.open(
        str(path),
        map_size=8 << 30,
        sync=not fast,
        metasync=not fast,
        writemap=False,
        map_async=False,
        lock=True,
        max_dbs=max_dbs,
        lib_version=0,
    )


class LmdbPeer(Peer):
    name = "lmdb (raw)"
    note = "one put of the encoded state per sync txn; reads: lookup only"

    def open(self, *, fast: bool = False) -> None:
        self.env = open_env(self.root / "env", fast=fast, max_dbs=2)
        self.db = self.env.open_db(b"cps")
        self._seq: dict[str, int] = getattr(self, "_seq", {})
        self._lock = threading.Lock()

    def close(self) -> None:
        self.env.close()

    @staticmethod
    def _prefix(wf: str) -> bytes:
        raw = wf.encode()
        return bytes([len(raw)]) + raw

    def create(self, wf: str, step: int, state: dict[str, Any]) -> None:
        data = encoding.encode(state)
        with self._lock:
            seq = self._seq.get(wf, 0) + 1
            self._seq[wf] = seq
        with self.env.begin(write=True, db=self.db) as txn:
            txn.put(self._prefix(wf) + seq.to_bytes(8, "big"), data)

    def latest_load(self, wf: str) -> Any:
        p = self._prefix(wf)
        with self.env.begin(db=self.db) as txn:
            cur = txn.cursor()
            ok = cur.set_range(p + b"\xff" * 8)
            ok = cur.prev() if ok else cur.last()
            assert ok
            assert cur.key().startswith(p)
            return cur.value()

    def list100(self, wf: str) -> list[Any]:
        p = self._prefix(wf)
        out: list[Any] = []
        with self.env.begin(db=self.db) as txn:
            cur = txn.cursor()
            ok = cur.set_range(p + b"\xff" * 8)
            ok = cur.prev() if ok else cur.last()
            while ok and len(out) < 100:
                key = cur.key()
                if not key.startswith(p):
                    break
                out.append(key)
                ok = cur.prev()
        return out

    def trim(self, wf: str, keep: int) -> None:
        last = self._seq.get(wf, 0)
        p = self._prefix(wf)
        with self.env.begin(write=True, db=self.db) as txn:
            cur = txn.cursor()
            hi = p + (last - keep + 1).to_bytes(8, "big")
            if cur.set_range(p):
                while cur.key() and cur.key() < hi and cur.delete():
                    pass

    def size(self) -> int:
        return os.path.getsize(self.root / "env" / "data.mdb")


class SqlitePeer(Peer):
    name = "SqliteSaver"
    note = "WAL (as setup() sets it) + synchronous=FULL"

    def open(self, *, fast: bool = False) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: PLC0415 - optional peer

        self.conn = sqlite3.connect(self.root / "cp.sqlite", check_same_thread=False)
        self.saver = SqliteSaver(self.conn)
        self.saver.setup()
        self.conn.execute(f"PRAGMA synchronous={'OFF' if fast else 'FULL'}")
        (mode,) = self.conn.execute("PRAGMA journal_mode").fetchone()
        (sync,) = self.conn.execute("PRAGMA synchronous").fetchone()
        assert mode == "wal", mode
        assert sync == (0 if fast else 2), sync
        self._parents: dict[str, str | None] = getattr(self, "_parents", {})

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()

    def create(self, wf: str, step: int, state: dict[str, Any]) -> None:
        from langgraph.checkpoint.base.id import uuid6  # noqa: PLC0415

        config: dict[str, Any] = {"configurable": {"thread_id": wf, "checkpoint_ns": ""}}
        parent = self._parents.get(wf)
        if parent is not None:
            config["configurable"]["checkpoint_id"] = parent
        versions: dict[str, str | int | float] = dict.fromkeys(state, f"{step:032}.0")
        checkpoint = {
            "v": 4,
            "id": str(uuid6(clock_seq=step)),
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "channel_values": state,
            "channel_versions": versions,
            "versions_seen": {"agent": versions},
            "pending_sends": [],
            "updated_channels": list(state),
        }
        saved = self.saver.put(
            config,  # type: ignore[arg-type]
            checkpoint,  # type: ignore[arg-type]
            {"source": "loop", "step": step, "parents": {}},
            versions,
        )
        self._parents[wf] = saved["configurable"]["checkpoint_id"]

    def latest_load(self, wf: str) -> Any:
        tup = self.saver.get_tuple({"configurable": {"thread_id": wf, "checkpoint_ns": ""}})
        assert tup is not None
        return tup.checkpoint["channel_values"]

    def list100(self, wf: str) -> list[Any]:
        return list(
            self.saver.list({"configurable": {"thread_id": wf, "checkpoint_ns": ""}}, limit=100)
        )

    def trim(self, wf: str, keep: int) -> None:
        with self.conn:
            self.conn.execute(
                "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id NOT IN (SELECT "
                "checkpoint_id FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_id DESC "
                "LIMIT ?)",
                (wf, wf, keep),
            )

    def size(self) -> int:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return super().size()


class DiskcachePeer(Peer):
    name = "diskcache"
    durable = False
    note = "defaults: WAL + synchronous=NORMAL, value files not fsynced: NOT durable"

    def open(self, *, fast: bool = False) -> None:
        import diskcache  # noqa: PLC0415 - optional peer

        self.cache = diskcache.Cache(str(self.root / "cache"))
        self._last: dict[str, int] = getattr(self, "_last", {})

    def close(self) -> None:
        self.cache.close()

    def create(self, wf: str, step: int, state: dict[str, Any]) -> None:
        self.cache.set((wf, step), state)
        self._last[wf] = step  # the "latest" index lives in the caller's memory

    def latest_load(self, wf: str) -> Any:
        return self.cache.get((wf, self._last[wf]))

    def trim(self, wf: str, keep: int) -> None:
        for w, step in list(self.cache.iterkeys()):
            if w == wf and step <= self._last[wf] - keep:
                del self.cache[(w, step)]


class FilesPeer(Peer):
    name = "files (JSON)"
    note = "JSON per checkpoint, gzip (default level) above 1 MiB, fsync file + rename + fsync dir"

    def open(self, *, fast: bool = False) -> None:
        self.fast = fast
        (self.root / "files").mkdir(exist_ok=True)

    def _dir(self, wf: str) -> Path:
        d = self.root / "files" / wf
        if not d.exists():
            d.mkdir(exist_ok=True)
        return d

    def create(self, wf: str, step: int, state: dict[str, Any]) -> None:
        d = self._dir(wf)
        data = json.dumps(state).encode()
        name = f"{step:012d}.json"
        if len(data) > GZIP_ABOVE:
            data = gzip.compress(data)
            name += ".gz"
        tmp = d / f".{name}.tmp-{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            if not self.fast:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, d / name)
        if not self.fast:
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def latest_load(self, wf: str) -> Any:
        d = self._dir(wf)
        name = max(n for n in os.listdir(d) if not n.startswith("."))
        data = (d / name).read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        return json.loads(data)

    def list100(self, wf: str) -> list[Any]:
        d = self._dir(wf)
        names = sorted((n for n in os.listdir(d) if not n.startswith(".")), reverse=True)[:100]
        return [(n, (d / n).stat()) for n in names]

    def trim(self, wf: str, keep: int) -> None:
        d = self._dir(wf)
        names = sorted(n for n in os.listdir(d) if not n.startswith("."))
        for n in names[: max(0, len(names) - keep)]:
            os.unlink(d / n)


ALL = (CkdbPeer, LmdbPeer, SqlitePeer, DiskcachePeer, FilesPeer)
_OPTIONAL = {  # peer name -> (module, pip requirement)
    "SqliteSaver": ("langgraph.checkpoint.sqlite", "langgraph-checkpoint-sqlite"),
    "diskcache": ("diskcache", "diskcache"),
}


def available(classes: tuple[type[Peer], ...] = ALL) -> tuple[list[type[Peer]], list[str]]:
    """The peers whose libraries are installed, and notes on those left out."""
    ok, missing = [], []
    for cls in classes:
        need = _OPTIONAL.get(cls.name)
        if need is not None:
            try:
                __import__(need[0])
            except ImportError:
                missing.append(f"{cls.name}: not installed (pip install {need[1]})")
                continue
        ok.append(cls)
    return ok, missing


def fresh(cls: type[Peer], base: Path) -> Peer:
    root = base / cls.name.split()[0].replace("(", "")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return cls(root)
