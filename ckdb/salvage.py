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
from ckdb.capture import E_CHUNKS, E_PATH, manifest_chunks
from ckdb.errors import CkdbError, IntegrityError
from ckdb.integrity import check_chunk, validate
from ckdb.layout import DB_CHECKPOINTS, DB_CHUNKS, DB_REGISTRY, FLAG_MARKED, RecordType
from ckdb.tables import Tables


def damaged_files(manifest: dict[str, Any], chunks: Iterable[bytes]) -> list[bytes]:
    """Manifest paths of the files that hold any of ``chunks``."""
    bad = set(chunks)
    return [
        os.fsencode(e[E_PATH])
        for e in manifest.get("entries", ())
        if e[E_CHUNKS] and not bad.isdisjoint(bytes(c) for c in e[E_CHUNKS])
    ]


def inspect(
    t: Tables, txn: Txn, cid: bytes, level: str, verified_chunks: set[bytes] | None = None
) -> tuple[list[str], int, dict[bytes, str]]:
    """Check one checkpoint at ``level`` -> (problems, bytes read, {damaged chunk: problem}).

    "comprehensive" reads everything: metadata, state, manifest, resources, dependencies, and
    every chunk its manifest names (but those in ``verified_chunks``, which it extends). The
    damage is "chunks only", salvageable, when every problem is a damaged chunk's."""
    bad: dict[bytes, str] = {}
    raw = txn.get(DB_CHECKPOINTS, cid)
    if raw is None:
        return [], 0, bad  # deleted meanwhile
    size = len(raw)
    report = validate(t, txn, cid, "standard" if level == "comprehensive" else level)
    problems = [p for p in report.findings if p != "checkpoint is marked corrupted"]
    if level == "comprehensive" and report.metadata_valid:
        try:
            meta = t.checkpoints.read(txn, cid)
        except IntegrityError as err:
            return [*problems, str(err)], size, bad
        payloads = t.payloads.reader(txn, cid, meta.components)
        for index, comp in enumerate(meta.components):
            size += comp[3]
            if comp[0] in (RecordType.RESOURCES, RecordType.DEPENDENCIES):
                try:
                    payloads.value(index)
                except IntegrityError as err:
                    problems.append(str(err))
        try:
            manifest = t.payloads.read_manifest(txn, cid)
        except IntegrityError:
            manifest = None  # reported by validate() above
        if manifest is not None:
            done = verified_chunks if verified_chunks is not None else set()
            for chunk in sorted(manifest_chunks(manifest) - done):
                value = txn.get(DB_CHUNKS, chunk)
                size += 0 if value is None else len(value)
                problem = check_chunk(t, txn, chunk)
                if problem:
                    problems.append(problem)
                    bad[chunk] = problem
                else:
                    done.add(chunk)
    if report.metadata_valid is False and not problems:
        problems = list(report.findings)
    return problems, size, bad


def chunks_only(problems: list[str], bad: dict[bytes, str]) -> bool:
    """Is every problem a damaged chunk's (state, manifest and metadata verified)?"""
    return bool(bad) and set(problems) <= set(bad.values())


def salvaged_chunks(t: Tables, cid: bytes) -> frozenset[bytes] | None:
    """The chunks a salvaged checkpoint's damage record names; None if it is not salvaged
    (not marked, or no damage record that verifies)."""
    with t.env.read() as txn:
        _reg_key, flags = _flags(t, txn, cid)
        if flags is None or not flags & FLAG_MARKED:
            return None
        damage = t.marks.damage(txn, cid)
    return None if damage is None else frozenset(damage.chunks)


def salvage(t: Tables, cid: bytes, bad: Iterable[bytes], reason: str) -> list[bytes] | None:
    """Salvage one checkpoint (see the module docstring), or bring a salvaged one's damage
    record up to date. Inside the transaction every suspect chunk and every chunk of an earlier
    damage record is checked again: the record names exactly the chunks still bad (new damage
    added, chunks healed by a later capture dropped). -> the damaged files' paths ([] if no
    chunk is bad any more: the mark and record are left for a comprehensive scrub to clear);
    None if the checkpoint is not salvageable (its registry entry or manifest does not
    verify)."""
    suspects = set(bad)

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
        earlier = t.marks.damage(txn, cid) if flags & FLAG_MARKED else None
        if earlier is not None:
            suspects.update(earlier.chunks)
        still_bad = [c for c in sorted(suspects) if check_chunk(t, txn, c) is not None]
        if not still_bad:
            return []
        files = damaged_files(manifest, still_bad)
        for chunk in still_bad:
            t.chunks.drop(txn, chunk)  # a corrupt record is never data (a missing one: no-op)
        if earlier is None or set(earlier.chunks) != set(still_bad):
            if earlier is None:
                t.mark(txn, cid, reason)
            t.marks.put_damage(txn, cid, files, still_bad)
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
