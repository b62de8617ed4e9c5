"""The ``payloads`` sub-database: a checkpoint's component frames and its bundle.

Key: checkpoint id ‖ record type ‖ name (in an encrypted store a keyed digest of the name).
A component has a frame of its own, or (stores with bundles, stored size 0 in the metadata) a
slice of the checkpoint's bundle frame (record type 11, name ""). :class:`Payloads` reads both
layouts; every raw body it returns has passed its frame's tag, its size and its SHA-256 digest
from the metadata.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ckdb import encoding
from ckdb._env import Txn
from ckdb.capture import check_manifest
from ckdb.errors import FormatError, IntegrityError, InvalidInput
from ckdb.layout import DB_PAYLOADS, RecordType, id_to_text, prefix_end
from ckdb.meta import TYPE_NAMES, Meta
from ckdb.tables.frames import Frames


def label(rtype: RecordType, name: str) -> str:
    """How a finding names a payload: "the bundle", "component 'task'", ..."""
    return "the bundle" if rtype is RecordType.BUNDLE else f"{TYPE_NAMES[rtype]} {name!r}"


class PayloadTable:
    """Payload frames by (checkpoint, type, name)."""

    __slots__ = ("_frames",)

    def __init__(self, frames: Frames) -> None:
        self._frames = frames

    def key(self, cid: bytes, rtype: RecordType, name: str) -> bytes:
        return self._frames.keys.payload_key(cid, rtype, name)

    def frame(self, cid: bytes, rtype: RecordType, name: str, raw: bytes, codec: Any) -> bytes:
        return self._frames.frame(rtype, DB_PAYLOADS, self.key(cid, rtype, name), raw, codec)

    def reader(self, txn: Txn, cid: bytes, components: list[list[Any]]) -> Payloads:
        return Payloads(self._frames, txn, cid, components)

    def read_manifest(self, txn: Txn, cid: bytes) -> dict[str, Any] | None:
        """The checkpoint's verified, checked manifest; None if it has none."""
        key = self.key(cid, RecordType.MANIFEST, "files")
        value = txn.get(DB_PAYLOADS, key)
        if value is None:
            return None
        try:
            doc = encoding.decode(
                self._frames.unframe(DB_PAYLOADS, key, value, RecordType.MANIFEST)
            )
        except FormatError as err:
            raise IntegrityError(f"checkpoint {id_to_text(cid)}: manifest: {err}") from None
        return check_manifest(doc, id_to_text(cid))

    def address(self, meta: Meta, rtype: RecordType, name: str) -> bytes:
        """The key of the frame holding a component: its own frame, or the checkpoint's bundle
        (for tools, the demo and tests that look at stored bytes)."""
        for comp in meta.components:
            if comp[0] == rtype and comp[1] == name:
                in_bundle = comp[3] == 0
                where = RecordType.BUNDLE if in_bundle else rtype
                return self.key(meta.cid, where, "" if in_bundle else name)
        raise InvalidInput(
            f"checkpoint {id_to_text(meta.cid)} has no {rtype.name.lower()} {name!r}"
        )

    def delete_all(self, txn: Txn, cid: bytes) -> None:
        txn.delete_range(DB_PAYLOADS, cid, prefix_end(cid))

    def delete_many(self, txn: Txn, cids: list[bytes]) -> None:
        """Delete the payloads of sorted ``cids`` (one cursor, in key order)."""
        txn.delete_prefixes(DB_PAYLOADS, cids)

    def orphans(self, txn: Txn, live: set[bytes]) -> list[bytes]:
        """Payload keys whose checkpoint is not in ``live``."""
        return [bytes(k) for k, _v in txn.range(DB_PAYLOADS) if bytes(k[:16]) not in live]


class Payloads:
    """The payloads of one checkpoint inside one transaction: frames of their own, or slices of
    the checkpoint's bundle frame (read and verified once)."""

    __slots__ = ("_bundle", "_bundle_error", "_cid", "_components", "_frames", "_offsets", "_txn")

    def __init__(self, frames: Frames, txn: Txn, cid: bytes, components: list[list[Any]]) -> None:
        self._frames = frames
        self._txn = txn
        self._cid = cid
        self._components = components
        self._bundle: bytes | None = None
        self._bundle_error: IntegrityError | None = None
        self._offsets: dict[int, int] = {}
        at = 0
        for i, comp in enumerate(components):  # the metadata parser checked the layout
            if comp[0] == RecordType.BUNDLE:
                at = 0
            elif comp[3] == 0:
                self._offsets[i] = at
                at += comp[2]

    def raw(self, index: int) -> bytes:
        rtype_i, name, raw_size, _stored, digest = self._components[index]
        rtype = RecordType(rtype_i)
        offset = self._offsets.get(index)
        if offset is None:
            raw = self._bundle_raw() if rtype is RecordType.BUNDLE else self._frame(rtype, name)
        else:
            try:
                raw = self._bundle_raw()[offset : offset + raw_size]
            except IntegrityError as err:
                raise IntegrityError(f"{label(rtype, name)}: {err}") from None
        if len(raw) != raw_size or hashlib.sha256(raw).digest() != digest:
            raise IntegrityError(f"{label(rtype, name)}: digest mismatch")
        return raw

    def value(self, index: int) -> Any:
        """The decoded value of a component, resources, dependencies or manifest entry."""
        rtype_i, name = self._components[index][:2]
        raw = self.raw(index)
        try:
            return encoding.decode(raw)
        except FormatError as err:
            raise IntegrityError(f"{label(RecordType(rtype_i), name)}: {err}") from None

    def _frame(self, rtype: RecordType, name: str) -> bytes:
        key = self._frames.keys.payload_key(self._cid, rtype, name)
        value = self._txn.get(DB_PAYLOADS, key)
        if value is None:
            raise IntegrityError(f"{label(rtype, name)} is missing")
        return self._frames.unframe(DB_PAYLOADS, key, value, rtype)

    def _bundle_raw(self) -> bytes:
        if self._bundle_error is not None:  # read once: every component it holds fails alike
            raise self._bundle_error
        if self._bundle is None:
            entry = next(c for c in self._components if c[0] == RecordType.BUNDLE)
            try:
                raw = self._frame(RecordType.BUNDLE, "")
                if len(raw) != entry[2]:  # its digest is checked when the entry itself is read
                    raise IntegrityError("bundle: size mismatch")
            except IntegrityError as err:
                self._bundle_error = err
                raise
            self._bundle = raw
        return self._bundle
