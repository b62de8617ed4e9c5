"""Reading: load a checkpoint verified, its metadata, listings, the newest valid one, stats.

Each function is an operation over the record layer (:class:`~ckdb.tables.Tables`) in one read
transaction; ``Store`` delegates to them. Listing reads the registry and metadata only, never a
payload.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ckdb._env import Txn
from ckdb.capture import check_manifest, file_state
from ckdb.errors import IntegrityError, InvalidInput
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_CHUNKS,
    DB_PAYLOADS,
    DB_REGISTRY,
    DB_WORKFLOWS,
    FLAG_MARKED,
    RecordType,
    check_name,
    id_from_text,
    id_to_text,
)
from ckdb.meta import aware_us
from ckdb.records import KINDS, STATUS_DAMAGED, Checkpoint, CheckpointInfo
from ckdb.tables import Tables


def load(t: Tables, cid: bytes) -> tuple[Checkpoint, dict[str, Any] | None]:
    """Load and verify a checkpoint: every frame's tag, every component digest, the integrity
    digest, and its registry entry. -> (checkpoint, its manifest or None). A damaged or marked
    checkpoint is an IntegrityError."""
    with t.env.read() as txn:
        meta = t.checkpoints.read(txn, cid)
        _reg_key, flags = t.registry.slot_of(txn, meta)
        info = t.info(txn, meta, flags)
        if flags & FLAG_MARKED and info.status != STATUS_DAMAGED:
            raise IntegrityError(f"checkpoint {id_to_text(cid)} is marked corrupted")
        if not meta.integrity_ok():
            raise IntegrityError(f"checkpoint {id_to_text(cid)}: integrity digest mismatch")
        state: dict[str, Any] = {}
        resources: Any = None
        dependencies: Any = None
        manifest: dict[str, Any] | None = None
        payloads = t.payloads.reader(txn, cid, meta.components)
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
        info=info,
        state=state,
        resources=resources,
        dependencies=dependencies,
        files=file_state(manifest),
    )
    return ck, manifest


def get_info(t: Tables, checkpoint_id: str) -> CheckpointInfo:
    """A checkpoint's verified metadata (no payload decoding)."""
    cid = id_from_text(checkpoint_id)
    with t.env.read() as txn:
        meta = t.checkpoints.read(txn, cid)
        _reg_key, flags = t.registry.slot_of(txn, meta)
        return t.info(txn, meta, flags)


def read_chunk(t: Tables, chunk: bytes) -> bytes:
    """One chunk's verified content, in a read transaction of its own (restore streams them)."""
    with t.env.read() as txn:
        return t.chunks.read(txn, chunk)


def list_checkpoints(
    t: Tables,
    workflow_id: str | None = None,
    *,
    phase: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[CheckpointInfo]:
    """Checkpoints newest first (per workflow: by sequence), from the registry and metadata
    only. Damaged or marked checkpoints are listed with ``status="corrupted"``; those scrub
    salvaged (state intact, some files lost) with ``status="damaged"``."""
    if workflow_id is not None:
        check_name(workflow_id, "workflow_id")
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"kind must be one of {KINDS}, not {kind!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InvalidInput(f"limit must be a non-negative int, not {limit!r}")
    since_us = aware_us(since, "since")
    until_us = aware_us(until, "until")
    out: list[CheckpointInfo] = []
    if limit == 0:
        return out
    with t.env.read() as txn:
        entries = _registry_newest_first(t, txn, workflow_id)
        for reg_key, value in entries:
            created_us = int.from_bytes(value[16:24], "big") if len(value) >= 24 else 0
            if since_us is not None and created_us < since_us:
                if workflow_id is not None:
                    continue
                break
            if until_us is not None and created_us > until_us:
                continue
            info = t.entry_info(txn, reg_key, value)
            if kind is not None and info.kind != kind:
                continue
            if phase is not None and info.phase != phase:
                continue
            out.append(info)
            if limit is not None and len(out) >= limit:
                break
    return out


def _registry_newest_first(
    t: Tables, txn: Txn, workflow_id: str | None
) -> Iterator[tuple[bytes, bytes]]:
    if workflow_id is not None:
        return txn.prefix(DB_REGISTRY, t.keys.wf_key(workflow_id), reverse=True)
    # Newest first across workflows: order by created_at from the registry, then id.
    raw = list(txn.range(DB_REGISTRY))
    raw.sort(key=lambda kv: (bytes(kv[1][16:24]), bytes(kv[1][:16])), reverse=True)
    return iter(raw)


def latest(t: Tables, workflow_id: str) -> CheckpointInfo | None:
    """The newest valid checkpoint of a workflow: not marked, registry entry and metadata
    verify. None if there is none."""
    check_name(workflow_id, "workflow_id")
    with t.env.read() as txn:
        found = t.newest_valid(txn, t.keys.wf_key(workflow_id))
    return None if found is None else found[0].info(found[1])


def workflows(t: Tables) -> list[str]:
    """Every workflow id with a record in the store, sorted."""
    with t.env.read() as txn:
        return sorted(t.workflows.names(txn))


def stats(t: Tables) -> dict[str, int]:
    """Counts and sizes: checkpoints, workflows, stored bytes, file size, LMDB pages.

    ``free_pages`` are pages of the file no sub-database uses (LMDB reuses them; the file
    never shrinks: ``compact`` writes a copy without them). Sizes come from one scan of the
    payloads and chunks, so this costs time proportional to the store."""
    with t.env.read() as txn:
        out = {
            "checkpoints": txn.count(DB_CHECKPOINTS),
            "workflows": txn.count(DB_WORKFLOWS),
            "payload_frames": txn.count(DB_PAYLOADS),
            "chunks": txn.count(DB_CHUNKS),
            "payload_bytes": sum(len(v) for _k, v in txn.range(DB_PAYLOADS)),
            "chunk_bytes": sum(len(v) for _k, v in txn.range(DB_CHUNKS)),
        }
        used = txn.pages_in_use()
    info = t.env.info()
    out["map_size"] = info["map_size"]
    out["last_page"] = info["last_pgno"]
    out["page_size"] = info["stat_psize"]
    out["used_pages"] = used
    out["free_pages"] = max(0, info["last_pgno"] + 1 - 2 - used)  # 2 meta pages
    with contextlib.suppress(OSError):
        out["file_size"] = os.path.getsize(t.path / "data.mdb")
    return out
