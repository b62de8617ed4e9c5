"""Validation of one checkpoint at three levels.

- ``basic``: metadata frame + registry entry + every workflow-state component frame.
- ``standard``: + the file state (manifest frame) + the integrity digest over component digests.
- ``comprehensive``: + resources and dependencies frames + every referenced chunk present, its tag
  valid and its content id recomputed from the content.

Every level verifies the tag of every frame it reads. Findings are data, never warnings.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from ckdb._env import Txn
from ckdb.capture import manifest_chunks
from ckdb.errors import CheckpointNotFound, CkdbError, IntegrityError, InvalidInput
from ckdb.layout import FLAG_MARKED, RecordType, id_from_text, id_to_text
from ckdb.meta import integrity_digest
from ckdb.tables import Tables

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


def check_level(level: object, what: str = "validation level") -> str:
    if level not in LEVELS:
        raise InvalidInput(f"{what} must be one of {LEVELS}, not {level!r}")
    return str(level)


def validate_checkpoint(t: Tables, checkpoint_id: str, level: str) -> ValidationReport:
    """Validate one checkpoint at ``level`` in one read transaction."""
    check_level(level)
    cid = id_from_text(checkpoint_id)
    with t.env.read() as txn:
        if not t.checkpoints.exists(txn, cid):
            raise CheckpointNotFound(f"no checkpoint {id_to_text(cid)}")
        return validate(t, txn, cid, level)


def validate(t: Tables, txn: Txn, cid: bytes, level: str) -> ValidationReport:
    if level not in LEVELS:
        raise InvalidInput(f"validation level must be one of {LEVELS}, not {level!r}")
    depth = LEVELS.index(level)
    text_id = id_to_text(cid)
    findings: list[str] = []
    flags: dict[str, Any] = {}

    try:
        meta = t.checkpoints.read(txn, cid)
        _reg_key, reg_flags = t.registry.slot_of(txn, meta)
        if reg_flags & FLAG_MARKED:
            findings.append("checkpoint is marked corrupted")
        flags["metadata_valid"] = True
    except IntegrityError as err:
        return ValidationReport(text_id, level, False, False, findings=(str(err),))

    payloads = t.payloads.reader(txn, cid, meta.components)
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
        flags["integrity_valid"] = integrity_digest(cid, meta.components) == meta.integrity
        if not flags["integrity_valid"]:
            findings.append("integrity digest over the component digests does not match")
    if depth >= 2:
        flags["chunks_valid"] = True
        checked = 0
        if manifest is not None:
            for chunk in sorted(manifest_chunks(manifest)):
                checked += 1
                problem = check_chunk(t, txn, chunk)
                if problem:
                    flags["chunks_valid"] = False
                    findings.append(problem)
        flags["chunks_checked"] = checked
    flags.setdefault("workflow_state_valid", True)
    return ValidationReport(text_id, level, findings=tuple(findings), **flags)


def check_chunk(t: Tables, txn: Txn, chunk: bytes) -> str | None:
    """None if the chunk is present, its tag valid and its content id right; else the problem."""
    if not t.chunks.has(txn, chunk):
        return f"chunk {chunk.hex()[:16]} is missing"
    try:
        data = t.chunks.read(txn, chunk)
    except IntegrityError as err:
        return f"chunk {chunk.hex()[:16]}: {err}"
    if t.chunks.content_id(data) != chunk:
        return f"chunk {chunk.hex()[:16]}: content does not match its content id"
    return None
