"""The Store: open/close, create/load/list/latest/delete.

Write protocol (``docs/format.md`` has the byte tables and the crash windows):

1. Validate every input; encode, compress and tag every payload frame outside the write lock.
2. One write transaction: assign the workflow sequence and parent, build the metadata frame,
   put payloads, metadata, registry entry and workflow record, read every value back and verify
   it, commit. The commit is the commit point: before it nothing of the checkpoint is visible,
   after it all of it is durable (``durability="sync"``).
3. The transaction body is a function that can be re-run whole after a map resize.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import attrs

from ckdb import encoding, keys
from ckdb._create import _codec_for, create_checkpoint  # noqa: F401 - re-exported
from ckdb._env import DEFAULT_MAP_SIZE, Env, Txn
from ckdb._open import (
    _aware_us,
    _cipher_of,
    _create_store,
    _default_creator,
    _resolve_key,
    check_format,
)
from ckdb._verified import Verified
from ckdb.capture import (
    check_manifest,
    file_state,
    manifest_chunks,
)
from ckdb.chunks import LEASE_SECONDS, content_id, put_lease, release_refs
from ckdb.codec import decode_frame, decode_registry, encode_frame, encode_registry
from ckdb.errors import (
    CheckpointNotFound,
    CkdbError,
    FormatError,
    IntegrityError,
    InvalidInput,
    ReadOnlyStore,
    RestoreFailed,
    StoreNotFound,
    WorkflowNotFound,
    WrongKey,
)
from ckdb.integrity import LEVELS, Payloads, ValidationReport, validate
from ckdb.keyrotation import RotationReport, finish_pending_key_file, retag, rotate
from ckdb.layout import (
    CIPHERS,
    DB_CHECKPOINTS,
    DB_CHUNKS,
    DB_INFO,
    DB_MARKS,
    DB_PAYLOADS,
    DB_REGISTRY,
    DB_SETTINGS,
    DB_WORKFLOWS,
    FLAG_MANUAL,
    FLAG_MARKED,
    FLAG_PINNED,
    FORMAT,
    ID_SIZE,
    INCOMPAT_BUNDLES,
    INFO_FORMAT,
    INFO_KEYCHECK,
    INFO_KEYRING,
    Codec,
    RecordType,
    check_name,
    id_from_text,
    id_to_text,
    prefix_end,
    registry_key,
    split_registry_key,
)
from ckdb.maintenance import BackupReport, Monitor, backup
from ckdb.meta import (  # noqa: F401 - re-exported
    _DIGEST_PART,
    _MISSING,
    _PAYLOAD_TYPE_VALUES,
    _TYPE_NAMES,
    MAX_TIME_US,
    METADATA_VERSION,
    _dt,
    _integrity,
    _Meta,
    _now_us,
)
from ckdb.pruning import delete_victims, newest_valid, prune_batches, registry_entries
from ckdb.records import (
    KIND_AUTOMATIC,
    KIND_MANUAL,
    KINDS,
    STATUS_CORRUPTED,
    STATUS_VALID,
    Checkpoint,
    CheckpointInfo,
)
from ckdb.restore import RestoreReport, check_path, check_target, restore_tree
from ckdb.retention import (
    RetentionPlan,
    RetentionPolicy,
    RetentionResult,
    resolve_policy,
)
from ckdb.retention import plan as plan_retention
from ckdb.scrub import Finding, Scrubber, ScrubReport

_log = logging.getLogger("ckdb")
#: Small records read again and again (listing, ``latest``, retention): memoised once verified.
_MEMO_TYPES = frozenset((RecordType.WORKFLOW, RecordType.SETTING))
DURABILITIES = ("sync", "relaxed")
_RETENTION_PREFIX = b"retention/"


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
    _unsafe_nosync: bool = False,
) -> Store:
    """Open (or create) the store at ``path``. See :class:`Store`."""
    return Store(
        path,
        encryption=encryption,
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
    may open the same path. Use as a context manager, or call :meth:`close`."""

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
        _unsafe_nosync: bool = False,
    ) -> None:
        if encryption is not None and encryption not in CIPHERS:
            raise InvalidInput(
                f"encryption must be None or one of {tuple(CIPHERS)}, not {encryption!r}"
            )
        self._corruption_handlers: builtins.list[Callable[[Finding], object]] = []
        self._verified = Verified()  # small values that verified, by address (_verified.py)
        if on_corruption is not None:
            if not callable(on_corruption):
                raise InvalidInput("on_corruption must be callable")
            self._corruption_handlers.append(on_corruption)
        # The default policy for workflows without their own (set_retention); None: no automatic
        # retention. A runtime knob, not stored: it shapes no on-disk format.
        self._retention = None if retention is None else resolve_policy(retention)
        if durability not in DURABILITIES:
            raise InvalidInput(f"durability must be one of {DURABILITIES}, not {durability!r}")
        if map_size is not None and (not isinstance(map_size, int) or map_size < 1 << 16):
            raise InvalidInput(f"map_size must be an int of at least 65536, not {map_size!r}")
        if key is not None:
            key = keys.check_master_key(key)
        self.path = Path(check_path(path, "path")).absolute()
        self.readonly = readonly
        self.durability = durability
        self._created_by = created_by or _default_creator()
        self._components: dict[str, tuple[Callable[[], Any] | None, Callable[[Any], None] | None]]
        self._components = {}
        self._components_lock = threading.Lock()
        if key_file is None and key is None and os.environ.get("CKDB_KEY_FILE"):
            key_file = os.environ["CKDB_KEY_FILE"]
        if not (self.path / "data.mdb").exists():
            if readonly or not create:
                if not self.path.exists():
                    raise StoreNotFound(f"there is no store at {self.path}")
                raise FormatError(f"{self.path} is not a ckdb store (no data.mdb)")
            _create_store(self.path, key, key_file, map_size or DEFAULT_MAP_SIZE, encryption)
        size = map_size or DEFAULT_MAP_SIZE
        with contextlib.suppress(OSError):
            size = max(size, int(os.path.getsize(self.path / "data.mdb") * 1.5))
        self._env = Env(
            self.path,
            readonly=readonly,
            durability=durability,
            map_size=size,
            unsafe_nosync=_unsafe_nosync,
        )
        try:
            self._uuid, self._keys = self._unlock(key, key_file)
            if encryption is not None and encryption != self._keys.cipher:
                raise InvalidInput(
                    f"{self.path} exists with encryption={self._keys.cipher!r}; encryption is "
                    "fixed when a store is created"
                )
        except BaseException:
            self._env.close()
            raise

    # -- opening ---------------------------------------------------------------------------------

    def _unlock(
        self, key: bytes | None, key_file: str | os.PathLike[str] | None
    ) -> tuple[bytes, keys.Keyring]:
        # Check the format version and mandatory features before anything else: an unknown
        # format must not be interpreted, let alone written (borg Repository.open).
        with self._env.read() as txn:
            fmt = txn.get(DB_INFO, INFO_FORMAT)
            check = txn.get(DB_INFO, INFO_KEYCHECK)
            ring = txn.get(DB_INFO, INFO_KEYRING)
        if fmt is None:
            raise FormatError(f"{self.path} has no ckdb format record")
        uuid = check_format(fmt)
        if check is None or ring is None:
            raise FormatError(f"{self.path} has no key records: the store header is damaged")
        master = _resolve_key(self.path, key, key_file)
        self._key_source = (
            "argument" if key is not None else ("file" if key_file is not None else "store")
        )
        kek = keys.kek_for(master, uuid)
        if not secrets.compare_digest(keys.key_check(kek, fmt), check):
            pending = self.path / (keys.KEY_FILE_NAME + ".new")
            if self._key_source == "store" and pending.exists():
                # A rotation committed but crashed before renaming key.new over key.
                master = keys.read_key_file(pending)
                kek = keys.kek_for(master, uuid)
                if secrets.compare_digest(keys.key_check(kek, fmt), check):
                    if not self.readonly:
                        finish_pending_key_file(self.path)
                else:
                    raise WrongKey(
                        f"neither key nor key.new opens {self.path} (a damaged store header?)"
                    )
            else:
                raise WrongKey(
                    f"the key does not open {self.path} (wrong key, or a damaged store header)"
                )
        # A key.new that `key` opens past is left alone: it may belong to a rotation in progress
        # in another process (deleting it would lose the new key). The next rotation replaces it.
        self._master = master
        ring_keys = keys.Keyring.unwrap(kek, uuid, ring)
        ring_keys.reload = self._reload_keyring
        ring_keys.cipher = _cipher_of(fmt)
        # Stores created before bundles existed keep one frame per component (older ckdb can
        # still open them); readers understand both layouts.
        self._bundles = bool(FORMAT.unpack(fmt)[2] & INCOMPAT_BUNDLES)
        return uuid, ring_keys

    def _reload_keyring(self) -> keys.Keyring | None:
        """The keyring as stored now (another process may have added a data key)."""
        with self._env.read() as txn:
            ring = txn.get(DB_INFO, INFO_KEYRING)
        if ring is None:
            return None
        try:
            fresh = keys.Keyring.unwrap(keys.kek_for(self._master, self._uuid), self._uuid, ring)
            fresh.cipher = self._keys.cipher
            return fresh
        except IntegrityError:
            return None  # the master key changed under us: only a reopen with the new key helps

    # -- keys --------------------------------------------------------------------------------------

    def rotate_key(
        self, new_master_key: bytes | None = None, *, new_data_key: bool = False
    ) -> RotationReport:
        """Re-wrap the store's keys under ``new_master_key`` in one transaction (None: generate
        one, for stores that use their own key file). With ``new_data_key=True``, also start a new
        data key for new writes and re-tag old frames in bounded, resumable transactions. Retired
        keys stay in the store, so older backups still verify."""
        self._env.check()
        if new_master_key is None:
            if self._key_source != "store":
                raise InvalidInput("pass the new master key (this store's key is not its own file)")
            new_master_key = keys.new_master_key()
        rotate(self, new_master_key, new_data_key)
        self._keys.reload = self._reload_keyring
        count, complete = retag(self) if new_data_key else (0, True)
        return RotationReport(
            active_key_id=self._keys.active,
            retired_key_ids=tuple(
                k for k in sorted(self._keys.data_keys) if k != self._keys.active
            ),
            retagged=count,
            complete=complete,
        )

    def _rotation_report(self, count: int, complete: bool) -> RotationReport:
        active = self._keys.active
        retired = tuple(k for k in sorted(self._keys.data_keys) if k != active)
        return RotationReport(active, retired, count, complete)

    def retag(self, max_batches: int | None = None) -> RotationReport:
        """Resume (or run) re-tagging of frames under the active data key."""
        count, complete = retag(self, max_batches)
        return RotationReport(
            active_key_id=self._keys.active,
            retired_key_ids=tuple(
                k for k in sorted(self._keys.data_keys) if k != self._keys.active
            ),
            retagged=count,
            complete=complete,
        )

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._env.closed else ("read-only" if self.readonly else "open")
        return f"<ckdb.Store {str(self.path)!r} {state}>"

    @property
    def closed(self) -> bool:
        return self._env.closed

    @property
    def uuid(self) -> str:
        return self._uuid.hex()

    # -- frames ----------------------------------------------------------------------------------

    def _frame(self, rtype: RecordType, db: bytes, key: bytes, raw: bytes, codec: Codec) -> bytes:
        k = self._keys  # one read: a concurrent rotate_key swaps the whole keyring
        return encode_frame(k.active_mac, k.active, rtype, db, key, raw, codec, k.active_aead)

    def _unframe(self, db: bytes, key: bytes, value: bytes, expect: RecordType) -> bytes:
        """Verify (tag, decryption, length) and decompress the frame ``value`` read at
        ``db``/``key``. Byte-identical repeats of a small frame that verified are recognised
        by comparison (see ``ckdb/_verified.py``)."""
        if expect not in _MEMO_TYPES:  # payloads and chunks: verified on every read
            k = self._keys
            return decode_frame(k.mac, db, key, value, expect, k.aead)
        address = (db, key, expect)
        raw: bytes | None = self._verified.get(address, value)
        if raw is None:
            k = self._keys
            raw = decode_frame(k.mac, db, key, value, expect, k.aead)
            self._verified.put(address, value, raw, len(raw))
        return raw

    def _payload_address(self, checkpoint_id: str, rtype: RecordType, name: str) -> bytes:
        """The ``payloads`` key of the frame holding a component: its own frame, or the
        checkpoint's bundle (for tools, the demo and tests that look at stored bytes)."""
        cid = id_from_text(checkpoint_id)
        with self._env.read() as txn:
            meta = self._read_meta(txn, cid)
        for comp in meta.components:
            if comp[0] == rtype and comp[1] == name:
                where = RecordType.BUNDLE if comp[3] == 0 else rtype
                return self._keys.payload_key(cid, where, "" if comp[3] == 0 else name)
        raise InvalidInput(f"checkpoint {checkpoint_id} has no {rtype.name.lower()} {name!r}")

    def _registry_entry(self, key: bytes, value: bytes) -> tuple[bytes, int, int]:
        """A verified registry entry -> (checkpoint id, created_at µs, flags)."""
        address = (DB_REGISTRY, key)
        entry: tuple[bytes, int, int] | None = self._verified.get(address, value)
        if entry is None:
            entry = decode_registry(self._keys.mac, key, value)
            self._verified.put(address, value, entry)
        return entry

    def _registry_value(self, key: bytes, cid: bytes, created_us: int, flags: int) -> bytes:
        k = self._keys
        return encode_registry(k.active_mac, k.active, key, cid, created_us, flags)

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
        check_name(name, "component name")
        if capture is not None and not callable(capture):
            raise InvalidInput(f"capture for {name!r} must be callable")
        if restore is not None and not callable(restore):
            raise InvalidInput(f"restore for {name!r} must be callable")
        if capture is None and restore is None:
            raise InvalidInput(f"register_component({name!r}) needs capture= or restore=")
        with self._components_lock:
            self._components[name] = (capture, restore)

    def unregister_component(self, name: str) -> None:
        with self._components_lock:
            self._components.pop(name, None)

    def _captured(self, name: str) -> Any:
        with self._components_lock:
            capture = self._components.get(name, (None, None))[0]
        if capture is None:
            return None
        try:
            return capture()
        except CkdbError:
            raise
        except Exception as err:
            raise InvalidInput(
                f"capture of component {name!r} failed: {type(err).__name__}: {err}"
            ) from err

    # -- chunk sink (used by capture) ------------------------------------------------------------

    def content_id(self, data: bytes | memoryview) -> bytes:
        return content_id(self._keys, data)

    def has_chunk(self, cid: bytes) -> bool:
        with self._env.read() as txn:
            return txn.get(DB_CHUNKS, cid) is not None

    def chunk_frame(self, cid: bytes, data: bytes | memoryview, codec: Codec = Codec.AUTO) -> bytes:
        return self._frame(RecordType.CHUNK, DB_CHUNKS, cid, bytes(data), codec)

    def commit_ahead(self, lease_id: bytes, frames: dict[bytes, bytes], leased: set[bytes]) -> None:
        """Commit chunks ahead of a large checkpoint, protected by a lease until its commit."""

        def apply(txn: Txn) -> None:
            for cid, frame in frames.items():
                txn.put(DB_CHUNKS, cid, frame, overwrite=False)
            put_lease(
                txn,
                self._keys,
                lease_id,
                leased,
                _now_us() + LEASE_SECONDS * 1_000_000,
                os.getpid(),
            )

        self._env.write(apply, estimate=sum(len(f) for f in frames.values()) + 4096)

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
        return create_checkpoint(
            self,
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

    def _workflow_doc(self, txn: Txn, wf_key: bytes, workflow_id: str) -> dict[str, Any] | None:
        raw = txn.get(DB_WORKFLOWS, wf_key)
        if raw is None:
            return None
        doc = encoding.decode(self._unframe(DB_WORKFLOWS, wf_key, raw, RecordType.WORKFLOW))
        if type(doc) is not dict or type(doc.get("next_seq")) is not int:
            raise IntegrityError(f"workflow record of {workflow_id!r} is malformed")
        if doc.get("id") != workflow_id:
            raise IntegrityError(f"workflow record of {workflow_id!r} names another id")
        return doc

    def _previous_manifest(self, txn: Txn, wf_key: bytes) -> dict[str, Any] | None:
        """The newest verifiable manifest of a workflow (for incremental capture), or None."""
        for reg_key, value in txn.prefix(DB_REGISTRY, wf_key, reverse=True):
            try:
                pcid, _c, flags = self._registry_entry(reg_key, value)
                if flags & FLAG_MARKED:
                    continue
                doc = self._read_manifest(txn, pcid)
            except (IntegrityError, CheckpointNotFound):
                continue
            if doc is not None:
                return doc
        return None

    def _read_manifest(self, txn: Txn, cid: bytes) -> dict[str, Any] | None:
        key = self._keys.payload_key(cid, RecordType.MANIFEST, "files")
        value = txn.get(DB_PAYLOADS, key)
        if value is None:
            return None
        try:
            doc = encoding.decode(self._unframe(DB_PAYLOADS, key, value, RecordType.MANIFEST))
        except FormatError as err:
            raise IntegrityError(f"checkpoint {id_to_text(cid)}: manifest: {err}") from None
        return check_manifest(doc, id_to_text(cid))

    # -- reading ---------------------------------------------------------------------------------

    def _parse_meta(self, cid: bytes, raw: bytes) -> _Meta:
        return _Meta.parse(cid, raw)

    def _read_meta(self, txn: Txn, cid: bytes) -> _Meta:
        value = txn.get(DB_CHECKPOINTS, cid)
        if value is None:
            raise CheckpointNotFound(f"no checkpoint {id_to_text(cid)}")
        address = (DB_CHECKPOINTS, cid, "parsed")
        meta: _Meta | None = self._verified.get(address, value)
        if meta is None:
            k = self._keys
            raw = decode_frame(k.mac, DB_CHECKPOINTS, cid, value, RecordType.METADATA, k.aead)
            meta = _Meta.parse_cached(cid, raw)
            self._verified.put(address, value, meta, 3 * len(value))  # parsed: ~3x the bytes
        return meta

    def _read_flags(self, txn: Txn, meta: _Meta) -> tuple[bytes, int]:
        """The registry entry of a checkpoint: (registry key, flags); IntegrityError if damaged."""
        reg_key = registry_key(self._keys.wf_key(meta.workflow_id), meta.seq)
        value = txn.get(DB_REGISTRY, reg_key)
        if value is None:
            raise IntegrityError(f"checkpoint {id_to_text(meta.cid)} has no registry entry")
        rcid, _created, flags = self._registry_entry(reg_key, value)
        if rcid != meta.cid:
            raise IntegrityError(
                f"registry slot of checkpoint {id_to_text(meta.cid)} names {id_to_text(rcid)}"
            )
        return reg_key, flags

    def load(self, checkpoint_id: str) -> Checkpoint:
        """Load and verify a checkpoint: every frame's tag, every component digest, the integrity
        digest, and its registry entry. A damaged or marked checkpoint is an IntegrityError."""
        return self._load(id_from_text(checkpoint_id))[0]

    def _load(self, cid: bytes) -> tuple[Checkpoint, dict[str, Any] | None]:
        with self._env.read() as txn:
            meta = self._read_meta(txn, cid)
            _reg_key, flags = self._read_flags(txn, meta)
            if flags & FLAG_MARKED:
                raise IntegrityError(f"checkpoint {id_to_text(cid)} is marked corrupted")
            if not meta.integrity_ok():
                raise IntegrityError(f"checkpoint {id_to_text(cid)}: integrity digest mismatch")
            state: dict[str, Any] = {}
            resources: Any = None
            dependencies: Any = None
            manifest: dict[str, Any] | None = None
            payloads = Payloads(self, txn, cid, meta.components)
            for index, comp in enumerate(meta.components):
                rtype = comp[0]
                if rtype == RecordType.BUNDLE:
                    continue  # read through the components it holds
                try:
                    obj = payloads.value(index)
                except IntegrityError as err:
                    raise IntegrityError(f"checkpoint {id_to_text(cid)}: {err}") from None
                if rtype == RecordType.COMPONENT:
                    state[comp[1]] = obj
                elif rtype == RecordType.RESOURCES:
                    resources = obj
                elif rtype == RecordType.DEPENDENCIES:
                    dependencies = obj
                elif rtype == RecordType.MANIFEST:
                    manifest = check_manifest(obj, id_to_text(cid))
        ck = Checkpoint(
            info=meta.info(flags),
            state=state,
            resources=resources,
            dependencies=dependencies,
            files=file_state(manifest),
        )
        return ck, manifest

    # -- validation and restore ------------------------------------------------------------------

    def validate(self, checkpoint_id: str, level: str = "standard") -> ValidationReport:
        """Validate a checkpoint at ``basic``, ``standard`` or ``comprehensive`` level."""
        if level not in LEVELS:
            raise InvalidInput(f"validation level must be one of {LEVELS}, not {level!r}")
        cid = id_from_text(checkpoint_id)
        with self._env.read() as txn:
            if txn.get(DB_CHECKPOINTS, cid) is None:
                raise CheckpointNotFound(f"no checkpoint {id_to_text(cid)}")
            return validate(self, txn, cid, level)

    def _read_chunk(self, chunk: bytes) -> bytes:
        with self._env.read() as txn:
            value = txn.get(DB_CHUNKS, chunk)
            if value is None:
                raise IntegrityError(f"chunk {chunk.hex()[:16]} is missing")
            return self._unframe(DB_CHUNKS, chunk, value, RecordType.CHUNK)

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
    ) -> RestoreReport:
        """Restore a checkpoint: files into ``target_dir`` (default: the working directory
        recorded at capture), state through the registered restorers. Safe to run again after a
        crash. The report's ``checkpoint`` is exactly what was restored."""
        cid = id_from_text(checkpoint_id)
        target = None if target_dir is None else check_target(target_dir)
        ck, manifest = self._load(cid)
        return self._restore_loaded(
            ck, manifest, target, restore_files, restore_resources, verify, delete_extra, progress
        )

    def _restore_loaded(
        self,
        ck: Checkpoint,
        manifest: dict[str, Any] | None,
        target: str | None,
        restore_files: bool,
        restore_resources: bool,
        verify: bool,
        delete_extra: bool,
        progress: Callable[[int, int], None] | None,
    ) -> RestoreReport:
        warnings: list[str] = []
        report = RestoreReport(checkpoint=ck, target_dir=target)
        if restore_files and manifest is not None:
            if target is None:
                target = manifest.get("working_directory")
            if manifest.get("error"):
                warnings.append(f"file state: {manifest['error']} (no files to restore)")
            elif target is not None:
                try:
                    stats = restore_tree(
                        manifest,
                        target,
                        self._read_chunk,
                        delete_extra=delete_extra,
                        verify=verify,
                        progress=progress,
                    )
                except OSError as err:  # the target's problem (EACCES, ENOSPC, ...), not damage
                    raise RestoreFailed(f"restoring files into {target} failed: {err}") from err
                report = attrs.evolve(
                    report,
                    target_dir=target,
                    files_written=stats.files,
                    directories=stats.dirs,
                    links=stats.links,
                    deleted=stats.deleted,
                    bytes_written=stats.bytes,
                    skipped=tuple(stats.skipped),
                    mismatches=tuple(stats.mismatches),
                )
        restored: list[str] = []
        with self._components_lock:
            restorers = {n: r for n, (_c, r) in self._components.items() if r is not None}
        for cname, value in ck.state.items():
            restore_fn = restorers.get(cname)
            if restore_fn is None:
                continue
            try:
                restore_fn(value)
            except Exception as err:
                raise RestoreFailed(
                    f"restorer of component {cname!r} failed: {type(err).__name__}: {err}"
                ) from err
            restored.append(cname)
        extras = [("dependencies", ck.dependencies)]
        if restore_resources:
            extras.insert(0, ("resources", ck.resources))
        for cname, value in extras:
            restore_fn = restorers.get(cname)
            if restore_fn is None or value is None:
                continue
            try:
                restore_fn(value)
                restored.append(cname)
            except Exception as err:
                warnings.append(f"{cname} restore failed: {type(err).__name__}: {err}")
        return attrs.evolve(
            report, components_restored=tuple(restored), warnings=report.warnings + tuple(warnings)
        )

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
    ) -> RestoreReport:
        """Restore the newest valid checkpoint of a workflow. Candidates are validated newest
        first; those that fail are marked corrupted and skipped, and the report says which."""
        check_name(workflow_id, "workflow_id")
        target = None if target_dir is None else check_target(target_dir)
        if level not in LEVELS:
            raise InvalidInput(f"validation level must be one of {LEVELS}, not {level!r}")
        skipped: list[tuple[str, str]] = []
        for info in self.list(workflow_id):
            if info.status != STATUS_VALID:
                skipped.append((info.id, "marked corrupted"))
                continue
            report = self.validate(info.id, level=level)
            if not report.ok:
                why = "; ".join(report.findings) or "validation failed"
                skipped.append((info.id, why))
                self._mark_quietly(info.id, why)
                continue
            try:
                ck, manifest = self._load(id_from_text(info.id))
            except IntegrityError as err:
                skipped.append((info.id, str(err)))
                self._mark_quietly(info.id, str(err))
                continue
            try:
                result = self._restore_loaded(
                    ck,
                    manifest,
                    target,
                    restore_files,
                    restore_resources,
                    verify,
                    delete_extra,
                    progress,
                )
            except IntegrityError as err:
                # Damage the validation level did not read (a chunk, at "standard"): mark this
                # one and fall back to the previous checkpoint, which rewrites what was written.
                skipped.append((info.id, str(err)))
                self._mark_quietly(info.id, str(err))
                continue
            return attrs.evolve(result, skipped_checkpoints=tuple(skipped))
        if not skipped:
            raise WorkflowNotFound(f"workflow {workflow_id!r} has no checkpoints")
        raise IntegrityError(
            f"workflow {workflow_id!r} has no valid checkpoint; skipped: "
            + "; ".join(f"{cid} ({why})" for cid, why in skipped)
        )

    def mark(self, checkpoint_id: str, reason: str) -> None:
        """Mark a checkpoint corrupted: ``load`` refuses it, ``latest`` skips it."""
        cid = id_from_text(checkpoint_id)

        def apply(txn: Txn) -> None:
            reg_key, _meta = self._locate(txn, cid)
            if reg_key is None:
                return
            value = txn.get(DB_REGISTRY, reg_key)
            assert value is not None
            try:
                _rcid, created_us, flags = self._registry_entry(reg_key, value)
            except IntegrityError:
                # A damaged entry is left as it is: its flags (PINNED) are unknown, and a fresh
                # tag would launder the damage. It already fails verification; the mark record
                # below says why. Scrub repairs the entry itself.
                flags = None
            if flags is not None:
                txn.put(
                    DB_REGISTRY,
                    reg_key,
                    self._registry_value(reg_key, cid, created_us, flags | FLAG_MARKED),
                )
            mark_key = cid + b"\x00"
            body = encoding.encode({"reason": reason, "at": _now_us()})
            txn.put(
                DB_MARKS,
                mark_key,
                self._frame(RecordType.MARK, DB_MARKS, mark_key, body, Codec.NONE),
            )

        self._env.write(apply)

    def _mark_quietly(self, checkpoint_id: str, reason: str) -> None:
        if self.readonly:
            return
        with contextlib.suppress(CheckpointNotFound, ReadOnlyStore):
            self.mark(checkpoint_id, reason)

    def get_info(self, checkpoint_id: str) -> CheckpointInfo:
        """A checkpoint's verified metadata (no payload decoding)."""
        cid = id_from_text(checkpoint_id)
        with self._env.read() as txn:
            meta = self._read_meta(txn, cid)
            _reg_key, flags = self._read_flags(txn, meta)
            return meta.info(flags)

    def _entry_info(self, txn: Txn, reg_key: bytes, value: bytes) -> CheckpointInfo | None:
        """Info for a registry entry; damaged entries come back with status "corrupted"."""
        try:
            cid, created_us, flags = self._registry_entry(reg_key, value)
        except IntegrityError:
            cid, created_us, flags = bytes(value[:16]), 0, FLAG_MARKED
        try:
            if len(cid) != ID_SIZE:  # a truncated entry: there is no id to look up
                raise IntegrityError("registry entry too short to name a checkpoint")
            meta = self._read_meta(txn, cid)
            if registry_key(self._keys.wf_key(meta.workflow_id), meta.seq) != reg_key:
                raise IntegrityError("registry slot and metadata disagree")
        except CheckpointNotFound:
            meta = None
        except IntegrityError:
            meta = None
        if meta is not None:
            return meta.info(flags)
        wf_key, seq = split_registry_key(reg_key)
        return CheckpointInfo(
            id=id_to_text(cid) if len(cid) == 16 else "",
            workflow_id=wf_key[1:].decode("utf-8", "replace"),
            phase="",
            kind=KIND_MANUAL if flags & FLAG_MANUAL else KIND_AUTOMATIC,
            name=None,
            created_at=_dt(created_us),
            created_by="",
            sequence=seq,
            parent_id=None,
            pinned=bool(flags & FLAG_PINNED),
            status=STATUS_CORRUPTED,
        )

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
        if workflow_id is not None:
            check_name(workflow_id, "workflow_id")
        if kind is not None and kind not in KINDS:
            raise InvalidInput(f"kind must be one of {KINDS}, not {kind!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative int, not {limit!r}")
        since_us = _aware_us(since, "since")
        until_us = _aware_us(until, "until")
        out: builtins.list[CheckpointInfo] = []
        if limit == 0:
            return out
        with self._env.read() as txn:
            if workflow_id is not None:
                entries: Iterator[tuple[bytes, bytes]] = txn.prefix(
                    DB_REGISTRY, self._keys.wf_key(workflow_id), reverse=True
                )
            else:
                # Newest first across workflows: order by created_at from the registry, then id.
                raw = list(txn.range(DB_REGISTRY))
                raw.sort(key=lambda kv: (bytes(kv[1][16:24]), bytes(kv[1][:16])), reverse=True)
                entries = iter(raw)
            for reg_key, value in entries:
                created_us = int.from_bytes(value[16:24], "big") if len(value) >= 24 else 0
                if since_us is not None and created_us < since_us:
                    if workflow_id is not None:
                        continue
                    break
                if until_us is not None and created_us > until_us:
                    continue
                info = self._entry_info(txn, reg_key, value)
                if info is None:
                    continue
                if kind is not None and info.kind != kind:
                    continue
                if phase is not None and info.phase != phase:
                    continue
                out.append(info)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def latest(self, workflow_id: str) -> CheckpointInfo | None:
        """The newest valid checkpoint of a workflow: not marked, registry entry and metadata
        verify. None if there is none."""
        check_name(workflow_id, "workflow_id")
        with self._env.read() as txn:
            found = newest_valid(self, txn, self._keys.wf_key(workflow_id))
        return None if found is None else found[0].info(found[1])

    def workflows(self) -> builtins.list[str]:
        """Every workflow id with a record in the store, sorted."""
        names = []
        with self._env.read() as txn:
            for key, value in txn.range(DB_WORKFLOWS):
                try:
                    doc = encoding.decode(
                        self._unframe(DB_WORKFLOWS, key, value, RecordType.WORKFLOW)
                    )
                    names.append(str(doc["id"]))
                except (CkdbError, KeyError, TypeError):
                    continue  # damaged: scrub reports it; the next create rebuilds it
        return sorted(names)

    # -- deleting and flags ----------------------------------------------------------------------

    def _locate(self, txn: Txn, cid: bytes) -> tuple[bytes | None, _Meta | None]:
        """(registry key, metadata) of a checkpoint; metadata None when it does not verify."""
        if txn.get(DB_CHECKPOINTS, cid) is None:
            raise CheckpointNotFound(f"no checkpoint {id_to_text(cid)}")
        try:
            meta = self._read_meta(txn, cid)
        except IntegrityError:
            meta = None
        return self._registry_key_of(txn, cid, meta), meta

    def _registry_key_of(self, txn: Txn, cid: bytes, meta: _Meta | None) -> bytes | None:
        """The registry key holding ``cid``: the slot its metadata names, else (damaged metadata
        or registry) found by scanning the registry (rare path). Values are matched by their id
        bytes, not verified: callers decide what a failing entry means."""
        if meta is not None:
            reg_key = registry_key(self._keys.wf_key(meta.workflow_id), meta.seq)
            value = txn.get(DB_REGISTRY, reg_key)
            if value is not None and bytes(value[:16]) == cid:
                return reg_key
        for key, value in txn.range(DB_REGISTRY):
            if bytes(value[:16]) == cid:
                return bytes(key)
        return None

    def _delete_in(self, txn: Txn, cid: bytes, reg_key: bytes | None) -> None:
        try:
            manifest = self._read_manifest(txn, cid)
        except IntegrityError:
            manifest = None  # references leak until scrub rebuilds the counts; never freed wrongly
        if manifest is not None:
            release_refs(txn, self._keys, manifest_chunks(manifest), _now_us())
        txn.delete_range(DB_PAYLOADS, cid, prefix_end(cid))
        txn.delete(DB_CHECKPOINTS, cid)
        if reg_key is not None:
            txn.delete(DB_REGISTRY, reg_key)
        txn.delete_range(DB_MARKS, cid, prefix_end(cid))

    def delete(self, checkpoint_id: str) -> None:
        """Delete one checkpoint, whole, in one transaction."""
        cid = id_from_text(checkpoint_id)

        def apply(txn: Txn) -> None:
            reg_key, _meta = self._locate(txn, cid)
            self._delete_in(txn, cid, reg_key)

        self._env.write(apply)

    def delete_workflow(self, workflow_id: str) -> int:
        """Delete a workflow and all its checkpoints in one transaction; returns how many."""
        check_name(workflow_id, "workflow_id")
        wf_key = self._keys.wf_key(workflow_id)

        def apply(txn: Txn) -> int:
            entries = list(txn.prefix(DB_REGISTRY, wf_key))
            if not entries and txn.get(DB_WORKFLOWS, wf_key) is None:
                raise WorkflowNotFound(f"no workflow {workflow_id!r}")
            deleted = 0
            for key, value in entries:
                # Only delete what provably belongs to this workflow: a registry value copied
                # here from another workflow (damage, or tampering without the key) must not
                # delete that workflow's checkpoint. The id is taken from a verified entry, or,
                # if the entry fails, from metadata that verifies and names this workflow.
                try:
                    cid = self._registry_entry(key, value)[0]
                except IntegrityError:
                    cid = bytes(value[:16])
                if len(cid) != ID_SIZE or txn.get(DB_CHECKPOINTS, cid) is None:
                    continue
                try:
                    owner = self._read_meta(txn, cid).workflow_id
                except IntegrityError:
                    owner = None
                if owner == workflow_id:
                    self._delete_in(txn, cid, None)
                    deleted += 1
            txn.delete_range(DB_REGISTRY, wf_key, prefix_end(wf_key))
            txn.delete(DB_WORKFLOWS, wf_key)
            return deleted

        return self._env.write(apply)

    def _set_flag(self, checkpoint_id: str, flag: int, on: bool) -> CheckpointInfo:
        cid = id_from_text(checkpoint_id)

        def apply(txn: Txn) -> CheckpointInfo:
            meta = self._read_meta(txn, cid)
            reg_key, flags = self._read_flags(txn, meta)
            flags = (flags | flag) if on else (flags & ~flag)
            created_us = int.from_bytes(txn.get(DB_REGISTRY, reg_key)[16:24], "big")  # type: ignore[index]
            txn.put(DB_REGISTRY, reg_key, self._registry_value(reg_key, cid, created_us, flags))
            return meta.info(flags)

        return self._env.write(apply)

    def pin(self, checkpoint_id: str) -> CheckpointInfo:
        """Pin a checkpoint: no retention policy will delete it."""
        return self._set_flag(checkpoint_id, FLAG_PINNED, True)

    def unpin(self, checkpoint_id: str) -> CheckpointInfo:
        return self._set_flag(checkpoint_id, FLAG_PINNED, False)

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
        _notify: Callable[[Finding], None] | None = None,
    ) -> ScrubReport:
        """Verify the store (see ``ckdb.scrub``). ``budget``: a timedelta (time) or an int (bytes)
        to verify part of the store now and resume where this stopped next time. Corrupt
        checkpoints are marked even without ``repair``; every event is logged at CRITICAL and
        passed to the ``on_corruption`` handlers."""
        if workflow_id is not None:
            check_name(workflow_id, "workflow_id")
        if backup is not None and not (Path(os.fspath(backup)) / "data.mdb").exists():
            raise InvalidInput(f"backup {os.fspath(backup)!r} is not a ckdb store")
        scrubber = Scrubber(
            self,
            workflow_id=workflow_id,
            level=level,
            repair=repair,
            backup=None if backup is None else os.fspath(backup),
            budget=budget,
            notify=_notify or self._notify_corruption,
            progress=progress,
        )
        return scrubber.run()

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
            self,
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
        self._env.check()
        return backup(self, dest, progress=progress)

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
        check_name(workflow_id, "workflow_id")
        resolved = None if policy is None else resolve_policy(policy)
        key = _RETENTION_PREFIX + self._keys.wf_key(workflow_id)
        body = encoding.encode({"policy": None if resolved is None else resolved.to_doc()})
        frame = self._frame(RecordType.SETTING, DB_SETTINGS, key, body, Codec.NONE)
        self._env.write(lambda txn: txn.put(DB_SETTINGS, key, frame))

    def get_retention(self, workflow_id: str) -> RetentionPolicy | None:
        """The policy that applies to a workflow (its own, else the store's default)."""
        check_name(workflow_id, "workflow_id")
        with self._env.read() as txn:
            return self._policy_in(txn, self._keys.wf_key(workflow_id))

    def _policy_in(self, txn: Txn, wf_key: bytes) -> RetentionPolicy | None:
        key = _RETENTION_PREFIX + wf_key
        raw = txn.get(DB_SETTINGS, key)
        if raw is None:
            return self._retention
        doc = encoding.decode(self._unframe(DB_SETTINGS, key, raw, RecordType.SETTING))
        return None if doc["policy"] is None else RetentionPolicy.from_doc(doc["policy"])

    def _seqs(self, txn: Txn, wf_key: bytes, ids: Sequence[str]) -> builtins.list[tuple[int, str]]:
        wanted = {id_from_text(i): i for i in ids}
        out = []
        for key, value in txn.prefix(DB_REGISTRY, wf_key):
            text = wanted.get(bytes(value[:16]))
            if text is not None:
                out.append((split_registry_key(key)[1], text))
        return out

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
        if workflow_id is not None:
            check_name(workflow_id, "workflow_id")
        override = None if policy is None else resolve_policy(policy)
        if now is None:
            now = datetime.now(UTC)
        elif not isinstance(now, datetime) or now.tzinfo is None:
            raise InvalidInput(f"now must be a timezone-aware datetime, not {now!r}")
        names = [workflow_id] if workflow_id is not None else self.workflows()
        plans: builtins.list[RetentionPlan] = []
        deleted: builtins.list[str] = []
        skipped: builtins.list[str] = []
        # Plan every workflow first (from one snapshot each), then delete in transactions of at
        # most BATCH checkpoints that may span workflows: 1,000 small workflows cost a few
        # commits, not 1,000. Leases use the real clock, never the caller's ``now``.
        work: builtins.list[tuple[bytes, int, str, bytes, bool]] = []
        for name in names:
            wf_key = self._keys.wf_key(name)
            with self._env.read() as txn:
                entries = registry_entries(self, txn, wf_key)
                wf_policy = override or self._policy_in(txn, wf_key)
            if wf_policy is None:
                continue
            planned = plan_retention(entries, wf_policy, now, workflow_id=name)
            plans.append(planned)
            by_id = {e.id: e for e in entries}
            work.extend(
                (wf_key, by_id[i].seq, i, by_id[i].cid, by_id[i].files) for i in planned.delete
            )
        if not dry_run:
            for batch in prune_batches(work):

                def apply(
                    txn: Txn, batch: builtins.list[tuple[bytes, int, str, bytes, bool]] = batch
                ) -> Any:
                    done: builtins.list[str] = []
                    passed: builtins.list[str] = []
                    groups: dict[bytes, builtins.list[tuple[int, str, bytes]]] = {}
                    for wf_key, seq, text_id, cid, _files in batch:
                        groups.setdefault(wf_key, []).append((seq, text_id, cid))
                    for wf_key, victims in groups.items():
                        d, p = delete_victims(self, txn, wf_key, victims, _now_us())
                        done.extend(d)
                        passed.extend(p)
                    return done, passed

                done, passed = self._env.write(apply)
                deleted.extend(done)
                skipped.extend(passed)
        return RetentionResult(
            dry_run=dry_run, plans=tuple(plans), deleted=tuple(deleted), skipped=tuple(skipped)
        )

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counts and sizes: checkpoints, workflows, stored bytes, file size, LMDB pages.

        ``free_pages`` are pages of the file no sub-database uses (LMDB reuses them; the file
        never shrinks: ``compact`` writes a copy without them). Sizes come from one scan of the
        payloads and chunks, so this costs time proportional to the store."""
        with self._env.read() as txn:
            out = {
                "checkpoints": txn.count(DB_CHECKPOINTS),
                "workflows": txn.count(DB_WORKFLOWS),
                "payload_frames": txn.count(DB_PAYLOADS),
                "chunks": txn.count(DB_CHUNKS),
                "payload_bytes": sum(len(v) for _k, v in txn.range(DB_PAYLOADS)),
                "chunk_bytes": sum(len(v) for _k, v in txn.range(DB_CHUNKS)),
            }
            used = txn.pages_in_use()
        info = self._env.info()
        out["map_size"] = info["map_size"]
        out["last_page"] = info["last_pgno"]
        out["page_size"] = info["stat_psize"]
        out["used_pages"] = used
        out["free_pages"] = max(0, info["last_pgno"] + 1 - 2 - used)  # 2 meta pages
        with contextlib.suppress(OSError):
            out["file_size"] = os.path.getsize(self.path / "data.mdb")
        return out
