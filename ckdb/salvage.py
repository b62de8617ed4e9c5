"""Salvaging repair: keep a checkpoint whose only damage is in its file chunks.

What restic's ``repair snapshots`` and borg's ``check --repair`` do: a damaged file is dropped
from a snapshot, the snapshot stays. Here, when scrub repairs without a good copy in a backup and
every record of a checkpoint verifies except some file chunks (its metadata, registry entry,
state, resources, dependencies and manifest all verify), the checkpoint is kept, in ONE write
transaction:

- the damaged chunk records are deleted (a corrupt record is never data): the next capture of the
  same content writes the chunk afresh, which heals every checkpoint naming it, and scrub then
  clears the mark;
- the checkpoint is marked (``latest`` skips it, ``restore_latest`` prefers any fully valid
  checkpoint), and a damage record (``marks``: checkpoint id ‖ 0x01) names the files those
  chunks held and the chunks;
- reference counts are left as the manifests say (a salvaged manifest still names its chunks).

A marked checkpoint with a damage record has status "damaged": ``load`` returns it, ``restore``
restores everything but the damaged files and names them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ckdb._env import Txn
from ckdb.capture import E_CHUNKS, E_PATH
from ckdb.errors import CkdbError
from ckdb.integrity import check_chunk
from ckdb.layout import DB_REGISTRY, FLAG_MARKED
from ckdb.tables import Tables


def damaged_files(manifest: dict[str, Any], chunks: Iterable[bytes]) -> list[bytes]:
    """Manifest paths of the files that hold any of ``chunks``."""
    bad = set(chunks)
    return [
        os.fsencode(e[E_PATH])
        for e in manifest.get("entries", ())
        if e[E_CHUNKS] and not bad.isdisjoint(bytes(c) for c in e[E_CHUNKS])
    ]


def already_salvaged(t: Tables, cid: bytes, bad: Iterable[bytes]) -> bool:
    """True if the checkpoint is marked with a damage record that covers every chunk in ``bad``."""
    with t.env.read() as txn:
        _reg_key, flags = _flags(t, txn, cid)
        if flags is None or not flags & FLAG_MARKED:
            return False
        damage = t.marks.damage(txn, cid)
    return damage is not None and set(bad) <= set(damage.chunks)


def salvage(t: Tables, cid: bytes, bad: Iterable[bytes], reason: str) -> list[bytes] | None:
    """Salvage one checkpoint (see the module docstring). -> the damaged files' paths ([] if no
    chunk is damaged any more on a re-check inside the transaction); None if the checkpoint is
    not salvageable (its registry entry or manifest does not verify)."""
    suspects = sorted(set(bad))

    def apply(txn: Txn) -> list[bytes] | None:
        reg_key, flags = _flags(t, txn, cid)
        if reg_key is None or flags is None:
            return None
        try:
            manifest = t.payloads.read_manifest(txn, cid)
        except CkdbError:
            return None
        if manifest is None:
            return None
        damaged = [c for c in suspects if check_chunk(t, txn, c) is not None]
        if not damaged:
            return []
        earlier = t.marks.damage(txn, cid)
        chunks = set(damaged) | (set(earlier.chunks) if earlier is not None else set())
        files = damaged_files(manifest, chunks)
        for chunk in damaged:
            t.chunks.drop(txn, chunk)
        t.mark(txn, cid, reason)
        t.marks.put_damage(txn, cid, files, sorted(chunks))
        return files

    result: list[bytes] | None = t.env.write(apply)
    return result


def describe(files: list[bytes]) -> str:
    """A scrub finding's action for a salvage that kept ``files`` marked damaged."""
    if not files:
        return "kept (its chunks verify on a re-check)"
    names = ", ".join(os.fsdecode(f) for f in files[:5])
    more = f" and {len(files) - 5} more" if len(files) > 5 else ""
    return f"salvaged: kept with {len(files)} damaged file(s): {names}{more}"


def _flags(t: Tables, txn: Txn, cid: bytes) -> tuple[bytes | None, int | None]:
    """(registry key, verified flags) of a checkpoint; flags None when they cannot be trusted."""
    try:
        reg_key, meta = t.locate(txn, cid)
        if reg_key is None or meta is None:
            return reg_key, None
        value = txn.get(DB_REGISTRY, reg_key)
        if value is None:
            return reg_key, None
        return reg_key, t.registry.entry(reg_key, value)[2]
    except CkdbError:
        return None, None
