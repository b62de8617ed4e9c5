"""Restoring checkpoints: files into a directory, state through the registered restorers.

``restore`` loads (verifies) one checkpoint and hands it to ``restore_tree`` (``restore.py``:
temporary files, fsync, rename, path-escape proof) and to the restorers. ``restore_latest``
validates candidates newest first, marks and skips those that fail, and restores the first good
one. Both can simply be run again after a crash.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs

from ckdb import salvage
from ckdb.components import Registered
from ckdb.errors import (
    CkdbError,
    IntegrityError,
    InvalidInput,
    RestoreFailed,
    WorkflowNotFound,
)
from ckdb.integrity import check_level, validate_checkpoint
from ckdb.layout import check_name, id_from_text
from ckdb.lifecycle import mark_quietly
from ckdb.reading import list_checkpoints, load, read_chunk
from ckdb.records import STATUS_DAMAGED, STATUS_VALID, Checkpoint
from ckdb.restore import RestoreReport, check_target, restore_tree
from ckdb.tables import Tables

Progress = Callable[[int, int], None]


@attrs.frozen
class Options:
    """What a restore does besides choosing the checkpoint."""

    target: str | None = None
    restore_files: bool = True
    restore_resources: bool = True
    verify: bool = True
    delete_extra: bool = False
    progress: Progress | None = None


def options(
    target_dir: str | os.PathLike[str] | None,
    restore_files: bool,
    restore_resources: bool,
    verify: bool,
    delete_extra: bool,
    progress: Progress | None,
    allow_recorded_dir: bool = True,
) -> Options:
    """Checked options (an unusable target is an InvalidInput before anything is read).

    ``allow_recorded_dir=False``: restoring files needs an explicit ``target_dir``. Without one
    the files go to the working directory recorded in the checkpoint's metadata, and whoever
    holds the key can write a checkpoint that records any directory (docs/reliability.md)."""
    if target_dir is None and restore_files and not allow_recorded_dir:
        raise InvalidInput(
            "restoring files needs target_dir here (allow_recorded_dir=False): the working "
            "directory recorded in the checkpoint is not used; nothing was restored"
        )
    target = None if target_dir is None else check_target(target_dir)
    return Options(target, restore_files, restore_resources, verify, delete_extra, progress)


def restore(t: Tables, components: Registered, checkpoint_id: str, opts: Options) -> RestoreReport:
    """Restore one checkpoint. The report's ``checkpoint`` is exactly what was restored."""
    ck, manifest = load(t, id_from_text(checkpoint_id))
    return restore_loaded(t, components, ck, manifest, opts)


def restore_loaded(
    t: Tables,
    components: Registered,
    ck: Checkpoint,
    manifest: dict[str, Any] | None,
    opts: Options,
) -> RestoreReport:
    """Restore a checkpoint already loaded (verified): its files, then its components."""
    warnings: list[str] = []
    target = opts.target
    report = RestoreReport(checkpoint=ck, target_dir=target)
    if opts.restore_files and manifest is not None:
        if target is None:
            target = manifest.get("working_directory")
        if manifest.get("error"):
            warnings.append(f"file state: {manifest['error']} (no files to restore)")
        elif target is not None:
            try:
                stats = restore_tree(
                    manifest,
                    target,
                    lambda chunk: read_chunk(t, chunk),
                    delete_extra=opts.delete_extra,
                    verify=opts.verify,
                    progress=opts.progress,
                    damaged=frozenset(os.fsencode(f) for f in ck.info.damaged_files),
                )
            except OSError as err:  # the target's problem (EACCES, ENOSPC, ...), not damage
                raise RestoreFailed(f"restoring files into {target} failed: {err}") from err
            report = attrs.evolve(
                report,
                target_dir=target,
                files_written=stats.files,
                directories=stats.dirs,
                links=stats.links,
                deleted=stats.deleted,
                bytes_written=stats.bytes,
                skipped=tuple(stats.skipped),
                mismatches=tuple(stats.mismatches),
                unrestored=tuple(stats.unrestored),
            )
    restored: list[str] = []
    restorers = components.restorers()
    for cname, value in ck.state.items():
        restore_fn = restorers.get(cname)
        if restore_fn is None:
            continue
        try:
            restore_fn(value)
        except Exception as err:
            raise RestoreFailed(
                f"restorer of component {cname!r} failed: {type(err).__name__}: {err}"
            ) from err
        restored.append(cname)
    extras = [("dependencies", ck.dependencies)]
    if opts.restore_resources:
        extras.insert(0, ("resources", ck.resources))
    for cname, value in extras:
        restore_fn = restorers.get(cname)
        if restore_fn is None or value is None:
            continue
        try:
            restore_fn(value)
            restored.append(cname)
        except Exception as err:
            warnings.append(f"{cname} restore failed: {type(err).__name__}: {err}")
    return attrs.evolve(
        report, components_restored=tuple(restored), warnings=report.warnings + tuple(warnings)
    )


def restore_latest(
    t: Tables, components: Registered, workflow_id: str, level: str, opts: Options
) -> RestoreReport:
    """Restore the newest valid checkpoint of a workflow. Candidates are validated newest
    first; those that fail are marked corrupted and skipped, and the report says which.

    A fully valid checkpoint is always preferred, however old. Only when there is none is the
    newest "damaged" one (salvaged by scrub: state intact, some files lost) restored; its report
    names the files it could not restore (``unrestored``, ``ok`` False)."""
    check_name(workflow_id, "workflow_id")
    check_level(level)
    skipped: list[tuple[str, str]] = []
    salvaged: list[str] = []  # ids of "damaged" checkpoints, newest first: the fallbacks
    for info in list_checkpoints(t, workflow_id):
        if info.status == STATUS_DAMAGED:
            salvaged.append(info.id)
            skipped.append((info.id, f"damaged files: {', '.join(info.damaged_files)}"))
            continue
        if info.status != STATUS_VALID:
            skipped.append((info.id, "marked corrupted"))
            continue
        report = validate_checkpoint(t, info.id, level)
        if not report.ok:
            why = "; ".join(report.findings) or "validation failed"
            skipped.append((info.id, why))
            if _set_aside(t, info.id, why):
                salvaged.append(info.id)
            continue
        try:
            ck, manifest = load(t, id_from_text(info.id))
            result = restore_loaded(t, components, ck, manifest, opts)
        except IntegrityError as err:
            # Damage the validation level did not read (a chunk, at "standard"): set this one
            # aside and fall back to the previous checkpoint, which rewrites what was written.
            skipped.append((info.id, str(err)))
            if _set_aside(t, info.id, str(err)):
                salvaged.append(info.id)
            continue
        return attrs.evolve(result, skipped_checkpoints=tuple(skipped))
    # No fully valid checkpoint: the newest salvaged one that restores (state intact, the
    # files named in its report not restored).
    for checkpoint_id in salvaged:
        try:
            ck, manifest = load(t, id_from_text(checkpoint_id))
            result = restore_loaded(t, components, ck, manifest, opts)
        except IntegrityError as err:
            # Damage beyond its damage record (another chunk lost since): left for a repairing
            # scrub to record; never marked here, which would make its intact state unreadable.
            skipped = [(cid, why) for cid, why in skipped if cid != checkpoint_id]
            skipped.append((checkpoint_id, str(err)))
            continue
        rest = tuple((cid, why) for cid, why in skipped if cid != checkpoint_id)
        return attrs.evolve(result, skipped_checkpoints=rest)
    if not skipped:
        raise WorkflowNotFound(f"workflow {workflow_id!r} has no checkpoints")
    raise IntegrityError(
        f"workflow {workflow_id!r} has no valid checkpoint; skipped: "
        + "; ".join(f"{cid} ({why})" for cid, why in skipped)
    )


def _set_aside(t: Tables, checkpoint_id: str, why: str) -> bool:
    """A candidate that failed. If a full check finds damage in file chunks only, salvage it
    (as a repairing scrub would: marked "damaged", the bad chunks deleted so that the next
    capture writes them afresh) and return True: its intact state stays a fallback. Otherwise
    mark it corrupted. Nothing is written in a read-only store."""
    if t.readonly:
        return False
    cid = id_from_text(checkpoint_id)
    with t.env.read() as txn:
        problems, _size, bad = salvage.inspect(t, txn, cid, "comprehensive")
    if salvage.chunks_only(problems, bad):
        try:
            files = salvage.salvage(t, cid, bad, why)
        except CkdbError:
            files = None
        if files:
            return True
    mark_quietly(t, checkpoint_id, why)
    return False
