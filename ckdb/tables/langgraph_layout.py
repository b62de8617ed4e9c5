"""Key layout of the LangGraph saver's sub-databases and its checkpoint envelope. Pure: no I/O.

Part of the record layer, below the saver (``ckdb/integrations/langgraph.py``) and below
``scrub``, which checks these records; it imports no LangGraph (``tests/test_architecture.py``).

``docs/langgraph.md`` has the byte tables. Every variable-length name is a *part*:
``u16 big-endian length ‖ bytes``, where the bytes are the UTF-8 text, or, in an encrypted store,
a keyed digest of it (so keys leak no thread, namespace, channel or task names). Parts make one
thread's prefix never another's, and one namespace's never another's.

=================  =====================================================  =====================
sub-database       key                                                    value (a ckdb frame)
=================  =====================================================  =====================
``lg_checkpoints`` thread ‖ ns ‖ checkpoint id (UTF-8, the key's tail)    checkpoint envelope
``lg_blobs``       thread ‖ ns ‖ channel ‖ version                        one channel value
``lg_chunks``      thread ‖ ns ‖ digest (32 bytes)                        a piece of a large one
``lg_writes``      thread ‖ ns ‖ part(checkpoint id) ‖ task ‖ u32 idx     one pending write
``lg_runs``        part(run id) ‖ checkpoint key                          empty (index entry)
``lg_settings``    ``b"r"`` ‖ thread                                      retention policy
=================  =====================================================  =====================
"""

from __future__ import annotations

import builtins
import random
import struct
from collections.abc import Callable
from typing import Any

from ckdb import encoding
from ckdb.errors import FormatError, IntegrityError, InvalidInput

DB_CHECKPOINTS = b"lg_checkpoints"
DB_BLOBS = b"lg_blobs"
DB_WRITES = b"lg_writes"
DB_RUNS = b"lg_runs"
DB_SETTINGS = b"lg_settings"
DB_CHUNKS = b"lg_chunks"  # pieces of large channel values (ckdb 0.5: tables/langgraph_values.py)
ALL_DBS = (DB_CHECKPOINTS, DB_BLOBS, DB_WRITES, DB_RUNS, DB_SETTINGS, DB_CHUNKS)

MAX_KEY = 511  # LMDB's default maximum key size
PART_LEN = struct.Struct(">H")
assert PART_LEN.size == 2
#: write index, stored as ``idx + 2**31`` so the special (negative) indices sort first
WRITE_IDX = struct.Struct(">I")
assert WRITE_IDX.size == 4
IDX_BIAS = 1 << 31
RETENTION_PREFIX = b"r"

#: text -> 32-byte keyed digest (encrypted stores), or None: names stay readable in keys
Digest = Callable[[str], bytes] | None


class Layout:
    """Key encoders for one store (plain UTF-8 names, or digests in an encrypted store)."""

    def __init__(self, digest: Digest) -> None:
        self._digest = digest

    def part(self, text: str, what: str) -> bytes:
        if not isinstance(text, str):
            raise InvalidInput(f"{what} must be a str, not {type(text).__name__}")
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InvalidInput(f"{what} is not valid Unicode text: {err.reason}") from None
        if self._digest is not None:
            raw = self._digest(text)
        if len(raw) > MAX_KEY:
            raise InvalidInput(f"{what} is {len(raw)} bytes in UTF-8; keys hold at most {MAX_KEY}")
        return PART_LEN.pack(len(raw)) + raw

    def thread(self, thread_id: str) -> bytes:
        return self.part(thread_id, "thread_id")

    def ns(self, thread: bytes, checkpoint_ns: str) -> bytes:
        """The prefix of one namespace of a thread: thread ‖ ns."""
        return thread + self.part(checkpoint_ns, "checkpoint_ns")

    def checkpoint(self, ns_prefix: bytes, checkpoint_id: str) -> bytes:
        if not isinstance(checkpoint_id, str) or not checkpoint_id:
            raise InvalidInput(f"checkpoint id must be a non-empty str, not {checkpoint_id!r}")
        try:
            raw = checkpoint_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"checkpoint id {checkpoint_id!r} is not valid Unicode") from None
        return _bounded(ns_prefix + raw, "checkpoint key")

    def blob(self, ns_prefix: bytes, channel: str, version: object) -> bytes:
        key = ns_prefix + self.part(channel, "channel") + self.part(version_text(version), "ver")
        return _bounded(key, "blob key")

    def writes_prefix(self, ns_prefix: bytes, checkpoint_id: str) -> bytes:
        return ns_prefix + self.part(checkpoint_id, "checkpoint id")

    def write(self, writes_prefix: bytes, task_id: str, idx: int) -> bytes:
        if not -IDX_BIAS <= idx < IDX_BIAS:
            raise InvalidInput(f"write index {idx} out of range")
        key = writes_prefix + self.part(task_id, "task_id") + WRITE_IDX.pack(idx + IDX_BIAS)
        return _bounded(key, "write key")

    def run(self, run_id: str, checkpoint_key: bytes) -> bytes:
        return _bounded(self.part(run_id, "run_id") + checkpoint_key, "run index key")

    def run_prefix(self, run_id: str) -> bytes:
        return self.part(run_id, "run_id")

    @staticmethod
    def retention(thread: bytes) -> bytes:
        return RETENTION_PREFIX + thread


def _bounded(key: bytes, what: str) -> bytes:
    if len(key) > MAX_KEY:
        raise InvalidInput(
            f"{what} would be {len(key)} bytes; LMDB keys hold at most {MAX_KEY} "
            "(shorten the thread id, namespace, channel or task id)"
        )
    return key


def read_part(key: bytes, offset: int) -> tuple[bytes, int]:
    """The part at ``offset`` (with its length prefix) and the offset after it."""
    if offset + PART_LEN.size > len(key):
        raise FormatError(f"malformed key {key.hex()}: truncated part")
    (n,) = PART_LEN.unpack_from(key, offset)
    end = offset + PART_LEN.size + n
    if end > len(key):
        raise FormatError(f"malformed key {key.hex()}: part overruns the key")
    return key[offset:end], end


def ns_prefix_of(key: bytes) -> bytes:
    """The ``thread ‖ ns`` prefix of any key of the saver's per-namespace sub-databases."""
    _thread, off = read_part(key, 0)
    _ns, off = read_part(key, off)
    return key[:off]


def split_checkpoint_key(key: bytes) -> tuple[bytes, bytes, str]:
    """checkpoint key -> (thread part, ns prefix = thread ‖ ns, checkpoint id)."""
    thread, off = read_part(key, 0)
    _ns, off = read_part(key, off)
    try:
        cid = key[off:].decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"malformed key {key.hex()}: checkpoint id is not UTF-8") from None
    if not cid:
        raise FormatError(f"malformed key {key.hex()}: no checkpoint id")
    return thread, key[:off], cid


def next_version(current: object) -> str:
    """``<counter:032>.<random:016>``: the version after ``current`` (None, an int, or text
    whose counter ends at the first dot)."""
    if current is None:
        n = 0
    elif isinstance(current, int):
        n = current
    else:
        n = int(str(current).split(".")[0])
    return f"{n + 1:032}.{random.random():016}"


def version_text(version: object) -> str:
    """A channel version as key text, tagged by type so 1 and "1" never share a blob."""
    if isinstance(version, bool):
        raise InvalidInput(f"a channel version must be int, float or str, not {version!r}")
    if isinstance(version, int):
        return f"i{version}"
    if isinstance(version, float):
        return f"f{version!r}"
    if isinstance(version, str):
        return f"s{version}"
    raise InvalidInput(f"a channel version must be int, float or str, not {version!r}")


# --- the checkpoint envelope and the serializer rules ---------------------------------------

ENVELOPE_VERSION = 1


def is_pickle(type_tag: str) -> bool:
    # EncryptedSerializer tags are "<inner>+<cipher>"
    return type_tag.split("+", 1)[0] == "pickle"


class Envelope:
    """A decoded checkpoint envelope."""

    __slots__ = ("blobs", "ck", "created_us", "doc", "id", "md", "ns", "parent", "run_id", "thread")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.thread: str = doc["thread_id"]
        self.ns: str = doc["ns"]
        self.id: str = doc["id"]
        self.parent: str | None = doc["parent"]
        self.ck: tuple[str, bytes] = (doc["ck"][0], doc["ck"][1])
        self.md: tuple[str, bytes] = (doc["md"][0], doc["md"][1])
        self.run_id: str | None = doc["run_id"]
        self.created_us: int = doc["created_us"]
        self.blobs: builtins.list[tuple[str, str]] = [(c, v) for c, v in doc["blobs"]]

    @classmethod
    def parse(cls, raw: bytes, where: str) -> Envelope:
        try:
            doc = encoding.decode(raw)
            ok = (
                type(doc) is dict
                and doc.get("v") == ENVELOPE_VERSION
                and type(doc.get("thread_id")) is str
                and type(doc.get("ns")) is str
                and type(doc.get("id")) is str
                and type(doc.get("parent")) in (str, type(None))
                and type(doc.get("run_id")) in (str, type(None))
                and type(doc.get("created_us")) is int
                and all(pair(doc.get(k), bytes) for k in ("ck", "md"))
                and type(doc.get("blobs")) is list
                and all(pair(b, str) for b in doc["blobs"])
            )
        except FormatError as err:
            raise IntegrityError(f"{where}: malformed checkpoint envelope: {err}") from None
        if not ok:
            raise IntegrityError(f"{where}: malformed checkpoint envelope")
        return cls(doc)


def pair(value: object, second: type) -> bool:
    return (
        type(value) is list
        and len(value) == 2
        and type(value[0]) is str
        and type(value[1]) is second
    )
