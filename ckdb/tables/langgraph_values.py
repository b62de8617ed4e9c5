"""Channel values of the LangGraph saver: one frame each, or content-addressed chunks.

A growing channel (a conversation's message list) is rewritten whole by every step that changes
it. Serialized values of ``CHUNK_MIN`` bytes or more are therefore cut into ``CHUNK_SIZE``
pieces at fixed offsets, each stored once per namespace under its keyed digest in
``lg_chunks``; the blob record lists the digests. A step that appends a message changes the
first piece (the list's length) and the last: it compresses, tags and writes those two, not
the whole list. ``docs/langgraph.md`` has the byte tables.

- Blob record (``lg_blobs``), the frame's body: ``[type, bytes]`` (a whole value, as every ckdb
  before 0.5 wrote) or ``[type, size, chunk size, digests]`` (a chunked one; ``digests`` is the
  32-byte digests of the pieces, in order).
- Chunk (``lg_chunks``): key ``thread ‖ ns ‖ digest``, a frame of the piece's bytes. The digest is
  the store's content id (HMAC-SHA256 under the content key, as file chunks), and the frame's
  tag binds the key: a piece that does not verify, or is missing, is an ``IntegrityError``.
- A put writes its blob record and every piece not already stored in ONE transaction (the
  presence of a piece is checked inside it), so a piece is never referenced before it exists.
- Pieces no remaining blob record of the namespace references are deleted when blobs are
  collected (:func:`collect`); if any remaining record cannot be verified, none are.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Container, Mapping
from typing import Any, NamedTuple

from ckdb import encoding
from ckdb._env import Env, Txn
from ckdb.errors import CkdbError, FormatError, IntegrityError
from ckdb.tables.langgraph_layout import (
    DB_BLOBS,
    DB_CHECKPOINTS,
    DB_CHUNKS,
    MAX_KEY,
    Envelope,
    Layout,
    ns_prefix_of,
)

_log = logging.getLogger("ckdb.integrations.langgraph")

#: serialized values this long or longer are stored as pieces
CHUNK_MIN = 64 * 1024
#: the length of every piece but the last
CHUNK_SIZE = 16 * 1024
DIGEST_SIZE = 32

Framer = Callable[[bytes, bytes, bytes], bytes]  # (db, key, raw) -> frame
Unframer = Callable[[bytes, bytes, bytes], bytes]  # (db, key, frame) -> raw, verified
ContentId = Callable[[memoryview], bytes]


class Piece(NamedTuple):
    key: bytes
    raw: memoryview
    frame: bytes | None  # None: it was stored when the put looked; framed only if it is gone


class BlobWrite(NamedTuple):
    """What one channel value of a put writes: its blob record and its pieces."""

    key: bytes
    frame: bytes
    pieces: tuple[Piece, ...]


class Loaded(NamedTuple):
    """A blob read inside a transaction: the value (whole), or the stored pieces to verify and
    join outside it."""

    type_: str
    data: bytes | None
    size: int
    step: int  # the length of every piece but the last
    pieces: tuple[tuple[bytes, bytes], ...]  # (key, stored frame)


class FrameMemo:
    """Frames this saver tagged or verified, by address: a stored value byte-identical to one
    of them has the same body (a tag is a function of the key and the bytes; data keys are
    never replaced), so reading it again compares instead of verifying and decompressing. The
    read right after a put (LangGraph's ``get_tuple`` at the start of every step) then costs a
    ``memcmp`` per frame. Bounded: values up to ``MAX_VALUE`` bytes, ``MAX_BYTES`` in all
    (frames and bodies), dropped whole when full. Any other bytes, damage included, miss and
    are verified in full."""

    MAX_VALUE = 64 * 1024
    MAX_BYTES = 32 << 20

    def __init__(self) -> None:
        self._map: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
        self._bytes = 0

    def get(self, db: bytes, key: bytes, value: bytes) -> bytes | None:
        hit = self._map.get((db, key))
        return hit[1] if hit is not None and hit[0] == value else None

    def put(self, db: bytes, key: bytes, value: bytes, raw: bytes) -> None:
        size = len(value) + len(raw)
        if size > self.MAX_VALUE or type(value) is not bytes or type(raw) is not bytes:
            return
        size += 100  # the entry's own overhead, roughly
        if self._bytes + size > self.MAX_BYTES:
            self._map, self._bytes = {}, 0
        self._map[(db, key)] = (value, raw)
        self._bytes += size


def open_dbs(env: Env, names: tuple[bytes, ...], *, readonly: bool) -> None:
    """Open (create) the saver's sub-databases. A read-only store that no ckdb 0.5 saver wrote
    to has no ``lg_chunks``: nothing of it is stored as pieces (:func:`chunks_ready`)."""
    for name in names:
        if name == DB_CHUNKS and readonly and not env.has_db(name):
            continue
        env.ensure_db(name)


def chunks_ready(env: Env) -> None:
    """Before a read: open ``lg_chunks`` if another process created it since (a read-only
    saver opened before any piece was written)."""
    if not env.is_open(DB_CHUNKS) and env.has_db(DB_CHUNKS):
        env.ensure_db(DB_CHUNKS)


def chunk_key(ns_prefix: bytes, digest: bytes) -> bytes:
    return ns_prefix + digest


class Digests:
    """The pieces' digests of the last large value written per channel (at most ``entries``
    values and ``budget`` bytes, least recently written first out): a piece byte-identical to
    the one at the same offset of the channel's previous value has its digest, so a growing
    list hashes its new pieces only. A hint for speed: equal bytes have equal digests."""

    def __init__(self, content_id: ContentId, entries: int = 64, budget: int = 64 << 20) -> None:
        self._content_id = content_id
        self._last: OrderedDict[bytes, tuple[bytes, builtins.list[bytes]]] = OrderedDict()
        self._entries = entries
        self._budget = budget
        self._bytes = 0
        self._lock = threading.Lock()

    def of(self, channel: bytes, data: bytes) -> builtins.list[bytes]:
        """The digests of ``data``'s pieces (``channel``: its namespace and channel key)."""
        with self._lock:
            prev, prev_digests = self._last.get(channel, (b"", []))
        view = memoryview(data)
        out = []
        for i, at in enumerate(range(0, len(data), CHUNK_SIZE)):
            end = at + CHUNK_SIZE
            # bytes slices: comparing memoryviews goes item by item (70 µs a piece here, 4x
            # hashing it); two slice copies and a memcmp take about 1 µs
            same = i < len(prev_digests) and prev[at:end] == data[at:end]
            out.append(prev_digests[i] if same else self._content_id(view[at:end]))
        with self._lock:
            gone = self._last.pop(channel, None)
            self._bytes -= 0 if gone is None else len(gone[0])
            self._last[channel] = (data, out)
            self._bytes += len(data)
            while len(self._last) > self._entries or self._bytes > self._budget:
                self._bytes -= len(self._last.popitem(last=False)[1][0])
        return out


def prepare(
    txn_read: Callable[[], Any],
    frame: Framer,
    digests_of: Digests,
    ns_prefix: bytes,
    channel: bytes,
    key: bytes,
    typed: tuple[str, bytes],
) -> BlobWrite:
    """The frames of one channel value, built before the write lock: a whole value's frame, or
    the blob record and the frames of the pieces not stored yet (``txn_read`` opens the read
    transaction that looks; ``channel``: the namespace's channel key, for ``digests_of``)."""
    type_, data = typed
    if len(data) < CHUNK_MIN or len(ns_prefix) + DIGEST_SIZE > MAX_KEY:
        return BlobWrite(key, frame(DB_BLOBS, key, encoding.encode([type_, data])), ())
    view = memoryview(data)
    digests = digests_of.of(channel, data)
    fresh: dict[bytes, memoryview] = {}
    for i, digest in enumerate(digests):
        fresh.setdefault(chunk_key(ns_prefix, digest), view[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE])
    with txn_read() as txn:
        stored = {k for k in fresh if txn.get(DB_CHUNKS, k) is not None}
    pieces = tuple(
        Piece(k, raw, None if k in stored else frame(DB_CHUNKS, k, bytes(raw)))
        for k, raw in fresh.items()
    )
    record = encoding.encode([type_, len(data), CHUNK_SIZE, b"".join(digests)])
    return BlobWrite(key, frame(DB_BLOBS, key, record), pieces)


def write(txn: Txn, frame: Framer, blob: BlobWrite) -> None:
    """Inside the put's transaction: the pieces first (any found gone since ``prepare`` looked
    is framed now), then the record."""
    for piece in blob.pieces:
        if piece.frame is not None:
            txn.put(DB_CHUNKS, piece.key, piece.frame)
        elif txn.get(DB_CHUNKS, piece.key) is None:
            txn.put(DB_CHUNKS, piece.key, frame(DB_CHUNKS, piece.key, bytes(piece.raw)))
    txn.put(DB_BLOBS, blob.key, blob.frame)


def parse(raw: bytes, where: str) -> tuple[str, bytes | None, int, int, bytes]:
    """A verified blob record -> (type, whole bytes or None, size, chunk size, digests)."""
    try:
        doc = encoding.decode(raw)
    except FormatError as err:
        raise IntegrityError(f"{where}: {err}") from None
    if type(doc) is list and len(doc) == 2 and type(doc[0]) is str and type(doc[1]) is bytes:
        return doc[0], doc[1], len(doc[1]), 0, b""
    if (
        type(doc) is list
        and len(doc) == 4
        and type(doc[0]) is str
        and type(doc[1]) is int
        and type(doc[2]) is int
        and type(doc[3]) is bytes
        and doc[1] > 0
        and doc[2] > 0
        and len(doc[3]) == DIGEST_SIZE * -(-doc[1] // doc[2])
    ):
        return doc[0], None, doc[1], doc[2], doc[3]
    raise IntegrityError(f"{where}: malformed record")


def load(txn: Txn, unframe: Unframer, ns_prefix: bytes, key: bytes, value: bytes) -> Loaded:
    """Inside a read transaction: verify a blob record and fetch its pieces (not verified yet:
    :func:`join` does that after the transaction)."""
    where = f"{DB_BLOBS.decode()}/{key.hex()}"
    type_, data, size, step, digests = parse(unframe(DB_BLOBS, key, value), where)
    if data is not None:
        return Loaded(type_, data, size, 0, ())
    pieces = []
    for at in range(0, len(digests), DIGEST_SIZE):
        ckey = chunk_key(ns_prefix, digests[at : at + DIGEST_SIZE])
        try:
            stored = txn.get(DB_CHUNKS, ckey)
        except KeyError:  # lg_chunks not open: a read-only store no ckdb 0.5 saver wrote to
            stored = None
        if stored is None:
            raise IntegrityError(f"{where}: piece {at // DIGEST_SIZE} is missing")
        pieces.append((ckey, bytes(stored)))
    return Loaded(type_, None, size, step, tuple(pieces))


def join(loaded: Loaded, unframe: Unframer) -> tuple[str, bytes]:
    """The (type, bytes) of a loaded blob, every piece verified and of its exact length."""
    if loaded.data is not None:
        return loaded.type_, loaded.data
    parts = []
    left = loaded.size
    for ckey, stored in loaded.pieces:
        raw = unframe(DB_CHUNKS, ckey, stored)
        if len(raw) != min(loaded.step, left):
            raise IntegrityError(f"{DB_CHUNKS.decode()}/{ckey.hex()}: piece of the wrong size")
        parts.append(raw)
        left -= len(raw)
    return loaded.type_, b"".join(parts)


def scrub(
    txn: Txn, unframe: Unframer, pieces: Mapping[bytes, int | None], skip: Container[bytes]
) -> builtins.list[tuple[str, str]]:
    """For ``ckdb scrub``, inside its read transaction: every blob record readable, and every
    piece a chunked one lists stored, of the length the record gives it.

    ``pieces``: every stored piece's key -> the raw length in its verified header (None: its
    tag does not verify). ``skip``: blob keys whose tag does not verify. The caller reports both,
    so neither is reported again here. -> (where, problem) for each broken record."""
    out: builtins.list[tuple[str, str]] = []
    for key, value in txn.range(DB_BLOBS):
        bkey = bytes(key)
        if bkey in skip:
            continue
        where = f"{DB_BLOBS.decode()}/{bkey.hex()}"
        try:
            _type, data, size, step, digests = parse(unframe(DB_BLOBS, bkey, value), where)
            ns_prefix = ns_prefix_of(bkey)
        except CkdbError as err:  # tagged, but not a record this saver can read
            out.append((where, str(err)))
            continue
        if data is not None:
            continue
        left = size
        for at in range(0, len(digests), DIGEST_SIZE):
            index, want = at // DIGEST_SIZE, min(step, left)
            left -= want
            ckey = chunk_key(ns_prefix, digests[at : at + DIGEST_SIZE])
            if ckey not in pieces:
                out.append((where, f"piece {index} of {size:,} bytes' value is missing"))
                continue
            got = pieces[ckey]
            if got is not None and got != want:
                out.append((where, f"piece {index} holds {got} bytes, the record says {want}"))
    return out


def collect(txn: Txn, unframe: Unframer, ns_prefix: bytes) -> int:
    """Delete the namespace's pieces that no remaining blob record references; none if any
    remaining record does not verify (what it needs cannot be known). -> pieces deleted."""
    if next(txn.prefix(DB_CHUNKS, ns_prefix), None) is None:
        return 0
    referenced: set[bytes] = set()
    for key, value in txn.prefix(DB_BLOBS, ns_prefix):
        where = f"{DB_BLOBS.decode()}/{key.hex()}"
        try:
            digests = parse(unframe(DB_BLOBS, key, value), where)[4]
        except CkdbError:
            _log.warning("%s does not verify: the namespace's chunks are kept", where)
            return 0
        for at in range(0, len(digests), DIGEST_SIZE):
            referenced.add(chunk_key(ns_prefix, digests[at : at + DIGEST_SIZE]))
    victims = [k for k, _v in txn.prefix(DB_CHUNKS, ns_prefix) if k not in referenced]
    for k in victims:
        txn.delete(DB_CHUNKS, k)
    return len(victims)


def collect_blobs(
    txn: Txn,
    envelope: Callable[[bytes, bytes], Envelope],
    lay: Layout,
    unframe: Unframer,
    ns_prefix: bytes,
) -> int:
    """Delete the namespace's blobs no remaining checkpoint references, then the pieces no
    remaining blob references. If any remaining envelope cannot be verified, nothing is
    collected (we cannot know what it needs). -> blobs deleted."""
    referenced: set[bytes] = set()
    for key, value in txn.prefix(DB_CHECKPOINTS, ns_prefix):
        try:
            env = envelope(key, value)
        except CkdbError:
            _log.warning("lg_checkpoints/%s does not verify: blobs kept", key.hex())
            return 0
        for channel, vtext in env.blobs:
            referenced.add(ns_prefix + lay.part(channel, "channel") + lay.part(vtext, "ver"))
    victims = [k for k, _v in txn.prefix(DB_BLOBS, ns_prefix) if k not in referenced]
    for k in victims:
        txn.delete(DB_BLOBS, k)
    if victims:
        collect(txn, unframe, ns_prefix)
    return len(victims)
