"""msgpack-python, ormsgpack and msgspec on the benchmark's states: speed, and strictness.

    python -m benchmarks.compiled_codecs [--rounds 7]

Speed: median µs per call (``timeit``, ``--rounds`` rounds) of encoding and decoding the 8 KiB
and 1 MiB agent states of ``benchmarks/workloads.py``, whole and per component (a checkpoint
encodes and decodes each component separately). ``ckdb`` is ``ckdb.encoding`` as shipped (the
ormsgpack fast paths, the buffer check; "msgpack-python" is ckdb's reference decoder, with the
timestamp check; "canonical check" is the strict ormsgpack path measured and not kept).

Strictness: what each library does with inputs ckdb must refuse (encoding) or must not turn into
data (decoding). ckdb's rules are in ``ckdb/encoding.py``. A library that accepts any of them
cannot replace ckdb's encoder or decoder as is. Markdown to stdout.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import enum
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import msgpack
import msgspec
import ormsgpack

from benchmarks.workloads import agent_state
from ckdb import encoding

_DEC = msgspec.msgpack.Decoder()
_ENC = msgspec.msgpack.Encoder()


def _orm_hook(code: int, data: bytes) -> Any:
    if code == 1:
        return int.from_bytes(data, "big", signed=True)
    raise ValueError(f"extension {code}")


def _orm_checked(data: bytes) -> Any:
    """ormsgpack, accepted only when the value re-encodes to exactly ``data`` (that refuses
    trailing bytes; the reference decoder would take the rest)."""
    value = ormsgpack.unpackb(data, ext_hook=_orm_hook)
    if ormsgpack.packb(value, option=encoding._FAST_OPTIONS, default=encoding._refuse) != data:
        raise ValueError("not canonical")
    return value


ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "ckdb": encoding.encode,
    "msgpack-python strict": lambda v: encoding._packer().pack(v),
    "ormsgpack": ormsgpack.packb,
    "msgspec": _ENC.encode,
}
DECODERS: dict[str, Callable[[bytes], Any]] = {
    "ckdb": encoding.decode,
    "msgpack-python": encoding._decode_reference,
    "ormsgpack": ormsgpack.unpackb,
    "ormsgpack + canonical check": _orm_checked,
    "msgspec": _DEC.decode,
}


def _us(fn: Callable[[], Any], rounds: int) -> float:
    timer = timeit.Timer(fn)
    n, _ = timer.autorange()
    return statistics.median(timer.repeat(rounds, n)) / n * 1e6


def speed(rounds: int) -> None:
    print("| state | calls | " + " | ".join(f"enc {n}" for n in ENCODERS) + " |")
    print("|---|---|" + "---:|" * len(ENCODERS))
    states = {"8 KiB": agent_state(8 << 10), "1 MiB": agent_state(1 << 20)}
    for label, st in states.items():
        for how, parts in (("whole", [st]), ("per component", list(st.values()))):
            cells = [
                sum(_us(lambda p=p, f=f: f(p), rounds) for p in parts) for f in ENCODERS.values()
            ]
            print(f"| {label} | {how} | " + " | ".join(f"{c:,.1f}" for c in cells) + " |")
    print()
    print("| state | calls | " + " | ".join(f"dec {n}" for n in DECODERS) + " |")
    print("|---|---|" + "---:|" * len(DECODERS))
    for label, st in states.items():
        for how, parts in (("whole", [st]), ("per component", list(st.values()))):
            blobs = [encoding.encode(p) for p in parts]
            cells = [
                sum(_us(lambda b=b, f=f: f(b), rounds) for b in blobs) for f in DECODERS.values()
            ]
            print(f"| {label} | {how} | " + " | ".join(f"{c:,.1f}" for c in cells) + " |")
    print()


class _Int(enum.IntEnum):
    A = 1


REFUSE_ON_ENCODE: dict[str, Any] = {
    "tuple": (1, 2),
    "set": {1},
    "IntEnum": _Int.A,
    "OrderedDict": collections.OrderedDict(a=1),
    "datetime": datetime.datetime(2026, 1, 1),
    "bytearray": bytearray(b"x"),
    "str subclass": type("S", (str,), {})("a"),
}
NOT_DATA_ON_DECODE: dict[str, bytes] = {
    "timestamp extension (-1)": msgpack.packb(msgpack.Timestamp(1, 0)),
    "unknown extension (5)": msgpack.packb(msgpack.ExtType(5, b"ab")),
    "array as a map key": b"\x81\x91\x01\x02",
    "trailing bytes": msgpack.packb(1) + b"\x01",
    "truncated": msgpack.packb("abcdef")[:-2],
}
KEEP_ON_DECODE: dict[str, bytes] = {"int map key": msgpack.packb({1: 2})}


def _outcome(fn: Callable[[], Any]) -> str:
    try:
        got = fn()
    except Exception as err:
        return f"refused ({type(err).__name__})"
    return f"accepted: {type(got).__name__}"


def strictness() -> None:
    print("| encoding this (ckdb refuses) | " + " | ".join(ENCODERS) + " |")
    print("|---|" + "---|" * len(ENCODERS))
    for label, value in REFUSE_ON_ENCODE.items():
        cells = [_outcome(lambda f=f, v=value: f({"v": v})) for f in ENCODERS.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print("| decoding this | " + " | ".join(DECODERS) + " |")
    print("|---|" + "---|" * len(DECODERS))
    for label, data in {**NOT_DATA_ON_DECODE, **KEEP_ON_DECODE}.items():
        want = "(must decode)" if label in KEEP_ON_DECODE else "(must refuse)"
        cells = [_outcome(lambda f=f, d=data: f(d)) for f in DECODERS.values()]
        print(f"| {label} {want} | " + " | ".join(cells) + " |")
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    print(
        f"msgpack {'.'.join(map(str, msgpack.version))}, ormsgpack {ormsgpack.__version__}, "
        f"msgspec {msgspec.__version__}; median µs per call\n"
    )
    speed(args.rounds)
    strictness()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
