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
from ckdb.meta import _TYPE_NAMES

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

    payloads = Payloads(store, txn, cid, meta.components)
    checks = {
        RecordType.BUNDLE: ("workflow_state_valid", 0),
        RecordType.COMPONENT: ("workflow_state_valid", 0),
        RecordType.MANIFEST: ("file_state_valid", 1),
        RecordType.RESOURCES: ("resource_state_valid", 2),
        RecordType.DEPENDENCIES: ("dependency_state_valid", 2),
    }
    for flag, min_depth in checks.values():
        if depth >= min_depth:
            flags[flag] = True
    manifest: dict[str, Any] | None = None
    for index, comp in enumerate(meta.components):
        rtype = RecordType(comp[0])
        flag, min_depth = checks[rtype]
        if depth < min_depth:
            continue
        try:
            if rtype is RecordType.BUNDLE:
                payloads.raw(index)  # its own digest; the components it holds follow
            elif rtype is RecordType.MANIFEST:
                manifest = payloads.value(index)
            else:
                payloads.value(index)
        except CkdbError as err:
            flags[flag] = False
            findings.append(str(err))
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


class Payloads:
    """The payloads of one checkpoint inside one transaction: frames of their own, or slices of
    the checkpoint's bundle frame (read and verified once). Every raw body returned has passed
    its frame's tag, its size and its SHA-256 digest from the metadata."""

    __slots__ = ("_bundle", "_bundle_error", "_cid", "_components", "_offsets", "_store", "_txn")

    def __init__(self, store: Store, txn: Txn, cid: bytes, components: list[list[Any]]) -> None:
        self._store = store
        self._txn = txn
        self._cid = cid
        self._components = components
        self._bundle: bytes | None = None
        self._bundle_error: IntegrityError | None = None
        self._offsets: dict[int, int] = {}
        at = 0
        for i, comp in enumerate(components):  # the metadata parser checked the layout
            if comp[0] == RecordType.BUNDLE:
                at = 0
            elif comp[3] == 0:
                self._offsets[i] = at
                at += comp[2]

    def raw(self, index: int) -> bytes:
        rtype_i, name, raw_size, _stored, digest = self._components[index]
        rtype = RecordType(rtype_i)
        offset = self._offsets.get(index)
        if offset is None:
            raw = self._bundle_raw() if rtype is RecordType.BUNDLE else self._frame(rtype, name)
        else:
            try:
                raw = self._bundle_raw()[offset : offset + raw_size]
            except IntegrityError as err:
                raise IntegrityError(f"{_label(rtype, name)}: {err}") from None
        if len(raw) != raw_size or hashlib.sha256(raw).digest() != digest:
            raise IntegrityError(f"{_label(rtype, name)}: digest mismatch")
        return raw

    def value(self, index: int) -> Any:
        """The decoded value of a component, resources, dependencies or manifest entry."""
        rtype_i, name = self._components[index][:2]
        raw = self.raw(index)
        try:
            return encoding.decode(raw)
        except FormatError as err:
            raise IntegrityError(f"{_label(RecordType(rtype_i), name)}: {err}") from None

    def _frame(self, rtype: RecordType, name: str) -> bytes:
        key = self._store._keys.payload_key(self._cid, rtype, name)
        value = self._txn.get(DB_PAYLOADS, key)
        if value is None:
            raise IntegrityError(f"{_label(rtype, name)} is missing")
        return self._store._unframe(DB_PAYLOADS, key, value, rtype)

    def _bundle_raw(self) -> bytes:
        if self._bundle_error is not None:  # read once: every component it holds fails alike
            raise self._bundle_error
        if self._bundle is None:
            entry = next(c for c in self._components if c[0] == RecordType.BUNDLE)
            try:
                raw = self._frame(RecordType.BUNDLE, "")
                if len(raw) != entry[2]:  # its digest is checked when the entry itself is read
                    raise IntegrityError("bundle: size mismatch")
            except IntegrityError as err:
                self._bundle_error = err
                raise
            self._bundle = raw
        return self._bundle


def _label(rtype: RecordType, name: str) -> str:
    return "the bundle" if rtype is RecordType.BUNDLE else f"{_TYPE_NAMES[rtype]} {name!r}"


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
