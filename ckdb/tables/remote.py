"""The ``remote`` sub-database: a remote's local state (``docs/remote.md``, "Local state").

- ``attached`` -> frame {uuid, url}: the store ships to this remote.
- ``dirty/`` ‖ workflow key -> ``DIRTY_VALUE`` (counter, oldest unshipped change µs).
- ``tomb/`` ‖ workflow key ‖ checkpoint id -> empty: a user or retention delete to mirror.
- ``cursor/`` ‖ workflow key -> frame: what the remote holds of the workflow.
- ``fence/`` ‖ workflow key -> frame: another host owns the workflow (or it was pulled).
- ``blob/`` ‖ workflow key ‖ remote content id -> empty: the blob is in the remote.
- ``lease`` -> frame {owner, pid, host, expires}: the process whose shipper ships this store.
- ``cmap/`` ‖ local content id -> remote content id ‖ key id ‖ 16-byte tag: chunk ids in both
  key spaces (a damaged entry fails its tag and is recomputed).

The sub-database exists in every store this ckdb opens for writing (empty until a remote is
attached), so a process that opened the store before another one attached a remote still marks
its changes: it sees ``attached`` inside its own write transactions.
"""

from __future__ import annotations

import hmac
from typing import Any

from attrs import frozen

from ckdb import encoding
from ckdb._env import Txn
from ckdb.codec import tag
from ckdb.errors import CkdbError, IntegrityError
from ckdb.layout import DB_REMOTE, DIRTY_VALUE, Codec, RecordType, prefix_end
from ckdb.tables.frames import Frames

ATTACHED = b"attached"
DIRTY = b"dirty/"
TOMB = b"tomb/"
CURSOR = b"cursor/"
FENCE = b"fence/"
BLOB = b"blob/"
CMAP = b"cmap/"
LEASE = b"lease"


@frozen
class Cursor:
    """What the remote holds of one workflow, as this store last recorded it."""

    workflow_id: str
    epoch: int  # the epoch this store ships under
    next: int  # the next segment number
    prev: bytes  # digest of the last segment
    live: bytes  # LIVE_ROW rows (ckdb.remote.format.pack_live)
    at: int  # µs of the last ship


class RemoteState:
    """Typed access to the ``remote`` sub-database."""

    __slots__ = ("_frames",)

    def __init__(self, frames: Frames) -> None:
        self._frames = frames

    # -- frames --------------------------------------------------------------------------------

    def _put_doc(self, txn: Txn, key: bytes, doc: dict[str, Any]) -> None:
        raw = encoding.encode(doc, "remote state")
        txn.put(
            DB_REMOTE,
            key,
            self._frames.frame(RecordType.REMOTE_STATE, DB_REMOTE, key, raw, Codec.AUTO),
        )

    def _doc(self, txn: Txn, key: bytes) -> dict[str, Any] | None:
        value = txn.get(DB_REMOTE, key)
        if value is None:
            return None
        try:
            doc = encoding.decode(
                self._frames.unframe(DB_REMOTE, key, value, RecordType.REMOTE_STATE)
            )
        except CkdbError as err:
            raise IntegrityError(f"remote state {key[:8]!r}: {err}") from None
        if type(doc) is not dict:
            raise IntegrityError(f"remote state {key[:8]!r}: malformed")
        return doc

    # -- attachment ----------------------------------------------------------------------------

    def attached(self, txn: Txn) -> dict[str, Any] | None:
        return self._doc(txn, ATTACHED)

    def is_attached(self, txn: Txn) -> bool:
        return txn.get(DB_REMOTE, ATTACHED) is not None

    def attach(self, txn: Txn, uuid: bytes, url: str) -> None:
        self._put_doc(txn, ATTACHED, {"uuid": uuid, "url": url})

    def lease(self, txn: Txn) -> dict[str, Any] | None:
        try:
            return self._doc(txn, LEASE)
        except IntegrityError:
            return None  # a damaged lease is free

    def put_lease(self, txn: Txn, doc: dict[str, Any]) -> None:
        self._put_doc(txn, LEASE, doc)

    def drop_lease(self, txn: Txn) -> None:
        txn.delete(DB_REMOTE, LEASE)

    # -- changes ---------------------------------------------------------------------------------

    def changed(self, txn: Txn, wf_key: bytes, now_us: int) -> None:
        key = DIRTY + wf_key
        value = txn.get(DB_REMOTE, key)
        if value is not None and len(value) == DIRTY_VALUE.size:
            count, first = DIRTY_VALUE.unpack(value)
            txn.put(DB_REMOTE, key, DIRTY_VALUE.pack(count + 1, first))
        else:
            txn.put(DB_REMOTE, key, DIRTY_VALUE.pack(1, now_us))

    def tomb(self, txn: Txn, wf_key: bytes, cid: bytes) -> None:
        txn.put(DB_REMOTE, TOMB + wf_key + cid, b"")

    def dirty(self, txn: Txn) -> list[tuple[bytes, int, int]]:
        """(workflow key, change counter, oldest change µs) of every dirty workflow."""
        out = []
        for key, value in txn.range(DB_REMOTE, DIRTY, prefix_end(DIRTY)):
            if len(value) == DIRTY_VALUE.size:
                count, first = DIRTY_VALUE.unpack(value)
            else:  # a damaged mark: ship it anyway, once
                count, first = 0, 0
            out.append((bytes(key[len(DIRTY) :]), count, first))
        return out

    def dirty_of(self, txn: Txn, wf_key: bytes) -> tuple[int, int] | None:
        value = txn.get(DB_REMOTE, DIRTY + wf_key)
        if value is None:
            return None
        if len(value) != DIRTY_VALUE.size:
            return 0, 0
        count, first = DIRTY_VALUE.unpack(value)
        return int(count), int(first)

    def clear_dirty(self, txn: Txn, wf_key: bytes, count: int, since_us: int = 0) -> bool:
        """Clear the mark if no change came since ``count`` was read; True if cleared. Else the
        changes left were committed after ``since_us`` (when the shipped snapshot was read):
        the mark's oldest-change time moves up to it, so the lag counts from there."""
        now = self.dirty_of(txn, wf_key)
        if now is not None and now[0] == count:
            txn.delete(DB_REMOTE, DIRTY + wf_key)
            return True
        if now is not None and since_us > now[1]:
            txn.put(DB_REMOTE, DIRTY + wf_key, DIRTY_VALUE.pack(now[0], since_us))
        return False

    def tombs(self, txn: Txn, wf_key: bytes) -> set[bytes]:
        prefix = TOMB + wf_key
        return {
            bytes(k[len(prefix) :]) for k, _v in txn.range(DB_REMOTE, prefix, prefix_end(prefix))
        }

    def drop_tombs(self, txn: Txn, wf_key: bytes, cids: set[bytes]) -> None:
        for cid in cids:
            txn.delete(DB_REMOTE, TOMB + wf_key + cid)

    # -- cursor and fence ------------------------------------------------------------------------

    def cursor(self, txn: Txn, wf_key: bytes) -> Cursor | None:
        doc = self._doc(txn, CURSOR + wf_key)
        if doc is None:
            return None
        try:
            return Cursor(
                str(doc["wf"]), int(doc["epoch"]), int(doc["next"]), bytes(doc["prev"]),
                bytes(doc["live"]), int(doc["at"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise IntegrityError("remote cursor: malformed") from None

    def put_cursor(self, txn: Txn, wf_key: bytes, cursor: Cursor) -> None:
        self._put_doc(
            txn,
            CURSOR + wf_key,
            {"wf": cursor.workflow_id, "epoch": cursor.epoch, "next": cursor.next,
             "prev": cursor.prev, "live": cursor.live, "at": cursor.at},
        )  # fmt: skip

    def cursors(self, txn: Txn) -> list[tuple[bytes, Cursor]]:
        out = []
        for key, _value in txn.range(DB_REMOTE, CURSOR, prefix_end(CURSOR)):
            wf_key = bytes(key[len(CURSOR) :])
            cursor = self.cursor(txn, wf_key)
            if cursor is not None:
                out.append((wf_key, cursor))
        return out

    def fence(self, txn: Txn, wf_key: bytes) -> dict[str, Any] | None:
        return self._doc(txn, FENCE + wf_key)

    def is_fenced(self, txn: Txn, wf_key: bytes) -> bool:
        return txn.get(DB_REMOTE, FENCE + wf_key) is not None

    def put_fence(self, txn: Txn, wf_key: bytes, doc: dict[str, Any]) -> None:
        self._put_doc(txn, FENCE + wf_key, doc)

    def clear_fence(self, txn: Txn, wf_key: bytes) -> None:
        txn.delete(DB_REMOTE, FENCE + wf_key)

    def fences(self, txn: Txn) -> list[tuple[bytes, dict[str, Any]]]:
        out = []
        for key, _value in txn.range(DB_REMOTE, FENCE, prefix_end(FENCE)):
            doc = self._doc(txn, bytes(key))
            if doc is not None:
                out.append((bytes(key[len(FENCE) :]), doc))
        return out

    # -- blobs and chunk ids ---------------------------------------------------------------------

    def has_blob(self, txn: Txn, wf_key: bytes, rcid: bytes) -> bool:
        return txn.get(DB_REMOTE, BLOB + wf_key + rcid) is not None

    def add_blobs(self, txn: Txn, wf_key: bytes, rcids: set[bytes]) -> None:
        for rcid in rcids:
            txn.put(DB_REMOTE, BLOB + wf_key + rcid, b"")

    def forget_blobs(self, txn: Txn, wf_key: bytes, rcids: set[bytes]) -> None:
        for rcid in rcids:
            txn.delete(DB_REMOTE, BLOB + wf_key + rcid)

    def drop_blobs(self, txn: Txn, wf_key: bytes) -> None:
        prefix = BLOB + wf_key
        txn.delete_range(DB_REMOTE, prefix, prefix_end(prefix))

    def _cmap_tag(self, key: bytes, rcid: bytes, key_id: int) -> bytes:
        return tag(self._frames.keys.mac(key_id), b"cmap", DB_REMOTE, key, rcid)[:16]

    def remote_cid(self, txn: Txn, local_cid: bytes) -> bytes | None:
        """The remote content id of a local chunk, if recorded and its tag verifies (a damaged
        entry is recomputed by the caller, never trusted)."""
        key = CMAP + local_cid
        value = txn.get(DB_REMOTE, key)
        if value is None or len(value) != 50:
            return None
        rcid, key_id, stored = value[:32], int.from_bytes(value[32:34], "big"), value[34:]
        try:
            ok = hmac.compare_digest(self._cmap_tag(key, rcid, key_id), stored)
        except KeyError:
            return None
        return bytes(rcid) if ok else None

    def put_cmap(self, txn: Txn, pairs: dict[bytes, bytes]) -> None:
        active = self._frames.keys.active
        for local_cid, rcid in pairs.items():
            key = CMAP + local_cid
            value = rcid + active.to_bytes(2, "big") + self._cmap_tag(key, rcid, active)
            txn.put(DB_REMOTE, key, value)

    def frames_to_verify(self, txn: Txn) -> list[tuple[bytes, bytes]]:
        """(key, value) of every frame here (for scrub): attachment, cursors, fences."""
        return [
            (bytes(k), bytes(v))
            for k, v in txn.range(DB_REMOTE)
            if bytes(k).startswith((ATTACHED, CURSOR, FENCE, LEASE))
        ]
