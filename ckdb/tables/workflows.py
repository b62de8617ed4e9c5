"""The ``workflows``, ``settings`` and ``marks`` sub-databases.

- ``workflows``: workflow key -> workflow record (record type 7): ``{id, next_seq, created_at,
  working_directory?}``. A damaged record is rebuilt by the next create (the registry decides the
  sequence), never trusted. In a store with ``INCOMPAT_SEQ_FLOOR`` the record is written only
  when it changes (not by every create): ``next_seq`` is then a floor, the next sequence being
  one past the newest registry entry or ``next_seq``, whichever is larger; deleting the newest
  entries raises it (``keep_past``), so a sequence is never handed out twice. That raise is
  also kept in ``settings`` (``seqfloor/<workflow key>``): a record lost to damage is rebuilt
  from it, so one damaged record never hands a deleted newest sequence out again.
- ``settings``: short names -> setting frames (record type 8): ``retention/<workflow key>`` (a
  workflow's own policy), leases, cursors (scrub, rotation), the monitor's lease.
- ``marks``: checkpoint id ‖ 0x00 -> mark frame (record type 9): why a checkpoint was marked;
  checkpoint id ‖ 0x01 -> damage frame (record type 9): the files of a checkpoint whose chunks
  scrub found damaged and kept the rest of (``{files, chunks, at}``: a *salvaged* checkpoint).
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from ckdb import encoding
from ckdb._env import Txn
from ckdb.errors import CkdbError, IntegrityError
from ckdb.layout import DB_MARKS, DB_SETTINGS, DB_WORKFLOWS, Codec, RecordType, prefix_end
from ckdb.meta import now_us
from ckdb.retention import RetentionPolicy
from ckdb.tables.frames import Frames

RETENTION_PREFIX = b"retention/"
#: settings key prefix of the second copy of a raised sequence floor (the record holds the first)
FLOOR_PREFIX = b"seqfloor/"


class Workflows:
    """Workflow records."""

    __slots__ = ("_frames", "_settings")

    def __init__(self, frames: Frames, settings: Settings) -> None:
        self._frames = frames
        self._settings = settings  # where the second copy of a sequence floor is kept

    def decode(self, key: bytes, value: bytes) -> dict[str, Any]:
        """A verified workflow record; IntegrityError if it is damaged or malformed."""
        try:
            doc = encoding.decode(
                self._frames.unframe(DB_WORKFLOWS, key, value, RecordType.WORKFLOW)
            )
        except CkdbError as err:
            raise IntegrityError(str(err)) from None
        if type(doc) is not dict or type(doc.get("id")) is not str:
            raise IntegrityError("malformed workflow record")
        if self._frames.keys.wf_key(doc["id"]) != key:
            raise IntegrityError("workflow record names another workflow")
        return doc

    def doc(self, txn: Txn, wf_key: bytes, workflow_id: str) -> dict[str, Any] | None:
        """The record of ``workflow_id``, None if there is none; IntegrityError if damaged."""
        raw = txn.get(DB_WORKFLOWS, wf_key)
        if raw is None:
            return None
        doc = encoding.decode(self._frames.unframe(DB_WORKFLOWS, wf_key, raw, RecordType.WORKFLOW))
        if type(doc) is not dict or type(doc.get("next_seq")) is not int:
            raise IntegrityError(f"workflow record of {workflow_id!r} is malformed")
        if doc.get("id") != workflow_id:
            raise IntegrityError(f"workflow record of {workflow_id!r} names another id")
        return doc

    def exists(self, txn: Txn, wf_key: bytes) -> bool:
        return txn.get(DB_WORKFLOWS, wf_key) is not None

    def frame(self, wf_key: bytes, raw: bytes) -> bytes:
        return self._frames.frame(RecordType.WORKFLOW, DB_WORKFLOWS, wf_key, raw, Codec.NONE)

    def remember(self, wf_key: bytes, frame: bytes, raw: bytes) -> None:
        """``frame`` was just verified in full to ``raw`` (create's read-back)."""
        self._frames.verified.put((DB_WORKFLOWS, wf_key, RecordType.WORKFLOW), frame, raw, len(raw))

    def put(self, txn: Txn, wf_key: bytes, doc: dict[str, Any]) -> None:
        txn.put(DB_WORKFLOWS, wf_key, self.frame(wf_key, encoding.encode(doc)))

    def fresh(self, txn: Txn, wf_key: bytes, workflow_id: str) -> dict[str, Any]:
        """A new record for a workflow whose record is missing or damaged. Its ``next_seq`` is
        the floor kept beside the record (``keep_past``), else 1; the registry's newest entry
        still decides above it."""
        return {"id": workflow_id, "next_seq": self.floor(txn, wf_key), "created_at": now_us()}

    def decode_floor(self, key: bytes, value: bytes) -> int:
        """A verified sequence floor (settings ``key``); IntegrityError if damaged or malformed."""
        try:
            doc = encoding.decode(self._frames.unframe(DB_SETTINGS, key, value, RecordType.SETTING))
        except CkdbError as err:
            raise IntegrityError(str(err)) from None
        if type(doc) is not dict or type(doc.get("next_seq")) is not int:
            raise IntegrityError("malformed sequence floor")
        return int(doc["next_seq"])

    def floor(self, txn: Txn, wf_key: bytes) -> int:
        """The sequence floor kept in ``settings`` (1 if none). A damaged one counts as none:
        the record or the registry decides (scrub reports and removes it)."""
        key = FLOOR_PREFIX + wf_key
        raw = self._settings.raw(txn, key)
        if raw is None:
            return 1
        try:
            return max(1, self.decode_floor(key, raw))
        except IntegrityError:
            return 1

    def clear_floor(self, txn: Txn, wf_key: bytes) -> None:
        self._settings.delete(txn, FLOOR_PREFIX + wf_key)

    def keep_past(self, txn: Txn, wf_key: bytes, seq: int) -> None:
        """Sequence ``seq`` was handed out and its entry deleted with no newer entry left: raise
        the floor past it, in the record and in ``settings`` (``seqfloor/<workflow key>``).
        Either copy alone keeps the sequence from coming back: a record lost to damage (scrub
        removes a damaged one) is rebuilt from the settings copy by ``fresh``. A damaged record
        is not overwritten here (scrub reports it)."""
        if self.floor(txn, wf_key) <= seq:
            self._settings.put(txn, FLOOR_PREFIX + wf_key, {"next_seq": seq + 1})
        raw = txn.get(DB_WORKFLOWS, wf_key)
        if raw is None:
            return
        try:
            doc = self.decode(wf_key, raw)
        except IntegrityError:
            return
        current = doc.get("next_seq")
        if type(current) is int and current > seq:
            return
        doc["next_seq"] = seq + 1
        self.put(txn, wf_key, doc)

    def names(self, txn: Txn) -> list[str]:
        """Every workflow id whose record verifies (damaged ones: scrub reports them)."""
        names = []
        for key, value in txn.range(DB_WORKFLOWS):
            try:
                doc = encoding.decode(
                    self._frames.unframe(DB_WORKFLOWS, key, value, RecordType.WORKFLOW)
                )
                names.append(str(doc["id"]))
            except (CkdbError, KeyError, TypeError):
                continue
        return names

    def delete(self, txn: Txn, wf_key: bytes) -> None:
        txn.delete(DB_WORKFLOWS, wf_key)


class Settings:
    """Setting frames by name: retention policies, leases, cursors."""

    __slots__ = ("_frames",)

    def __init__(self, frames: Frames) -> None:
        self._frames = frames

    def frame(self, key: bytes, doc: Any, codec: Codec = Codec.NONE) -> bytes:
        body = encoding.encode(doc)
        return self._frames.frame(RecordType.SETTING, DB_SETTINGS, key, body, codec)

    def put(self, txn: Txn, key: bytes, doc: Any) -> None:
        txn.put(DB_SETTINGS, key, self.frame(key, doc))

    def read(self, txn: Txn, key: bytes, *, memo: bool = True) -> Any:
        """The decoded setting at ``key`` (None if absent); IntegrityError if damaged."""
        raw = txn.get(DB_SETTINGS, key)
        if raw is None:
            return None
        unframe = self._frames.unframe if memo else self._frames.unframe_uncached
        return encoding.decode(unframe(DB_SETTINGS, key, raw, RecordType.SETTING))

    def policy(
        self, txn: Txn, wf_key: bytes, default: RetentionPolicy | None
    ) -> RetentionPolicy | None:
        """A workflow's own retention policy, else ``default``."""
        doc = self.read(txn, RETENTION_PREFIX + wf_key)
        if doc is None:
            return default
        return None if doc["policy"] is None else RetentionPolicy.from_doc(doc["policy"])

    def policy_frame(self, wf_key: bytes, policy: RetentionPolicy | None) -> tuple[bytes, bytes]:
        """(key, frame) of a workflow's own policy (None: no automatic retention)."""
        key = RETENTION_PREFIX + wf_key
        return key, self.frame(key, {"policy": None if policy is None else policy.to_doc()})

    def raw(self, txn: Txn, key: bytes) -> bytes | None:
        """An unframed setting (the scrub cursor is a plain value)."""
        return txn.get(DB_SETTINGS, key)

    def put_raw(self, txn: Txn, key: bytes, value: bytes) -> None:
        txn.put(DB_SETTINGS, key, value)

    def delete(self, txn: Txn, key: bytes) -> None:
        txn.delete(DB_SETTINGS, key)


MARK_REASON = b"\x00"
MARK_DAMAGE = b"\x01"


@frozen
class Damage:
    """What scrub's salvaging repair recorded of a checkpoint: its files whose chunks are
    damaged (manifest paths, bytes) and those chunks' content ids."""

    files: tuple[bytes, ...]
    chunks: tuple[bytes, ...]
    at_us: int


class Marks:
    """Why a checkpoint was marked corrupted, and which of its files are damaged."""

    __slots__ = ("_frames",)

    def __init__(self, frames: Frames) -> None:
        self._frames = frames

    def put(self, txn: Txn, cid: bytes, reason: str) -> None:
        self._put(txn, cid + MARK_REASON, {"reason": reason, "at": now_us()})

    def put_damage(self, txn: Txn, cid: bytes, files: list[bytes], chunks: list[bytes]) -> None:
        """Record a salvaged checkpoint's damaged files (the checkpoint is marked as well)."""
        doc = {"files": sorted(set(files)), "chunks": sorted(set(chunks)), "at": now_us()}
        self._put(txn, cid + MARK_DAMAGE, doc)

    def clear_damage(self, txn: Txn, cid: bytes) -> None:
        txn.delete(DB_MARKS, cid + MARK_DAMAGE)

    def damage(self, txn: Txn, cid: bytes) -> Damage | None:
        """The damage record of a salvaged checkpoint; None if it has none, or if the record
        itself does not verify (then the checkpoint is simply corrupted)."""
        key = cid + MARK_DAMAGE
        raw = txn.get(DB_MARKS, key)
        if raw is None:
            return None
        try:
            doc = encoding.decode(self._frames.unframe(DB_MARKS, key, raw, RecordType.MARK))
            files = tuple(bytes(f) for f in doc["files"])
            chunks = tuple(bytes(c) for c in doc["chunks"])
            at_us = int(doc["at"])
        except (CkdbError, KeyError, TypeError, ValueError):
            return None
        return Damage(files, chunks, at_us)

    def _put(self, txn: Txn, key: bytes, doc: dict[str, Any]) -> None:
        body = encoding.encode(doc)
        txn.put(DB_MARKS, key, self._frames.frame(RecordType.MARK, DB_MARKS, key, body, Codec.NONE))

    def delete(self, txn: Txn, cid: bytes) -> None:
        txn.delete_range(DB_MARKS, cid, prefix_end(cid))

    def delete_many(self, txn: Txn, cids: list[bytes]) -> None:
        txn.delete_prefixes(DB_MARKS, cids)

    def orphans(self, txn: Txn, live: set[bytes]) -> list[bytes]:
        return [bytes(k) for k, _v in txn.range(DB_MARKS) if bytes(k[:16]) not in live]
