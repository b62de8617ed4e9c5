"""Applying retention plans: bounded transactions of whole-checkpoint deletions.

Deleting one checkpoint is never split across transactions. A prune runs as a series of bounded
transactions (``BATCH`` checkpoints each), each leaving a valid store; automatic retention inside
``create`` removes at most ``AUTO_MAX`` per create. Each transaction re-checks its victims against
the registry as it is *now*: one pinned, marked newest-valid, or already gone since planning is
skipped. Registry entries are removed with one cursor pass over the victims' key range.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import attrs

from ckdb.capture import manifest_chunks
from ckdb.chunks import release_refs
from ckdb.errors import CheckpointNotFound, FormatError, IntegrityError
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_MARKS,
    DB_PAYLOADS,
    DB_REGISTRY,
    FLAG_FILES,
    FLAG_MARKED,
    FLAG_PINNED,
    id_from_text,
    id_to_text,
    registry_key,
    split_registry_key,
)
from ckdb.retention import Entry

if TYPE_CHECKING:
    from ckdb._env import Txn
    from ckdb.meta import _Meta
    from ckdb.store import Store

BATCH = 256  # checkpoints with a working-directory capture per transaction (they release refs)
BATCH_PLAIN = 2048  # checkpoints without one: a few small deletes each
AUTO_MAX = 16


def registry_entries(store: Store, txn: Txn, wf_key: bytes) -> list[Entry]:
    """Planner input for one workflow, from the registry (plus the metadata of the few newest,
    to find the newest valid checkpoint the way ``latest`` does). Entries whose tag fails are left
    out: a damaged entry's pinned flag cannot be trusted, so it is never planned for deletion.
    Unmarked entries newer than the newest valid one failed verification: they are passed as
    marked, so the planner keeps the real resume point."""
    keeper = _newest_valid(store, txn, wf_key)
    out = []
    keeper_seq: int | None = None
    for key, value in txn.prefix(DB_REGISTRY, wf_key):
        try:
            cid, created_us, flags = store._registry_entry(key, value)
        except IntegrityError:
            continue
        seq = split_registry_key(key)[1]
        if cid == keeper:
            keeper_seq = seq
        out.append(
            Entry(
                seq=seq,
                id=id_to_text(cid),
                created_at=datetime.fromtimestamp(created_us / 1_000_000, tz=UTC),
                pinned=bool(flags & FLAG_PINNED),
                marked=bool(flags & FLAG_MARKED),
                files=bool(flags & FLAG_FILES),
                cid=cid,
            )
        )
    if keeper_seq is not None:
        out = [e if e.seq <= keeper_seq or e.marked else attrs.evolve(e, marked=True) for e in out]
    return out


def newest_valid(store: Store, txn: Txn, wf_key: bytes) -> tuple[_Meta, int] | None:
    """THE definition of a workflow's newest valid checkpoint, used by ``Store.latest`` and by
    retention (which must never delete it): the newest registry entry that is not marked, whose
    tag verifies, and whose metadata verifies and names the same slot. -> (metadata, flags).
    (Trusting the flags alone would let retention keep a rotten newest checkpoint and delete the
    real resume point: found in review.)"""
    for key, value in txn.prefix(DB_REGISTRY, wf_key, reverse=True):
        try:
            cid, _created, flags = store._registry_entry(key, value)
            if flags & FLAG_MARKED:
                continue
            meta = store._read_meta(txn, cid)
            if meta.seq != split_registry_key(key)[1]:
                continue
        except (IntegrityError, CheckpointNotFound, FormatError):
            continue
        return meta, flags
    return None


def _newest_valid(store: Store, txn: Txn, wf_key: bytes) -> bytes | None:
    found = newest_valid(store, txn, wf_key)
    return None if found is None else found[0].cid


def delete_victims(
    store: Store,
    txn: Txn,
    wf_key: bytes,
    victims: Iterable[tuple[int, str] | tuple[int, str, bytes]],
    now_us: int,
) -> tuple[list[str], list[str]]:
    """Delete whole checkpoints ``(seq, id[, id as bytes])`` of one workflow inside ``txn``.

    Returns (deleted ids, skipped ids). A victim whose manifest cannot be read is marked, not
    half-deleted (its chunk references could not be released).
    """
    keep_cid = _newest_valid(store, txn, wf_key)
    doomed: dict[bytes, bytes] = {}  # registry key -> checkpoint id
    texts: dict[bytes, str] = {}
    marked: set[bytes] = set()
    skipped: list[str] = []
    for victim in victims:
        seq, text_id = victim[0], victim[1]
        cid = victim[2] if len(victim) > 2 else id_from_text(text_id)
        reg_key = registry_key(wf_key, seq)
        value = txn.get(DB_REGISTRY, reg_key)
        if value is None or bytes(value[:16]) != cid or cid == keep_cid:
            skipped.append(text_id)
            continue
        try:
            _c, created_us, flags = store._registry_entry(reg_key, value)
        except IntegrityError:
            skipped.append(text_id)
            continue
        if flags & FLAG_PINNED:
            skipped.append(text_id)
            continue
        if flags & FLAG_FILES:
            try:
                manifest = store._read_manifest(txn, cid)
            except IntegrityError:
                manifest = None
            if manifest is None:
                if not flags & FLAG_MARKED:
                    txn.put(
                        DB_REGISTRY,
                        reg_key,
                        store._registry_value(reg_key, cid, created_us, flags | FLAG_MARKED),
                    )
                skipped.append(text_id)
                continue
            release_refs(txn, store._keys, manifest_chunks(manifest), now_us)
        doomed[reg_key] = cid
        texts[cid] = text_id
        if flags & FLAG_MARKED:
            marked.add(cid)
    if not doomed:
        return [], skipped
    # Registry: one cursor pass from the first to the last victim, deleting victims only.
    keys = sorted(doomed)
    txn.delete_keys_in_range(DB_REGISTRY, keys[0], keys[-1] + b"\x00", set(keys))
    cids = sorted(doomed.values())
    for cid in cids:
        txn.delete(DB_CHECKPOINTS, cid)
    txn.delete_prefixes(DB_PAYLOADS, cids)  # one cursor, in key order
    if marked:  # only marked checkpoints have marks records (mark() sets the flag)
        txn.delete_prefixes(DB_MARKS, sorted(marked))
    return [texts[c] for c in doomed.values()], skipped


def prune_batches(
    work: list[tuple[bytes, int, str, bytes, bool]],
) -> Iterator[list[tuple[bytes, int, str, bytes, bool]]]:
    """Split prune work into transactions: at most BATCH checkpoints with files (each releases
    its chunk references) or BATCH_PLAIN without (a few deletes each): bounded dirty pages."""
    batch: list[tuple[bytes, int, str, bytes, bool]] = []
    cost = 0
    for item in work:
        batch.append(item)
        cost += BATCH_PLAIN // BATCH if item[4] else 1
        if cost >= BATCH_PLAIN:
            yield batch
            batch, cost = [], 0
    if batch:
        yield batch
