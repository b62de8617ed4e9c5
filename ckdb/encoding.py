"""State encoding: msgpack, strict, exact round trips. Never pickle.

Round-trips exactly: None, bool, int of any size (outside 64 bits as an extension type), float
(NaN, ±inf and -0.0 included), str, bytes, list, and dict (str keys; other scalar keys such as
int or bytes round-trip too). Everything else — tuples, sets, subclasses (IntEnum, OrderedDict),
datetimes, objects — is an :class:`InvalidInput` naming the path to the bad value, e.g.
``state.task.items[3]``. The choice of msgpack over orjson is measured in ``docs/design.md``.

Encoding takes a compiled fast path first: ormsgpack (Rust) with every ``OPT_PASSTHROUGH_*``
option, so that tuples, subclasses, datetimes, enums, dataclasses and UUIDs reach a ``default``
that refuses them. Its output is byte-identical to msgpack-python's for what it accepts (a
property test holds it to that). What it refuses -- non-str dict keys, nesting deeper than 255,
and every unsupported value -- goes to msgpack-python (``strict_types``), which encodes the first
two and names the path of the rest. 8 KiB agent state: 15.5 -> 3.8 µs
(docs/performance.md).

Decoding: neither compiled decoder is strict as is (msgspec turns timestamp extensions into
datetimes and array keys into tuples; ormsgpack ignores trailing bytes and refuses non-str keys:
``benchmarks/compiled_codecs.py``). Bodies up to ``FAST_DECODE_MAX`` go to ormsgpack wrapped as
the array ``[body, sentinel]``, where the sentinel is 16 random bytes drawn at import: its answer
is taken only if the sentinel comes back, which it cannot when the body is truncated or followed
by anything (trailing bytes would have to be this process's secret sentinel). Every refusal of
ormsgpack -- non-str keys, a timestamp or unknown extension (its ``ext_hook`` sees them), depth,
bad UTF-8 -- goes to msgpack-python, the reference decoder, which gives the answer or the
FormatError. Property tests hold the two paths to the same values and the same refusals. 8 KiB
state, six components: 25.1 -> 14.1 µs. Larger bodies stay on msgpack-python (the wrapping copy
and ormsgpack's copy of large bins cost more than it saves: a 1 MiB bin 44 -> 706 µs).
"""

from __future__ import annotations

import gc
import math
import secrets
import threading
from typing import Any

import msgpack
import ormsgpack

from ckdb.errors import FormatError, InvalidInput

_EXT_BIGINT = 1
_SCALARS = (type(None), bool, int, float, str, bytes)
_KEY_TYPES = (type(None), bool, int, float, str, bytes)


def _default(obj: object) -> object:
    if type(obj) is int:  # only reached when the int does not fit in 64 bits
        n: int = obj
        return msgpack.ExtType(
            _EXT_BIGINT, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)
        )
    raise TypeError(f"unsupported type {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> object:
    if code == _EXT_BIGINT:
        return int.from_bytes(data, "big", signed=True)
    raise FormatError(f"unknown msgpack extension type {code}")


_local = threading.local()


def _packer() -> Any:
    """One reused Packer per thread (a Packer is not thread-safe; creating one per call costs
    more than packing an 8 KiB state)."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = _new_packer()
    return packer


def _new_packer() -> Any:
    return msgpack.Packer(strict_types=True, use_bin_type=True, default=_default, datetime=False)


_FAST_OPTIONS = (
    ormsgpack.OPT_PASSTHROUGH_SUBCLASS
    | ormsgpack.OPT_PASSTHROUGH_TUPLE
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_UUID
    | ormsgpack.OPT_PASSTHROUGH_BIG_INT
)


def _refuse(obj: object) -> object:
    if type(obj) is int:  # only reached when the int does not fit in 64 bits
        n: int = obj
        return ormsgpack.Ext(_EXT_BIGINT, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))
    raise TypeError(type(obj).__name__)


def encode(value: object, path: str = "state") -> bytes:
    """Encode ``value``; on any unsupported value raise InvalidInput naming its path."""
    try:
        out: bytes = ormsgpack.packb(value, default=_refuse, option=_FAST_OPTIONS)
    except TypeError:
        out = _encode_strict(value, path)
    # Both encoders pack bytearray and memoryview as bin, so they would come back as bytes (a
    # silent change). Only output with a bin marker can hold one: walk then.
    if (b"\xc4" in out or b"\xc5" in out or b"\xc6" in out) and _has_buffer(value):
        raise InvalidInput(find_unsupported(value, path) or f"{path}: unsupported buffer type")
    return out


def _encode_strict(value: object, path: str) -> bytes:
    """msgpack-python: what the fast path refuses (non-str keys, deep nesting), and
    the InvalidInput naming the path of an unsupported value."""
    try:
        out: bytes = _packer().pack(value)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError, RecursionError) as err:
        bad = find_unsupported(value, path)
        raise InvalidInput(bad or f"{path}: cannot encode: {err}") from None
    return out


def _has_type(value: object, kind: type) -> bool:
    """Is there a ``kind`` anywhere in a decoded value (one nesting level at a time, in C)?"""
    level: list[Any] = [value]
    while level:
        kinds = set(map(type, level))
        if kind in kinds:
            return True
        if dict not in kinds and list not in kinds:
            return False
        level = gc.get_referents(*level)
    return False


def _has_buffer(value: object) -> bool:
    """Is there a bytearray or memoryview anywhere in ``value``, dict keys included?

    One nesting level at a time, traversed in C: ``gc.get_referents`` returns the items of
    lists and the keys and values of dicts (every dict, tracked by the collector or not), and
    ``set(map(type, ...))`` looks at them. Only exact dicts, lists and scalars reach this point
    (the packer refuses everything else first). 2-3x faster than a Python loop over every
    node (docs/performance.md), which matters at 1 MiB.
    """
    level: list[Any] = [value]
    while level:
        kinds = set(map(type, level))
        if bytearray in kinds or memoryview in kinds:
            return True
        if dict not in kinds and list not in kinds:
            return False
        level = gc.get_referents(*level)
    return False


FAST_DECODE_MAX = 64 << 10  # bytes: larger bodies go to msgpack-python directly
_SENTINEL = secrets.token_bytes(16)
_WRAP_HEAD = b"\x92"  # fixarray of 2: [body, sentinel]
_WRAP_TAIL = b"\xc4\x10" + _SENTINEL  # bin 8 of 16 bytes


def decode(data: bytes | memoryview) -> Any:
    """Decode strictly: ormsgpack for bodies up to FAST_DECODE_MAX when its answer is provably
    msgpack-python's (see the module docstring), msgpack-python otherwise."""
    if len(data) <= FAST_DECODE_MAX:
        try:
            pair = ormsgpack.unpackb(b"".join((_WRAP_HEAD, data, _WRAP_TAIL)), ext_hook=_ext_hook)
        except Exception:  # noqa: S110 - the reference decoder below gives the answer
            pass
        else:
            if pair[1] == _SENTINEL:
                return pair[0]
    return _decode_reference(data)


def _decode_reference(data: bytes | memoryview) -> Any:
    """msgpack-python, with the timestamp check: the answer or the FormatError for any body."""
    try:
        value = msgpack.unpackb(
            data, raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=True
        )
    except FormatError:
        raise
    except Exception as err:  # msgpack raises a zoo of classes on malformed input
        raise FormatError(f"malformed encoded value: {type(err).__name__}: {err}") from None
    # msgpack-python decodes the timestamp extension itself (ext_hook never sees it): ckdb never
    # writes one, so one is not data. Only bytes holding a timestamp header can carry one (a
    # header can also sit inside a string or a number): look at the value then.
    raw = data if type(data) is bytes else bytes(data)
    if b"\xff" in raw and _may_hold_timestamp(raw) and _has_type(value, msgpack.Timestamp):
        raise FormatError("malformed encoded value: a msgpack timestamp extension")
    return value


def _may_hold_timestamp(raw: bytes) -> bool:
    """Does ``raw`` hold a timestamp header (0xd6 0xff, 0xd7 0xff or 0xc7 0x0c 0xff)?

    One memchr per 0xff byte, then a look at the bytes before it. Encoded structure holds few
    0xff bytes (the 1 MiB agent state: 51), random bytes one in 256: past 32 plus one per 16 KiB
    the answer is "maybe" (such bodies are mostly bins, whose few nodes are cheap to walk; a
    body of 10,000 encoded -1s is the bad case: 62 -> 337 µs). A search for the headers
    themselves costs 0.9 µs per KiB (CPython's find for short needles is no memchr), and walking
    every decoded value 1 µs per KiB: either was +50% on decoding the 8 KiB state.
    """
    find = raw.find
    at = find(b"\xff", 1)
    budget = 32 + (len(raw) >> 14)
    while at > 0:
        before = raw[at - 1]
        if before in {0xD6, 0xD7} or (before == 0x0C and at > 1 and raw[at - 2] == 0xC7):
            return True
        budget -= 1
        if not budget:
            return True
        at = find(b"\xff", at + 1)
    return False


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def find_unsupported(value: object, path: str = "state", depth: int = 0) -> str | None:
    """The first unsupported value under ``value`` as ``"path: reason"``, or None."""
    if depth > 500:
        return f"{path}: nested more than 500 levels deep"
    kind = type(value)
    if kind is str:
        try:
            value.encode("utf-8")  # type: ignore[attr-defined]
        except UnicodeEncodeError:
            return f"{path}: str with a lone surrogate cannot be stored as UTF-8"
        return None
    if kind in _SCALARS:
        return None
    if kind is list:
        items: list[object] = value  # type: ignore[assignment]
        for i, item in enumerate(items):
            bad = find_unsupported(item, f"{path}[{i}]", depth + 1)
            if bad:
                return bad
        return None
    if kind is dict:
        for k, item in value.items():  # type: ignore[attr-defined]
            if type(k) not in _KEY_TYPES:
                return f"{path}: unsupported dict key ({_describe(k)})"
            if type(k) is str:
                bad = find_unsupported(k, f"{path}{{key}}", depth + 1)
                if bad:
                    return bad
                sub = f"{path}.{k}" if k.isidentifier() else f"{path}[{k!r}]"
            else:
                sub = f"{path}[{k!r}]"
            bad = find_unsupported(item, sub, depth + 1)
            if bad:
                return bad
        return None
    hint = ""
    if kind is tuple:
        hint = " (use a list)"
    elif kind in (set, frozenset):
        hint = " (use a sorted list)"
    elif isinstance(value, int | float | str | bytes | list | dict):
        hint = f" (a subclass of {kind.__mro__[1].__name__}; convert it to the plain type)"
    return f"{path}: unsupported value ({_describe(value)}){hint}"


def same(a: object, b: object) -> bool:
    """Exact equality as ckdb promises it: types match, NaN equals NaN, -0.0 is not 0.0, dict
    order and keys (NaN keys included) match. Iterative: any nesting depth."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if type(x) is float:
            fx, fy = float(x), float(y)  # type: ignore[arg-type]
            if math.isnan(fx) or math.isnan(fy):
                if not (math.isnan(fx) and math.isnan(fy)):
                    return False
            elif fx != fy or math.copysign(1.0, fx) != math.copysign(1.0, fy):
                return False
        elif type(x) is list:
            lx, ly = list(x), list(y)  # type: ignore[call-overload]
            if len(lx) != len(ly):
                return False
            stack.extend(zip(lx, ly, strict=True))
        elif type(x) is dict:
            ix = list(x.items())
            iy = list(y.items())  # type: ignore[attr-defined]
            if len(ix) != len(iy):
                return False
            for (kx, vx), (ky, vy) in zip(ix, iy, strict=True):
                stack.append((kx, ky))
                stack.append((vx, vy))
        elif x != y:
            return False
    return True
