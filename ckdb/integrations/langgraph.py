"""LangGraph checkpoint saver backed by a ckdb store (``pip install ckdb[langgraph]``).

    import ckdb
    from ckdb.integrations.langgraph import CkdbSaver

    with ckdb.open("agent.ckdb", retention=None) as store:
        graph = builder.compile(checkpointer=CkdbSaver(store))
        graph.invoke(inputs, {"configurable": {"thread_id": "t-1"}})

Design (``docs/langgraph.md`` has the byte tables and the crash windows):

- Own sub-databases (``lg_*``), opened at construction: ckdb's workflow retention never sees them.
- Channel values are stored once per (thread, namespace, channel, version): a step that changes
  one channel writes one blob, not the whole state; a large one as pieces stored once each
  (``tables/langgraph_values.py``). The checkpoint envelope (the checkpoint
  without its values, the metadata, the parent and the list of blobs it references) is small.
- Every value is a ckdb frame: compressed (lz4), HMAC-tagged and bound to its sub-database and
  key (encrypted too in an encrypted store). LangGraph values go through the saver's serde
  (``dumps_typed``/``loads_typed``); pickle is refused both ways.
- Every mutation is one ``Env.write`` transaction whose body can be re-run whole; frames are
  built before the write lock is taken.
- No automatic retention unless a policy is set (``retention=`` here, or
  :meth:`CkdbSaver.set_retention` per thread). Policies are ckdb's (presets or
  :class:`ckdb.retention.RetentionPolicy`), applied per namespace in the put's own transaction,
  and never delete the newest checkpoint of a namespace (the thread's resume point).
- Async methods run the sync ones in a worker thread (``asyncio.to_thread``): LMDB calls are
  short and release the GIL for I/O, and the event loop never blocks on them.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import os
import weakref
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Self

import attrs
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from ckdb import encoding
from ckdb._env import Txn
from ckdb.errors import CkdbError, FormatError, IntegrityError, InvalidInput
from ckdb.integrations._langgraph_async import AsyncTwins
from ckdb.integrations._langgraph_pending import MODES, Pending, flush_if_alive
from ckdb.integrations._langgraph_serde import check_serde
from ckdb.layout import INCOMPAT_LG_PIECES, Codec, RecordType, prefix_end
from ckdb.meta import now_us
from ckdb.retention import (
    Entry,
    RetentionPlan,
    RetentionPolicy,
    RetentionResult,
    resolve_policy,
)
from ckdb.retention import plan as plan_retention
from ckdb.store import Store
from ckdb.store import open as open_store
from ckdb.tables import langgraph_values as values
from ckdb.tables.langgraph_layout import (
    ALL_DBS,
    DB_BLOBS,
    DB_CHECKPOINTS,
    DB_CHUNKS,
    DB_RUNS,
    DB_SETTINGS,
    DB_WRITES,
    ENVELOPE_VERSION,
    Envelope,
    Layout,
    is_pickle,
    next_version,
    read_part,
    split_checkpoint_key,
    version_text,
)

__all__ = ["CkdbSaver"]


_log = logging.getLogger("ckdb.integrations.langgraph")

#: Record type of every frame this saver writes. The sub-database name and the key are bound into
#: each frame's tag, so a frame cannot be replayed into another role even though they share it.
RTYPE = RecordType.INTEGRATION
Row = tuple[bytes, bytes]  # (key, stored value)
STRATEGIES = ("keep_latest", "delete")


class CkdbSaver(AsyncTwins):
    """A LangGraph checkpointer storing threads in a ckdb :class:`~ckdb.store.Store`.

    ``store`` stays the caller's (close it yourself), except with :meth:`from_path`.
    ``serde``: LangGraph's serializer for the values it owns (default: ``JsonPlusSerializer``
    without pickle fallback; one with pickle fallback is refused). ``retention``: a ckdb policy
    (name or :class:`RetentionPolicy`) applied to every thread without its own; None (default):
    no automatic retention. ``pending_writes``: ``"durable"`` (default: each ``put_writes`` is a
    durable commit) or ``"with_checkpoint"`` (a step's regular writes commit with its next
    checkpoint: one durable commit per step; a crash can make LangGraph re-run that step's
    tasks; see ``ckdb/integrations/_langgraph_pending.py`` and docs/langgraph.md).
    """

    def __init__(
        self,
        store: Store,
        *,
        serde: SerializerProtocol | None = None,
        retention: str | RetentionPolicy | None = None,
        pending_writes: str = "durable",
    ) -> None:
        super().__init__(serde=serde or JsonPlusSerializer(pickle_fallback=False))
        check_serde(self.serde)
        if pending_writes not in MODES:
            raise InvalidInput(f"pending_writes must be one of {MODES}, not {pending_writes!r}")
        self._pending = Pending(store.tables.env, pending_writes)
        self.store = store
        self._retention = None if retention is None else resolve_policy(retention)
        # Encrypted store: names in keys are the store's keyed name digests (looked up through
        # the store each time, so a reloaded keyring is used).
        tables = store.tables
        digest = None if tables.keys.cipher is None else (lambda t: tables.keys.wf_key(t)[1:])
        self._layout = Layout(digest)
        self._env = tables.env
        self._digests = values.Digests(tables.chunks.content_id)
        self._memo = values.FrameMemo()
        values.open_dbs(self._env, ALL_DBS, readonly=tables.readonly)
        self._owns_store = False
        if self._pending.hold:
            # Closing the store commits what is held (a clean shutdown loses nothing); the hook
            # does not keep the saver alive.
            store.add_close_hook(functools.partial(flush_if_alive, weakref.WeakMethod(self.flush)))

    @classmethod
    @contextlib.contextmanager
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        serde: SerializerProtocol | None = None,
        retention: str | RetentionPolicy | None = None,
        pending_writes: str = "durable",
        **open_kwargs: Any,
    ) -> Iterator[CkdbSaver]:
        """Open (or create) the store at ``path`` for this saver; closed on exit (held pending
        writes are committed first)."""
        open_kwargs.setdefault("retention", None)
        store = open_store(path, **open_kwargs)
        try:
            saver = cls(store, serde=serde, retention=retention, pending_writes=pending_writes)
            saver._owns_store = True
            yield saver
        finally:
            store.close()  # commits held pending writes first (the saver's close hook)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owns_store:
            self.store.close()  # commits held pending writes first (the close hook)

    def flush(self) -> None:
        """Commit the pending writes held for the next checkpoint (``"with_checkpoint"``), and
        wait for those another thread's commit carries: after it, every ``put_writes`` that
        returned before it began is durable."""
        self._pending.flush()

    # -- frames and serde ------------------------------------------------------------------------

    def _frame(self, db: bytes, key: bytes, raw: bytes) -> bytes:
        # lz4 at every size: compression time is step time (docs/performance.md, 0.4.1)
        frame = self.store.tables.frames.frame(RTYPE, db, key, raw, Codec.LZ4)
        self._memo.put(db, key, frame, raw)
        return frame

    def _unframe(self, db: bytes, key: bytes, value: bytes) -> bytes:
        raw = self._memo.get(db, key, value)
        if raw is None:
            raw = self.store.tables.frames.unframe(db, key, value, RTYPE)
            self._memo.put(db, key, value, raw)
        return raw

    def _dumps(self, obj: Any) -> tuple[str, bytes]:
        type_, data = self.serde.dumps_typed(obj)
        if is_pickle(type_):
            raise InvalidInput("the serializer produced pickle; ckdb never stores pickle")
        return str(type_), bytes(data)

    def _loads(self, typed: tuple[str, bytes]) -> Any:
        if is_pickle(typed[0]):
            raise IntegrityError("refusing to load a pickle value (ckdb never stores pickle)")
        return self.serde.loads_typed(typed)

    def _envelope(self, key: bytes, value: bytes) -> Envelope:
        raw = self._unframe(DB_CHECKPOINTS, key, value)
        return Envelope.parse(raw, f"lg_checkpoints/{key.hex()}")

    # -- config helpers --------------------------------------------------------------------------

    @staticmethod
    def _ids(config: RunnableConfig) -> tuple[str, str]:
        conf = config.get("configurable") or {}
        if "thread_id" not in conf:
            raise InvalidInput("config['configurable'] needs a 'thread_id'")
        return str(conf["thread_id"]), str(conf.get("checkpoint_ns") or "")

    @staticmethod
    def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint_id,
            }
        }

    # -- put -------------------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint: its envelope and one blob per channel in ``new_versions``."""
        thread_id, ns = self._ids(config)
        parent = config["configurable"].get("checkpoint_id")
        lay = self._layout
        thread = lay.thread(thread_id)
        ns_prefix = lay.ns(thread, ns)
        ck_key = lay.checkpoint(ns_prefix, checkpoint["id"])
        self._pending.offers.saw_put(ns_prefix)

        # Encode, compress and tag everything before the write lock.
        body: dict[str, Any] = dict(checkpoint)
        channel_values: dict[str, Any] = body.pop("channel_values", None) or {}
        frames: builtins.list[tuple[bytes, bytes, bytes]] = []
        blobs: builtins.list[values.BlobWrite] = []
        for channel, version in new_versions.items():
            if channel not in channel_values:
                continue  # an emptied channel: no blob, so the value reads as absent
            ch_key = ns_prefix + lay.part(channel, "channel")
            key = lay.blob(ns_prefix, channel, version)
            typed = self._dumps(channel_values[channel])
            blobs.append(
                values.prepare(
                    self._env.read, self._frame, self._digests, ns_prefix, ch_key, key, typed
                )
            )
        md = get_checkpoint_metadata(config, metadata)
        run_id = md.get("run_id")
        run_text = None if run_id is None else str(run_id)
        created_us = now_us()
        doc = {
            "v": ENVELOPE_VERSION,
            "thread_id": thread_id,
            "ns": ns,
            "id": checkpoint["id"],
            "parent": None if parent is None else str(parent),
            "ck": list(self._dumps(body)),
            "md": list(self._dumps(md)),
            "run_id": run_text,
            "created_us": created_us,
            "blobs": [[c, version_text(v)] for c, v in checkpoint["channel_versions"].items()],
        }
        envelope = encoding.encode(doc, "checkpoint")
        frames.append((DB_CHECKPOINTS, ck_key, self._frame(DB_CHECKPOINTS, ck_key, envelope)))
        if run_text is not None:
            frames.append((DB_RUNS, lay.run(run_text, ck_key), b""))
        estimate = sum(len(f[2]) + len(f[1]) for f in frames) + sum(
            len(b.frame) + sum(len(p.frame or p.raw) for p in b.pieces) for b in blobs
        )

        pieces = any(b.pieces for b in blobs)

        def apply(txn: Txn) -> None:
            if pieces:  # ckdb 0.4 must not open a store with pieces (its copy would lose them)
                self.store.tables.set_incompat(txn, INCOMPAT_LG_PIECES)
            for blob in blobs:
                values.write(txn, self._frame, blob)
            for db, key, value in frames:
                txn.put(db, key, value)
            policy = self._policy_in(txn, thread)
            if policy is not None:
                self._retain_ns(
                    txn, ns_prefix, policy, datetime.now(UTC), thread_id, protect=checkpoint["id"]
                )

        self._pending.checkpoint(apply, estimate)
        return self._config(thread_id, ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for a checkpoint (idempotent per (task, index))."""
        thread_id, ns = self._ids(config)
        checkpoint_id = config["configurable"].get("checkpoint_id")
        if not checkpoint_id:
            raise InvalidInput("put_writes needs config['configurable']['checkpoint_id']")
        lay = self._layout
        ns_prefix = lay.ns(lay.thread(thread_id), ns)
        prefix = lay.writes_prefix(ns_prefix, str(checkpoint_id))
        ck_key = lay.checkpoint(ns_prefix, str(checkpoint_id))
        rows: builtins.list[tuple[bytes, bytes, bool]] = []
        for idx, (channel, value) in enumerate(writes):
            widx = WRITES_IDX_MAP.get(channel, idx)
            key = lay.write(prefix, str(task_id), widx)
            typed = self._dumps(value)
            raw = encoding.encode([str(task_id), widx, str(channel), *typed, str(task_path)])
            # Regular writes are first-wins (a retried task must not duplicate them); special
            # ones (error, interrupt, resume) replace, as in LangGraph's own savers.
            rows.append((key, self._frame(DB_WRITES, key, raw), widx < 0))

        def apply(txn: Txn) -> None:
            if txn.get(DB_CHECKPOINTS, ck_key) is None and next(
                txn.range(DB_CHECKPOINTS, ck_key, prefix_end(ns_prefix)), None
            ):
                # Missing with a newer one stored: retention deleted it meanwhile. Writes for it
                # could never be read, and nothing but delete_thread would remove them. Missing
                # and newest: its put is still running (LangGraph's "async" durability saves
                # the checkpoint while its tasks run): keep them.
                _log.debug("ckdb: put_writes for a deleted checkpoint %s dropped", checkpoint_id)
                return
            for key, value, overwrite in rows:
                txn.put(DB_WRITES, key, value, overwrite=overwrite)

        if not rows:
            return
        regular = not any(special for _k, _v, special in rows)
        self._pending.writes(apply, sum(len(r[1]) for r in rows), regular=regular, space=ns_prefix)

    # -- read ------------------------------------------------------------------------------------

    def _read_tuple(
        self, txn: Txn, key: bytes, value: bytes
    ) -> tuple[Envelope, builtins.list[tuple[bytes, values.Loaded]], builtins.list[Row]]:
        """Inside a read txn: the envelope, its blobs (records verified, pieces fetched) and
        the raw write rows it needs."""
        env = self._envelope(key, value)
        _thread, ns_prefix, cid = split_checkpoint_key(key)
        if cid != env.id:
            raise IntegrityError(f"lg_checkpoints/{key.hex()}: envelope is for {env.id!r}")
        lay = self._layout
        blobs = []
        for channel, vtext in env.blobs:
            bkey = ns_prefix + lay.part(channel, "channel") + lay.part(vtext, "ver")
            raw = txn.get(DB_BLOBS, bkey)
            if raw is not None:
                blobs.append((bkey, values.load(txn, self._unframe, ns_prefix, bkey, raw)))
        writes = list(txn.prefix(DB_WRITES, lay.writes_prefix(ns_prefix, cid)))
        return env, blobs, writes

    def _build_tuple(
        self,
        env: Envelope,
        blobs: builtins.list[tuple[bytes, values.Loaded]],
        writes: builtins.list[Row],
    ) -> CheckpointTuple:
        """Outside any txn: verify the frames and deserialize."""
        channel_values: dict[str, Any] = {}
        names = dict(self._blob_names(env))
        for bkey, loaded in blobs:
            channel_values[names[bkey]] = self._loads(values.join(loaded, self._unframe))
        pending: builtins.list[tuple[tuple[str, str, int], PendingWrite]] = []
        for wkey, raw in writes:
            task_id, widx, channel, type_, data, path = self._decode_list(DB_WRITES, wkey, raw, 6)
            pending.append(
                (
                    writes_sort_key(path, task_id, widx),
                    (task_id, channel, self._loads((type_, data))),
                )
            )
        pending.sort(key=lambda p: p[0])
        checkpoint = self._loads(env.ck)
        checkpoint["channel_values"] = channel_values
        metadata = self._loads(env.md)
        parent = None if env.parent is None else self._config(env.thread, env.ns, env.parent)
        return CheckpointTuple(
            config=self._config(env.thread, env.ns, env.id),
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=parent,
            pending_writes=[p[1] for p in pending],
        )

    def _blob_names(self, env: Envelope) -> Iterator[tuple[bytes, str]]:
        lay = self._layout
        ns_prefix = lay.ns(lay.thread(env.thread), env.ns)
        for channel, vtext in env.blobs:
            yield ns_prefix + lay.part(channel, "channel") + lay.part(vtext, "ver"), channel

    def _decode_list(self, db: bytes, key: bytes, value: bytes, n: int) -> builtins.list[Any]:
        try:
            doc = encoding.decode(self._unframe(db, key, value))
        except FormatError as err:
            raise IntegrityError(f"{db.decode()}/{key.hex()}: {err}") from None
        if type(doc) is not list or len(doc) != n:
            raise IntegrityError(f"{db.decode()}/{key.hex()}: malformed record")
        return doc

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (its ``checkpoint_id``, else the newest of the
        thread's namespace), with its channel values and pending writes; None if absent."""
        self.flush()  # held pending writes first: reads see them, changes follow them
        values.chunks_ready(self._env)
        thread_id, ns = self._ids(config)
        lay = self._layout
        ns_prefix = lay.ns(lay.thread(thread_id), ns)
        checkpoint_id = get_checkpoint_id(config)
        with self._env.read() as txn:
            if checkpoint_id:
                key = lay.checkpoint(ns_prefix, str(checkpoint_id))
                value = txn.get(DB_CHECKPOINTS, key)
            else:
                found = next(txn.prefix(DB_CHECKPOINTS, ns_prefix, reverse=True), None)
                key, value = found if found is not None else (b"", None)
            if value is None:
                return None
            parts = self._read_tuple(txn, key, value)
        return self._build_tuple(*parts)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first (by checkpoint id): of one thread (and namespace, when the
        config names one), or of every thread; ``filter`` matches metadata keys exactly."""
        self.flush()  # held pending writes first: reads see them, changes follow them
        values.chunks_ready(self._env)
        lay = self._layout
        prefix = b""
        ns_filter: str | None = None
        wanted_id: str | None = None
        if config is not None:
            conf = config.get("configurable") or {}
            if "thread_id" not in conf:
                raise InvalidInput("config['configurable'] needs a 'thread_id'")
            thread_id = str(conf["thread_id"])
            prefix = lay.thread(thread_id)
            if conf.get("checkpoint_ns") is not None:
                ns_filter = str(conf["checkpoint_ns"])
                prefix = lay.ns(prefix, ns_filter)
            wanted_id = get_checkpoint_id(config)
        before_id = get_checkpoint_id(before) if before else None
        if limit is not None and limit <= 0:
            return
        # One short read transaction for the candidates' envelopes (small: no channel values);
        # each yielded tuple then reads its blobs and writes in its own short transaction, so
        # a slow consumer never holds a reader open.
        with self._env.read() as txn:
            candidates = (
                list(txn.prefix(DB_CHECKPOINTS, prefix))
                if prefix
                else list(txn.range(DB_CHECKPOINTS))
            )
        rows: builtins.list[tuple[str, bytes, bytes]] = []
        for key, value in candidates:
            _thread, _nsp, cid = split_checkpoint_key(key)
            if wanted_id and cid != wanted_id:
                continue
            if before_id and cid >= before_id:
                continue
            rows.append((cid, key, value))
        rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
        count = 0
        for _cid, key, value in rows:
            env = self._envelope(key, value)
            if filter:
                md = self._loads(env.md)
                if not all(md.get(k) == v for k, v in filter.items()):
                    continue
            with self._env.read() as txn:
                if txn.get(DB_CHECKPOINTS, key) != value:
                    continue  # deleted (or replaced) since the candidates were read
                parts = self._read_tuple(txn, key, value)
            yield self._build_tuple(*parts)
            count += 1
            if limit is not None and count >= limit:
                return

    # -- deletion --------------------------------------------------------------------------------

    def _delete_checkpoint(self, txn: Txn, key: bytes, env: Envelope | None) -> None:
        """Delete one checkpoint, its pending writes and its run index entry (blobs: see
        :meth:`_collect_blobs`)."""
        _thread, ns_prefix, cid = split_checkpoint_key(key)
        txn.delete(DB_CHECKPOINTS, key)
        wprefix = self._layout.writes_prefix(ns_prefix, cid)
        txn.delete_range(DB_WRITES, wprefix, prefix_end(wprefix))
        if env is not None and env.run_id is not None:
            txn.delete(DB_RUNS, self._layout.run(env.run_id, key))

    def _collect_blobs(self, txn: Txn, ns_prefix: bytes) -> int:
        return values.collect_blobs(txn, self._envelope, self._layout, self._unframe, ns_prefix)

    def _thread_runs(self, txn: Txn, thread: bytes) -> builtins.list[bytes]:
        """Run index keys of a thread's checkpoints (those whose envelope verifies; entries of
        the others go stale and are dropped by :meth:`delete_for_runs`)."""
        out = []
        for key, value in txn.prefix(DB_CHECKPOINTS, thread):
            with contextlib.suppress(CkdbError):
                env = self._envelope(key, value)
                if env.run_id is not None:
                    out.append(self._layout.run(env.run_id, key))
        return out

    def _delete_thread_in(self, txn: Txn, thread: bytes) -> None:
        for run_key in self._thread_runs(txn, thread):
            txn.delete(DB_RUNS, run_key)
        hi = prefix_end(thread)
        for db in (DB_CHECKPOINTS, DB_BLOBS, DB_WRITES, DB_CHUNKS):
            txn.delete_range(db, thread, hi)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, blob and pending write of a thread (all namespaces). The
        thread's retention setting, if any, stays."""
        self.flush()  # held pending writes first: reads see them, changes follow them
        thread = self._layout.thread(str(thread_id))
        self._env.write(lambda txn: self._delete_thread_in(txn, thread))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete every checkpoint (with its writes) created by the given runs, in every thread
        and namespace; blobs no remaining checkpoint needs go too."""
        self.flush()  # held pending writes first: reads see them, changes follow them
        prefixes = [self._layout.run_prefix(str(r)) for r in run_ids]
        if not prefixes:
            return

        def apply(txn: Txn) -> None:
            touched: set[bytes] = set()
            for rprefix, run_id in zip(prefixes, run_ids, strict=True):
                for rkey, _ in list(txn.prefix(DB_RUNS, rprefix)):
                    ck_key = rkey[len(rprefix) :]
                    value = txn.get(DB_CHECKPOINTS, ck_key)
                    env = None
                    if value is not None:
                        try:
                            env = self._envelope(ck_key, value)
                        except CkdbError:
                            # The index says this run wrote it; a damaged envelope cannot say
                            # otherwise, and the caller asked for the run's data to go.
                            env = None
                        if env is None or env.run_id == str(run_id):
                            self._delete_checkpoint(txn, ck_key, env)
                            touched.add(split_checkpoint_key(ck_key)[1])
                    txn.delete(DB_RUNS, rkey)
            for ns_prefix in touched:
                self._collect_blobs(txn, ns_prefix)

        self._env.write(apply)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and pending write of a thread to another thread (same
        namespaces and checkpoint ids; existing target entries with the same ids are
        replaced). Frames are re-tagged for their new keys."""
        self.flush()  # held pending writes first: reads see them, changes follow them
        lay = self._layout
        src = lay.thread(str(source_thread_id))
        dst = lay.thread(str(target_thread_id))
        if src == dst:
            return
        with self._env.read() as txn:
            dbs = (DB_CHECKPOINTS, DB_BLOBS, DB_WRITES, DB_CHUNKS)
            rows = {db: list(txn.prefix(db, src)) for db in dbs if self._env.is_open(db)}
        frames: builtins.list[tuple[bytes, bytes, bytes]] = []
        for db, items in rows.items():
            for key, value in items:
                new_key = dst + key[len(src) :]
                raw = self._unframe(db, key, value)
                if db == DB_CHECKPOINTS:
                    env = Envelope.parse(raw, f"lg_checkpoints/{key.hex()}")
                    doc = dict(env.doc, thread_id=str(target_thread_id))
                    raw = encoding.encode(doc, "checkpoint")
                    if env.run_id is not None:
                        frames.append((DB_RUNS, lay.run(env.run_id, new_key), b""))
                frames.append((db, new_key, self._frame(db, new_key, raw)))
        if not frames:
            return

        def apply(txn: Txn) -> None:
            if rows.get(DB_CHUNKS):
                self.store.tables.set_incompat(txn, INCOMPAT_LG_PIECES)
            for db, key, value in frames:
                txn.put(db, key, value)

        self._env.write(apply, estimate=sum(len(f[2]) for f in frames))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep only the newest checkpoint of each namespace of each thread
        (with its pending writes and the blobs it references); ``delete``: delete the threads.
        One transaction per thread."""
        self.flush()  # held pending writes first: reads see them, changes follow them
        if strategy not in STRATEGIES:
            raise InvalidInput(f"unknown prune strategy {strategy!r}; use one of {STRATEGIES}")
        for thread_id in thread_ids:
            thread = self._layout.thread(str(thread_id))
            if strategy == "delete":
                self._env.write(functools.partial(self._delete_thread_of, thread))
            else:
                self._env.write(functools.partial(self._keep_latest_of, thread))

    def _delete_thread_of(self, thread: bytes, txn: Txn) -> None:
        self._delete_thread_in(txn, thread)

    def _keep_latest_of(self, thread: bytes, txn: Txn) -> None:
        by_ns: dict[bytes, builtins.list[tuple[bytes, bytes]]] = {}
        for key, value in txn.prefix(DB_CHECKPOINTS, thread):
            by_ns.setdefault(split_checkpoint_key(key)[1], []).append((key, value))
        for ns_prefix, items in by_ns.items():
            # keys sort by checkpoint id within a namespace: the last is the newest
            for key, value in items[:-1]:
                env = None
                with contextlib.suppress(CkdbError):
                    env = self._envelope(key, value)
                self._delete_checkpoint(txn, key, env)
            self._collect_blobs(txn, ns_prefix)

    # -- retention (ckdb policies) ---------------------------------------------------------------

    def set_retention(self, thread_id: str, policy: str | RetentionPolicy | None) -> None:
        """Set a thread's own retention policy (a ckdb preset name or a RetentionPolicy); None:
        no automatic retention for this thread, whatever the saver's default. Applied after
        each put to the namespace written, in the put's transaction."""
        resolved = None if policy is None else resolve_policy(policy)
        key = self._layout.retention(self._layout.thread(str(thread_id)))
        body = encoding.encode({"policy": None if resolved is None else resolved.to_doc()})
        frame = self.store.tables.frames.frame(RTYPE, DB_SETTINGS, key, body, Codec.NONE)
        self._env.write(lambda txn: txn.put(DB_SETTINGS, key, frame))

    def get_retention(self, thread_id: str) -> RetentionPolicy | None:
        """The policy that applies to a thread: its own, else the saver's default."""
        thread = self._layout.thread(str(thread_id))
        with self._env.read() as txn:
            return self._policy_in(txn, thread)

    def _policy_in(self, txn: Txn, thread: bytes) -> RetentionPolicy | None:
        key = self._layout.retention(thread)
        raw = txn.get(DB_SETTINGS, key)
        if raw is None:
            return self._retention
        try:
            doc = encoding.decode(self.store.tables.frames.unframe(DB_SETTINGS, key, raw, RTYPE))
            policy = doc["policy"]
            return None if policy is None else RetentionPolicy.from_doc(policy)
        except (FormatError, KeyError, TypeError, ValueError) as err:
            raise IntegrityError(f"lg_settings/{key.hex()}: malformed policy: {err}") from None

    def _retain_ns(
        self,
        txn: Txn,
        ns_prefix: bytes,
        policy: RetentionPolicy,
        now: datetime,
        thread_id: str,
        *,
        dry_run: bool = False,
        protect: str | None = None,
    ) -> tuple[RetentionPlan, builtins.list[str]]:
        """Plan (and unless ``dry_run`` apply) ``policy`` to one namespace. Checkpoints whose
        envelope does not verify are neither counted nor deleted. ``protect``: the checkpoint a
        ``put`` just wrote is never deleted by its own retention, even if its id sorts before
        older ones (a stepped clock, another process, a caller-chosen id). Found in review."""
        entries: builtins.list[Entry] = []
        envs: dict[str, tuple[bytes, Envelope]] = {}
        for seq, (key, value) in enumerate(txn.prefix(DB_CHECKPOINTS, ns_prefix), start=1):
            try:
                env = self._envelope(key, value)
            except CkdbError:
                _log.warning("lg_checkpoints/%s does not verify: retention skips it", key.hex())
                continue
            created = datetime.fromtimestamp(env.created_us / 1_000_000, tz=UTC)
            entries.append(Entry(seq=seq, id=env.id, created_at=created))
            envs[env.id] = (key, env)
        planned = plan_retention(entries, policy, now, workflow_id=thread_id)
        if protect is not None and protect in planned.delete:
            # Counted as usual, but never deleted by the put that wrote it.
            planned = attrs.evolve(planned, delete=tuple(c for c in planned.delete if c != protect))
        if dry_run or not planned.delete:
            return planned, []
        for cid in planned.delete:
            key, env = envs[cid]
            self._delete_checkpoint(txn, key, env)
        self._collect_blobs(txn, ns_prefix)
        return planned, builtins.list(planned.delete)

    def apply_retention(
        self,
        thread_id: str | None = None,
        policy: str | RetentionPolicy | None = None,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> RetentionResult:
        """Apply retention now: to one thread or (None) every thread; ``policy`` overrides the
        threads' own. One plan per namespace; each namespace keeps its newest checkpoint."""
        self.flush()  # held pending writes first: reads see them, changes follow them
        override = None if policy is None else resolve_policy(policy)
        if now is None:
            now = datetime.now(UTC)
        elif not isinstance(now, datetime) or now.tzinfo is None:
            raise InvalidInput(f"now must be a timezone-aware datetime, not {now!r}")
        if thread_id is not None:
            threads = [self._layout.thread(str(thread_id))]
        else:
            with self._env.read() as txn:
                seen: dict[bytes, None] = {}
                for key, _ in txn.range(DB_CHECKPOINTS):
                    seen[read_part(key, 0)[0]] = None
            threads = builtins.list(seen)
        plans: builtins.list[RetentionPlan] = []
        deleted: builtins.list[str] = []
        for thread in threads:

            def apply(txn: Txn, thread: bytes = thread) -> Any:
                out_plans: builtins.list[RetentionPlan] = []
                out_deleted: builtins.list[str] = []
                pol = override or self._policy_in(txn, thread)
                if pol is None:
                    return out_plans, out_deleted
                spaces: dict[bytes, str] = {}
                for key, value in txn.prefix(DB_CHECKPOINTS, thread):
                    nsp = split_checkpoint_key(key)[1]
                    if nsp not in spaces:
                        try:
                            spaces[nsp] = self._envelope(key, value).thread
                        except CkdbError:
                            spaces[nsp] = "?"
                for nsp, name in spaces.items():
                    p, d = self._retain_ns(txn, nsp, pol, now, name, dry_run=dry_run)
                    out_plans.append(p)
                    out_deleted.extend(d)
                return out_plans, out_deleted

            if dry_run:
                with self._env.read() as txn:
                    p_, d_ = apply(txn)
            else:
                p_, d_ = self._env.write(apply)
            plans.extend(p_)
            deleted.extend(d_)
        return RetentionResult(dry_run=dry_run, plans=tuple(plans), deleted=tuple(deleted))

    # -- versions --------------------------------------------------------------------------------

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``<counter:032>.<random:016>``, as LangGraph's own savers: forks of one parent never
        produce the same version of a channel, so their blobs never collide."""
        return next_version(current)

    # -- async twins of ckdb's own methods (LangGraph's: AsyncTwins) ---------------------------

    async def aset_retention(self, thread_id: str, policy: str | RetentionPolicy | None) -> None:
        await asyncio.to_thread(self.set_retention, thread_id, policy)

    async def aapply_retention(
        self,
        thread_id: str | None = None,
        policy: str | RetentionPolicy | None = None,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> RetentionResult:
        return await asyncio.to_thread(
            self.apply_retention, thread_id, policy, dry_run=dry_run, now=now
        )
