"""The Store: the public facade. It opens the store, holds its record layer and delegates.

Every operation lives in a module of its own over the record layer (``ckdb/tables/``):

==========================================  ==================================================
``create``                                  ``_create.py`` (write protocol, commit point)
``load``, ``get_info``, ``list``,           ``reading.py``
``latest``, ``workflows``, ``stats``
``validate``                                ``integrity.py``
``restore``, ``restore_latest``             ``restoring.py`` (files: ``restore.py``)
``mark``, ``pin``, ``delete``, ...          ``lifecycle.py``
``prune``, ``set/get_retention``            ``pruning.py`` (plans: ``retention.py``)
``scrub``                                   ``scrub.py``
``backup``, ``compact``, ``monitor``        ``maintenance.py``
``rotate_key``, ``retag``                   ``keyrotation.py``
==========================================  ==================================================

``docs/design.md`` has the map of the layers and who may import whom; ``docs/format.md`` the
bytes, the commit point and the crash windows.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self

from ckdb import keys, lifecycle, pruning, reading, restoring
from ckdb._create import commit_ahead, create_checkpoint
from ckdb._env import Env
from ckdb._open import default_creator, open_tables
from ckdb.capture import ChunkSink
from ckdb.components import Registered
from ckdb.errors import InvalidInput
from ckdb.integrity import LEVELS, ValidationReport, validate_checkpoint
from ckdb.keyrotation import RotationReport, retag, rotate_key
from ckdb.keys import Keyring
from ckdb.layout import CIPHERS, FLAG_PINNED, Codec, RecordType, check_name, id_from_text
from ckdb.maintenance import BackupReport, Monitor, backup
from ckdb.records import KIND_AUTOMATIC, Checkpoint, CheckpointInfo
from ckdb.remote import Remote, importer
from ckdb.remote.gc import GcReport
from ckdb.remote.gc import gc as remote_gc
from ckdb.remote.importer import TakeoverReport
from ckdb.remote.link import Link
from ckdb.remote.shipper import RemoteStatus, Shipper, ShipReport
from ckdb.restore import RestoreReport, check_path
from ckdb.retention import RetentionPolicy, RetentionResult, resolve_policy
from ckdb.scrub import Finding, ScrubReport, scrub
from ckdb.tables.verified import Verified

_log = logging.getLogger("ckdb")
DURABILITIES = ("sync", "relaxed")


def open(
    path: str | os.PathLike[str],
    *,
    key: bytes | None = None,
    key_file: str | os.PathLike[str] | None = None,
    readonly: bool = False,
    retention: str | RetentionPolicy | None = "standard",
    durability: str = "sync",
    create: bool = True,
    map_size: int | None = None,
    created_by: str | None = None,
    on_corruption: Callable[[Finding], object] | None = None,
    encryption: str | None = None,
    remote: Remote | str | None = None,
    _unsafe_nosync: bool = False,
) -> Store:
    """Open (or create) the store at ``path``. See :class:`Store`."""
    return Store(
        path,
        encryption=encryption,
        remote=remote,
        key=key,
        key_file=key_file,
        readonly=readonly,
        retention=retention,
        on_corruption=on_corruption,
        durability=durability,
        create=create,
        map_size=map_size,
        created_by=created_by,
        _unsafe_nosync=_unsafe_nosync,
    )


class Store:
    """A ckdb store: one LMDB environment. Share one ``Store`` between threads; several processes
    may open the same path. Use as a context manager, or call :meth:`close`.

    ``tables`` is the store's record layer (``ckdb.tables``), for tools and tests that look at
    stored bytes; it is not a stable API."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        key_file: str | os.PathLike[str] | None = None,
        readonly: bool = False,
        retention: str | RetentionPolicy | None = "standard",
        durability: str = "sync",
        create: bool = True,
        map_size: int | None = None,
        created_by: str | None = None,
        on_corruption: Callable[[Finding], object] | None = None,
        encryption: str | None = None,
        remote: Remote | str | None = None,
        _unsafe_nosync: bool = False,
    ) -> None:
        if encryption is not None and encryption not in CIPHERS:
            raise InvalidInput(
                f"encryption must be None or one of {tuple(CIPHERS)}, not {encryption!r}"
            )
        self._corruption_handlers: builtins.list[Callable[[Finding], object]] = []
        if on_corruption is not None:
            if not callable(on_corruption):
                raise InvalidInput("on_corruption must be callable")
            self._corruption_handlers.append(on_corruption)
        # The default policy for workflows without their own (set_retention); None: no automatic
        # retention. A runtime knob, not stored: it shapes no on-disk format.
        default_policy = None if retention is None else resolve_policy(retention)
        if durability not in DURABILITIES:
            raise InvalidInput(f"durability must be one of {DURABILITIES}, not {durability!r}")
        if map_size is not None and (not isinstance(map_size, int) or map_size < 1 << 16):
            raise InvalidInput(f"map_size must be an int of at least 65536, not {map_size!r}")
        if key is not None:
            key = keys.check_master_key(key)
        if remote is not None:
            if readonly:
                raise InvalidInput("a read-only store cannot ship to a remote")
            remote = remote if isinstance(remote, Remote) else Remote(remote)
        self.path = Path(check_path(path, "path")).absolute()
        self.readonly = readonly
        self.durability = durability
        self._components = Registered()
        self._close_hooks: list[Callable[[], None]] = []
        if key_file is None and key is None and os.environ.get("CKDB_KEY_FILE"):
            key_file = os.environ["CKDB_KEY_FILE"]
        self.tables = open_tables(
            self.path,
            key=key,
            key_file=key_file,
            readonly=readonly,
            durability=durability,
            create=create,
            map_size=map_size,
            encryption=encryption,
            retention=default_policy,
            created_by=created_by or default_creator(),
            unsafe_nosync=_unsafe_nosync,
        )
        self.remote = remote
        self._shipper: Shipper | None = None
        if remote is not None:
            shipper = Shipper(
                self.tables,
                remote.objects,
                remote.key or self.tables.master,
                remote.interval,
                durability,
            )
            try:
                shipper.attach()
            except BaseException:
                self.tables.env.close()
                raise
            self._shipper = shipper

    def close(self) -> None:
        """Close the store. Close hooks run first (work held in memory is written); the
        environment is closed even if one fails, and the first failure is raised after."""
        failure: BaseException | None = None
        hooks, self._close_hooks = self._close_hooks, []
        if not self.closed:
            for hook in hooks:
                try:
                    hook()
                except Exception as err:  # the others still run, and the store still closes
                    failure = failure or err
        if self._shipper is not None:
            self._shipper.stop()
        self.tables.env.close()
        if failure is not None:
            raise failure

    def add_close_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` when the store closes, before its environment does: for integrations
        that hold writes in memory (the LangGraph saver's held pending writes). Hooks run once,
        in the order added."""
        self._close_hooks.append(hook)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("read-only" if self.readonly else "open")
        return f"<ckdb.Store {str(self.path)!r} {state}>"

    @property
    def closed(self) -> bool:
        return self.tables.env.closed

    @property
    def uuid(self) -> str:
        return self.tables.uuid.hex()

    # White-box handles for tests and benchmarks (no module of ckdb uses them).
    @property
    def _env(self) -> Env:
        return self.tables.env

    @property
    def _keys(self) -> Keyring:
        return self.tables.keys

    @property
    def _verified(self) -> Verified:
        return self.tables.frames.verified

    # -- keys ------------------------------------------------------------------------------------

    def rotate_key(
        self, new_master_key: bytes | None = None, *, new_data_key: bool = False
    ) -> RotationReport:
        """Re-wrap the store's keys under ``new_master_key`` in one transaction (None: generate
        one, for stores that use their own key file). With ``new_data_key=True``, also start a new
        data key for new writes and re-tag old frames in bounded, resumable transactions. Retired
        keys stay in the store, so older backups still verify. Refused (InvalidInput) while a
        remote is attached whose fleet key is this master key: the store would lose its remote."""
        if self.remote is not None and self.remote.key is None:
            raise InvalidInput(
                "this store ships to a remote under its master key (the fleet key): rotating it "
                "would lock the store out of its remote. Open the store with "
                "Remote(..., key=<the fleet key>) to rotate its own master key"
            )
        return rotate_key(self.tables, new_master_key, new_data_key)

    def retag(self, max_batches: int | None = None) -> RotationReport:
        """Resume (or run) re-tagging of frames under the active data key."""
        return retag(self.tables, max_batches)

    # -- components registered by the agent -----------------------------------------------------

    def register_component(
        self,
        name: str,
        *,
        capture: Callable[[], Any] | None = None,
        restore: Callable[[Any], None] | None = None,
    ) -> None:
        """Register how a state component is captured and restored.

        ``create`` calls every ``capture`` (unless ``state=`` gives that component) and ``restore``
        hands each ``restore`` its value back. The names ``"resources"`` and ``"dependencies"``
        stand for the checkpoint's resources and dependencies.
        """
        self._components.register(name, capture, restore)

    def unregister_component(self, name: str) -> None:
        self._components.unregister(name)

    # -- the chunk sink capture writes into (ckdb.capture.ChunkSink) ------------------------------

    def content_id(self, data: bytes | memoryview) -> bytes:
        return self.tables.chunks.content_id(data)

    def has_chunk(self, cid: bytes) -> bool:
        with self.tables.env.read() as txn:
            return self.tables.chunks.has(txn, cid)

    def chunk_frame(self, cid: bytes, data: bytes | memoryview, codec: Codec = Codec.AUTO) -> bytes:
        return self.tables.chunks.frame(cid, data, codec)

    def commit_ahead(self, lease_id: bytes, frames: dict[bytes, bytes], leased: set[bytes]) -> None:
        """Commit chunks ahead of a large checkpoint, protected by a lease until its commit."""
        commit_ahead(self.tables, lease_id, frames, leased)

    # -- create ----------------------------------------------------------------------------------

    def create(
        self,
        workflow_id: str,
        phase: str,
        *,
        state: Mapping[str, Any] | None = None,
        resources: Any = None,
        dependencies: Any = None,
        files: str | os.PathLike[str] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        kind: str = KIND_AUTOMATIC,
        name: str | None = None,
        include_files: bool = True,
        include_resources: bool = True,
        compression: bool | str = True,
        verification_level: str | None = None,
        pinned: bool = False,
        created_by: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CheckpointInfo:
        """Create a checkpoint; returns its metadata once it is durable.

        ``state`` maps component names (phase, task, agent, progress, configuration, or your own)
        to encodable values; components registered with :meth:`register_component` are captured
        too (``state`` wins on a name clash). ``files`` captures a working directory and records
        it as the workflow's; later checkpoints of the workflow capture it again unless
        ``include_files=False``. Nothing is written unless every input is valid.
        """
        sink: ChunkSink = self
        info = create_checkpoint(
            self.tables,
            self._components,
            sink,
            self.validate,
            workflow_id,
            phase,
            state=state,
            resources=resources,
            dependencies=dependencies,
            files=files,
            include=include,
            exclude=exclude,
            kind=kind,
            name=name,
            include_files=include_files,
            include_resources=include_resources,
            compression=compression,
            verification_level=verification_level,
            pinned=pinned,
            created_by=created_by,
            progress=progress,
        )
        self._changed()
        return info

    def _changed(self) -> None:
        if self._shipper is not None:
            self._shipper.poke()

    # -- reading ---------------------------------------------------------------------------------

    def load(self, checkpoint_id: str) -> Checkpoint:
        """Load and verify a checkpoint: every frame's tag, every component digest, the integrity
        digest, and its registry entry. A damaged or marked checkpoint is an IntegrityError."""
        return reading.load(self.tables, id_from_text(checkpoint_id))[0]

    def get_info(self, checkpoint_id: str) -> CheckpointInfo:
        """A checkpoint's verified metadata (no payload decoding)."""
        return reading.get_info(self.tables, checkpoint_id)

    def list(
        self,
        workflow_id: str | None = None,
        *,
        phase: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> builtins.list[CheckpointInfo]:
        """Checkpoints newest first (per workflow: by sequence), from the registry and metadata
        only. Damaged or marked checkpoints are listed with ``status="corrupted"``."""
        return reading.list_checkpoints(
            self.tables, workflow_id, phase=phase, kind=kind, since=since, until=until, limit=limit
        )

    def latest(self, workflow_id: str) -> CheckpointInfo | None:
        """The newest valid checkpoint of a workflow: not marked, registry entry and metadata
        verify. None if there is none."""
        return reading.latest(self.tables, workflow_id)

    def workflows(self) -> builtins.list[str]:
        """Every workflow id with a record in the store, sorted."""
        return reading.workflows(self.tables)

    def stats(self) -> dict[str, int]:
        """Counts and sizes: checkpoints, workflows, stored bytes, file size, LMDB pages
        (see :func:`ckdb.reading.stats`)."""
        return reading.stats(self.tables)

    # -- validation and restore ------------------------------------------------------------------

    def validate(self, checkpoint_id: str, level: str = "standard") -> ValidationReport:
        """Validate a checkpoint at ``basic``, ``standard`` or ``comprehensive`` level."""
        return validate_checkpoint(self.tables, checkpoint_id, level)

    def restore(
        self,
        checkpoint_id: str,
        *,
        target_dir: str | os.PathLike[str] | None = None,
        restore_files: bool = True,
        restore_resources: bool = True,
        verify: bool = True,
        delete_extra: bool = False,
        progress: Callable[[int, int], None] | None = None,
        allow_recorded_dir: bool = True,
    ) -> RestoreReport:
        """Restore a checkpoint: files into ``target_dir`` (default: the working directory
        recorded at capture), state through the registered restorers. Safe to run again after a
        crash. The report's ``checkpoint`` is exactly what was restored.

        ``allow_recorded_dir=False`` refuses to restore files without ``target_dir``: the
        recorded working directory comes from the checkpoint's metadata, which anyone holding
        the key can write (see docs/reliability.md)."""
        id_from_text(checkpoint_id)
        opts = restoring.options(
            target_dir,
            restore_files,
            restore_resources,
            verify,
            delete_extra,
            progress,
            allow_recorded_dir,
        )
        return restoring.restore(self.tables, self._components, checkpoint_id, opts)

    def restore_latest(
        self,
        workflow_id: str,
        *,
        target_dir: str | os.PathLike[str] | None = None,
        restore_files: bool = True,
        restore_resources: bool = True,
        verify: bool = True,
        delete_extra: bool = False,
        level: str = "standard",
        progress: Callable[[int, int], None] | None = None,
        allow_recorded_dir: bool = True,
    ) -> RestoreReport:
        """Restore the newest valid checkpoint of a workflow. Candidates are validated newest
        first; those that fail are marked corrupted and skipped, and the report says which."""
        check_name(workflow_id, "workflow_id")
        opts = restoring.options(
            target_dir,
            restore_files,
            restore_resources,
            verify,
            delete_extra,
            progress,
            allow_recorded_dir,
        )
        return restoring.restore_latest(self.tables, self._components, workflow_id, level, opts)

    # -- marking, pinning, deleting --------------------------------------------------------------

    def mark(self, checkpoint_id: str, reason: str) -> None:
        """Mark a checkpoint corrupted: ``load`` refuses it, ``latest`` skips it."""
        lifecycle.mark(self.tables, checkpoint_id, reason)

    def pin(self, checkpoint_id: str) -> CheckpointInfo:
        """Pin a checkpoint: no retention policy will delete it."""
        info = lifecycle.set_flag(self.tables, checkpoint_id, FLAG_PINNED, True)
        self._changed()
        return info

    def unpin(self, checkpoint_id: str) -> CheckpointInfo:
        info = lifecycle.set_flag(self.tables, checkpoint_id, FLAG_PINNED, False)
        self._changed()
        return info

    def delete(self, checkpoint_id: str) -> None:
        """Delete one checkpoint, whole, in one transaction."""
        lifecycle.delete(self.tables, checkpoint_id)
        self._changed()

    def delete_workflow(self, workflow_id: str) -> int:
        """Delete a workflow and all its checkpoints in one transaction; returns how many."""
        count = lifecycle.delete_workflow(self.tables, workflow_id)
        self._changed()
        return count

    # -- integrity: scrub, monitor, backups -------------------------------------------------------

    def add_corruption_handler(self, handler: Callable[[Finding], object]) -> None:
        """Call ``handler(finding)`` for every corruption event (scrub, monitor)."""
        if not callable(handler):
            raise InvalidInput("a corruption handler must be callable")
        self._corruption_handlers.append(handler)

    def _notify_corruption(
        self, finding: Finding, extra: Callable[[Finding], object] | None = None
    ) -> None:
        for handler in [*self._corruption_handlers, *([extra] if extra else [])]:
            try:
                handler(finding)
            except Exception:  # a broken callback must not stop the scrub or the monitor
                _log.exception("ckdb: on_corruption handler failed")

    def scrub(
        self,
        *,
        workflow_id: str | None = None,
        level: str = "comprehensive",
        repair: bool = False,
        backup: str | os.PathLike[str] | None = None,
        budget: timedelta | int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ScrubReport:
        """Verify the store (see ``ckdb.scrub``). ``budget``: a timedelta (time) or an int (bytes)
        to verify part of the store now and resume where this stopped next time. Corrupt
        checkpoints are marked even without ``repair``; every event is logged at CRITICAL and
        passed to the ``on_corruption`` handlers."""
        return scrub(
            self.tables,
            workflow_id=workflow_id,
            level=level,
            repair=repair,
            backup=backup,
            budget=budget,
            notify=self._notify_corruption,
            progress=progress,
        )

    def monitor(
        self,
        interval: float = 3600,
        *,
        budget: timedelta | int | None = timedelta(seconds=2),
        level: str = "comprehensive",
        repair: bool = False,
        backup: str | os.PathLike[str] | None = None,
        on_corruption: Callable[[Finding], object] | None = None,
        lease_seconds: float | None = None,
    ) -> Monitor:
        """Start a background integrity monitor: incremental scrubs every ``interval`` seconds,
        each bounded by ``budget``. One monitor per store across processes (a lease elects it;
        others stand by). Returns the running monitor (a context manager; ``stop()``)."""
        if level not in LEVELS:
            raise InvalidInput(f"level must be one of {LEVELS}, not {level!r}")
        return Monitor(
            self.tables,
            self._notify_corruption,
            interval,
            budget=budget,
            level=level,
            repair=repair,
            backup=backup,
            on_corruption=on_corruption,
            lease_seconds=lease_seconds,
        ).start()

    def backup(
        self, dest: str | os.PathLike[str], *, progress: Callable[[str], None] | None = None
    ) -> BackupReport:
        """A consistent, compacted, fsynced and verified copy at ``dest`` (which must not exist
        or be empty), taken while writers keep working. It opens with the same master key."""
        return backup(self.tables, dest, progress=progress)

    def compact(
        self, dest: str | os.PathLike[str], *, progress: Callable[[str], None] | None = None
    ) -> BackupReport:
        """Write a compacted copy to ``dest`` (the LMDB file never shrinks by itself): the same
        verified copy as :meth:`backup`, meant to replace a bloated store."""
        return self.backup(dest, progress=progress)

    # -- retention -------------------------------------------------------------------------------

    def set_retention(self, workflow_id: str, policy: str | RetentionPolicy | None) -> None:
        """Set a workflow's own retention policy, kept in the store; None: no automatic
        retention for it. An unknown policy name is an InvalidInput and changes nothing."""
        pruning.set_retention(self.tables, workflow_id, policy)

    def get_retention(self, workflow_id: str) -> RetentionPolicy | None:
        """The policy that applies to a workflow (its own, else the store's default)."""
        return pruning.get_retention(self.tables, workflow_id)

    def prune(
        self,
        workflow_id: str | None = None,
        policy: str | RetentionPolicy | None = None,
        *,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> RetentionResult:
        """Apply retention. ``workflow_id=None``: every workflow; ``policy=None``: each
        workflow's own. Runs as bounded transactions, each leaving a valid store."""
        result = pruning.prune(self.tables, workflow_id, policy, dry_run=dry_run, now=now)
        if result.deleted:
            self._changed()
        return result

    # -- remote ----------------------------------------------------------------------------------

    def _remote_shipper(self) -> Shipper:
        if self._shipper is None:
            raise InvalidInput("this store has no remote: open it with ckdb.open(..., remote=...)")
        return self._shipper

    def _link(self) -> Link:
        shipper = self._remote_shipper()
        if shipper.link is None:
            shipper.link = Link.connect(shipper.objects, shipper.master)
        return shipper.link

    def sync_remote(self, timeout: float | None = None) -> ShipReport:
        """Block until every change committed before this call is in the remote (or
        RemoteError after ``timeout`` seconds; local checkpoints are never at risk)."""
        return self._remote_shipper().sync(timeout)

    def remote_status(self) -> RemoteStatus:
        """Per workflow: the epoch this store owns it under, what is shipped, what is pending,
        the lag, who fenced it; and the shipper's counters."""
        return self._remote_shipper().status()

    def take_over(
        self, workflow_id: str, *, progress: Callable[[int, int], None] | None = None
    ) -> TakeoverReport:
        """Import a workflow from the remote (verified end to end), claim it and fence its old
        owner; this store ships it from now on. CheckpointNotFound if the remote has none."""
        report = importer.take_over(self.tables, self._link(), workflow_id, progress=progress)
        self._changed()
        return report

    def gc_remote(self, *, margin: timedelta = timedelta(hours=1)) -> GcReport:
        """Collect the remote's garbage for the workflows this store owns: a snapshot each,
        then segments, snapshots and blobs that a snapshot at least ``margin`` old makes
        unnecessary (docs/remote.md, "Garbage collection")."""
        return remote_gc(self.tables, self._remote_shipper(), margin=margin)

    def pull(
        self, workflow_id: str, *, progress: Callable[[int, int], None] | None = None
    ) -> TakeoverReport:
        """Import a workflow read-only, to inspect or restore it; ``create`` for it raises
        Fenced here until :meth:`take_over`."""
        return importer.pull(self.tables, self._link(), workflow_id, progress=progress)

    def _payload_address(self, checkpoint_id: str, rtype: RecordType, name: str) -> bytes:
        """White-box, for tests: the ``payloads`` key of the frame holding a component."""
        cid = id_from_text(checkpoint_id)
        with self.tables.env.read() as txn:
            meta = self.tables.checkpoints.read(txn, cid)
        return self.tables.payloads.address(meta, rtype, name)
