"""A local checkpoint as a remote holds it (the ``ck`` document), read from the record layer.

Every frame is verified under the local store's keys before it leaves (tag, decryption); the
metadata is parsed strictly and its integrity digest checked. Bodies travel as the local store
keeps them (compressed); payloads of ``BLOB_FROM`` bytes and more, and file chunks, become blobs
addressed by the remote's content id. Blob contents are read again, each in a short read
transaction of its own, only when they are uploaded: memory holds one blob at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from attrs import frozen

from ckdb import encoding
from ckdb._env import Txn
from ckdb.capture import check_manifest, manifest_chunks
from ckdb.codec import decode_frame, decompress, open_frame
from ckdb.errors import FormatError, IntegrityError
from ckdb.layout import DB_CHECKPOINTS, DB_PAYLOADS, RecordType, id_to_text
from ckdb.meta import Meta
from ckdb.remote.format import BLOB_FROM, SHIPPED_FLAGS, Ck, RemoteKeys
from ckdb.tables import Tables

#: rcid -> a function reading the blob's raw content (in its own read transaction)
Loader = Callable[[], bytes]


@frozen
class Exported:
    ck: Ck
    blobs: dict[bytes, Loader]
    cmap: dict[bytes, bytes]  # local content id -> remote content id, newly computed


def _payload_raw(t: Tables, key: bytes) -> bytes:
    with t.env.read() as txn:
        value = txn.get(DB_PAYLOADS, key)
        if value is None:
            raise IntegrityError(f"payload {key.hex()[:40]} disappeared before its upload")
        k = t.keys
        return decode_frame(k.mac, DB_PAYLOADS, key, value, None, k.aead)


def _chunk_raw(t: Tables, cid: bytes) -> bytes:
    with t.env.read() as txn:
        return t.chunks.read(txn, cid)


def export_checkpoint(
    t: Tables,
    txn: Txn,
    rk: RemoteKeys,
    cid: bytes,
    flags: int,
    known: dict[bytes, bytes],
) -> Exported:
    """The ``ck`` of local checkpoint ``cid``; ``known``: local -> remote content ids already
    computed (this round's, and the store's ``cmap``). IntegrityError if anything is damaged."""
    text = id_to_text(cid)
    value = txn.get(DB_CHECKPOINTS, cid)
    if value is None:
        raise IntegrityError(f"checkpoint {text} disappeared")
    k = t.keys
    meta_raw = decode_frame(k.mac, DB_CHECKPOINTS, cid, value, RecordType.METADATA, k.aead)
    meta = Meta.parse(cid, meta_raw)
    if not meta.integrity_ok():
        raise IntegrityError(f"checkpoint {text}: integrity digest mismatch")
    frames: list[tuple[int, str, int, int, bytes]] = []
    blobs: dict[bytes, Loader] = {}
    manifest_raw: bytes | None = None
    for rtype_i, name, _raw_size, stored, _digest in meta.components:
        if stored == 0:
            continue  # inside the bundle, which travels as its own entry
        rtype = RecordType(rtype_i)
        key = k.payload_key(cid, rtype, name)
        pvalue = txn.get(DB_PAYLOADS, key)
        if pvalue is None:
            raise IntegrityError(f"checkpoint {text}: payload {name!r} is missing")
        codec, raw_len, body = open_frame(k.mac, DB_PAYLOADS, key, pvalue, rtype, k.aead)
        if rtype is RecordType.MANIFEST:
            manifest_raw = decompress(codec, body, raw_len)
        if len(body) >= BLOB_FROM:
            raw = decompress(codec, body, raw_len)
            rcid = rk.content_id(raw)
            blobs[rcid] = functools.partial(_payload_raw, t, key)
            frames.append((rtype_i, name, -1, raw_len, rcid))
        else:
            frames.append((rtype_i, name, codec, raw_len, bytes(body)))
    chunks: list[tuple[bytes, bytes]] = []
    fresh: dict[bytes, bytes] = {}
    if manifest_raw is not None:
        try:
            manifest = check_manifest(encoding.decode(manifest_raw), text)
        except FormatError as err:
            raise IntegrityError(f"checkpoint {text}: manifest: {err}") from None
        for local in sorted(manifest_chunks(manifest)):
            found = known.get(local) or t.remote.remote_cid(txn, local)
            if found is None:
                found = fresh[local] = rk.content_id(t.chunks.read(txn, local))
            known[local] = rcid = found
            blobs[rcid] = functools.partial(_chunk_raw, t, local)
            chunks.append((local, rcid))
    ck = Ck(meta_raw, flags & SHIPPED_FLAGS, tuple(frames), tuple(chunks), cid, meta.seq)
    return Exported(ck, blobs, fresh)
