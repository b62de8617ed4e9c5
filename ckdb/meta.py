"""The checkpoint metadata document: strict parsing (a hostile field is an IntegrityError),
the integrity digest over component digests, and times."""

from __future__ import annotations

import functools
import hashlib
import struct
import time
from datetime import UTC, datetime
from typing import Any

from attrs import field, frozen

from ckdb import encoding
from ckdb.errors import FormatError, IntegrityError, InvalidInput
from ckdb.layout import (
    FLAG_MARKED,
    FLAG_PINNED,
    ID_SIZE,
    RecordType,
    id_to_text,
)
from ckdb.records import (
    KINDS,
    STATUS_CORRUPTED,
    STATUS_VALID,
    CheckpointInfo,
    ComponentInfo,
)

METADATA_VERSION = 1

TYPE_NAMES = {
    RecordType.COMPONENT: "component",
    RecordType.RESOURCES: "resources",
    RecordType.DEPENDENCIES: "dependencies",
    RecordType.MANIFEST: "manifest",
    RecordType.BUNDLE: "bundle",
}
_DIGEST_PART = struct.Struct(">BH")
_MISSING = object()
_PAYLOAD_TYPE_VALUES = frozenset(int(t) for t in TYPE_NAMES)
TYPE_NAME_OF = {int(t): name for t, name in TYPE_NAMES.items()}


def now_us() -> int:
    return time.time_ns() // 1000


MAX_TIME_US = 253402300799999999  # 9999-12-31T23:59:59.999999Z: the last datetime Python has


def datetime_of(us: int) -> datetime:
    if not 0 <= us <= MAX_TIME_US:
        raise IntegrityError(f"timestamp {us} µs is out of range")
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def aware_us(value: datetime | None, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime, not {value!r}")
    return int(value.timestamp() * 1_000_000)


def integrity_digest(cid: bytes, components: list[list[Any]]) -> bytes:
    """The checkpoint's digest over its component digests (the seed's ``integrity_hash``)."""
    h = hashlib.sha256(b"ckdb/v1/integrity")
    h.update(cid)
    for rtype, name, _raw, _stored, digest in components:
        raw_name = name.encode("utf-8")
        h.update(_DIGEST_PART.pack(rtype, len(raw_name)))
        h.update(raw_name)
        h.update(digest)
    return h.digest()


_FIELD_TYPES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("name", (str, type(None))),
    ("parent", (bytes, type(None))),
    ("id", (bytes,)),
    ("integrity", (bytes,)),
    ("seq", (int,)),
    ("created_at", (int,)),
    ("components", (list,)),
    ("kind", (str,)),
    ("workflow_id", (str,)),
    ("phase", (str,)),
    ("created_by", (str,)),
)
_BUNDLE = int(RecordType.BUNDLE)


def _bad_field(doc: dict[str, Any]) -> str:
    """Which field of a metadata document has the wrong type (for the error message)."""
    for name, kinds in _FIELD_TYPES:
        value = doc.get(name, _MISSING)
        if type(value) not in kinds:
            return f"field {name!r} is {type(value).__name__}"
    return "malformed field"  # pragma: no cover - only called when one field is wrong


def _check_bundle(components: list[list[Any]], where: object) -> None:
    """The bundle rules (docs/format.md): at most one bundle entry, named "", before every
    state component it holds (stored size 0, in bundle order), whose raw sizes add up to its
    raw size; every other entry has a frame of its own (stored size > 0)."""
    bundle: list[Any] | None = None
    inside = 0
    for comp in components:
        if comp[0] == RecordType.BUNDLE:
            if bundle is not None or comp[1] != "" or comp[3] == 0:
                raise IntegrityError(f"{where}: malformed bundle entry")
            bundle = comp
        elif comp[3] == 0:
            if bundle is None or comp[0] != RecordType.COMPONENT:
                raise IntegrityError(f"{where}: component {comp[1]!r} has no frame")
            inside += comp[2]
    if bundle is not None and (bundle[2] != inside or inside == 0):
        raise IntegrityError(f"{where}: bundle size does not match its components")


class _LazyWhere:
    """An error-message prefix formatted only when an error is raised (parse is on the hot path)."""

    __slots__ = ("cid",)

    def __init__(self, cid: bytes) -> None:
        self.cid = cid

    def __format__(self, spec: str) -> str:
        return f"checkpoint {id_to_text(self.cid)}: malformed metadata"

    def __str__(self) -> str:
        return format(self, "")


_RTYPES = {int(t): t for t in RecordType}


@frozen
class Meta:
    """A decoded, verified metadata frame."""

    cid: bytes
    workflow_id: str
    phase: str
    kind: str
    name: str | None
    created_us: int
    created_by: str
    seq: int
    parent: bytes | None
    components: list[list[Any]]
    integrity: bytes
    _infos: dict[tuple[int | str, str | None], Any] = field(factory=dict, eq=False, repr=False)

    @staticmethod
    def parse_cached(cid: bytes, raw: bytes) -> Meta:
        """``parse`` memoised on the exact (already tag-verified) bytes: listing the same
        checkpoints again skips decoding, never verification, which the caller did."""
        return _parse_cached(cid, raw)

    @classmethod
    def parse(cls, cid: bytes, raw: bytes) -> Meta:
        """Decode and type-check a metadata document: hostile fields are IntegrityErrors."""
        where = _LazyWhere(cid)
        try:
            doc = encoding.decode(raw)
        except FormatError as err:
            raise IntegrityError(f"{where}: {err}") from None
        if type(doc) is not dict:
            raise IntegrityError(f"{where}: not a map")

        get = doc.get
        name_value = get("name", _MISSING)
        parent = get("parent", _MISSING)
        mid = get("id", _MISSING)
        integrity = get("integrity", _MISSING)
        seq = get("seq", _MISSING)
        created = get("created_at", _MISSING)
        comps = get("components", _MISSING)
        kind = get("kind", _MISSING)
        workflow_id = get("workflow_id", _MISSING)
        phase = get("phase", _MISSING)
        created_by = get("created_by", _MISSING)
        if not (
            type(mid) is bytes
            and type(integrity) is bytes
            and type(seq) is int
            and type(created) is int
            and type(comps) is list
            and type(kind) is str
            and type(workflow_id) is str
            and type(phase) is str
            and type(created_by) is str
            and (name_value is None or type(name_value) is str)
            and (parent is None or type(parent) is bytes)
        ):
            raise IntegrityError(f"{where}: {_bad_field(doc)}")
        components: list[list[Any]] = []
        bundled = False
        for comp in comps:
            if type(comp) is not list or len(comp) != 5:
                raise IntegrityError(f"{where}: malformed component entry")
            rtype, cname, raw_size, stored, digest = comp
            if (
                type(rtype) is not int
                or rtype not in _PAYLOAD_TYPE_VALUES
                or type(cname) is not str
                or type(raw_size) is not int
                or type(stored) is not int
                or type(digest) is not bytes
                or len(digest) != 32
                or raw_size < 0
                or stored < 0
            ):
                raise IntegrityError(f"{where}: malformed component entry")
            if stored == 0 or rtype == _BUNDLE:
                bundled = True
            components.append(comp)
        if bundled:
            _check_bundle(components, where)
        if len(mid) != ID_SIZE or (parent is not None and len(parent) != ID_SIZE):
            raise IntegrityError(f"{where}: malformed id")
        if len(integrity) != 32 or seq < 1 or not 0 <= created <= MAX_TIME_US:
            raise IntegrityError(f"{where}: field out of range")
        if kind not in KINDS:
            raise IntegrityError(f"{where}: unknown kind {kind!r}")
        meta = cls(
            mid,
            workflow_id,
            phase,
            kind,
            name_value,
            created,
            created_by,
            seq,
            parent,
            components,
            integrity,
        )
        if meta.cid != cid:
            raise IntegrityError(
                f"checkpoint {id_to_text(cid)}: metadata belongs to {id_to_text(meta.cid)}"
            )
        return meta

    def integrity_ok(self) -> bool:
        """Does the integrity digest match the component digests? (computed once per parse)"""
        ok = self._infos.get(("integrity", None))
        if ok is None:
            ok = self._infos[("integrity", None)] = integrity_digest(self.cid, self.components) == (
                self.integrity
            )
        return bool(ok)

    def info(self, flags: int, status: str | None = None) -> CheckpointInfo:
        key = (flags, status)
        got = self._infos.get(key)
        if got is None:
            got = self._info(flags, status)
            self._infos[key] = got
        return got

    def _info(self, flags: int, status: str | None) -> CheckpointInfo:
        comps = []
        raw_total = stored_total = 0
        for rtype, cname, raw_size, stored, digest in self.components:
            comps.append(
                ComponentInfo(
                    TYPE_NAME_OF.get(rtype) or str(rtype), cname, raw_size, stored, digest.hex()
                )
            )
            if rtype != _BUNDLE:
                raw_total += raw_size
            stored_total += stored
        if status is None:
            status = STATUS_CORRUPTED if flags & FLAG_MARKED else STATUS_VALID
        return CheckpointInfo(
            id=id_to_text(self.cid),
            workflow_id=self.workflow_id,
            phase=self.phase,
            kind=self.kind,
            name=self.name,
            created_at=datetime_of(self.created_us),
            created_by=self.created_by,
            sequence=self.seq,
            parent_id=None if self.parent is None else id_to_text(self.parent),
            pinned=bool(flags & FLAG_PINNED),
            status=status,
            raw_size=raw_total,
            stored_size=stored_total,
            integrity=self.integrity.hex(),
            components=tuple(comps),
        )


@functools.lru_cache(maxsize=8192)
def _parse_cached(cid: bytes, raw: bytes) -> Meta:
    return Meta.parse(cid, raw)
