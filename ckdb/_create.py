"""Creating a checkpoint: validate, gather components, capture files, build frames, commit once.

Write protocol (``docs/format.md`` has the byte tables and the crash windows):

1. Validate every input; encode, compress and tag every payload frame outside the write lock.
2. One write transaction (a re-runnable function, merged with other threads' by group commit):
   assign the workflow sequence and parent, build the metadata frame, put payloads, metadata,
   registry entry, workflow record and chunks, re-check every referenced chunk, add references,
   apply automatic retention, read every value back and verify it, commit. The commit is the
   commit point: before it nothing of the checkpoint is visible, after it all of it is durable.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from attrs import frozen

from ckdb import encoding
from ckdb._env import Txn
from ckdb.capture import Capture, ChunkSink, capture_tree, reread_chunk
from ckdb.codec import decode_frame, decode_registry, parse_frame
from ckdb.components import Registered
from ckdb.errors import (
    CkdbError,
    IntegrityError,
    InvalidInput,
)
from ckdb.integrity import LEVELS, ValidationReport
from ckdb.layout import (
    BUNDLE_MAX,
    BUNDLE_TOTAL_MAX,
    DB_CHECKPOINTS,
    DB_CHUNKS,
    DB_PAYLOADS,
    DB_REGISTRY,
    DB_WORKFLOWS,
    FLAG_FILES,
    FLAG_MANUAL,
    FLAG_PINNED,
    Codec,
    RecordType,
    check_name,
    new_id,
    registry_key,
)
from ckdb.lifecycle import mark_quietly
from ckdb.meta import METADATA_VERSION, Meta, datetime_of, integrity_digest, now_us
from ckdb.pruning import (
    AUTO_MAX,
    auto_victims,
    delete_victims,
    registry_entries,
    victims_by_seq,
)
from ckdb.records import (
    KIND_AUTOMATIC,
    KIND_MANUAL,
    KINDS,
    CheckpointInfo,
)
from ckdb.restore import check_path
from ckdb.retention import plan as plan_retention
from ckdb.tables import Tables
from ckdb.tables.chunks import LEASE_SECONDS, lease_key

_log = logging.getLogger("ckdb")


def codec_for(compression: object) -> Codec:
    if compression is True or compression == "auto":
        return Codec.AUTO
    if compression == "zstd":
        return Codec.ZSTD
    if compression is False or compression is None or compression == "none":
        return Codec.NONE
    if compression == "lz4":
        return Codec.LZ4
    raise InvalidInput(
        f"compression must be True, False, 'auto', 'zstd', 'lz4' or 'none', not {compression!r}"
    )


class _MissingChunks(Exception):
    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__(f"{len(chunks)} chunks missing at commit")
        self.chunks = chunks


class _NeedsCapture(Exception):
    """The workflow record names a working directory this create skipped looking for."""


@frozen
class _Part:
    """One payload frame of a checkpoint, built outside the write lock."""

    rtype: RecordType
    name: str
    key: bytes
    frame: bytes
    raw_size: int
    digest: bytes


def _payload_frames(
    t: Tables, cid: bytes, encoded: list[tuple[RecordType, str, bytes]], codec: Codec
) -> tuple[list[_Part], list[list[Any]]]:
    """The payload frames of a checkpoint and its metadata component entries.

    In a store with bundles, state components smaller than BUNDLE_MAX share one frame (up to
    BUNDLE_TOTAL_MAX in all, in order) when there are two or more of them: one compress, one
    tag, one put, one read-back and one read on load instead of one each (docs/format.md,
    "Bundles")."""
    small: list[tuple[RecordType, str, bytes]] = []
    if t.bundles:
        total = 0
        for entry in encoded:
            size = len(entry[2])
            if entry[0] is RecordType.COMPONENT and size < BUNDLE_MAX:
                if total + size > BUNDLE_TOTAL_MAX:
                    break
                small.append(entry)
                total += size
        if len(small) < 2:
            small = []
    parts: list[_Part] = []
    comps: list[list[Any]] = []

    def frame_of(rtype: RecordType, name: str, raw: bytes) -> list[Any]:
        key = t.payloads.key(cid, rtype, name)
        frame = t.frames.frame(rtype, DB_PAYLOADS, key, raw, codec)
        digest = hashlib.sha256(raw).digest()
        parts.append(_Part(rtype, name, key, frame, len(raw), digest))
        return [int(rtype), name, len(raw), len(frame), digest]

    if small:  # first the bundle entry, then every entry in the caller's order
        comps.append(frame_of(RecordType.BUNDLE, "", b"".join(raw for _t, _n, raw in small)))
    inside = {id(e) for e in small}
    for entry in encoded:
        if id(entry) in inside:
            rtype, name, raw = entry
            comps.append([int(rtype), name, len(raw), 0, hashlib.sha256(raw).digest()])
        else:
            comps.append(frame_of(*entry))
    return parts, comps


def create_checkpoint(
    t: Tables,
    components: Registered,
    sink: ChunkSink,
    validate: Callable[..., ValidationReport],
    workflow_id: str,
    phase: str,
    *,
    state: Mapping[str, Any] | None = None,
    resources: Any = None,
    dependencies: Any = None,
    files: str | os.PathLike[str] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    kind: str = KIND_AUTOMATIC,
    name: str | None = None,
    include_files: bool = True,
    include_resources: bool = True,
    compression: bool | str = True,
    verification_level: str | None = None,
    pinned: bool = False,
    created_by: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CheckpointInfo:
    """Create a checkpoint; returns its metadata once it is durable.

    ``state`` maps component names (phase, task, agent, progress, configuration, or your own)
    to encodable values; components registered with :meth:`register_component` are captured
    too (``state`` wins on a name clash). ``files`` captures a working directory and records
    it as the workflow's; later checkpoints of the workflow capture it again unless
    ``include_files=False``. Nothing is written unless every input is valid.
    """
    t.env.check()
    check_name(workflow_id, "workflow_id")
    check_name(phase, "phase")
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {KINDS}, not {kind!r}")
    if kind == KIND_MANUAL:
        if name is None:
            raise InvalidInput("a manual checkpoint needs a name")
        check_name(name, "name")
    elif name is not None:
        check_name(name, "name")
    if verification_level is not None and verification_level not in LEVELS:
        raise InvalidInput(f"verification_level must be one of {LEVELS}")
    creator = t.created_by if created_by is None else check_name(created_by, "created_by")
    codec = codec_for(compression)
    if state is not None and not isinstance(state, Mapping):
        raise InvalidInput(
            f"state must be a mapping of component name to value, not {type(state).__name__}"
        )
    for pattern in [*(include or ()), *(exclude or ())]:
        if not isinstance(pattern, str):
            raise InvalidInput(f"include/exclude patterns must be str, not {pattern!r}")
    wf_key = t.keys.wf_key(workflow_id)

    # Gather the state: registered captures, then the explicit mapping on top.
    values: dict[str, Any] = {}
    registered = components.captured_names()
    for cname in registered:
        if cname in ("resources", "dependencies"):
            continue
        values[cname] = components.capture(cname)
    for cname, value in (state or {}).items():
        check_name(cname, "state component name")
        values[cname] = value
    if resources is None and "resources" in registered:
        resources = components.capture("resources")
    if dependencies is None and "dependencies" in registered:
        dependencies = components.capture("dependencies")
    if not include_resources:
        resources = None

    cid = new_id()
    encoded: list[tuple[RecordType, str, bytes]] = []

    def add(rtype: RecordType, cname: str, value: Any, path: str) -> None:
        encoded.append((rtype, cname, encoding.encode(value, path)))

    for cname, value in values.items():
        add(RecordType.COMPONENT, cname, value, f"state.{cname}")
    if resources is not None:
        add(RecordType.RESOURCES, "resources", resources, "resources")
    if dependencies is not None:
        add(RecordType.DEPENDENCIES, "dependencies", dependencies, "dependencies")

    # Files: capture outside the write lock (chunks of large captures are committed ahead).
    # Without files=, a create captures the working directory the workflow record names; a
    # workflow this process last saw without one skips that read (a read transaction per
    # create). The write transaction checks the record: if it names a directory after all,
    # the create captures it and runs again (_NeedsCapture).
    cap: Capture | None = None

    def capture() -> Capture | None:
        root: str | None = None
        previous: dict[str, Any] | None = None
        with t.env.read() as txn:
            try:
                wf_doc0 = t.workflows.doc(txn, wf_key, workflow_id)
            except IntegrityError:
                wf_doc0 = None  # damaged: rebuilt by this create (without a working directory)
            if files is not None:
                root = check_path(files, "files")
            elif wf_doc0 is not None:
                root = wf_doc0.get("working_directory")
            if root is not None:
                previous = t.previous_manifest(txn, wf_key)
        if root is None:
            return None
        return capture_tree(
            root,
            sink,
            include=include,
            exclude=exclude,
            previous=previous,
            progress=progress,
            codec=codec,
        )

    if include_files and (files is not None or t.working_dirs.get(wf_key, True)):
        cap = capture()
    n_state = len(encoded)  # a capture's manifest comes after the state

    def frame_all() -> tuple[int, list[_Part], list[Any], bytes, int]:
        del encoded[n_state:]
        flags = (FLAG_MANUAL if kind == KIND_MANUAL else 0) | (FLAG_PINNED if pinned else 0)
        if cap is not None:
            add(RecordType.MANIFEST, "files", cap.doc, "files")
            flags |= FLAG_FILES
        parts, comps = _payload_frames(t, cid, encoded, codec)
        estimate = sum(len(p.frame) for p in parts) + 4096
        if cap is not None:
            estimate += sum(len(f) for f in cap.pending.values())
        return flags, parts, comps, integrity_digest(cid, comps), estimate

    flags, parts, comps, integrity, estimate = frame_all()
    has_directory = cap is not None

    def apply(txn: Txn) -> CheckpointInfo:
        nonlocal has_directory
        t.check_not_fenced(txn, wf_key, workflow_id)  # another host owns it: write nothing
        try:
            wf_doc = t.workflows.doc(txn, wf_key, workflow_id)
        except IntegrityError:
            # A damaged workflow record is rebuilt (the registry decides the sequence below);
            # it must not block every later checkpoint of the workflow.
            wf_doc = None
        # The record is rewritten when it must be: it is missing or damaged, the working
        # directory changed, or the store keeps next_seq exact (stores from before 0.4). Else
        # next_seq is a floor and the registry's newest entry decides (layout.INCOMPAT_SEQ_FLOOR):
        # one sub-database less dirtied per create.
        rewrite = wf_doc is None or not t.seq_floor
        if wf_doc is None:
            wf_doc = t.workflows.fresh(txn, wf_key, workflow_id)
        if cap is not None and wf_doc.get("working_directory") != cap.root:
            rewrite = True
        if include_files and cap is None and wf_doc.get("working_directory") is not None:
            raise _NeedsCapture  # a directory this create did not look for: capture it first
        has_directory = wf_doc.get("working_directory") is not None or cap is not None
        # One past the newest entry: a lost or rolled-back record (or, with the floor, the
        # record left alone) must not hand out a taken sequence. The parent is the newest
        # entry that verifies.
        newest_seq, parent = t.registry.newest(txn, wf_key)
        seq = max(int(wf_doc["next_seq"]), newest_seq + 1)
        created_us = now_us()
        meta_doc = {
            "v": METADATA_VERSION,
            "id": cid,
            "workflow_id": workflow_id,
            "phase": phase,
            "kind": kind,
            "name": name,
            "created_at": created_us,
            "created_by": creator,
            "seq": seq,
            "parent": parent,
            "components": comps,
            "integrity": integrity,
        }
        meta_frame = t.checkpoints.frame(cid, encoding.encode(meta_doc))
        reg_key = registry_key(wf_key, seq)
        reg_value = t.registry.value(reg_key, cid, created_us, flags)
        t.checkpoints.put_new(txn, cid, meta_frame)
        written = [(DB_CHECKPOINTS, cid, meta_frame)]
        for p in parts:
            txn.put(DB_PAYLOADS, p.key, p.frame)
            written.append((DB_PAYLOADS, p.key, p.frame))
        if not txn.put(DB_REGISTRY, reg_key, reg_value, overwrite=False):
            raise IntegrityError(f"registry slot {seq} of {workflow_id!r} is already taken")
        wf_raw = wf_frame = None
        if rewrite:
            wf_doc["next_seq"] = seq + 1
            if cap is not None:
                wf_doc["working_directory"] = cap.root
            wf_raw = encoding.encode(wf_doc)
            wf_frame = t.workflows.frame(wf_key, wf_raw)
            txn.put(DB_WORKFLOWS, wf_key, wf_frame)
            written.append((DB_WORKFLOWS, wf_key, wf_frame))
        if cap is not None:
            for chunk_id, frame in cap.pending.items():
                if t.chunks.put_new(txn, chunk_id, frame):
                    written.append((DB_CHUNKS, chunk_id, frame))
            # Re-check every chunk the manifest references: one may have been reclaimed
            # (its last reference deleted) since the capture saw it.
            missing = [
                c for c in cap.referenced if c not in cap.pending and not t.chunks.has(txn, c)
            ]
            if missing:
                raise _MissingChunks(missing)
            t.chunks.add_refs(txn, cap.referenced)
            if cap.lease_id is not None:
                t.settings.delete(txn, lease_key(cap.lease_id))
        t.note_change(txn, wf_key)
        if kind == KIND_AUTOMATIC:
            # Seed: an automatic checkpoint applies its workflow's retention after it
            # commits; here in the same transaction, bounded per create.
            # Nested: damage found in an old victim (a bad reference count, say) skips
            # retention for this create; it never blocks the new checkpoint. Scrub repairs it.
            try:
                policy = t.policy(txn, wf_key)
                if policy is not None:
                    with txn.nested() as sub:
                        now = datetime_of(created_us)
                        victims: Sequence[tuple[int, str] | tuple[int, str, bytes, bytes]] | None
                        victims = auto_victims(t, sub, wf_key, policy, now, AUTO_MAX, cid)
                        if victims is None:  # windows or calendar buckets: the full planner
                            planned = plan_retention(registry_entries(t, sub, wf_key), policy, now)
                            victims = victims_by_seq(sub, wf_key, planned.delete[:AUTO_MAX])
                        if victims:
                            delete_victims(t, sub, wf_key, victims, created_us, keep=cid)
            except CkdbError as err:
                _log.warning("ckdb: automatic retention of %r skipped: %s", workflow_id, err)
        # Read every value back inside the transaction and verify it before committing.
        k = t.keys
        for db, key, frame in written:
            back = txn.get(db, key)
            if back != frame:
                raise IntegrityError(f"read-back of {db.decode()} differs from what was put")
            if db == DB_WORKFLOWS:  # fully: the memo below will vouch for these bytes
                if decode_frame(k.mac, db, key, back, RecordType.WORKFLOW, k.aead) != wf_raw:
                    raise IntegrityError("read-back of the workflow record does not decode")
            else:
                parse_frame(k.mac, db, key, back)
        back_entry = txn.get(DB_REGISTRY, reg_key)
        if back_entry != reg_value:
            raise IntegrityError("read-back of the registry entry differs from what was put")
        decode_registry(k.mac, reg_key, back_entry)  # and its tag verifies
        # Verified in full just now: later reads of these exact bytes compare instead of
        # verifying again (ckdb/tables/verified.py).
        t.registry.remember(reg_key, reg_value, (cid, created_us, flags))
        if wf_frame is not None and wf_raw is not None:
            t.workflows.remember(wf_key, wf_frame, wf_raw)
        return Meta(
            cid,
            workflow_id,
            phase,
            kind,
            name,
            created_us,
            creator,
            seq,
            parent,
            comps,
            integrity,
        ).info(flags)

    for _attempt in range(4):
        try:
            info = t.env.write(apply, estimate=estimate)
            break
        except _NeedsCapture:
            t.working_dirs[wf_key] = True
            cap = capture()
            flags, parts, comps, integrity, estimate = frame_all()
            continue
        except _MissingChunks as missing:
            assert cap is not None
            for chunk_id in missing.chunks:
                try:
                    data = reread_chunk(cap.root, cap.sources[chunk_id])
                except OSError:
                    data = b""  # gone or unreadable now: reported as "changed" just below
                if sink.content_id(data) != chunk_id:
                    raise InvalidInput(
                        f"{os.fsdecode(cap.sources[chunk_id][0])} changed while it was being "
                        "captured; nothing was written, try again"
                    ) from None
                cap.pending[chunk_id] = sink.chunk_frame(chunk_id, data, cap.codec)
    else:
        raise IntegrityError("chunks kept disappearing during the commit; nothing was written")
    if len(t.working_dirs) >= 4096:
        t.working_dirs.clear()
    t.working_dirs[wf_key] = has_directory
    if cap is not None and (cap.warnings or cap.doc.get("error")):
        # A missing working directory is recorded in the file state (seed behaviour), and said
        # here too: passing a mistyped path should not go unnoticed.
        notes = ([cap.doc["error"]] if cap.doc.get("error") else []) + cap.warnings
        info = attrs.evolve(info, warnings=tuple(notes))
    if verification_level is not None:
        report = validate(info.id, level=verification_level)
        if not report.ok:
            why = "; ".join(report.findings)
            mark_quietly(t, info.id, f"failed {verification_level} validation: {why}")
            raise IntegrityError(
                f"checkpoint {info.id} was committed but failed {verification_level} validation "
                f"right after creation, and is now marked corrupted: {why}"
            )
    return info


def commit_ahead(
    t: Tables, lease_id: bytes, frames: dict[bytes, bytes], leased: set[bytes]
) -> None:
    """Commit chunks ahead of a large checkpoint, protected by a lease until its commit (or
    its expiry; scrub reclaims unreferenced chunks whose lease expired)."""

    def apply(txn: Txn) -> None:
        for cid, frame in frames.items():
            t.chunks.put_new(txn, cid, frame)
        t.chunks.put_lease(txn, lease_id, leased, now_us() + LEASE_SECONDS * 1_000_000, os.getpid())

    t.env.write(apply, estimate=sum(len(f) for f in frames.values()) + 4096)
