"""Frame encode/decode: compress, tag, verify. Pure: bytes in, bytes out, no I/O.

A frame is ``header ‖ body ‖ tag`` (see ``docs/format.md``)::

    header = FRAME_HEADER.pack(b"CKF", FRAME_VERSION, record_type, codec, key_id, raw_len)
    tag    = HMAC-SHA256(mac_key[key_id],
                         header ‖ u8 len(db) ‖ db ‖ u16 len(key) ‖ key ‖ body)

Binding the sub-database name and the key into the tag means a valid frame copied under another
key (another checkpoint, another component) fails verification. The tag is checked before the body
is decompressed, so a forged length cannot make us allocate.
"""

from __future__ import annotations

import hmac
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import cramjam
from cryptography.exceptions import InvalidTag

from ckdb.errors import FormatError, IntegrityError
from ckdb.keys import Mac
from ckdb.layout import (
    FRAME_HEADER,
    FRAME_MAGIC,
    FRAME_VERSION,
    REGISTRY_TAG_SIZE,
    REGISTRY_TAGGED,
    REGISTRY_VALUE,
    TAG_SIZE,
    Codec,
    RecordType,
)

#: Bodies shorter than this are stored uncompressed (compression cannot pay for its header).
COMPRESS_THRESHOLD = 256
ZSTD_LEVEL = 3
AUTO_ZSTD_FROM = 64 << 10
MAX_RAW_LEN = 1 << 40  # sanity bound on a header's raw length (checked after the tag)
PREALLOCATE_MAX = 64 << 20

_HEADER_SIZE = FRAME_HEADER.size
_MIN_FRAME = FRAME_HEADER.size + TAG_SIZE
_ADDR = struct.Struct(">B")
_KEYLEN = struct.Struct(">H")

#: key id -> a keyed HMAC object to ``.copy()`` (raises KeyError for an unknown key id)
MacLookup = Callable[[int], Mac]
#: key id -> the AEAD cipher of an encrypted store (None: bodies are not encrypted)
AeadLookup = Callable[[int], Any]

ENCRYPTED = 0x80  # codec-byte flag: body = nonce (12) ‖ AEAD ciphertext of the compressed body
NONCE_SIZE = 12


class Frame(NamedTuple):
    rtype: int
    codec: int
    key_id: int
    raw_len: int
    body: bytes  # as stored (maybe compressed)


def tag(mac: Mac, header: bytes, db: bytes, key: bytes, body: bytes | memoryview) -> bytes:
    h = mac.copy()
    h.update(b"".join((header, _ADDR.pack(len(db)), db, _KEYLEN.pack(len(key)), key)))
    h.update(body)
    return h.digest()


def compress(raw: bytes, codec: Codec) -> tuple[Codec, bytes]:
    """Compress with ``codec`` unless too small or not smaller; returns what was used.

    ``Codec.AUTO`` is size-aware (measured in docs/performance.md): lz4 under 64 KiB, where it
    compresses ~4x and decompresses ~12x faster than zstd and latency dominates; zstd level 1
    above, where the bytes saved matter. An explicit ``Codec.ZSTD`` uses level 3."""
    if codec is Codec.NONE or len(raw) < COMPRESS_THRESHOLD:
        return Codec.NONE, raw
    level = ZSTD_LEVEL
    if codec is Codec.AUTO:
        if len(raw) < AUTO_ZSTD_FROM:
            codec = Codec.LZ4
        else:
            codec, level = Codec.ZSTD, 1
    if codec is Codec.ZSTD:
        out = _zstd(raw, level)
    elif codec is Codec.LZ4:
        out = bytes(cramjam.lz4.compress_block(raw, store_size=False))
    else:  # pragma: no cover - enum is closed
        raise ValueError(codec)
    if len(out) >= len(raw):
        return Codec.NONE, raw
    return codec, out


def _zstd(raw: bytes, level: int) -> bytes:
    """zstd; a large body as several independent zstd frames compressed on a small thread pool
    (cramjam releases the GIL), concatenated. A zstd body may hold several frames (RFC 8878,
    section 3.1): any zstd decoder, ckdb's included, returns the concatenation."""
    pieces = min(MAX_PIECES, len(raw) // PIECE_MIN)
    pool = _pool() if pieces > 1 else None
    if pool is None:
        return bytes(cramjam.zstd.compress(raw, level=level))
    step = -(-len(raw) // pieces)
    view = memoryview(raw)
    try:
        futures = [
            pool.submit(cramjam.zstd.compress, view[i : i + step], level=level)
            for i in range(0, len(raw), step)
        ]
    except RuntimeError:
        # The interpreter is shutting down (concurrent.futures refuses new work from then on,
        # e.g. a checkpoint taken in an atexit handler or a thread outliving main): one frame.
        return bytes(cramjam.zstd.compress(raw, level=level))
    return b"".join(bytes(f.result()) for f in futures)


PIECE_MIN = 256 << 10  # bodies of 2 x this and more are compressed in parallel pieces
MAX_PIECES = 4
_pools: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked child makes its own
_pools_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor | None:
    workers = min(MAX_PIECES, os.cpu_count() or 1)
    if workers < 2:
        return None
    pid = os.getpid()
    pool = _pools.get(pid)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(pid)
            if pool is None:
                _pools.clear()  # an inherited pool has no threads in this process
                pool = _pools[pid] = ThreadPoolExecutor(workers, thread_name_prefix="ckdb-zstd")
    return pool


def decompress(codec: int, body: bytes | memoryview, raw_len: int) -> bytes:
    try:
        if codec == Codec.NONE:
            out = bytes(body)
        elif codec == Codec.ZSTD:
            # Preallocate only plausible sizes: a header claiming 64 GiB (it takes the key to
            # forge one) must not make us allocate it; larger bodies grow as they decompress.
            if raw_len <= PREALLOCATE_MAX:
                out = bytes(cramjam.zstd.decompress(body, output_len=raw_len))
            else:
                out = bytes(cramjam.zstd.decompress(body))
        elif codec == Codec.LZ4:
            if raw_len > 255 * len(body) + 16:  # beyond LZ4's maximum compression ratio
                raise IntegrityError(f"lz4 body of {len(body)} bytes cannot hold {raw_len} bytes")
            out = bytes(cramjam.lz4.decompress_block(body, output_len=raw_len))
        else:
            raise FormatError(f"unknown codec {codec}")
    except FormatError:
        raise
    except Exception as err:
        raise IntegrityError(f"frame body does not decompress: {err}") from None
    if len(out) != raw_len:
        raise IntegrityError(f"frame body decompressed to {len(out)} bytes, header says {raw_len}")
    return out


def encode_frame(
    mac: Mac,
    key_id: int,
    rtype: RecordType,
    db: bytes,
    key: bytes,
    raw: bytes,
    codec: Codec = Codec.AUTO,
    aead: Any = None,
) -> bytes:
    """Build a tagged (and, with ``aead``, encrypted) frame for ``raw`` at ``db``/``key``."""
    used, body = compress(raw, codec)
    return encode_compressed(mac, key_id, rtype, db, key, used, len(raw), body, aead)


def encode_compressed(
    mac: Mac,
    key_id: int,
    rtype: RecordType,
    db: bytes,
    key: bytes,
    codec: int,
    raw_len: int,
    body: bytes,
    aead: Any = None,
) -> bytes:
    """A frame for a body already compressed with ``codec`` (from ``raw_len`` bytes): what
    ``encode_frame`` does after compressing (the remote importer re-frames bodies this way)."""
    if aead is None:
        header = FRAME_HEADER.pack(FRAME_MAGIC, FRAME_VERSION, rtype, codec, key_id, raw_len)
    else:
        header = FRAME_HEADER.pack(
            FRAME_MAGIC, FRAME_VERSION, rtype, codec | ENCRYPTED, key_id, raw_len
        )
        nonce = os.urandom(NONCE_SIZE)
        body = nonce + aead.encrypt(nonce, body, _aad(header, db, key))
    return b"".join((header, body, tag(mac, header, db, key, body)))


def _aad(header: bytes, db: bytes, key: bytes) -> bytes:
    return b"".join((header, _ADDR.pack(len(db)), db, _KEYLEN.pack(len(key)), key))


def decrypt_body(aead: Any, frame: Frame, header: bytes, db: bytes, key: bytes) -> bytes:
    if aead is None:
        raise IntegrityError(f"{_where(db, key)}: encrypted frame in a store without encryption")
    body = frame.body
    if len(body) < NONCE_SIZE + 16:
        raise IntegrityError(f"{_where(db, key)}: encrypted body too short")
    try:
        plain: bytes = aead.decrypt(body[:NONCE_SIZE], body[NONCE_SIZE:], _aad(header, db, key))
    except InvalidTag:
        raise IntegrityError(f"{_where(db, key)}: decryption failed (tampered)") from None
    return plain


def parse_frame(macs: MacLookup, db: bytes, key: bytes, value: bytes | memoryview) -> Frame:
    """Check structure and tag; return the header fields and the stored body. No decompression."""
    if type(value) is not bytes:
        value = bytes(value)
    size = len(value)
    if size < _MIN_FRAME:
        raise IntegrityError(f"{_where(db, key)}: frame of {size} bytes is too short")
    magic, version, rtype, codec, key_id, raw_len = FRAME_HEADER.unpack_from(value)
    if magic != FRAME_MAGIC:
        raise IntegrityError(f"{_where(db, key)}: not a frame (bad magic)")
    if version != FRAME_VERSION:
        raise IntegrityError(f"{_where(db, key)}: unknown frame version {version}")
    body = value[_HEADER_SIZE : size - TAG_SIZE]
    try:
        mac = macs(key_id)
    except KeyError:
        raise IntegrityError(
            f"{_where(db, key)}: frame tagged with unknown key id {key_id}"
        ) from None
    if not hmac.compare_digest(
        tag(mac, value[:_HEADER_SIZE], db, key, body), value[size - TAG_SIZE :]
    ):
        raise IntegrityError(f"{_where(db, key)}: integrity tag mismatch")
    if raw_len > MAX_RAW_LEN:
        raise IntegrityError(f"{_where(db, key)}: implausible raw length {raw_len}")
    return Frame(rtype, codec, key_id, raw_len, body)


def decode_frame(
    macs: MacLookup,
    db: bytes,
    key: bytes,
    value: bytes | memoryview,
    expect: RecordType | None = None,
    aead: AeadLookup | None = None,
) -> bytes:
    """Verify a frame at ``db``/``key`` and return its raw (decrypted, decompressed) body."""
    codec, raw_len, body = open_frame(macs, db, key, value, expect, aead)
    return decompress(codec, body, raw_len)


def open_frame(
    macs: MacLookup,
    db: bytes,
    key: bytes,
    value: bytes | memoryview,
    expect: RecordType | None = None,
    aead: AeadLookup | None = None,
) -> tuple[int, int, bytes]:
    """Verify a frame (tag, decryption) -> (codec, raw length, body still compressed)."""
    frame = parse_frame(macs, db, key, value)
    if expect is not None and frame.rtype != expect:
        raise IntegrityError(
            f"{_where(db, key)}: frame holds record type {frame.rtype}, expected {int(expect)}"
        )
    body = frame.body
    if frame.codec & ENCRYPTED:
        cipher = None if aead is None else aead(frame.key_id)
        body = decrypt_body(cipher, frame, bytes(value[: FRAME_HEADER.size]), db, key)
    elif aead is not None and aead(frame.key_id) is not None:
        raise IntegrityError(f"{_where(db, key)}: unencrypted frame in an encrypted store")
    return frame.codec & ~ENCRYPTED, frame.raw_len, body


# --- registry entries: a fixed struct with a truncated tag ---------------------------------------


def encode_registry(
    mac: Mac, key_id: int, key: bytes, cid: bytes, created_us: int, flags: int
) -> bytes:
    head = REGISTRY_VALUE.pack(cid, created_us, flags, key_id, b"\0" * REGISTRY_TAG_SIZE)
    head = head[:REGISTRY_TAGGED]
    return head + _short_tag(mac, key, head)


def decode_registry(
    macs: MacLookup, key: bytes, value: bytes | memoryview
) -> tuple[bytes, int, int]:
    """-> (checkpoint id, created_at µs, flags); IntegrityError on any damage."""
    if len(value) != REGISTRY_VALUE.size:
        raise IntegrityError(f"{_where(b'registry', key)}: entry of {len(value)} bytes")
    cid, created, flags, key_id, stored_tag = REGISTRY_VALUE.unpack(bytes(value))
    try:
        mac = macs(key_id)
    except KeyError:
        raise IntegrityError(f"{_where(b'registry', key)}: unknown key id {key_id}") from None
    if not hmac.compare_digest(_short_tag(mac, key, bytes(value[:REGISTRY_TAGGED])), stored_tag):
        raise IntegrityError(f"{_where(b'registry', key)}: integrity tag mismatch")
    return cid, created, flags


class RegistryVerifier:
    """Verifies many registry entries (retention planning over a whole workflow): the same
    tags as ``decode_registry``, with the HMAC state advanced past the part every registry tag
    shares (record header and sub-database name) once per key id, and one message update per
    entry: about half the Python per entry."""

    __slots__ = ("_bases", "_macs")

    _PREFIX = b"registry-entry" + _ADDR.pack(len(b"registry")) + b"registry"

    def __init__(self, macs: MacLookup) -> None:
        self._macs = macs
        self._bases: dict[int, Mac] = {}

    def __call__(self, key: bytes, value: bytes) -> tuple[bytes, int, int] | None:
        """(checkpoint id, created_at µs, flags), or None if the entry does not verify."""
        if len(value) != REGISTRY_VALUE.size or len(key) > 0xFFFF:
            return None
        cid, created, flags, key_id, stored_tag = REGISTRY_VALUE.unpack(value)
        base = self._bases.get(key_id)
        if base is None:
            try:
                base = self._macs(key_id).copy()
            except KeyError:
                return None
            base.update(self._PREFIX)
            self._bases[key_id] = base
        h = base.copy()
        h.update(_KEYLEN.pack(len(key)) + key + value[:REGISTRY_TAGGED])
        if not hmac.compare_digest(h.digest()[:REGISTRY_TAG_SIZE], stored_tag):
            return None
        return cid, created, flags


def _short_tag(mac: Mac, key: bytes, head: bytes) -> bytes:
    return tag(mac, b"registry-entry", b"registry", key, head)[:REGISTRY_TAG_SIZE]


def _where(db: bytes, key: bytes) -> str:
    return f"{db.decode('ascii', 'replace')}/{key.hex()}"
