"""What ckdb writes into a remote: object keys, the root object, frames, documents. Pure: bytes in,
bytes out, no I/O (fuzzed like the local format). ``docs/remote.md`` has the byte tables.

Every parser here is strict: a document of the wrong shape is an ``IntegrityError`` naming the
object, never a ``KeyError`` or a half-built record.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from typing import Any

from attrs import frozen

from ckdb import encoding, keys
from ckdb.codec import decode_frame, encode_frame
from ckdb.errors import CkdbError, FormatError, IntegrityError, UnsupportedVersion, WrongKey
from ckdb.layout import ID_SIZE, LIVE_ROW, Codec, RecordType

ROOT_KEY = "ckdb-remote"
REMOTE_MAGIC = b"CKDBREMO"
REMOTE_VERSION = 1
#: magic, format version, feature flags, remote uuid, created (µs), key check
REMOTE_ROOT = struct.Struct(">8sHI16sQ32s")
assert REMOTE_ROOT.size == 70

FRAME_DB = b"remote"  # the "sub-database" name bound into every remote frame's tag
ZERO_DIGEST = bytes(32)
SEGMENT_MAX_PUTS = 256
SEGMENT_MAX_BYTES = 8 << 20
BLOB_FROM = 256 << 10  # payload bodies this large and larger are blobs of their own
DOC_VERSION = 1
KINDS = ("log", "fence")
#: registry flags a remote keeps (marked is a local finding, never shipped)
SHIPPED_FLAGS = 0x01 | 0x04 | 0x08


# --- keys -----------------------------------------------------------------------------------------


def number(n: int) -> str:
    return f"{n:016x}"


def wf_dir(wk: str) -> str:
    return f"wf/{wk}/"


def claim_key(wk: str, epoch: int) -> str:
    return f"wf/{wk}/claim/{number(epoch)}"


def log_key(wk: str, seq: int) -> str:
    return f"wf/{wk}/log/{number(seq)}"


def snap_key(wk: str, seq: int) -> str:
    return f"wf/{wk}/snap/{number(seq)}"


def blob_key(wk: str, rcid: bytes) -> str:
    return f"wf/{wk}/blob/{rcid.hex()}"


def parse_number(key: str) -> int | None:
    """The number at the end of a claim/log/snap key, None if it is not one of ours."""
    tail = key.rpartition("/")[2]
    if len(tail) != 16 or any(c not in "0123456789abcdef" for c in tail):
        return None
    return int(tail, 16)


def digest(obj: bytes) -> bytes:
    """What ``prev`` holds: SHA-256 of an object's bytes as stored."""
    return hashlib.sha256(obj).digest()


# --- the root object and the remote's keys --------------------------------------------------------


class RemoteKeys:
    """The remote's keyring (AES-GCM always): frames, workflow digests, content ids."""

    __slots__ = ("ring", "uuid")

    def __init__(self, ring: keys.Keyring, uuid: bytes) -> None:
        ring.cipher = "aes-gcm"
        self.ring = ring
        self.uuid = uuid

    def wk(self, workflow_id: str) -> str:
        """The workflow's part of object keys: 64 hex digits of a keyed digest of its id."""
        return self.ring.wf_key(workflow_id)[1:].hex()

    def content_id(self, raw: bytes | memoryview) -> bytes:
        h = self.ring.content_mac.copy()
        h.update(raw)
        return h.digest()

    def frame(self, rtype: RecordType, key: str, raw: bytes, codec: Codec = Codec.AUTO) -> bytes:
        r = self.ring
        return encode_frame(
            r.active_mac, r.active, rtype, FRAME_DB, key.encode(), raw, codec, r.active_aead
        )

    def unframe(self, key: str, value: bytes, rtype: RecordType) -> bytes:
        """Verify (tag, decryption) and decompress; IntegrityError naming the key otherwise."""
        try:
            return decode_frame(self.ring.mac, FRAME_DB, key.encode(), value, rtype, self.ring.aead)
        except CkdbError as err:
            raise IntegrityError(f"remote object {key}: {err}") from None


def _kek(master: bytes, uuid: bytes) -> bytes:
    return keys.hkdf(master, b"remote-kek", salt=uuid)


def _check(kek: bytes, head: bytes) -> bytes:
    return hmac.new(kek, b"ckdb/v1/remote-keycheck" + head, hashlib.sha256).digest()


def new_root(master: bytes, now_us: int) -> tuple[bytes, RemoteKeys]:
    """A new remote's root object and keys (random uuid and keyring)."""
    uuid = secrets.token_bytes(16)
    kek = _kek(master, uuid)
    head = REMOTE_ROOT.pack(REMOTE_MAGIC, REMOTE_VERSION, 0, uuid, now_us, bytes(32))[:38]
    ring = keys.Keyring.generate()
    root = head + _check(kek, head) + ring.wrap(kek, uuid)
    return root, RemoteKeys(ring, uuid)


def open_root(master: bytes, data: bytes) -> RemoteKeys:
    """The keys of an existing remote: FormatError / UnsupportedVersion for a root that is not
    ours or too new, WrongKey when the master key does not open it."""
    if len(data) < REMOTE_ROOT.size + 28:
        raise FormatError(f"{ROOT_KEY}: not a ckdb remote root ({len(data)} bytes)")
    magic, version, flags, uuid, _created, check = REMOTE_ROOT.unpack_from(data)
    if magic != REMOTE_MAGIC:
        raise FormatError(f"{ROOT_KEY}: not a ckdb remote (bad magic)")
    if version > REMOTE_VERSION or flags:
        raise UnsupportedVersion(
            f"the remote's format (version {version}, features {flags:#x}) is newer than this "
            "ckdb supports; upgrade ckdb"
        )
    kek = _kek(master, uuid)
    if not hmac.compare_digest(_check(kek, data[:38]), check):
        raise WrongKey(
            "the key does not open this remote (it was created with another key). The fleet key "
            "is the store's master key unless Remote(key=...) / --remote-key-file names it; "
            "every host of a fleet needs the same one"
        )
    ring = keys.Keyring.unwrap(kek, uuid, data[REMOTE_ROOT.size :])
    return RemoteKeys(ring, bytes(uuid))


def root_uuid(data: bytes) -> bytes:
    if len(data) < REMOTE_ROOT.size or data[:8] != REMOTE_MAGIC:
        raise FormatError(f"{ROOT_KEY}: not a ckdb remote root")
    return bytes(REMOTE_ROOT.unpack_from(data)[3])


# --- documents ------------------------------------------------------------------------------------


@frozen
class Ck:
    """One checkpoint as a remote holds it (``docs/remote.md``: the ``ck`` document)."""

    meta: bytes  # the metadata document exactly as created on the source host
    flags: int
    frames: tuple[
        tuple[int, str, int, int, bytes], ...
    ]  # (rtype, name, codec|-1, raw_len, body|rcid)
    chunks: tuple[tuple[bytes, bytes], ...]  # (source content id, remote content id)
    cid: bytes  # the checkpoint id, from meta
    seq: int  # its sequence, from meta

    def doc(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "flags": self.flags,
            "frames": [list(f) for f in self.frames],
            "chunks": [list(c) for c in self.chunks],
        }

    def size(self) -> int:
        return len(self.meta) + sum(len(f[4]) for f in self.frames) + 64 * len(self.chunks)


@frozen
class Segment:
    kind: str
    wf: str
    seq: int
    epoch: int
    owner: bytes
    host: str
    batch: bytes
    prev: bytes
    at: int
    ops: tuple[tuple[Any, ...], ...]  # ("put", Ck) | ("del", (id, ...)) | ("flags", id, flags)


@frozen
class Claim:
    wf: str
    epoch: int
    owner: bytes
    host: str
    at: int


@frozen
class Snapshot:
    wf: str
    seq: int
    epoch: int
    owner: bytes
    prev: bytes
    at: int
    live: tuple[Ck, ...]


def _bad(where: str, what: str) -> IntegrityError:
    return IntegrityError(f"remote object {where}: malformed {what}")


def _decode_map(raw: bytes, where: str, what: str) -> dict[str, Any]:
    try:
        doc = encoding.decode(raw)
    except FormatError as err:
        raise IntegrityError(f"remote object {where}: {err}") from None
    if type(doc) is not dict or doc.get("v") != DOC_VERSION:
        raise _bad(where, what)
    return doc


def _typed(doc: dict[str, Any], where: str, what: str, **fields: type) -> list[Any]:
    out = []
    for name, kind in fields.items():
        value = doc.get(name)
        if type(value) is not kind:
            raise _bad(where, f"{what} (field {name!r})")
        out.append(value)
    return out


def _id(value: object, where: str) -> bytes:
    if type(value) is not bytes or len(value) != ID_SIZE:
        raise _bad(where, "checkpoint id")
    return value


def parse_ck(doc: object, where: str) -> Ck:
    if type(doc) is not dict:
        raise _bad(where, "checkpoint entry")
    meta, flags, frames, chunks = _typed(
        doc, where, "checkpoint entry", meta=bytes, flags=int, frames=list, chunks=list
    )
    if not 0 <= flags <= 0xFF:
        raise _bad(where, "checkpoint flags")
    try:
        mdoc = encoding.decode(meta)
    except FormatError:
        raise _bad(where, "checkpoint metadata") from None
    if type(mdoc) is not dict or type(mdoc.get("seq")) is not int:
        raise _bad(where, "checkpoint metadata")
    cid = _id(mdoc.get("id"), where)
    out_frames = []
    for f in frames:
        if not (
            type(f) is list
            and len(f) == 5
            and type(f[0]) is int
            and type(f[1]) is str
            and type(f[2]) is int
            and type(f[3]) is int
            and type(f[4]) is bytes
            and f[3] >= 0
            and (f[2] >= 0 or len(f[4]) == 32)
        ):
            raise _bad(where, "frame entry")
        out_frames.append((f[0], f[1], f[2], f[3], f[4]))
    out_chunks = []
    for c in chunks:
        if not (
            type(c) is list and len(c) == 2 and all(type(x) is bytes and len(x) == 32 for x in c)
        ):
            raise _bad(where, "chunk entry")
        out_chunks.append((c[0], c[1]))
    return Ck(meta, flags, tuple(out_frames), tuple(out_chunks), cid, mdoc["seq"])


def encode_segment(seg: Segment) -> bytes:
    ops: list[list[Any]] = []
    for op in seg.ops:
        if op[0] == "put":
            ops.append(["put", op[1].doc()])
        elif op[0] == "del":
            ops.append(["del", list(op[1])])
        else:
            ops.append(["flags", op[1], op[2]])
    return encoding.encode(
        {
            "v": DOC_VERSION,
            "kind": seg.kind,
            "wf": seg.wf,
            "seq": seg.seq,
            "epoch": seg.epoch,
            "owner": seg.owner,
            "host": seg.host,
            "batch": seg.batch,
            "prev": seg.prev,
            "at": seg.at,
            "ops": ops,
        },
        "segment",
    )


def decode_segment(raw: bytes, where: str) -> Segment:
    doc = _decode_map(raw, where, "segment")
    kind, wf, seq, epoch, owner, host, batch, prev, at, ops = _typed(
        doc, where, "segment", kind=str, wf=str, seq=int, epoch=int, owner=bytes, host=str,
        batch=bytes, prev=bytes, at=int, ops=list,
    )  # fmt: skip
    if kind not in KINDS or seq < 1 or epoch < 1 or len(owner) != 16 or len(prev) != 32:
        raise _bad(where, "segment header")
    if kind == "fence" and ops:
        raise _bad(where, "fence segment (it has ops)")
    out: list[tuple[Any, ...]] = []
    for op in ops:
        if type(op) is not list or not op or type(op[0]) is not str:
            raise _bad(where, "op")
        if op[0] == "put" and len(op) == 2:
            out.append(("put", parse_ck(op[1], where)))
        elif op[0] == "del" and len(op) == 2 and type(op[1]) is list:
            out.append(("del", tuple(_id(i, where) for i in op[1])))
        elif op[0] == "flags" and len(op) == 3 and type(op[2]) is int and 0 <= op[2] <= 0xFF:
            out.append(("flags", _id(op[1], where), op[2]))
        else:
            raise _bad(where, f"op {op[0]!r}")
    return Segment(kind, wf, seq, epoch, owner, host, batch, prev, at, tuple(out))


def encode_claim(claim: Claim) -> bytes:
    return encoding.encode(
        {"v": DOC_VERSION, "wf": claim.wf, "epoch": claim.epoch, "owner": claim.owner,
         "host": claim.host, "at": claim.at},
        "claim",
    )  # fmt: skip


def decode_claim(raw: bytes, where: str) -> Claim:
    doc = _decode_map(raw, where, "claim")
    wf, epoch, owner, host, at = _typed(
        doc, where, "claim", wf=str, epoch=int, owner=bytes, host=str, at=int
    )
    if epoch < 1 or len(owner) != 16:
        raise _bad(where, "claim")
    return Claim(wf, epoch, owner, host, at)


def encode_snapshot(snap: Snapshot) -> bytes:
    return encoding.encode(
        {"v": DOC_VERSION, "wf": snap.wf, "seq": snap.seq, "epoch": snap.epoch,
         "owner": snap.owner, "prev": snap.prev, "at": snap.at,
         "live": [ck.doc() for ck in snap.live]},
        "snapshot",
    )  # fmt: skip


def decode_snapshot(raw: bytes, where: str) -> Snapshot:
    doc = _decode_map(raw, where, "snapshot")
    wf, seq, epoch, owner, prev, at, live = _typed(
        doc, where, "snapshot", wf=str, seq=int, epoch=int, owner=bytes, prev=bytes, at=int,
        live=list,
    )  # fmt: skip
    if seq < 1 or epoch < 1 or len(owner) != 16 or len(prev) != 32:
        raise _bad(where, "snapshot header")
    return Snapshot(wf, seq, epoch, owner, prev, at, tuple(parse_ck(c, where) for c in live))


def pack_live(rows: dict[bytes, tuple[int, int]]) -> bytes:
    """Cursor rows from {checkpoint id: (seq, flags)}, sorted by sequence."""
    return b"".join(
        LIVE_ROW.pack(seq, cid, flags)
        for cid, (seq, flags) in sorted(rows.items(), key=lambda kv: kv[1][0])
    )


def unpack_live(data: bytes) -> dict[bytes, tuple[int, int]]:
    if len(data) % LIVE_ROW.size:
        raise IntegrityError("remote cursor: malformed live rows")
    out = {}
    for seq, cid, flags in LIVE_ROW.iter_unpack(data):
        out[bytes(cid)] = (seq, flags)
    return out
