"""The ``checkpoints`` (metadata frames) and ``registry`` (per-workflow sequence) sub-databases.

- ``checkpoints``: checkpoint id (16 bytes) -> metadata frame (record type 1), parsed strictly
  into a :class:`~ckdb.meta.Meta`.
- ``registry``: workflow key ‖ u64 sequence -> ``REGISTRY_VALUE`` (id, created_at, flags, key
  id, truncated tag). A flipped bit fails the tag: a damaged entry never unpins anything.

Both memoise verified bytes by address (``verified.py``): a byte-identical repeat compares
instead of verifying again; any other bytes are verified in full.
"""

from __future__ import annotations

from ckdb._env import Txn
from ckdb.codec import decode_frame, decode_registry, encode_registry
from ckdb.errors import CheckpointNotFound, FormatError, IntegrityError
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_REGISTRY,
    Codec,
    RecordType,
    id_to_text,
    is_registry_key,
    registry_key,
    split_registry_key,
)
from ckdb.meta import Meta
from ckdb.tables.frames import Frames
from ckdb.tables.workflows import Workflows

#: (checkpoint id, created_at µs, flags) of a verified registry entry
Entry = tuple[bytes, int, int]


class Checkpoints:
    """Metadata frames, by checkpoint id."""

    __slots__ = ("_frames",)

    def __init__(self, frames: Frames) -> None:
        self._frames = frames

    def exists(self, txn: Txn, cid: bytes) -> bool:
        return txn.get(DB_CHECKPOINTS, cid) is not None

    def read(self, txn: Txn, cid: bytes) -> Meta:
        """The verified, parsed metadata of ``cid``: CheckpointNotFound if there is none,
        IntegrityError if it does not verify or parse."""
        value = txn.get(DB_CHECKPOINTS, cid)
        if value is None:
            raise CheckpointNotFound(f"no checkpoint {id_to_text(cid)}")
        verified = self._frames.verified
        address = (DB_CHECKPOINTS, cid, "parsed")
        meta: Meta | None = verified.get(address, value)
        if meta is None:
            k = self._frames.keys
            raw = decode_frame(k.mac, DB_CHECKPOINTS, cid, value, RecordType.METADATA, k.aead)
            meta = Meta.parse_cached(cid, raw)
            verified.put(address, value, meta, 3 * len(value))  # parsed: ~3x the bytes
        return meta

    def frame(self, cid: bytes, raw: bytes) -> bytes:
        return self._frames.frame(RecordType.METADATA, DB_CHECKPOINTS, cid, raw, Codec.NONE)

    def put_new(self, txn: Txn, cid: bytes, frame: bytes) -> None:
        if not txn.put(DB_CHECKPOINTS, cid, frame, overwrite=False):
            raise IntegrityError(f"checkpoint id {id_to_text(cid)} already exists")

    def delete(self, txn: Txn, cid: bytes) -> None:
        txn.delete(DB_CHECKPOINTS, cid)

    def delete_many(self, txn: Txn, cids: list[bytes]) -> None:
        for cid in cids:
            txn.delete(DB_CHECKPOINTS, cid)

    def ids(self, txn: Txn, start: bytes = b"") -> list[bytes]:
        return [bytes(k) for k, _v in txn.range(DB_CHECKPOINTS, start)]


class Registry:
    """Registry entries: what listing and retention planning read, with tagged flags.

    Deleting entries keeps their sequences handed out: when no newer entry of the workflow is
    left, the workflow record's ``next_seq`` is raised past them in the same transaction
    (``Workflows.keep_past``), since the next create takes one past the newest entry."""

    __slots__ = ("_frames", "_workflows")

    def __init__(self, frames: Frames, workflows: Workflows) -> None:
        self._frames = frames
        self._workflows = workflows

    def entry(self, key: bytes, value: bytes) -> Entry:
        """A verified registry entry -> (checkpoint id, created_at µs, flags)."""
        verified = self._frames.verified
        address = (DB_REGISTRY, key)
        entry: Entry | None = verified.get(address, value)
        if entry is None:
            entry = decode_registry(self._frames.keys.mac, key, value)
            verified.put(address, value, entry)
        return entry

    def entry_uncached(self, key: bytes, value: bytes) -> Entry:
        """Verified in full, memo untouched (scrub and repair judge the bytes themselves)."""
        return decode_registry(self._frames.keys.mac, key, value)

    def value(self, key: bytes, cid: bytes, created_us: int, flags: int) -> bytes:
        k = self._frames.keys
        return encode_registry(k.active_mac, k.active, key, cid, created_us, flags)

    def put(self, txn: Txn, key: bytes, cid: bytes, created_us: int, flags: int) -> None:
        txn.put(DB_REGISTRY, key, self.value(key, cid, created_us, flags))

    def remember(self, key: bytes, value: bytes, entry: Entry) -> None:
        """``value`` at ``key`` was just verified in full (create's read-back): later reads of
        these exact bytes compare instead of verifying again."""
        self._frames.verified.put((DB_REGISTRY, key), value, entry)

    def key_for(self, meta: Meta) -> bytes:
        """The slot a checkpoint's metadata names."""
        return registry_key(self._frames.keys.wf_key(meta.workflow_id), meta.seq)

    def slot_of(self, txn: Txn, meta: Meta) -> tuple[bytes, int]:
        """The registry entry of a checkpoint: (registry key, flags); IntegrityError if the entry
        is missing, damaged or names another checkpoint."""
        reg_key = self.key_for(meta)
        value = txn.get(DB_REGISTRY, reg_key)
        if value is None:
            raise IntegrityError(f"checkpoint {id_to_text(meta.cid)} has no registry entry")
        rcid, _created, flags = self.entry(reg_key, value)
        if rcid != meta.cid:
            raise IntegrityError(
                f"registry slot of checkpoint {id_to_text(meta.cid)} names {id_to_text(rcid)}"
            )
        return reg_key, flags

    def key_of(self, txn: Txn, cid: bytes, meta: Meta | None) -> bytes | None:
        """The registry key holding ``cid``: the slot its metadata names, else (damaged metadata
        or registry) found by scanning the registry (rare path). Values are matched by their id
        bytes, not verified: callers decide what a failing entry means."""
        if meta is not None:
            reg_key = self.key_for(meta)
            value = txn.get(DB_REGISTRY, reg_key)
            if value is not None and bytes(value[:16]) == cid:
                return reg_key
        for key, value in txn.range(DB_REGISTRY):
            if bytes(value[:16]) == cid:
                return bytes(key)
        return None

    def delete(self, txn: Txn, key: bytes) -> None:
        txn.delete(DB_REGISTRY, key)
        self._keep_past(txn, [key])

    def delete_many(self, txn: Txn, keys: list[bytes]) -> None:
        """Delete sorted ``keys``: one cursor pass from the first to the last, deleting only
        them (the entries between, of checkpoints kept, stay)."""
        txn.delete_keys_in_range(DB_REGISTRY, keys[0], keys[-1] + b"\x00", set(keys))
        self._keep_past(txn, keys)

    def delete_unchanged(self, txn: Txn, expected: dict[bytes, bytes]) -> list[bytes]:
        """Delete the entries of ``expected`` (key -> the value that verified) still holding
        exactly those bytes, in one cursor pass from the least key to the greatest. Returns the
        keys deleted; an entry that changed since it verified stays, for the caller to judge."""
        if not expected:
            return []
        lo, hi = min(expected), max(expected) + b"\x00"
        gone = txn.delete_matching(DB_REGISTRY, lo, hi, expected)
        if gone:
            self._keep_past(txn, gone)
        return gone

    def newest(self, txn: Txn, wf_key: bytes, *, parent: bool = True) -> tuple[int, bytes | None]:
        """(the newest sequence among the workflow's registry keys, 0 if none; the id of the
        newest entry that verifies, None if none or ``parent`` is false). A malformed key
        (damage; scrub removes it) names no sequence and is skipped, so it blocks nothing."""
        seq: int | None = None
        for key, value in txn.prefix(DB_REGISTRY, wf_key, reverse=True):
            try:
                found = split_registry_key(key)[1]
            except FormatError:
                continue
            if seq is None:
                seq = found
                if not parent:
                    break
            try:  # a damaged entry names no parent: the next older one may
                return seq, self.entry(key, value)[0]
            except IntegrityError:
                continue
        return seq or 0, None

    def _keep_past(self, txn: Txn, keys: list[bytes]) -> None:
        """After deleting ``keys``: per workflow, if the newest deleted sequence is newer than
        every entry left, the workflow record must remember it (no sequence is reused)."""
        last: dict[bytes, bytes] = {}  # workflow key -> its greatest well-formed key deleted
        for key in sorted(keys, reverse=True):  # the greatest of each workflow first
            if not key:
                continue
            wf_key = key[: key[0] + 1]
            if wf_key in last or not is_registry_key(key):
                continue  # a malformed key (damage being removed) names no sequence
            last[wf_key] = key  # same prefix, fixed-width big-endian sequence
        for wf_key, key in last.items():
            seq = split_registry_key(key)[1]
            if self.newest(txn, wf_key, parent=False)[0] < seq:
                self._workflows.keep_past(txn, wf_key, seq)

    def created_of(self, txn: Txn, key: bytes) -> int:
        """The created_at field of the entry at ``key`` (as stored; the caller verified it)."""
        value = txn.get(DB_REGISTRY, key)
        assert value is not None
        return int.from_bytes(value[16:24], "big")
