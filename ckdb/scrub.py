"""Scrub: verify the whole store (or a budgeted slice of it), mark, repair, report.

Passes:

A. checkpoints (resumable): every checkpoint validated at the requested level (metadata,
   registry entry, payload frames and digests, integrity digest, chunks with their content ids).
   A checkpoint that fails is marked at once (``latest`` skips it), even without ``repair``.
B. registry: every entry's tag, and that its metadata exists and points back.
C. orphans: payloads and marks whose checkpoint is gone; chunks nothing references (and no live
   lease protects); expired leases.
D. reference counts: every count's tag, and its value against the counts rebuilt from every
   verifiable manifest.
E. integrations' sub-databases: every frame's tag; the LangGraph saver's chunked values, each
   piece present and of its length (reported, never repaired).

With a ``budget`` pass A stops when the budget is spent and the next scrub resumes after the last
checkpoint it verified (a cursor in ``settings``); passes B to E run when a cycle completes.
Findings are data (a :class:`ScrubReport`), never ``warnings``.

Repair (``repair=True``): a corrupt checkpoint is replaced by the backup's copy when every record
of it in the backup verifies under *this* store's keys and address (a backup is a copy of this
store, so it shares its keys); without a good copy it is deleted and unregistered in one
transaction, unless pinned (then it stays marked and reported) -- except when the only damage is
in file chunks: then the checkpoint is *salvaged* (``ckdb/salvage.py``): kept with its state, the
damaged chunks removed and the files they held recorded, status "damaged". Orphans are
removed, damaged or wrong reference counts are rebuilt from the manifests, a lost registry entry
is rebuilt from intact metadata. A successful repair clears the mark.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from attrs import frozen

from ckdb import encoding, salvage
from ckdb._env import Env, Txn
from ckdb.capture import manifest_chunks
from ckdb.codec import decode_frame, decode_registry, parse_frame
from ckdb.errors import CkdbError, IntegrityError, InvalidInput
from ckdb.integrity import LEVELS, check_chunk
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_CHUNKS,
    DB_MARKS,
    DB_PAYLOADS,
    DB_REFS,
    DB_REGISTRY,
    DB_SETTINGS,
    DB_WORKFLOWS,
    FLAG_FILES,
    FLAG_MANUAL,
    FLAG_MARKED,
    FLAG_PINNED,
    ID_SIZE,
    RecordType,
    check_name,
    id_to_text,
    prefix_end,
    registry_key,
    split_registry_key,
)
from ckdb.lifecycle import mark
from ckdb.meta import Meta, now_us
from ckdb.tables import Tables
from ckdb.tables import langgraph_values as lg_values  # imports no LangGraph
from ckdb.tables.chunks import LEASE_PREFIX, content_id, decode_refs, encode_refs, leased_chunks
from ckdb.tables.langgraph_layout import DB_BLOBS as LG_BLOBS
from ckdb.tables.langgraph_layout import DB_CHUNKS as LG_CHUNKS
from ckdb.tables.workflows import FLOOR_PREFIX

log = logging.getLogger("ckdb")

CURSOR_KEY = b"scrub/cursor"


@frozen
class Finding:
    """One problem scrub found, and what it did about it."""

    kind: str  # "checkpoint", "registry", "orphan-payload", "orphan-chunk", "refs", "lease", ...
    where: str  # "db/key-hex" or a checkpoint id
    problem: str
    checkpoint_id: str | None = None
    action: str = "reported"  # "marked", "repaired", "deleted", "kept (pinned)", "removed", ...


@frozen
class ScrubReport:
    findings: tuple[Finding, ...]
    checkpoints_checked: int
    bytes_checked: int
    complete: bool  # True when the whole store was covered (a full cycle finished)
    repaired: int = 0
    deleted: int = 0
    salvaged: int = 0  # kept with their damaged files marked (repair without a good copy)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong *now*: every finding was repaired or removed."""
        return all(f.action in ("repaired", "removed", "rebuilt") for f in self.findings)


class _Budget:
    def __init__(self, budget: object) -> None:
        self.deadline: float | None = None
        self.bytes_left: int | None = None
        if budget is None:
            return
        if isinstance(budget, timedelta):
            self.deadline = time.monotonic() + budget.total_seconds()
        elif isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
            self.bytes_left = budget
        else:
            raise InvalidInput(
                f"budget must be a timedelta (time) or a positive int (bytes), not {budget!r}"
            )

    @property
    def limited(self) -> bool:
        return self.deadline is not None or self.bytes_left is not None

    def spend(self, nbytes: int) -> None:
        if self.bytes_left is not None:
            self.bytes_left -= nbytes

    def spent(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return True
        return self.bytes_left is not None and self.bytes_left <= 0


class Scrubber:
    def __init__(
        self,
        t: Tables,
        *,
        workflow_id: str | None,
        level: str,
        repair: bool,
        backup: str | Path | None,
        budget: object,
        notify: Callable[[Finding], None],
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.progress = progress
        if level not in LEVELS:
            raise InvalidInput(f"scrub level must be one of {LEVELS}, not {level!r}")
        if repair and t.readonly:
            raise InvalidInput("repair needs a store opened for writing")
        self.t = t
        self.env: Env = t.env
        self.keys = t.keys
        self.wf_key = None if workflow_id is None else self.keys.wf_key(workflow_id)
        self.level = level
        self.repair = repair
        self.budget = _Budget(budget)
        self.notify = notify
        self.findings: list[Finding] = []
        self.checked = 0
        self.bytes = 0
        self.repaired = 0
        self.deleted = 0
        self.salvaged = 0
        self.backup_path = None if backup is None else Path(backup)
        self._backup_env: Env | None = None

    # -- helpers ---------------------------------------------------------------------------------

    def _find(self, finding: Finding) -> None:
        self.findings.append(finding)
        log.critical(
            "ckdb integrity: %s %s: %s (%s)",
            finding.kind,
            finding.where,
            finding.problem,
            finding.action,
        )
        self.notify(finding)

    def _backup(self) -> Env | None:
        if self.backup_path is None:
            return None
        if self._backup_env is None:
            self._backup_env = Env(
                self.backup_path.absolute(), readonly=True, durability="sync", map_size=1 << 30
            )
        return self._backup_env

    def close(self) -> None:
        if self._backup_env is not None:
            self._backup_env.close()

    # -- pass A: checkpoints ---------------------------------------------------------------------

    def run(self) -> ScrubReport:
        try:
            complete = self._checkpoints()
            if complete and self.wf_key is None:
                self._registry()
                self._orphans_and_refs()
                self._workflow_records()
                self._integrations()
            elif complete:
                self._registry()
        finally:
            self.close()
        return ScrubReport(
            findings=tuple(self.findings),
            checkpoints_checked=self.checked,
            bytes_checked=self.bytes,
            complete=complete,
            repaired=self.repaired,
            deleted=self.deleted,
            salvaged=self.salvaged,
        )

    def _cids(self, start: bytes) -> list[bytes]:
        with self.env.read() as txn:
            if self.wf_key is None:
                return [bytes(k) for k, _v in txn.range(DB_CHECKPOINTS, start)]
            return [
                bytes(v[:16])
                for _k, v in txn.prefix(DB_REGISTRY, self.wf_key)
                if len(v) >= 16 and bytes(v[:16]) >= start
            ]

    def _checkpoints(self) -> bool:
        start = b""
        end: bytes | None = None
        if self.budget.limited and self.wf_key is None:
            with self.env.read() as txn:
                cursor = txn.get(DB_SETTINGS, CURSOR_KEY) or b""
            if len(cursor) == 2 * ID_SIZE:
                start, end = cursor[:ID_SIZE], cursor[ID_SIZE:]
        cids = sorted(self._cids(start))
        if end is None:
            # A cycle covers the checkpoints that exist when it starts: new ones (ids are
            # time-sorted, so they land after the cursor) wait for the next cycle, so a store
            # written faster than the budget still completes cycles.
            end = cids[-1] if cids else b""
        cids = [c for c in cids if c <= end]
        self._cycle_end = end
        verified_chunks: set[bytes] = set()
        last = None
        for cid in cids:
            if cid == start:
                continue  # verified last time
            if self.checked and self.budget.spent():  # at least one per run: always progress
                self._save_cursor(last)
                return False
            problems, size, bad = self._check_one(cid, verified_chunks)
            self.checked += 1
            self.bytes += size
            self.budget.spend(size)
            if self.progress is not None:
                self.progress(self.bytes, self.checked)
            last = cid
            if problems:
                self._handle_corrupt(cid, problems, bad)
            # Only a comprehensive check covers what a mark may be about (file chunks included):
            # a lower level leaves marks and damage records alone.
            elif self.repair and self.level == "comprehensive" and self._unmark_if_marked(cid):
                text = id_to_text(cid)
                self.repaired += 1
                self._find(
                    Finding(
                        "checkpoint", text, "was marked corrupted; verifies now", text, "repaired"
                    )
                )
        self._save_cursor(None)
        return True

    def _save_cursor(self, cid: bytes | None) -> None:
        if not self.budget.limited or self.wf_key is not None or self.t.readonly:
            return

        def apply(txn: Txn) -> None:
            if cid is None:
                txn.delete(DB_SETTINGS, CURSOR_KEY)
            else:
                txn.put(DB_SETTINGS, CURSOR_KEY, cid + self._cycle_end)

        self.env.write(apply)

    def _check_one(
        self, cid: bytes, verified_chunks: set[bytes]
    ) -> tuple[list[str], int, dict[bytes, str]]:
        """(problems, bytes read, {damaged chunk: problem}) of one checkpoint."""
        with self.env.read() as txn:
            return salvage.inspect(self.t, txn, cid, self.level, verified_chunks)

    # -- handling a corrupt checkpoint -----------------------------------------------------------

    def _handle_corrupt(self, cid: bytes, problems: list[str], bad: dict[bytes, str]) -> None:
        text = id_to_text(cid)
        problem = "; ".join(problems)
        # Only file chunks are damaged: state, manifest and metadata verified.
        chunks_only = salvage.chunks_only(problems, bad)
        earlier = salvage.salvaged_chunks(self.t, cid) if chunks_only else None
        if earlier is not None and not self.repair:
            # Salvaged before: its mark and damage record stay as they are (a plain mark would
            # make its intact state unreadable); a repairing scrub brings the record up to date.
            self._find(Finding("checkpoint", text, problem, text, "kept (damaged files)"))
            return
        if not self.repair:
            self._mark(cid, problem)
            self._find(Finding("checkpoint", text, problem, text, "marked"))
            return
        if self._repair_from_backup(cid):
            self.repaired += 1
            self._find(Finding("checkpoint", text, problem, text, "repaired"))
            return
        if chunks_only:
            files = salvage.salvage(self.t, cid, bad, problem)
            if files is not None:
                if earlier is None or not files:
                    self.salvaged += 1 if files and earlier is None else 0
                    action = salvage.describe(files)
                elif set(bad) == earlier:
                    action = "kept (damaged files)"
                else:  # new damage, or some files healed by a later capture
                    action = salvage.describe(files) + " (damage record updated)"
                self._find(Finding("checkpoint", text, problem, text, action))
                return
        with self.env.read() as txn:
            reg_key, flags = self._registry_slot(txn, cid)
        if flags is None:
            # The registry entry is damaged or missing: its flags (PINNED) are unknown. If the
            # rest of the checkpoint is intact, rebuild the entry from the metadata (pinned, to be
            # safe); never delete a checkpoint that may have been pinned.
            action = self._repair_registry(reg_key, cid)
            problems_now, _size, _bad = self._check_one(cid, set())
            if action == "rebuilt" and not problems_now:
                self.repaired += 1
                self._find(Finding("checkpoint", text, problem, text, "rebuilt"))
            elif action == "conflict":
                # Its slot verifiably holds another checkpoint: there is no entry to mark.
                self._find(
                    Finding("checkpoint", text, problem, text, "kept (its slot holds another)")
                )
            else:
                self._mark(cid, problem)
                self._find(
                    Finding("checkpoint", text, problem, text, "kept (flags unknown), marked")
                )
            return
        if self._delete_unless_pinned(cid, problem):
            self.deleted += 1
            self._find(Finding("checkpoint", text, problem, text, "deleted"))
        else:
            self._find(Finding("checkpoint", text, problem, text, "kept (pinned), marked"))

    def _registry_slot(self, txn: Txn, cid: bytes) -> tuple[bytes | None, int | None]:
        """(registry key, flags or None if its tag fails) for a checkpoint, by metadata or scan."""
        try:
            meta = self.t.checkpoints.read(txn, cid)
        except CkdbError:
            meta = None  # missing or damaged metadata: the registry is scanned instead
        reg_key = self.t.registry.key_of(txn, cid, meta)
        if reg_key is None:
            return None, None
        value = txn.get(DB_REGISTRY, reg_key)
        assert value is not None
        try:
            return reg_key, decode_registry(self.keys.mac, reg_key, value)[2]
        except IntegrityError:
            return reg_key, None

    def _unmark_if_marked(self, cid: bytes) -> bool:
        """Clear the mark of a checkpoint that verifies (e.g. its shared chunk was repaired)."""

        def apply(txn: Txn) -> bool:
            reg_key, flags = self._registry_slot(txn, cid)
            if reg_key is None or flags is None or not flags & FLAG_MARKED:
                return False
            value = txn.get(DB_REGISTRY, reg_key)
            assert value is not None
            created_us = int.from_bytes(value[16:24], "big")
            txn.put(
                DB_REGISTRY,
                reg_key,
                self.t.registry.value(reg_key, cid, created_us, flags & ~FLAG_MARKED),
            )
            txn.delete_range(DB_MARKS, cid, prefix_end(cid))
            self.t.note_change(txn, split_registry_key(reg_key)[0])  # unmarked: it ships now
            return True

        changed: bool = self.env.write(apply)
        return changed

    def _mark(self, cid: bytes, reason: str) -> None:
        if self.t.readonly:
            return
        with contextlib.suppress(CkdbError):
            mark(self.t, id_to_text(cid), reason)

    def _delete_unless_pinned(self, cid: bytes, reason: str) -> bool:
        def apply(txn: Txn) -> bool:
            reg_key, flags = self._registry_slot(txn, cid)
            if flags is not None and flags & FLAG_PINNED:
                return False
            self.t.delete_checkpoint(txn, cid, reg_key)
            return True

        deleted: bool = self.env.write(apply)
        if not deleted:
            self._mark(cid, reason)
        return deleted

    def _repair_from_backup(self, cid: bytes) -> bool:
        """Copy every record of the checkpoint from the backup, if all of them verify here."""
        backup = self._backup()
        if backup is None:
            return False
        records: list[tuple[bytes, bytes, bytes]] = []
        mac = self.keys.mac
        try:
            with backup.read() as btxn:
                meta_raw = btxn.get(DB_CHECKPOINTS, cid)
                if meta_raw is None:
                    return False
                meta = Meta.parse(
                    cid,
                    decode_frame(
                        mac, DB_CHECKPOINTS, cid, meta_raw, RecordType.METADATA, self.keys.aead
                    ),
                )
                records.append((DB_CHECKPOINTS, cid, bytes(meta_raw)))
                reg_key = registry_key(self.keys.wf_key(meta.workflow_id), meta.seq)
                reg_value = btxn.get(DB_REGISTRY, reg_key)
                if reg_value is None:
                    return False
                rcid, _c, bflags = decode_registry(mac, reg_key, reg_value)
                if rcid != cid:
                    return False
                manifest = None
                for rtype_i, name, _raw, stored, _digest in meta.components:
                    if stored == 0:
                        continue  # inside the bundle frame, which is copied as its own entry
                    key = self.keys.payload_key(cid, RecordType(rtype_i), name)
                    value = btxn.get(DB_PAYLOADS, key)
                    if value is None:
                        return False
                    raw = decode_frame(
                        mac, DB_PAYLOADS, key, value, RecordType(rtype_i), self.keys.aead
                    )
                    records.append((DB_PAYLOADS, key, bytes(value)))
                    if rtype_i == RecordType.MANIFEST:
                        manifest = encoding.decode(raw)
                chunks = [] if manifest is None else sorted(manifest_chunks(manifest))
                for chunk in chunks:
                    value = btxn.get(DB_CHUNKS, chunk)
                    if value is None:
                        return False
                    data = decode_frame(
                        mac, DB_CHUNKS, chunk, value, RecordType.CHUNK, self.keys.aead
                    )
                    if content_id(self.keys, data) != chunk:
                        return False
                    records.append((DB_CHUNKS, chunk, bytes(value)))
        except CkdbError:
            return False

        def apply(txn: Txn) -> bool:
            current_key, current_flags = self._registry_slot(txn, cid)
            occupant = txn.get(DB_REGISTRY, reg_key)
            if occupant is not None and bytes(occupant[:16]) != cid:
                try:
                    decode_registry(mac, reg_key, occupant)
                    return False  # the slot verifiably belongs to another checkpoint
                except IntegrityError:
                    pass  # a damaged or swapped entry: the backup's copy replaces it
            txn.delete_range(DB_PAYLOADS, cid, prefix_end(cid))
            for db, key, value in records:
                if db == DB_CHUNKS:
                    existing = txn.get(DB_CHUNKS, key)
                    if existing is not None:
                        try:
                            parse_frame(mac, DB_CHUNKS, key, existing)
                            if check_chunk(self.t, txn, key) is None:
                                continue
                        except IntegrityError:
                            pass
                txn.put(db, key, value)
            if current_key is not None and current_key != reg_key:
                self.t.registry.delete(txn, current_key)
            flags = (current_flags if current_flags is not None else bflags) & ~FLAG_MARKED
            created_us = int.from_bytes(reg_value[16:24], "big")
            txn.put(DB_REGISTRY, reg_key, self.t.registry.value(reg_key, cid, created_us, flags))
            txn.delete_range(DB_MARKS, cid, prefix_end(cid))
            self.t.note_change(txn, split_registry_key(reg_key)[0])
            return True

        if not self.env.write(apply):
            return False
        problems, _size, _bad = self._check_one(cid, set())
        return not problems

    # -- pass B: registry ------------------------------------------------------------------------

    def _registry(self) -> None:
        bad: list[tuple[bytes, str, bytes | None]] = []
        with self.env.read() as txn:
            entries = (
                txn.prefix(DB_REGISTRY, self.wf_key) if self.wf_key else txn.range(DB_REGISTRY)
            )
            for raw_key, value in entries:
                key = bytes(raw_key)
                cid = bytes(value[:16]) if len(value) >= ID_SIZE else None
                try:
                    rcid, _created, _flags = decode_registry(self.keys.mac, key, value)
                except IntegrityError as err:
                    bad.append((key, str(err), cid))
                    continue
                raw = txn.get(DB_CHECKPOINTS, rcid)
                if raw is None:
                    bad.append((key, "registry entry names a checkpoint that does not exist", rcid))
                    continue
                try:
                    meta = self.t.checkpoints.read(txn, rcid)
                except IntegrityError:
                    continue  # reported by pass A
                if registry_key(self.keys.wf_key(meta.workflow_id), meta.seq) != key:
                    bad.append((key, "registry slot and metadata disagree", rcid))
        for key, problem, cid in bad:
            where = f"registry/{key.hex()}"
            text = None if cid is None else id_to_text(cid)
            if not self.repair:
                if cid is not None:
                    self._mark(cid, problem)
                self._find(Finding("registry", where, problem, text, "reported"))
                continue
            action = self._repair_registry(key, cid)
            self._find(Finding("registry", where, problem, text, action))
        # Metadata with no registry entry at all (the entry was deleted).
        with self.env.read() as txn:
            registered = {bytes(v[:16]) for _k, v in txn.range(DB_REGISTRY) if len(v) >= 16}
            unregistered = [
                bytes(k) for k, _v in txn.range(DB_CHECKPOINTS) if bytes(k) not in registered
            ]
        for cid in unregistered:
            text = id_to_text(cid)
            problem = "checkpoint has no registry entry"
            if not self.repair:
                self._find(Finding("registry", text, problem, text, "reported"))
                continue
            action = self._repair_registry(None, cid)
            self._find(Finding("registry", text, problem, text, action))

    def _repair_registry(self, key: bytes | None, cid: bytes | None) -> str:
        if cid is not None and self._repair_from_backup(cid):
            self.repaired += 1
            return "repaired"

        def apply(txn: Txn) -> str:
            meta = None
            if cid is not None and txn.get(DB_CHECKPOINTS, cid) is not None:
                with contextlib.suppress(IntegrityError):
                    meta = self.t.checkpoints.read(txn, cid)
            if meta is None or cid is None:
                # No checkpoint behind it: the entry is dangling or unreadable. Remove it.
                if key is not None:
                    self.t.registry.delete(txn, key)
                if cid is not None and txn.get(DB_CHECKPOINTS, cid) is not None:
                    self.t.delete_checkpoint(txn, cid, None)
                    return "deleted"
                return "removed"
            # Intact metadata: rebuild the entry from it (the pinned flag is unknown: keep the
            # checkpoint pinned so that no retention deletes what may have been pinned).
            good_key = registry_key(self.keys.wf_key(meta.workflow_id), meta.seq)
            occupant = txn.get(DB_REGISTRY, good_key)
            if occupant is not None and bytes(occupant[:16]) != cid:
                try:
                    decode_registry(self.keys.mac, good_key, occupant)
                    return "conflict"  # the slot verifiably holds another checkpoint: keep both
                except IntegrityError:
                    pass  # a damaged or swapped-in entry: overwritten below
            if key is not None and key != good_key:
                self.t.registry.delete(txn, key)
            flags = FLAG_PINNED | (FLAG_MANUAL if meta.kind == "manual" else 0)
            if any(c[0] == RecordType.MANIFEST for c in meta.components):
                flags |= FLAG_FILES
            txn.put(
                DB_REGISTRY,
                good_key,
                self.t.registry.value(good_key, cid, meta.created_us, flags),
            )
            return "rebuilt"

        result: str = self.env.write(apply)
        if result == "deleted":  # counted here: the write function may run more than once
            self.deleted += 1
        return result

    # -- workflow records ------------------------------------------------------------------------

    def _workflow_records(self) -> None:
        """Every workflow record's and sequence floor's tag and shape. A damaged one is removed
        by repair: the next create of that workflow rebuilds the record (the record's and the
        floor's copies of the sequence floor, and the registry, decide its sequences)."""
        bad: list[tuple[bytes, bytes, bytes, str]] = []  # (sub-db, key, value, problem)
        with self.env.read() as txn:
            for key, value in txn.range(DB_WORKFLOWS):
                try:
                    self.t.workflows.decode(bytes(key), value)
                except IntegrityError as err:
                    bad.append((DB_WORKFLOWS, bytes(key), bytes(value), str(err)))
            # The settings copy of each raised sequence floor (Workflows.keep_past).
            for key, value in txn.prefix(DB_SETTINGS, FLOOR_PREFIX):
                try:
                    self.t.workflows.decode_floor(bytes(key), value)
                except IntegrityError as err:
                    bad.append((DB_SETTINGS, bytes(key), bytes(value), str(err)))
        for db, key, value, problem in bad:
            where = f"{db.decode()}/{key.hex()}"
            if not self.repair:
                self._find(Finding("workflow", where, problem, None, "reported"))
                continue

            def drop(txn: Txn, db: bytes = db, key: bytes = key, value: bytes = value) -> bool:
                # Only the bytes judged damaged: a create or delete may have rewritten the
                # record (or floor) since the read above.
                if txn.get(db, key) != value:
                    return False
                txn.delete(db, key)
                return True

            removed = self.env.write(drop)
            action = "removed" if removed else "reported (rewritten since it was read)"
            self._find(Finding("workflow", where, problem, None, action))

    # -- pass E: integrations' own sub-databases -------------------------------------------------

    def _integrations(self) -> None:
        """Pass E, in one read transaction: every frame's tag in integrations' sub-databases, then
        LangGraph's chunked values (lg_values.scrub). Reported, never repaired here."""
        lg_values.chunks_ready(self.env)  # lg_chunks created by another process since we opened
        names = self.env.extra_dbs()
        for name in names:
            self.env.ensure_db(name)
        bad: list[tuple[bytes, bytes, str]] = []
        lengths: dict[bytes, int | None] = {}  # piece key -> verified raw length (None: bad tag)
        broken: list[tuple[str, str]] = []
        with self.env.read() as txn:
            for name in names:
                for key, value in txn.range(name):
                    if not value:
                        continue  # index entries (e.g. LangGraph's run index) carry no value
                    try:
                        frame = parse_frame(self.keys.mac, name, bytes(key), value)
                    except IntegrityError as err:
                        bad.append((name, bytes(key), str(err)))
                        frame = None
                    if name == LG_CHUNKS:
                        lengths[bytes(key)] = None if frame is None else frame.raw_len
            # lg_chunks created after the listing: this snapshot may hold pieces not scanned
            if LG_BLOBS in names and (LG_CHUNKS in names or not self.env.has_db(LG_CHUNKS)):
                skip = {key for name, key, _p in bad if name == LG_BLOBS}
                read = self.t.frames.unframe_uncached
                unframe = lambda db, k, v: read(db, k, v, RecordType.INTEGRATION)  # noqa: E731
                broken = lg_values.scrub(txn, unframe, lengths, skip)
        tagged = [(f"{n.decode('ascii', 'replace')}/{k.hex()}", p) for n, k, p in bad]
        for where, problem in tagged + broken:
            self._find(Finding("integration", where, problem, None, "reported"))

    # -- passes C and D: orphans and reference counts --------------------------------------------

    def _orphans_and_refs(self) -> None:
        """Passes C and D. Reporting reads one snapshot. Repairing computes and applies everything
        inside ONE write transaction: a create that commits meanwhile (and references a chunk
        the snapshot saw unreferenced) can then neither lose that chunk nor its new reference."""
        if not self.repair:
            with self.env.read() as txn:
                found = self._survey(txn)
            for kind, where, problem in found:
                self._find(Finding(kind, where, problem, None, "reported"))
            return

        def apply(txn: Txn) -> list[tuple[str, str, str, str]]:
            done = []
            for kind, where, problem, fix in self._survey_and_fix(txn):
                done.append((kind, where, problem, fix))
            return done

        for kind, where, problem, action in self.env.write(apply):
            self._find(Finding(kind, where, problem, None, action))

    def _survey(self, txn: Txn) -> list[tuple[str, str, str]]:
        return [(k, w, p) for k, w, p, _fix in self._survey_and_fix(txn, fix=False)]

    def _survey_and_fix(self, txn: Txn, *, fix: bool = True) -> list[tuple[str, str, str, str]]:
        out: list[tuple[str, str, str, str]] = []
        expected: Counter[bytes] = Counter()
        cids = {bytes(k) for k, _v in txn.range(DB_CHECKPOINTS)}
        for cid in cids:
            with contextlib.suppress(IntegrityError):
                manifest = self.t.payloads.read_manifest(txn, cid)
                if manifest is not None:
                    expected.update(manifest_chunks(manifest))
        orphan_payloads = [
            bytes(k) for k, _v in txn.range(DB_PAYLOADS) if bytes(k[:16]) not in cids
        ]
        orphan_marks = [bytes(k) for k, _v in txn.range(DB_MARKS) if bytes(k[:16]) not in cids]
        now = now_us()
        leased = leased_chunks(txn, self.keys, now)
        expired_leases = []
        for key, value in txn.range(DB_SETTINGS, LEASE_PREFIX, prefix_end(LEASE_PREFIX)):
            try:
                doc = encoding.decode(
                    decode_frame(
                        self.keys.mac, DB_SETTINGS, key, value, RecordType.SETTING, self.keys.aead
                    )
                )
                if int(doc.get("expires_us", 0)) < now:
                    expired_leases.append((bytes(key), "lease expired"))
            except (CkdbError, TypeError, ValueError, AttributeError) as err:
                expired_leases.append((bytes(key), f"damaged lease: {err}"))
        orphan_chunks = [
            bytes(k)
            for k, _v in txn.range(DB_CHUNKS)
            if bytes(k) not in expected and bytes(k) not in leased
        ]
        bad_refs: list[tuple[bytes, str]] = []
        seen_refs: set[bytes] = set()
        for raw_key, value in txn.range(DB_REFS):
            key = bytes(raw_key)
            seen_refs.add(key)
            try:
                count = decode_refs(self.keys, key, bytes(value))
            except IntegrityError as err:
                bad_refs.append((key, str(err)))
                continue
            want = expected.get(key, 0)
            if count != want:
                bad_refs.append((key, f"count {count}, manifests name it {want}"))
        bad_refs.extend(
            (chunk, "referenced chunk has no reference count")
            for chunk in expected
            if chunk not in seen_refs
        )

        def removal(kind: str, db: bytes, keys: list[bytes], problem: str) -> None:
            for key in keys:
                if fix:
                    txn.delete(db, key)
                out.append((kind, f"{db.decode()}/{key.hex()}", problem, "removed"))

        removal("orphan-payload", DB_PAYLOADS, orphan_payloads, "payload of a missing checkpoint")
        removal("orphan-mark", DB_MARKS, orphan_marks, "mark of a missing checkpoint")
        removal("orphan-chunk", DB_CHUNKS, orphan_chunks, "chunk no checkpoint references")
        for key, problem in expired_leases:
            removal("lease", DB_SETTINGS, [key], problem)
        for key, problem in bad_refs:
            count = expected.get(key, 0)
            if fix:
                if count:
                    txn.put(DB_REFS, key, encode_refs(self.keys, key, count))
                else:
                    txn.delete(DB_REFS, key)
            out.append(("refs", f"refs/{key.hex()}", problem, "rebuilt"))
        return out


def scrub(
    t: Tables,
    *,
    workflow_id: str | None = None,
    level: str = "comprehensive",
    repair: bool = False,
    backup: str | os.PathLike[str] | None = None,
    budget: object = None,
    notify: Callable[[Finding], None],
    progress: Callable[[int, int], None] | None = None,
) -> ScrubReport:
    """Verify the store (see the module docstring); ``backup``: a store to repair from."""
    if workflow_id is not None:
        check_name(workflow_id, "workflow_id")
    if backup is not None and not (Path(os.fspath(backup)) / "data.mdb").exists():
        raise InvalidInput(f"backup {os.fspath(backup)!r} is not a ckdb store")
    scrubber = Scrubber(
        t,
        workflow_id=workflow_id,
        level=level,
        repair=repair,
        backup=None if backup is None else os.fspath(backup),
        budget=budget,
        notify=notify,
        progress=progress,
    )
    return scrubber.run()
