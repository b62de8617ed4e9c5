"""The record layer: typed readers and writers for each sub-database, inside a transaction.

Every operation (``ckdb/_create.py``, ``reading.py``, ``restoring.py``, ``lifecycle.py``,
``pruning.py``, ``integrity.py``, ``scrub.py``, ``keyrotation.py``, ``maintenance.py``) reads and
writes the store through one :class:`Tables`, never through ``Store``. Readers verify tags (and
decrypt) before anything is parsed; writers frame and tag. This package imports the byte format
(``layout``, ``codec``, ``meta``, ``keys``, ``encoding``), ``_env`` and ``capture``'s manifest
checks; nothing above it. ``docs/design.md`` has the map of the layers.

==================  ===============================  ==========================================
attribute           sub-database(s)                  module
==================  ===============================  ==========================================
``checkpoints``     checkpoints (metadata frames)    ``checkpoints.py``
``registry``        registry                         ``checkpoints.py``
``payloads``        payloads (components, bundles)   ``payloads.py``
``chunks``          chunks, refs, leases             ``chunks.py``
``workflows``       workflows                        ``workflows.py``
``settings``        settings                         ``workflows.py``
``marks``           marks                            ``workflows.py``
``remote``          remote (a remote's local state)  ``remote.py``
==================  ===============================  ==========================================

The methods of :class:`Tables` itself span sub-databases: the newest valid checkpoint of a
workflow, a checkpoint's registry slot and listing record, deleting a whole checkpoint, marking.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from ckdb import keys as keyring
from ckdb._env import Env, Txn
from ckdb.capture import manifest_chunks
from ckdb.errors import CheckpointNotFound, Fenced, FormatError, IntegrityError, WrongKey
from ckdb.keys import Keyring
from ckdb.layout import (
    DB_INFO,
    DB_REGISTRY,
    DB_REMOTE,
    FLAG_MANUAL,
    FLAG_MARKED,
    FLAG_PINNED,
    FORMAT,
    ID_SIZE,
    INCOMPAT_REMOTE,
    INFO_FORMAT,
    INFO_KEYCHECK,
    INFO_KEYRING,
    id_to_text,
    split_registry_key,
)
from ckdb.meta import Meta, datetime_of, now_us
from ckdb.records import (
    KIND_AUTOMATIC,
    KIND_MANUAL,
    STATUS_CORRUPTED,
    STATUS_DAMAGED,
    CheckpointInfo,
)
from ckdb.retention import RetentionPolicy
from ckdb.tables.checkpoints import Checkpoints, Registry
from ckdb.tables.chunks import Chunks
from ckdb.tables.frames import Frames
from ckdb.tables.payloads import Payloads, PayloadTable, label
from ckdb.tables.remote import Cursor, RemoteState
from ckdb.tables.workflows import Marks, Settings, Workflows

__all__ = [
    "Checkpoints",
    "Chunks",
    "Cursor",
    "Frames",
    "Marks",
    "PayloadTable",
    "Payloads",
    "Registry",
    "RemoteState",
    "Settings",
    "Tables",
    "Workflows",
    "label",
]


class Tables:
    """The record layer of one open store: its environment, keyring, memo and tables.

    ``path``, ``uuid``, ``master`` and ``key_source`` ("argument", "file" or "store": the
    store's own key file) identify the store and its key; ``retention`` (the default policy for
    workflows without their own) and ``created_by`` are the open-time knobs operations need.
    """

    def __init__(
        self,
        env: Env,
        keys: Keyring,
        *,
        path: Path,
        uuid: bytes,
        master: bytes,
        key_source: str,
        readonly: bool,
        bundles: bool,
        seq_floor: bool,
        retention: RetentionPolicy | None,
        created_by: str,
    ) -> None:
        self.env = env
        self.frames = Frames(keys)
        self.checkpoints = Checkpoints(self.frames)
        self.settings = Settings(self.frames)
        self.workflows = Workflows(self.frames, self.settings)
        self.registry = Registry(self.frames, self.workflows)
        self.payloads = PayloadTable(self.frames)
        self.chunks = Chunks(self.frames)
        self.marks = Marks(self.frames)
        self.remote = RemoteState(self.frames)
        # Is the remote sub-database open here, and has a remote been attached (seen True once,
        # it stays True: a remote is never detached)?
        self.has_remote_db = env.is_open(DB_REMOTE)
        self._attached = False
        self.path = path
        self.uuid = uuid
        self.master = master
        self.key_source = key_source
        self.readonly = readonly
        # Stores created before bundles existed keep one frame per component (older ckdb can
        # still open them); readers understand both layouts.
        self.bundles = bundles
        # Stores created from ckdb 0.4 on: create writes the workflow record only when it
        # changes (next_seq is a floor; ckdb/tables/workflows.py). Older stores keep the
        # record exact on every create, as the ckdb that wrote them expects.
        self.seq_floor = seq_floor
        # Workflow key -> did its record name a working directory when this process last
        # wrote it? A hint only (create re-checks in its transaction); unknown: look.
        self.working_dirs: dict[bytes, bool] = {}
        self.retention = retention
        self.created_by = created_by
        keys.reload = self.reload_keyring

    # -- keys ------------------------------------------------------------------------------------

    @property
    def keys(self) -> Keyring:
        return self.frames.keys

    def use_keys(self, ring: Keyring, master: bytes) -> None:
        """Switch to a keyring (and master key) a rotation just committed."""
        ring.reload = self.reload_keyring
        self.frames.keys = ring
        self.master = master

    def reload_keyring(self) -> Keyring | None:
        """The keyring as stored now (another process may have added a data key)."""
        with self.env.read() as txn:
            ring = txn.get(DB_INFO, INFO_KEYRING)
        if ring is None:
            return None
        try:
            fresh = Keyring.unwrap(keyring.kek_for(self.master, self.uuid), self.uuid, ring)
            fresh.cipher = self.keys.cipher
            return fresh
        except IntegrityError:
            return None  # the master key changed under us: only a reopen with the new key helps

    def policy(self, txn: Txn, wf_key: bytes) -> RetentionPolicy | None:
        """The retention policy of a workflow: its own, else the store's default."""
        return self.settings.policy(txn, wf_key, self.retention)

    # -- remote: changes to ship, fences -----------------------------------------------------

    def remote_attached(self, txn: Txn) -> bool:
        """Has a remote been attached to this store (by any process)? One lookup until it has."""
        if not self._attached and self.has_remote_db:
            self._attached = self.remote.is_attached(txn)
        return self._attached

    def set_incompat_remote(self, txn: Txn) -> None:
        """Set the incompatible feature flag of remotes inside ``txn``: ckdb older than remotes
        must not write unshipped changes."""
        self.set_incompat(txn, INCOMPAT_REMOTE)

    def set_incompat(self, txn: Txn, flag: int) -> None:
        """Set an incompatible feature flag in the format record (and the key check over it)
        inside ``txn``, unless it is set: ckdb that does not know it then refuses the store."""
        fmt = txn.get(DB_INFO, INFO_FORMAT)
        check = txn.get(DB_INFO, INFO_KEYCHECK)
        if fmt is None or check is None:
            raise FormatError(f"{self.path}: the store header is damaged")
        magic, version, incompat, compat, uuid, created = FORMAT.unpack(fmt)
        if incompat & flag:
            return
        kek = keyring.kek_for(self.master, self.uuid)
        if not hmac.compare_digest(keyring.key_check(kek, fmt), check):
            raise WrongKey("the store was re-keyed by another process; reopen it first")
        new = FORMAT.pack(magic, version, incompat | flag, compat, uuid, created)
        txn.put(DB_INFO, INFO_FORMAT, new)
        txn.put(DB_INFO, INFO_KEYCHECK, keyring.key_check(kek, new))

    def note_change(self, txn: Txn, wf_key: bytes, deleted: Iterable[bytes] = ()) -> None:
        """A workflow changed in ``txn`` (created, deleted, pinned, unpinned): mark it for the
        shipper; ``deleted``: checkpoints the user or retention deleted, mirrored as deletes."""
        if self.remote_attached(txn):
            self.remote.changed(txn, wf_key, now_us())
            for cid in deleted:
                self.remote.tomb(txn, wf_key, cid)

    def check_not_fenced(self, txn: Txn, wf_key: bytes, workflow_id: str) -> None:
        """Fenced if another host owns the workflow (or it was pulled read-only)."""
        if self.remote_attached(txn) and self.remote.is_fenced(txn, wf_key):
            doc = self.remote.fence(txn, wf_key) or {}
            if doc.get("reason") == "pulled":
                raise Fenced(
                    f"workflow {workflow_id!r} was pulled from the remote for inspection; "
                    "take_over() it before creating checkpoints"
                )
            raise Fenced(
                f"workflow {workflow_id!r} was taken over by {doc.get('host', '?')} (epoch "
                f"{doc.get('epoch', '?')}); this store no longer owns it (take_over() to resume "
                "it here)"
            )

    # -- across sub-databases --------------------------------------------------------------------

    def newest_valid(self, txn: Txn, wf_key: bytes) -> tuple[Meta, int] | None:
        """THE definition of a workflow's newest valid checkpoint, used by ``latest`` and by
        retention (which must never delete it): the newest registry entry that is not marked,
        whose tag verifies, and whose metadata verifies and names the same slot. -> (metadata,
        flags). (Trusting the flags alone would let retention keep a rotten newest checkpoint and
        delete the real resume point: found in review.)"""
        for key, value in txn.prefix(DB_REGISTRY, wf_key, reverse=True):
            try:
                cid, _created, flags = self.registry.entry(key, value)
                if flags & FLAG_MARKED:
                    continue
                meta = self.checkpoints.read(txn, cid)
                if meta.seq != split_registry_key(key)[1]:
                    continue
            except (IntegrityError, CheckpointNotFound, FormatError):
                continue
            return meta, flags
        return None

    def locate(self, txn: Txn, cid: bytes) -> tuple[bytes | None, Meta | None]:
        """(registry key, metadata) of a checkpoint; metadata None when it does not verify."""
        if not self.checkpoints.exists(txn, cid):
            raise CheckpointNotFound(f"no checkpoint {id_to_text(cid)}")
        try:
            meta: Meta | None = self.checkpoints.read(txn, cid)
        except IntegrityError:
            meta = None
        return self.registry.key_of(txn, cid, meta), meta

    def entry_info(self, txn: Txn, reg_key: bytes, value: bytes) -> CheckpointInfo:
        """The listing record of a registry entry; damaged ones come back "corrupted"."""
        entry_ok = True
        try:
            cid, created_us, flags = self.registry.entry(reg_key, value)
        except IntegrityError:
            cid, created_us, flags = bytes(value[:16]), 0, FLAG_MARKED
            entry_ok = False
        meta: Meta | None
        try:
            if len(cid) != ID_SIZE:  # a truncated entry: there is no id to look up
                raise IntegrityError("registry entry too short to name a checkpoint")
            meta = self.checkpoints.read(txn, cid)
            if self.registry.key_for(meta) != reg_key:
                raise IntegrityError("registry slot and metadata disagree")
        except (CheckpointNotFound, IntegrityError):
            meta = None
        if meta is not None:
            # A damaged entry is "corrupted", whatever a damage record says (load refuses it).
            return self.info(txn, meta, flags) if entry_ok else meta.info(flags)
        try:
            wf_key, seq = split_registry_key(reg_key)
        except FormatError:  # a damaged key: listed as corrupted, at sequence 0
            wf_key, seq = reg_key[: reg_key[0] + 1] if reg_key else b"", 0
        return CheckpointInfo(
            id=id_to_text(cid) if len(cid) == 16 else "",
            workflow_id=wf_key[1:].decode("utf-8", "replace"),
            phase="",
            kind=KIND_MANUAL if flags & FLAG_MANUAL else KIND_AUTOMATIC,
            name=None,
            created_at=datetime_of(created_us),
            created_by="",
            sequence=seq,
            parent_id=None,
            pinned=bool(flags & FLAG_PINNED),
            status=STATUS_CORRUPTED,
        )

    def previous_manifest(self, txn: Txn, wf_key: bytes) -> dict[str, Any] | None:
        """The newest verifiable manifest of a workflow (for incremental capture), or None."""
        for reg_key, value in txn.prefix(DB_REGISTRY, wf_key, reverse=True):
            try:
                pcid, _c, flags = self.registry.entry(reg_key, value)
                if flags & FLAG_MARKED:
                    continue
                doc = self.payloads.read_manifest(txn, pcid)
            except (IntegrityError, CheckpointNotFound):
                continue
            if doc is not None:
                return doc
        return None

    def delete_checkpoint(self, txn: Txn, cid: bytes, reg_key: bytes | None) -> None:
        """Delete every record of one checkpoint inside ``txn`` (and release its chunks)."""
        try:
            manifest = self.payloads.read_manifest(txn, cid)
        except IntegrityError:
            manifest = None  # references leak until scrub rebuilds the counts; never freed wrongly
        if manifest is not None:
            self.chunks.release_refs(txn, manifest_chunks(manifest), now_us())
        self.payloads.delete_all(txn, cid)
        self.checkpoints.delete(txn, cid)
        if reg_key is not None:
            self.registry.delete(txn, reg_key)
        self.marks.delete(txn, cid)

    def info(self, txn: Txn, meta: Meta, flags: int) -> CheckpointInfo:
        """A checkpoint's record; a marked one with a damage record is "damaged" (salvaged)."""
        if flags & FLAG_MARKED:
            damage = self.marks.damage(txn, meta.cid)
            if damage is not None:
                return attrs.evolve(
                    meta.info(flags, STATUS_DAMAGED),
                    damaged_files=tuple(os.fsdecode(f) for f in damage.files),
                )
        return meta.info(flags)

    def mark(self, txn: Txn, cid: bytes, reason: str) -> None:
        """Mark a checkpoint corrupted inside ``txn``: the MARKED flag of its registry entry and
        a mark record saying why.

        A damaged entry is left as it is: its flags (PINNED) are unknown, and a fresh tag would
        launder the damage. It already fails verification; the mark record says why. Scrub
        repairs the entry itself."""
        reg_key, _meta = self.locate(txn, cid)
        if reg_key is None:
            return
        value = txn.get(DB_REGISTRY, reg_key)
        assert value is not None
        try:
            _rcid, created_us, flags = self.registry.entry(reg_key, value)
        except IntegrityError:
            pass
        else:
            self.registry.put(txn, reg_key, cid, created_us, flags | FLAG_MARKED)
        self.marks.put(txn, cid, reason)
        self.marks.clear_damage(txn, cid)  # marked for another reason: no longer salvaged
