"""Take-over and pull: a workflow's history from the remote into the local store, verified end
to end (``docs/remote.md``, "Take over and pull").

Everything is checked before anything is written: each segment's tag and chain (``chain.py``),
each payload against the digests in the metadata created on the source host, each blob against
its content id, the integrity digest. File chunks are re-addressed under this store's content
key. The import is ONE LMDB transaction (chunks of large trees go ahead under a lease, as a
capture's do). Then the claim and the fence.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import Callable

from attrs import frozen

from ckdb import encoding
from ckdb._create import commit_ahead
from ckdb._env import Txn
from ckdb.capture import E_CHUNKS, check_manifest
from ckdb.codec import decompress, encode_compressed
from ckdb.errors import (
    CheckpointNotFound,
    CkdbError,
    Fenced,
    FormatError,
    IntegrityError,
    InvalidInput,
    RemoteError,
)
from ckdb.layout import (
    DB_PAYLOADS,
    DB_REGISTRY,
    LIVE_ROW,
    Codec,
    RecordType,
    check_name,
    id_to_text,
    registry_key,
)
from ckdb.meta import Meta, integrity_digest, now_us
from ckdb.remote.chain import Chain, read_chain
from ckdb.remote.format import (
    SHIPPED_FLAGS,
    Ck,
    Claim,
    Segment,
    blob_key,
    claim_key,
    decode_claim,
    decode_segment,
    digest,
    encode_claim,
    encode_segment,
    log_key,
    pack_live,
)
from ckdb.remote.link import Link
from ckdb.remote.shipper import HOST
from ckdb.tables import Cursor, Tables
from ckdb.tables.chunks import lease_key

AHEAD_BYTES = 32 << 20


@frozen
class TakeoverReport:
    """What ``take_over`` (or ``pull``) did. ``epoch``: the epoch this store owns the workflow
    under now (None for a pull); ``problems``: objects that failed verification (the history
    ends before the first of them)."""

    workflow_id: str
    epoch: int | None
    imported: int  # checkpoints written into this store
    live: int  # checkpoints the remote holds for the workflow
    deleted_local: int  # local checkpoints of the workflow the remote does not hold (a fork)
    segments_read: int
    snapshot: int | None  # the snapshot the history started from
    last_segment: int
    fence_segment: int | None
    late_segments: int  # the old owner's segments found after the claim, imported too
    latest_id: str | None
    seconds: float
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


@frozen
class _Prepared:
    cid: bytes
    seq: int
    flags: int
    created_us: int
    meta_frame: bytes
    payloads: tuple[tuple[bytes, bytes], ...]  # (payloads key, frame)
    referenced: frozenset[bytes]  # local chunk ids the manifest names
    rcids: frozenset[bytes]  # remote blobs this checkpoint names


class _Blobs:
    """Downloads blobs once each, verifying tag and content id; chunks become local frames."""

    def __init__(self, t: Tables, link: Link, wk: str) -> None:
        self.t = t
        self.link = link
        self.wk = wk
        self.local: dict[bytes, bytes] = {}  # rcid -> local content id (chunks)
        self.pending: dict[bytes, bytes] = {}  # local content id -> chunk frame, not yet written
        self.pending_bytes = 0
        self.ahead: set[bytes] = set()
        self.lease_id = secrets.token_bytes(16)
        self.downloaded = 0

    def raw(self, rcid: bytes) -> bytes:
        key = blob_key(self.wk, rcid)
        data = self.link.objects.get(key)
        if data is None:
            raise IntegrityError(f"remote object {key} (a blob a checkpoint names) is missing")
        raw = self.link.keys.unframe(key, data, RecordType.BLOB)
        if self.link.keys.content_id(raw) != rcid:
            raise IntegrityError(f"remote object {key}: content does not match its content id")
        self.downloaded += 1
        return raw

    def chunk(self, rcid: bytes) -> bytes:
        """The local content id of chunk ``rcid`` (downloaded, verified, framed locally)."""
        hit = self.local.get(rcid)
        if hit is not None:
            return hit
        data = self.raw(rcid)  # (a chunk this store already has is downloaded again: correct)
        local = self.t.chunks.content_id(data)
        self.local[rcid] = local
        if not self._present(local):
            frame = self.t.chunks.frame(local, data)
            self.pending[local] = frame
            self.pending_bytes += len(frame)
            if self.pending_bytes >= AHEAD_BYTES:
                self.flush()
        return local

    def _present(self, local: bytes) -> bool:
        if local in self.pending or local in self.ahead:
            return True
        with self.t.env.read() as txn:
            return self.t.chunks.has(txn, local)

    def flush(self) -> None:
        """Commit pending chunks ahead of the import, protected by a lease."""
        if self.pending:
            self.ahead |= set(self.pending)
            commit_ahead(self.t, self.lease_id, self.pending, set(self.ahead))
            self.pending = {}
            self.pending_bytes = 0


def _prepare(t: Tables, blobs: _Blobs, workflow_id: str, ck: Ck) -> _Prepared:
    """Verify one checkpoint from the remote and build its local frames (no writes, except
    chunks committed ahead under a lease)."""
    text = id_to_text(ck.cid)
    try:
        meta = Meta.parse(ck.cid, ck.meta)
    except IntegrityError as err:
        raise IntegrityError(f"remote checkpoint {text}: {err}") from None
    if meta.seq != ck.seq or meta.workflow_id != workflow_id:
        raise IntegrityError(f"remote checkpoint {text}: metadata names another slot")
    if not meta.integrity_ok():
        raise IntegrityError(f"remote checkpoint {text}: integrity digest mismatch")
    entries: dict[tuple[int, str], tuple[int, int, bytes, bytes]] = {}  # -> codec, len, body, raw
    rcids: set[bytes] = set()
    for rtype_i, name, codec, raw_len, body in ck.frames:
        if codec == -1:
            raw = blobs.raw(body)
            rcids.add(body)
        else:
            raw = decompress(codec, body, raw_len)
        if len(raw) != raw_len:
            raise IntegrityError(f"remote checkpoint {text}: payload {name!r} has the wrong size")
        entries[(rtype_i, name)] = (codec, raw_len, body, raw)
    # Every component against the digests created with the checkpoint (bundles: by slices).
    bundle: bytes | None = None
    at = 0
    manifest_index: int | None = None
    for index, (rtype_i, name, raw_size, stored, comp_digest) in enumerate(meta.components):
        part: bytes | None
        if rtype_i == RecordType.BUNDLE:
            got = entries.get((rtype_i, ""))
            bundle = None if got is None else got[3]
            part = bundle
            at = 0
        elif stored == 0:
            part = None if bundle is None else bundle[at : at + raw_size]
            at += raw_size
        else:
            got = entries.get((rtype_i, name))
            part = None if got is None else got[3]
        if part is None:
            raise IntegrityError(f"remote checkpoint {text}: payload {name!r} is missing")
        if len(part) != raw_size or hashlib.sha256(part).digest() != comp_digest:
            raise IntegrityError(f"remote checkpoint {text}: payload {name!r}: digest mismatch")
        if rtype_i == RecordType.MANIFEST:
            manifest_index = index
    meta_raw = ck.meta
    referenced: set[bytes] = set()
    new_manifest: bytes | None = None
    if manifest_index is not None:
        name = meta.components[manifest_index][1]
        raw = entries[(RecordType.MANIFEST, name)][3]
        try:
            doc = check_manifest(encoding.decode(raw), text)
        except FormatError as err:
            raise IntegrityError(f"remote checkpoint {text}: manifest: {err}") from None
        to_remote = dict(ck.chunks)
        for row in doc["entries"]:
            if row[E_CHUNKS]:
                mapped = []
                for source in row[E_CHUNKS]:
                    rcid = to_remote.get(bytes(source))
                    if rcid is None:
                        raise IntegrityError(f"remote checkpoint {text}: a chunk has no blob")
                    rcids.add(rcid)
                    mapped.append(blobs.chunk(rcid))
                row[E_CHUNKS] = mapped
                referenced.update(mapped)
        new_manifest = encoding.encode(doc, "manifest")
        if new_manifest != raw:
            # Re-addressed under this store's content key: the manifest's digest and the
            # integrity digest are recomputed (after every chunk was verified above).
            mdoc = encoding.decode(meta_raw)
            comps = mdoc["components"]
            comps[manifest_index][2] = len(new_manifest)
            comps[manifest_index][4] = hashlib.sha256(new_manifest).digest()
            mdoc["integrity"] = integrity_digest(ck.cid, comps)
            meta_raw = encoding.encode(mdoc, "metadata")
            Meta.parse(ck.cid, meta_raw)  # still well-formed
        else:
            new_manifest = None
    k = t.keys
    payloads = []
    for (rtype_i, name), (codec, raw_len, body, raw) in entries.items():
        rtype = RecordType(rtype_i)
        key = t.payloads.key(ck.cid, rtype, name)
        if rtype is RecordType.MANIFEST and new_manifest is not None:
            frame = t.frames.frame(rtype, DB_PAYLOADS, key, new_manifest, Codec.AUTO)
        elif codec == -1:
            frame = t.frames.frame(rtype, DB_PAYLOADS, key, raw, Codec.AUTO)
        else:
            frame = encode_compressed(
                k.active_mac, k.active, rtype, DB_PAYLOADS, key, codec, raw_len, body,
                k.active_aead,
            )  # fmt: skip
        payloads.append((key, frame))
    return _Prepared(
        ck.cid,
        ck.seq,
        ck.flags & SHIPPED_FLAGS,
        meta.created_us,
        t.checkpoints.frame(ck.cid, meta_raw),
        tuple(payloads),
        frozenset(referenced),
        frozenset(rcids),
    )


def _import(
    t: Tables, link: Link, workflow_id: str, chain: Chain,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int, list[_Prepared]]:  # fmt: skip
    """Import ``chain.live`` as the workflow's whole local history: -> (imported, deleted)."""
    wf_key = t.keys.wf_key(workflow_id)
    with t.env.read() as txn:
        have = {}
        for key, value in txn.prefix(DB_REGISTRY, wf_key):
            try:
                have[t.registry.entry(key, value)[0]] = bytes(key)
            except IntegrityError:
                continue
    blobs = _Blobs(t, link, chain.wk)
    prepared: list[_Prepared] = []
    todo = sorted(chain.live.values(), key=lambda c: c.seq)
    for n, ck in enumerate(todo, 1):
        if ck.cid in have and have[ck.cid] == registry_key(wf_key, ck.seq):
            prepared.append(_Prepared(ck.cid, ck.seq, ck.flags & SHIPPED_FLAGS, 0, b"", (),
                                      frozenset(), frozenset()))  # fmt: skip
        else:
            prepared.append(_prepare(t, blobs, workflow_id, ck))
        if progress is not None:
            progress(n, len(todo))
    pending = dict(blobs.pending)
    ahead = set(blobs.ahead)
    cmap = {local: rcid for rcid, local in blobs.local.items()}
    keep = {p.cid for p in prepared}
    estimate = sum(len(p.meta_frame) + sum(len(f) for _k, f in p.payloads) for p in prepared)
    estimate += sum(len(f) for f in pending.values()) + 65536

    def apply(txn: Txn) -> tuple[int, int]:
        deleted = imported = 0
        current: dict[bytes, bytes] = {}
        for key, value in txn.prefix(DB_REGISTRY, wf_key):
            current[bytes(value[:16])] = bytes(key)
        for cid, key in current.items():
            if cid not in keep:
                t.delete_checkpoint(txn, cid, key)
                deleted += 1
        for local, frame in pending.items():
            t.chunks.put_new(txn, local, frame)
        missing = [c for c in ahead if not t.chunks.has(txn, c)]
        if missing:
            raise IntegrityError("chunks committed ahead of the import vanished; run it again")
        max_seq = 0
        for p in prepared:
            max_seq = max(max_seq, p.seq)
            reg_key = registry_key(wf_key, p.seq)
            if not p.meta_frame:  # already here: only its flags may have changed
                found = txn.get(DB_REGISTRY, reg_key)
                if found is not None:
                    _c, created, flags = t.registry.entry(reg_key, found)
                    if flags & SHIPPED_FLAGS != p.flags:
                        new = (flags & ~SHIPPED_FLAGS) | p.flags
                        t.registry.put(txn, reg_key, p.cid, created, new)
                continue
            t.checkpoints.put_new(txn, p.cid, p.meta_frame)
            for key, frame in p.payloads:
                txn.put(DB_PAYLOADS, key, frame)
            t.registry.put(txn, reg_key, p.cid, p.created_us, p.flags)
            if p.referenced:
                t.chunks.add_refs(txn, p.referenced)
            imported += 1
        doc = None
        try:
            doc = t.workflows.doc(txn, wf_key, workflow_id)
        except IntegrityError:
            doc = None
        if doc is None:
            doc = t.workflows.fresh(txn, wf_key, workflow_id)
        doc["next_seq"] = max(int(doc["next_seq"]), max_seq + 1)
        doc.pop("working_directory", None)  # the source host's path: pass files= here
        t.workflows.put(txn, wf_key, doc)
        t.remote.drop_blobs(txn, wf_key)  # marks from an earlier ownership may be stale (gc)
        t.remote.add_blobs(txn, wf_key, set().union(*(p.rcids for p in prepared)))
        t.remote.put_cmap(txn, cmap)
        t.settings.delete(txn, lease_key(blobs.lease_id))
        return imported, deleted

    imported, deleted = t.env.write(apply, estimate=estimate)
    return imported, deleted, prepared


def _live_rows(prepared: list[_Prepared]) -> bytes:
    return pack_live({p.cid: (p.seq, p.flags) for p in prepared})


def pull(
    t: Tables, link: Link, workflow_id: str, *, progress: Callable[[int, int], None] | None = None
) -> TakeoverReport:
    """Import a workflow read-only (inspect, restore): creates for it raise Fenced here until
    ``take_over``."""
    started = time.monotonic()
    check_name(workflow_id, "workflow_id")
    wf_key = t.keys.wf_key(workflow_id)
    chain = read_chain(link, workflow_id)
    if not chain.exists:
        raise CheckpointNotFound(f"the remote has no workflow {workflow_id!r}")
    with t.env.read() as txn:
        cursor = t.remote.cursor(txn, wf_key)
        fenced = t.remote.is_fenced(txn, wf_key)
    if cursor is not None and not fenced and cursor.epoch >= chain.max_epoch:
        raise InvalidInput(f"this store owns {workflow_id!r}: there is nothing to pull")
    imported, deleted, prepared = _import(t, link, workflow_id, chain, progress)
    owner = chain.claims.get(chain.max_epoch)
    doc = {"wf": workflow_id, "epoch": chain.max_epoch, "reason": "pulled",
           "owner": b"" if owner is None else owner.owner,
           "host": "" if owner is None else owner.host}  # fmt: skip
    t.env.write(lambda txn: t.remote.put_fence(txn, wf_key, doc))
    return _report(chain, workflow_id, None, imported, deleted, prepared, None, 0, started)


def _report(
    chain: Chain, workflow_id: str, epoch: int | None, imported: int, deleted: int,
    prepared: list[_Prepared], fence: int | None, late: int, started: float,
) -> TakeoverReport:  # fmt: skip
    latest = max(prepared, key=lambda p: p.seq, default=None)
    return TakeoverReport(
        workflow_id=workflow_id,
        epoch=epoch,
        imported=imported,
        live=len(chain.live),
        deleted_local=deleted,
        segments_read=len(chain.segments),
        snapshot=None if chain.snapshot is None else chain.snapshot.seq,
        last_segment=chain.last_seq,
        fence_segment=fence,
        late_segments=late,
        latest_id=None if latest is None else id_to_text(latest.cid),
        seconds=time.monotonic() - started,
        problems=tuple(chain.problems),
    )


def take_over(
    t: Tables, link: Link, workflow_id: str, *, progress: Callable[[int, int], None] | None = None
) -> TakeoverReport:
    """Import, claim the next epoch, fence the old owner; this store ships the workflow now."""
    started = time.monotonic()
    check_name(workflow_id, "workflow_id")
    wf_key = t.keys.wf_key(workflow_id)
    rk = link.keys
    chain = read_chain(link, workflow_id)
    if not chain.exists:
        raise CheckpointNotFound(f"the remote has no workflow {workflow_id!r}")
    with t.env.read() as txn:
        mine = t.remote.cursor(txn, wf_key)
        fenced = t.remote.is_fenced(txn, wf_key)
    top = chain.claims.get(chain.max_epoch)
    if mine is not None and not fenced and top is not None and top.owner == t.uuid:
        # Already the owner of the newest epoch: nothing to take over.
        return _report(chain, workflow_id, mine.epoch, 0, 0, [], None, 0, started)
    imported, deleted, prepared = _import(t, link, workflow_id, chain, progress)
    epoch = chain.max_epoch + 1
    key = claim_key(chain.wk, epoch)
    claim = Claim(workflow_id, epoch, t.uuid, HOST, now_us())
    try:
        created: bool | None = link.objects.put_if_absent(
            key, rk.frame(RecordType.CLAIM, key, encode_claim(claim))
        )
    except RemoteError:
        created = None
    if not created:
        data = link.objects.get(key)
        if data is None:
            raise RemoteError(f"the claim {key} could not be created; run take_over again")
        rival = decode_claim(rk.unframe(key, data, RecordType.CLAIM), key)
        if rival.owner != t.uuid:
            _fence_local(t, wf_key, workflow_id, rival.epoch, rival.owner, rival.host)
            raise Fenced(
                f"workflow {workflow_id!r} was taken over by {rival.host} (epoch {rival.epoch}) "
                "while this take-over ran; it owns the workflow"
            )
    chain.claims[epoch] = claim
    late = 0
    while True:
        seq = chain.last_seq + 1
        key = log_key(chain.wk, seq)
        fence = Segment("fence", workflow_id, seq, epoch, t.uuid, HOST, secrets.token_bytes(16),
                        chain.last_digest, now_us(), ())  # fmt: skip
        obj = rk.frame(RecordType.SEGMENT, key, encode_segment(fence))
        try:
            created = link.objects.put_if_absent(key, obj)
        except RemoteError:
            created = None
        if created:
            fence_digest = digest(obj)
            break
        data = link.objects.get(key)
        if data is None:
            if created is None:
                continue  # the PUT did not happen: try again
            raise RemoteError(f"{key} could not be created; run take_over again")
        other = decode_segment(rk.unframe(key, data, RecordType.SEGMENT), key)
        if other.epoch == epoch and other.owner == t.uuid:
            fence_digest = digest(data)  # ours: an earlier attempt whose answer was lost
            break
        if other.epoch > epoch:
            _fence_local(t, wf_key, workflow_id, other.epoch, other.owner, other.host)
            raise Fenced(f"workflow {workflow_id!r} was taken over again, by {other.host}")
        problem = chain.check(other, key)
        if problem is not None:
            raise IntegrityError(f"take-over of {workflow_id!r}: {problem}")
        chain.apply(other, digest(data))  # the old owner's late segment: import it too
        late += 1
        imported2, deleted2, prepared = _import(t, link, workflow_id, chain, progress)
        imported += imported2
        deleted += deleted2
    cursor = Cursor(workflow_id, epoch, seq + 1, fence_digest, _live_rows(prepared), now_us())

    def own(txn: Txn) -> None:
        t.remote.put_cursor(txn, wf_key, cursor)
        t.remote.clear_fence(txn, wf_key)
        t.remote.drop_tombs(txn, wf_key, t.remote.tombs(txn, wf_key))
        count = t.remote.dirty_of(txn, wf_key)
        if count is not None:
            t.remote.clear_dirty(txn, wf_key, count[0])

    t.env.write(own)
    assert len(cursor.live) % LIVE_ROW.size == 0
    return _report(chain, workflow_id, epoch, imported, deleted, prepared, seq, late, started)


def _fence_local(
    t: Tables, wf_key: bytes, workflow_id: str, epoch: int, owner: bytes, host: str
) -> None:
    doc = {"wf": workflow_id, "epoch": epoch, "owner": owner, "host": host, "reason": "taken over"}
    with contextlib.suppress(CkdbError):  # the Fenced error that follows says it anyway
        t.env.write(lambda txn: t.remote.put_fence(txn, wf_key, doc))
