"""The ``chunks`` and ``refs`` sub-databases and chunk leases (in ``settings``).

- ``chunks``: content id (32 bytes, HMAC-SHA256 of the content under the content key, which never
  rotates) -> chunk frame (record type 6). The frame's tag binds the content id.
- ``refs``: content id -> ``REFS_VALUE`` (count, key id, 16-byte tag). Each checkpoint adds one
  reference per *distinct* chunk its manifest names. A tagged count means a flipped bit cannot make
  live data look unreferenced: a damaged count is an IntegrityError, and the chunk is kept.
- ``settings/lease/<16 bytes>``: chunks committed ahead of a large checkpoint's commit point have
  no reference yet; a lease names them until the commit (or its expiry), and nothing reclaims a
  leased chunk. Scrub reclaims unreferenced chunks whose lease expired.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from ckdb import encoding
from ckdb._env import Txn
from ckdb.codec import decode_frame, encode_frame, tag
from ckdb.errors import IntegrityError
from ckdb.keys import Keyring, Mac
from ckdb.layout import (
    DB_CHUNKS,
    DB_REFS,
    DB_SETTINGS,
    REFS_VALUE,
    Codec,
    RecordType,
    prefix_end,
)
from ckdb.tables.frames import Frames

LEASE_PREFIX = b"lease/"
LEASE_SECONDS = 3600


def content_id(keys: Keyring, data: bytes | memoryview) -> bytes:
    h = keys.content_mac.copy()
    h.update(data)
    return h.digest()


def encode_refs(keys: Keyring, cid: bytes, count: int) -> bytes:
    head = REFS_VALUE.pack(count, keys.active, b"\0" * 16)[:10]
    return head + _refs_tag(keys.active_mac, cid, head)


def decode_refs(keys: Keyring, cid: bytes, value: bytes) -> int:
    if len(value) != REFS_VALUE.size:
        raise IntegrityError(f"refs/{cid.hex()}: value of {len(value)} bytes")
    count, key_id, tag = REFS_VALUE.unpack(value)
    try:
        mac = keys.mac(key_id)
    except KeyError:
        raise IntegrityError(f"refs/{cid.hex()}: unknown key id {key_id}") from None
    if not hmac.compare_digest(_refs_tag(mac, cid, value[:10]), tag):
        raise IntegrityError(f"refs/{cid.hex()}: integrity tag mismatch")
    return int(count)


def _refs_tag(mac: Mac, cid: bytes, head: bytes) -> bytes:
    return tag(mac, b"refs-entry", DB_REFS, cid, head)[:16]


def add_refs(txn: Txn, keys: Keyring, cids: Iterable[bytes]) -> None:
    for cid in cids:
        value = txn.get(DB_REFS, cid)
        count = 0 if value is None else decode_refs(keys, cid, value)
        txn.put(DB_REFS, cid, encode_refs(keys, cid, count + 1))


def release_refs(txn: Txn, keys: Keyring, cids: Iterable[bytes], now_us: int) -> int:
    """Drop one reference from each chunk; delete chunks that reach zero (unless leased).
    Returns how many chunks were deleted. A damaged count raises IntegrityError (nothing freed)."""
    leased: set[bytes] | None = None
    freed = 0
    for cid in cids:
        value = txn.get(DB_REFS, cid)
        if value is None:
            continue  # already unreferenced (scrub rebuilds counts if this was damage)
        count = decode_refs(keys, cid, value)
        if count > 1:
            txn.put(DB_REFS, cid, encode_refs(keys, cid, count - 1))
            continue
        txn.delete(DB_REFS, cid)
        if leased is None:
            leased = leased_chunks(txn, keys, now_us)
        if cid not in leased:
            txn.delete(DB_CHUNKS, cid)
            freed += 1
    return freed


def leased_chunks(txn: Txn, keys: Keyring, now_us: int) -> set[bytes]:
    out: set[bytes] = set()
    for key, value in txn.range(DB_SETTINGS, LEASE_PREFIX, prefix_end(LEASE_PREFIX)):
        try:
            doc = encoding.decode(
                decode_frame(keys.mac, DB_SETTINGS, key, value, RecordType.SETTING, keys.aead)
            )
        except IntegrityError:
            continue  # a damaged lease protects nothing; scrub reports it
        if int(doc.get("expires_us", 0)) >= now_us:
            out.update(bytes(c) for c in doc.get("chunks", ()))
    return out


def lease_key(lease_id: bytes) -> bytes:
    return LEASE_PREFIX + lease_id


def put_lease(
    txn: Txn, keys: Keyring, lease_id: bytes, chunks: Iterable[bytes], expires_us: int, pid: int
) -> None:
    key = lease_key(lease_id)
    body = encoding.encode({"expires_us": expires_us, "pid": pid, "chunks": sorted(chunks)})
    txn.put(
        DB_SETTINGS,
        key,
        encode_frame(
            keys.active_mac,
            keys.active,
            RecordType.SETTING,
            DB_SETTINGS,
            key,
            body,
            Codec.ZSTD,
            keys.active_aead,
        ),
    )


class Chunks:
    """Chunk frames and their reference counts, under the store's current keyring."""

    __slots__ = ("_frames",)

    def __init__(self, frames: Frames) -> None:
        self._frames = frames

    def content_id(self, data: bytes | memoryview) -> bytes:
        return content_id(self._frames.keys, data)

    def has(self, txn: Txn, cid: bytes) -> bool:
        return txn.get(DB_CHUNKS, cid) is not None

    def frame(self, cid: bytes, data: bytes | memoryview, codec: Codec = Codec.AUTO) -> bytes:
        return self._frames.frame(RecordType.CHUNK, DB_CHUNKS, cid, bytes(data), codec)

    def read(self, txn: Txn, cid: bytes) -> bytes:
        """The verified content of a chunk; IntegrityError if it is missing or damaged."""
        value = txn.get(DB_CHUNKS, cid)
        if value is None:
            raise IntegrityError(f"chunk {cid.hex()[:16]} is missing")
        return self._frames.unframe(DB_CHUNKS, cid, value, RecordType.CHUNK)

    def drop(self, txn: Txn, cid: bytes) -> None:
        """Delete a damaged chunk's record (its reference count stays: manifests still name it)."""
        txn.delete(DB_CHUNKS, cid)

    def put_new(self, txn: Txn, cid: bytes, frame: bytes) -> bool:
        """Put a chunk unless one is there; True if this put wrote it."""
        return txn.put(DB_CHUNKS, cid, frame, overwrite=False)

    def add_refs(self, txn: Txn, cids: Iterable[bytes]) -> None:
        add_refs(txn, self._frames.keys, cids)

    def release_refs(self, txn: Txn, cids: Iterable[bytes], now_us: int) -> int:
        return release_refs(txn, self._frames.keys, cids, now_us)

    def refs(self, txn: Txn, cid: bytes) -> int | None:
        """The verified reference count of a chunk (None: no count); IntegrityError if damaged."""
        value = txn.get(DB_REFS, cid)
        return None if value is None else decode_refs(self._frames.keys, cid, value)

    def leased(self, txn: Txn, now_us: int) -> set[bytes]:
        return leased_chunks(txn, self._frames.keys, now_us)

    def put_lease(
        self, txn: Txn, lease_id: bytes, chunks: Iterable[bytes], expires_us: int, pid: int
    ) -> None:
        put_lease(txn, self._frames.keys, lease_id, chunks, expires_us, pid)
