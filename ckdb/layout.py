"""Byte layouts, sub-database names and key encoders. Pure: no I/O.

Every fixed layout is one ``struct.Struct`` with its size asserted; ``docs/format.md`` carries a
byte table for each, and ``tests/test_docs.py`` parses those tables and compares them with the
structs here.
"""

from __future__ import annotations

import enum
import os
import secrets
import struct
import threading
import time

from ckdb.errors import CheckpointNotFound, FormatError, InvalidInput

# --- sub-databases -------------------------------------------------------------------------------

DB_INFO = b"info"
DB_CHECKPOINTS = b"checkpoints"
DB_REGISTRY = b"registry"
DB_PAYLOADS = b"payloads"
DB_CHUNKS = b"chunks"
DB_REFS = b"refs"
DB_MARKS = b"marks"
DB_SETTINGS = b"settings"
DB_WORKFLOWS = b"workflows"
DB_REMOTE = (
    b"remote"  # a remote's local state: dirty marks, cursors, fences (ckdb/tables/remote.py)
)

ALL_DBS = (
    DB_INFO,
    DB_CHECKPOINTS,
    DB_REGISTRY,
    DB_PAYLOADS,
    DB_CHUNKS,
    DB_REFS,
    DB_MARKS,
    DB_SETTINGS,
    DB_WORKFLOWS,
)
#: Sub-databases of ckdb's own that exist only when a feature needs them (opened on demand).
OPTIONAL_DBS = (DB_REMOTE,)
MAX_DBS = 32  # room for integrations' own sub-databases

# --- format record (info/"format"), readable before any key -------------------------------------

STORE_MAGIC = b"CKDBSTOR"
FORMAT_VERSION = 1
#: magic, format version, incompat features, compat features, store uuid, created (µs since epoch)
FORMAT = struct.Struct(">8sHII16sQ")
assert FORMAT.size == 42

#: Feature bits a reader must understand to open the store at all.
INCOMPAT_AES_GCM = 0x1  # every frame body encrypted with AES-256-GCM; workflow keys are digests
INCOMPAT_CHACHA = 0x2  # the same with ChaCha20-Poly1305
#: Small state components of a checkpoint may share one payload frame (RecordType.BUNDLE). Set
#: at creation from ckdb 0.2 on; older ckdb refuses such a store instead of misreading it.
INCOMPAT_BUNDLES = 0x4
#: A remote was attached: every change of a workflow marks it dirty for the shipper (and deletes
#: leave tombstones). Older ckdb refuses such a store: its writes would never be shipped.
INCOMPAT_REMOTE = 0x8
#: The workflow record is written when it changes, not by every create: its ``next_seq`` is a
#: floor (the next sequence is one past the newest registry entry, or ``next_seq`` if larger;
#: deleting the newest entries raises it). Set at creation from ckdb 0.4 on; older ckdb, which
#: takes ``next_seq`` as exact when deleting, refuses such a store.
INCOMPAT_SEQ_FLOOR = 0x10
#: The LangGraph saver stored a large channel value as pieces (``lg_chunks``). Set by the first
#: put that writes one (ckdb 0.5); ckdb 0.4's saver, which knows no pieces (its copy_thread
#: would copy a value's record without them), refuses such a store.
INCOMPAT_LG_PIECES = 0x20
INCOMPAT_KNOWN = (
    INCOMPAT_AES_GCM
    | INCOMPAT_CHACHA
    | INCOMPAT_BUNDLES
    | INCOMPAT_REMOTE
    | INCOMPAT_SEQ_FLOOR
    | INCOMPAT_LG_PIECES
)
#: State components whose encoding is smaller than this share the checkpoint's bundle frame
#: (when it has two or more of them); larger ones keep a frame each.
BUNDLE_MAX = 64 << 10
BUNDLE_TOTAL_MAX = 256 << 10  # a bundle holds at most this much (the rest: frames of their own)
CIPHERS = {"aes-gcm": INCOMPAT_AES_GCM, "chacha20-poly1305": INCOMPAT_CHACHA}
#: Feature bits a reader may ignore.
COMPAT_KNOWN = 0

INFO_FORMAT = b"format"
INFO_KEYCHECK = b"keycheck"
INFO_KEYRING = b"keyring"

# --- frames --------------------------------------------------------------------------------------

FRAME_MAGIC = b"CKF"
FRAME_VERSION = 1
#: magic, frame version, record type, codec, key id, raw (uncompressed body) length
FRAME_HEADER = struct.Struct(">3sBBBHQ")
assert FRAME_HEADER.size == 16
TAG_SIZE = 32  # HMAC-SHA256


class RecordType(enum.IntEnum):
    """What a frame holds; also the component-type byte of a payload key."""

    METADATA = 1
    COMPONENT = 2  # one named workflow-state component
    RESOURCES = 3
    DEPENDENCIES = 4
    MANIFEST = 5  # file state (working-directory manifest)
    CHUNK = 6
    WORKFLOW = 7
    SETTING = 8
    MARK = 9
    INTEGRATION = 10  # a record in an integration's own sub-database (e.g. LangGraph)
    BUNDLE = 11  # the small state components of one checkpoint, concatenated
    SEGMENT = 12  # remote: a segment of a workflow's log (docs/remote.md)
    CLAIM = 13  # remote: an ownership claim
    SNAPSHOT = 14  # remote: a workflow's live state as of a segment
    BLOB = 15  # remote: a file chunk or a large payload, content-addressed
    REMOTE_STATE = 16  # local: a remote's cursor, fence or attachment record


PAYLOAD_TYPES = frozenset(
    {RecordType.COMPONENT, RecordType.RESOURCES, RecordType.DEPENDENCIES, RecordType.MANIFEST}
)


class Codec(enum.IntEnum):
    NONE = 0
    ZSTD = 1
    LZ4 = 2
    #: Not stored: "choose by size" (lz4 below AUTO_ZSTD_FROM bytes, where latency wins; zstd
    #: level 1 above, where the bytes saved pay for it). The frame records what was used.
    AUTO = 255


# --- registry entry ------------------------------------------------------------------------------

#: checkpoint id, created_at (µs since epoch, UTC), flags, key id, truncated HMAC tag
REGISTRY_VALUE = struct.Struct(">16sQBH16s")
assert REGISTRY_VALUE.size == 43
REGISTRY_TAGGED = REGISTRY_VALUE.size - 16  # bytes covered by the tag
REGISTRY_TAG_SIZE = 16

FLAG_PINNED = 0x01
FLAG_MARKED = 0x02  # marked corrupted
FLAG_MANUAL = 0x04
FLAG_FILES = 0x08  # has a file manifest (deletion must release chunk references)
FLAGS_KNOWN = FLAG_PINNED | FLAG_MARKED | FLAG_MANUAL | FLAG_FILES

SEQ = struct.Struct(">Q")

# --- reference count (refs/<content id>) ---------------------------------------------------------

#: reference count, key id, truncated HMAC tag
REFS_VALUE = struct.Struct(">QH16s")
assert REFS_VALUE.size == 26

# --- a remote's local state (sub-database `remote`, docs/remote.md) -----------------------------

#: change counter, time (µs) of the oldest change not yet shipped
DIRTY_VALUE = struct.Struct(">QQ")
assert DIRTY_VALUE.size == 16
#: sequence, checkpoint id, registry flags: one checkpoint a remote holds live (cursor rows)
LIVE_ROW = struct.Struct(">Q16sB")
assert LIVE_ROW.size == 25

# --- names and keys ------------------------------------------------------------------------------

MAX_NAME_BYTES = 200  # workflow ids, phases, component and checkpoint names (UTF-8 bytes)
ID_SIZE = 16


def check_name(value: object, what: str) -> str:
    """Validate a workflow id, phase or name: non-empty str, valid UTF-8, bounded, no NUL."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidInput(f"{what} must not be empty")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidInput(f"{what} is not valid Unicode text: {err.reason}") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidInput(
            f"{what} is {len(encoded)} bytes in UTF-8; the limit is {MAX_NAME_BYTES}"
        )
    if "\x00" in value:
        raise InvalidInput(f"{what} must not contain NUL characters")
    return value


def workflow_key(workflow_id: str) -> bytes:
    """Length-prefixed UTF-8, so one workflow's prefix is never another's."""
    raw = workflow_id.encode("utf-8")
    return bytes((len(raw),)) + raw


def registry_key(wf_key: bytes, seq: int) -> bytes:
    return wf_key + SEQ.pack(seq)


def is_registry_key(key: bytes) -> bool:
    """Is ``key`` shaped as a registry key (length-prefixed workflow key ‖ u64 sequence)?"""
    return len(key) >= 1 + SEQ.size and key[0] + 1 + SEQ.size == len(key)


def split_registry_key(key: bytes) -> tuple[bytes, int]:
    if not is_registry_key(key):
        raise FormatError(f"malformed registry key of {len(key)} bytes")
    return key[: key[0] + 1], SEQ.unpack_from(key, key[0] + 1)[0]


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def payload_key(cid: bytes, rtype: RecordType, name: str) -> bytes:
    return cid + bytes((rtype,)) + name.encode("utf-8")


# --- checkpoint ids (ULID-like) ------------------------------------------------------------------

_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_B32_DECODE = {c: i for i, c in enumerate(_B32)}
_B32_DECODE.update({c.lower(): i for i, c in enumerate(_B32)})
ID_TEXT_LEN = 26
_TO_INT32 = {
    code: "0123456789abcdefghijklmnopqrstuv"[_B32_DECODE[chr(code)]]
    if chr(code) in _B32_DECODE
    else "!"
    for code in range(128)
}


class IdGenerator:
    """128-bit ids: 48-bit millisecond time ‖ 80 bits that are random per millisecond and
    incremented within one (monotonic in this process, unique across processes by randomness).

    Thread-safe; reset after ``fork()`` so a parent and child never continue the same sequence.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0
        self._pid = os.getpid()

    def new(self) -> bytes:
        with self._lock:
            pid = os.getpid()
            ms = time.time_ns() // 1_000_000
            if pid != self._pid or ms > self._last_ms:
                self._pid = pid
                self._last_ms = ms
                self._last_rand = int.from_bytes(secrets.token_bytes(10), "big")
            else:
                # Same (or an earlier: the clock stepped back) millisecond: keep the last time and
                # count up, so ids stay strictly increasing in this process.
                self._last_rand += 1
                if self._last_rand >= 1 << 80:
                    self._last_ms += 1
                    self._last_rand = int.from_bytes(secrets.token_bytes(10), "big") >> 1
            return ((self._last_ms << 80) | self._last_rand).to_bytes(16, "big")


new_id = IdGenerator().new


_PAIRS = [a + b for a in _B32 for b in _B32]  # 10 bits -> two digits
_MASK40 = (1 << 40) - 1


def id_to_text(cid: bytes) -> str:
    """26 Crockford base32 digits of the 128-bit id (2 leading zero bits): the text form of a
    ULID, which ``ulid_transform`` (compiled) writes in 0.05 µs against 1-2 µs in Python (a
    prune names every id it deletes, a listing every id it lists). Anything but 16 bytes (a
    damaged record's id field) takes the Python form, which any length fits."""
    try:
        text: str = _ulid_text(cid)
        return text
    except (TypeError, ValueError):
        return id_text_py(cid)


def id_text_py(cid: bytes) -> str:
    """:func:`id_to_text` in Python (the reference a test holds the compiled one to), two
    digits (10 bits) per table lookup, the id cut into three integers of at most 48 bits."""
    n = int.from_bytes(cid, "big")
    a, b, c = n >> 80, (n >> 40) & _MASK40, n & _MASK40
    p = _PAIRS
    return "".join(
        (
            p[(a >> 40) & 1023],
            p[(a >> 30) & 1023],
            p[(a >> 20) & 1023],
            p[(a >> 10) & 1023],
            p[a & 1023],
            p[b >> 30],
            p[(b >> 20) & 1023],
            p[(b >> 10) & 1023],
            p[b & 1023],
            p[c >> 30],
            p[(c >> 20) & 1023],
            p[(c >> 10) & 1023],
            p[c & 1023],
        )
    )


try:  # the compiled module itself: without a wheel, ulid_transform falls back to a Python
    # form slower than ckdb's own, which then serves instead
    from ulid_transform._ulid_impl import (  # type: ignore[import-not-found]
        bytes_to_ulid as _ulid_text,
    )
except ImportError:  # pragma: no cover - every platform ckdb is tested on has the wheel
    _ulid_text = id_text_py


def id_from_text(text: object) -> bytes:
    """Parse a 26-character id; anything else is a :class:`CheckpointNotFound`."""
    if isinstance(text, bytes | bytearray) and len(text) == ID_SIZE:
        return bytes(text)
    if not isinstance(text, str) or len(text) != ID_TEXT_LEN:
        raise CheckpointNotFound(f"no checkpoint {text!r}: not a 26-character checkpoint id")
    # Every ASCII character to its digit in int()'s base 32 (0-9a-v), the rest to "!", which
    # int() refuses: one C pass instead of a Python loop over 26 characters (7 -> ~1 µs).
    try:
        if not text.isascii():
            raise ValueError
        n = int(text.translate(_TO_INT32), 32)
    except ValueError:
        bad = next((ch for ch in text if ch not in _B32_DECODE), "?")
        raise CheckpointNotFound(f"no checkpoint {text!r}: invalid character {bad!r}") from None
    if n >> 128:
        raise CheckpointNotFound(f"no checkpoint {text!r}: id out of range")
    return n.to_bytes(16, "big")


def id_time_ms(cid: bytes) -> int:
    return int.from_bytes(cid[:6], "big")
