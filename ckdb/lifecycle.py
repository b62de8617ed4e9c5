"""Marking, pinning and deleting checkpoints and workflows: one transaction each.

Each function is an operation over the record layer (:class:`~ckdb.tables.Tables`); ``Store``
delegates to them.
"""

from __future__ import annotations

import contextlib

from ckdb._env import Txn
from ckdb.errors import CheckpointNotFound, IntegrityError, ReadOnlyStore, WorkflowNotFound
from ckdb.layout import (
    DB_REGISTRY,
    ID_SIZE,
    check_name,
    id_from_text,
    prefix_end,
    split_registry_key,
)
from ckdb.records import CheckpointInfo
from ckdb.tables import Tables


def mark(t: Tables, checkpoint_id: str, reason: str) -> None:
    """Mark a checkpoint corrupted: ``load`` refuses it, ``latest`` skips it."""
    cid = id_from_text(checkpoint_id)
    t.env.write(lambda txn: t.mark(txn, cid, reason))


def mark_quietly(t: Tables, checkpoint_id: str, reason: str) -> None:
    """Mark if the store is writable and the checkpoint still exists; never raise for that."""
    if t.readonly:
        return
    with contextlib.suppress(CheckpointNotFound, ReadOnlyStore):
        mark(t, checkpoint_id, reason)


def delete(t: Tables, checkpoint_id: str) -> None:
    """Delete one checkpoint, whole, in one transaction."""
    cid = id_from_text(checkpoint_id)

    def apply(txn: Txn) -> None:
        reg_key, meta = t.locate(txn, cid)
        t.delete_checkpoint(txn, cid, reg_key)
        if reg_key is not None:
            t.note_change(txn, split_registry_key(reg_key)[0], deleted=[cid])
        elif meta is not None:
            t.note_change(txn, t.keys.wf_key(meta.workflow_id), deleted=[cid])

    t.env.write(apply)


def delete_workflow(t: Tables, workflow_id: str) -> int:
    """Delete a workflow and all its checkpoints in one transaction; returns how many."""
    check_name(workflow_id, "workflow_id")
    wf_key = t.keys.wf_key(workflow_id)

    def apply(txn: Txn) -> int:
        entries = list(txn.prefix(DB_REGISTRY, wf_key))
        if (
            not entries
            and not t.workflows.exists(txn, wf_key)
            and t.workflows.floor(txn, wf_key) == 1  # a floor left when the record was lost
        ):
            raise WorkflowNotFound(f"no workflow {workflow_id!r}")
        deleted: list[bytes] = []
        for key, value in entries:
            # Only delete what provably belongs to this workflow: a registry value copied
            # here from another workflow (damage, or tampering without the key) must not
            # delete that workflow's checkpoint. The id is taken from a verified entry, or,
            # if the entry fails, from metadata that verifies and names this workflow.
            try:
                cid = t.registry.entry(key, value)[0]
            except IntegrityError:
                cid = bytes(value[:16])
            if len(cid) != ID_SIZE or not t.checkpoints.exists(txn, cid):
                continue
            try:
                owner = t.checkpoints.read(txn, cid).workflow_id
            except IntegrityError:
                owner = None
            if owner == workflow_id:
                t.delete_checkpoint(txn, cid, None)
                deleted.append(cid)
        txn.delete_range(DB_REGISTRY, wf_key, prefix_end(wf_key))
        t.workflows.delete(txn, wf_key)
        t.workflows.clear_floor(txn, wf_key)
        t.note_change(txn, wf_key, deleted=deleted)
        return len(deleted)

    return t.env.write(apply)


def set_flag(t: Tables, checkpoint_id: str, flag: int, on: bool) -> CheckpointInfo:
    """Set or clear a registry flag (PINNED) of a checkpoint; its metadata must verify."""
    cid = id_from_text(checkpoint_id)

    def apply(txn: Txn) -> CheckpointInfo:
        meta = t.checkpoints.read(txn, cid)
        reg_key, flags = t.registry.slot_of(txn, meta)
        flags = (flags | flag) if on else (flags & ~flag)
        t.registry.put(txn, reg_key, cid, t.registry.created_of(txn, reg_key), flags)
        t.note_change(txn, split_registry_key(reg_key)[0])
        return meta.info(flags)

    return t.env.write(apply)
