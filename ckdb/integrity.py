"""Validation of one checkpoint at three levels.

- ``basic``: metadata frame + registry entry + every workflow-state component frame.
- ``standard``: + the file state (manifest frame) + the integrity digest over component digests.
- ``comprehensive``: + resources and dependencies frames + every referenced chunk present, its tag
  valid and its content id recomputed from the content.

Every level verifies the tag of every frame it reads. Findings are data, never warnings.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from attrs import frozen

from ckdb import encoding
from ckdb.chunks import content_id
from ckdb.errors import CkdbError, FormatError, IntegrityError, InvalidInput
from ckdb.layout import DB_CHUNKS, DB_PAYLOADS, RecordType, id_to_text

if TYPE_CHECKING:
    from ckdb._env import Txn
    from ckdb.store import Store

LEVELS = ("basic", "standard", "comprehensive")


@frozen
class ValidationReport:
    """What :meth:`Store.validate` found. ``ok`` is True only if every check of the level passed."""

    checkpoint_id: str
    level: str
    metadata_valid: bool
    workflow_state_valid: bool
    file_state_valid: bool | None = None  # None: not checked at this level
    integrity_valid: bool | None = None
    resource_state_valid: bool | None = None
    dependency_state_valid: bool | None = None
    chunks_valid: bool | None = None
    chunks_checked: int = 0
    findings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        flags = (
            self.metadata_valid,
            self.workflow_state_valid,
            self.file_state_valid,
            self.integrity_valid,
            self.resource_state_valid,
            self.dependency_state_valid,
            self.chunks_valid,
        )
        return all(f is not False for f in flags) and not self.findings


def validate(store: Store, txn: Txn, cid: bytes, level: str) -> ValidationReport:
    if level not in LEVELS:
        raise InvalidInput(f"validation level must be one of {LEVELS}, not {level!r}")
    depth = LEVELS.index(level)
    text_id = id_to_text(cid)
    findings: list[str] = []
    flags: dict[str, Any] = {}

    try:
        meta = store._read_meta(txn, cid)
        _reg_key, reg_flags = store._read_flags(txn, meta)
        if reg_flags & 0x02:
            findings.append("checkpoint is marked corrupted")
        flags["metadata_valid"] = True
    except IntegrityError as err:
        return ValidationReport(text_id, level, False, False, findings=(str(err),))

    def read(rtype: RecordType, name: str, raw_size: int, digest: bytes) -> Any:
        return read_payload(store, txn, cid, rtype, name, raw_size, digest)

    checks = {
        RecordType.COMPONENT: ("workflow_state_valid", 0),
        RecordType.MANIFEST: ("file_state_valid", 1),
        RecordType.RESOURCES: ("resource_state_valid", 2),
        RecordType.DEPENDENCIES: ("dependency_state_valid", 2),
    }
    for flag, min_depth in checks.values():
        if depth >= min_depth:
            flags[flag] = True
    manifest: dict[str, Any] | None = None
    for rtype_i, name, raw_size, _stored, digest in meta.components:
        rtype = RecordType(rtype_i)
        flag, min_depth = checks[rtype]
        if depth < min_depth:
            continue
        try:
            value = read(rtype, name, raw_size, bytes(digest))
        except CkdbError as err:
            flags[flag] = False
            findings.append(str(err))
            continue
        if rtype is RecordType.MANIFEST:
            manifest = value
    if depth >= 1:
        from ckdb.meta import _integrity  # noqa: PLC0415

        flags["integrity_valid"] = _integrity(cid, meta.components) == meta.integrity
        if not flags["integrity_valid"]:
            findings.append("integrity digest over the component digests does not match")
    if depth >= 2:
        flags["chunks_valid"] = True
        checked = 0
        if manifest is not None:
            from ckdb.capture import manifest_chunks  # noqa: PLC0415

            for chunk in sorted(manifest_chunks(manifest)):
                checked += 1
                problem = check_chunk(store, txn, chunk)
                if problem:
                    flags["chunks_valid"] = False
                    findings.append(problem)
        flags["chunks_checked"] = checked
    flags.setdefault("workflow_state_valid", True)
    return ValidationReport(text_id, level, findings=tuple(findings), **flags)


def read_payload(
    store: Store,
    txn: Txn,
    cid: bytes,
    rtype: RecordType,
    name: str,
    raw_size: int,
    digest: bytes,
) -> Any:
    """One payload of a checkpoint: present, tag valid, size and digest as its metadata says,
    and decodable. Returns the value; any failure is an IntegrityError."""
    key = store._keys.payload_key(cid, rtype, name)
    value = txn.get(DB_PAYLOADS, key)
    if value is None:
        raise IntegrityError(f"{rtype.name.lower()} {name!r} is missing")
    raw = store._unframe(DB_PAYLOADS, key, value, rtype)
    if len(raw) != raw_size or hashlib.sha256(raw).digest() != digest:
        raise IntegrityError(f"{rtype.name.lower()} {name!r}: digest mismatch")
    try:
        return encoding.decode(raw)
    except FormatError as err:
        raise IntegrityError(f"{rtype.name.lower()} {name!r}: {err}") from None


def check_chunk(store: Store, txn: Txn, chunk: bytes) -> str | None:
    """None if the chunk is present, its tag valid and its content id right; else the problem."""
    value = txn.get(DB_CHUNKS, chunk)
    if value is None:
        return f"chunk {chunk.hex()[:16]} is missing"
    try:
        data = store._unframe(DB_CHUNKS, chunk, value, RecordType.CHUNK)
    except IntegrityError as err:
        return f"chunk {chunk.hex()[:16]}: {err}"
    if content_id(store._keys, data) != chunk:
        return f"chunk {chunk.hex()[:16]}: content does not match its content id"
    return None
