"""Every supported value round-trips exactly through create -> reopen -> load; unsupported values
are rejected with their path named and nothing written."""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ckdb
from ckdb.encoding import _decode_reference, _default, _encode_strict, decode, encode, same
from ckdb.errors import FormatError
from tests import strategies

EDGE_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64,
    -(2**63) - 1,
    2**1000,
    -(2**1000),
    0.0,
    -0.0,
    1.5,
    float("inf"),
    float("-inf"),
    float("nan"),
    5e-324,
    1.7976931348623157e308,
    "",
    "plain",
    "ünïcødé ✓ 𝄞",
    "\x00 inside",
    b"",
    b"\x00\xff" * 100,
    [],
    {},
    [[[]]],
    {"nested": {"list": [1, "two", b"3", None, 4.5]}},
    {"a" * 1000: "long key"},
    list(range(1000)),
    "x" * 100_000,
    b"\x01" * 300_000,
]


@pytest.mark.parametrize("value", EDGE_VALUES, ids=lambda v: type(v).__name__ + repr(v)[:20])
def test_edge_values_round_trip_through_reopen(store_path: Path, value: object) -> None:
    with ckdb.open(store_path) as s:
        info = s.create("wf", "p", state={"v": value}, resources=value, dependencies={"d": value})
    with ckdb.open(store_path) as s:
        ck = s.load(info.id)
    assert same(ck.state["v"], value)
    assert same(ck.resources, value)
    assert same(ck.dependencies, {"d": value})


def test_floats_keep_their_bits(store: ckdb.Store) -> None:
    info = store.create("wf", "p", state={"f": [-0.0, float("nan"), float("inf")]})
    got = store.load(info.id).state["f"]
    assert math.copysign(1.0, got[0]) == -1.0
    assert math.isnan(got[1])
    assert got[2] == float("inf")


def test_bool_and_int_stay_distinct(store: ckdb.Store) -> None:
    info = store.create("wf", "p", state={"x": [True, 1, False, 0]})
    got = store.load(info.id).state["x"]
    assert [type(v) for v in got] == [bool, int, bool, int]


def test_str_and_bytes_stay_distinct(store: ckdb.Store) -> None:
    info = store.create("wf", "p", state={"x": ["abc", b"abc"]})
    assert store.load(info.id).state["x"] == ["abc", b"abc"]
    assert [type(v) for v in store.load(info.id).state["x"]] == [str, bytes]


def test_dict_order_is_kept(store: ckdb.Store) -> None:
    value = {"z": 1, "a": 2, "m": 3}
    info = store.create("wf", "p", state={"x": value})
    assert list(store.load(info.id).state["x"]) == ["z", "a", "m"]


def test_uncompressed_and_lz4_round_trip(store: ckdb.Store) -> None:
    value = {"text": "agent said " * 5000}
    for compression in (False, True, "lz4", "zstd", "none"):
        info = store.create("wf", "p", state={"x": value}, compression=compression)
        assert store.load(info.id).state["x"] == value


class Color(enum.IntEnum):
    RED = 1


class Thing:
    pass


@pytest.mark.parametrize(
    ("state", "path"),
    [
        ({"task": {"items": [1, 2, 3, (4, 5)]}}, "state.task.items[3]"),
        ({"task": {"s": {1, 2}}}, "state.task.s"),
        ({"task": {"when": datetime.now(UTC)}}, "state.task.when"),
        ({"agent": Thing()}, "state.agent"),
        ({"progress": {"color": Color.RED}}, "state.progress.color"),
        ({"progress": Decimal("1.5")}, "state.progress"),
        ({"cfg": OrderedDict(a=1)}, "state.cfg"),
        ({"cfg": {"bad": "\ud800"}}, "state.cfg.bad"),
        ({"cfg": {(1, 2): "tuple key"}}, "state.cfg"),
        ({"cfg": {"my key": [frozenset()]}}, "state.cfg['my key'][0]"),
    ],
)
def test_unsupported_values_name_the_path_and_write_nothing(
    store: ckdb.Store, state: dict[str, object], path: str
) -> None:
    before = store.stats()
    with pytest.raises(ckdb.InvalidInput) as excinfo:
        store.create("wf", "p", state=state)
    assert str(excinfo.value).startswith(path + ":"), str(excinfo.value)
    assert store.stats()["checkpoints"] == before["checkpoints"]
    assert store.list() == []
    assert store.workflows() == []


def test_unsupported_resources_and_dependencies_are_rejected(store: ckdb.Store) -> None:
    with pytest.raises(ckdb.InvalidInput, match=r"^resources\.gpu:"):
        store.create("wf", "p", resources={"gpu": (1,)})
    with pytest.raises(ckdb.InvalidInput, match=r"^dependencies\[0\]:"):
        store.create("wf", "p", dependencies=[{1, 2}])
    assert store.list() == []


@given(strategies.values)
def test_encoding_round_trips_every_supported_value(value: object) -> None:
    assert same(decode(encode(value)), value)


@given(st.data())
def test_store_round_trips_generated_state(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("rt") / "s"
    state = data.draw(strategies.state)
    resources = data.draw(strategies.values)
    with ckdb.open(path) as s:
        info = s.create("wf", "p", state=state, resources=resources)
    with ckdb.open(path) as s:
        ck = s.load(info.id)
    assert same(ck.state, state)
    assert same(ck.resources, resources)


@given(strategies.values)
def test_the_compiled_fast_path_writes_the_bytes_msgpack_python_writes(value: object) -> None:
    """``encode`` takes ormsgpack first; what it writes must be exactly what the strict
    msgpack-python encoder writes (the format, and every stored digest, depend on it)."""
    assert encode(value) == _encode_strict(value, "state")


@pytest.mark.parametrize("seconds", [1, 1 << 33, -1])
def test_a_msgpack_timestamp_is_not_data(seconds: int) -> None:
    """msgpack-python decodes the timestamp extension by itself; ckdb never writes one, so a
    value holding one (any of its three sizes) is a FormatError, not a Timestamp."""
    data = msgpack.packb({"at": [msgpack.Timestamp(seconds, 5)]})
    with pytest.raises(FormatError, match="timestamp"):
        decode(data)
    # The same two bytes inside a string or bytes value are data.
    assert decode(encode({"s": "\xd6\xff", "b": b"\xd6\xff\xc7\x0c\xff"})) == {
        "s": "\xd6\xff",
        "b": b"\xd6\xff\xc7\x0c\xff",
    }


@given(
    strategies.values,
    st.sampled_from([1, 1 << 33, -1]),
    st.integers(min_value=0, max_value=3000),
    st.binary(max_size=40_000),
)
def test_a_timestamp_is_found_among_any_other_bytes(
    value: object, seconds: int, minus_ones: int, noise: bytes
) -> None:
    """The timestamp check looks at 0xff bytes one by one up to a budget, then walks the value:
    a timestamp after many 0xff bytes (encoded -1s, random bytes) is refused as well, and the
    same value without it decodes."""
    doc = {"v": value, "ones": [-1] * minus_ones, "noise": noise}
    assert same(decode(encode(doc)), doc)
    doc["at"] = msgpack.Timestamp(seconds, 5)
    with pytest.raises(FormatError, match="timestamp"):
        decode(msgpack.packb(doc, default=_default))


@given(strategies.values)
def test_the_fast_decoder_returns_what_the_reference_decoder_returns(value: object) -> None:
    data = encode(value)
    assert same(decode(data), _decode_reference(data))


@given(
    st.binary(max_size=4096)
    | strategies.values.map(encode).map(lambda b: b + b"\x00")
    | strategies.values.map(encode).map(lambda b: b[:-1])
)
def test_the_fast_decoder_refuses_what_the_reference_decoder_refuses(data: bytes) -> None:
    """Arbitrary bytes, valid encodings with a trailing byte, truncated ones: the two decoders
    agree on every input, value for value or FormatError for FormatError."""
    try:
        expected = _decode_reference(data)
    except FormatError:
        with pytest.raises(FormatError):
            decode(data)
    else:
        assert same(decode(data), expected)


@pytest.mark.parametrize(
    "tail",
    [b"\x00", b"\xc0", b"\xc4\x10" + b"\x00" * 16, b"\xc4\x10"],
    ids=["zero", "nil", "a-sentinel-shaped-bin", "a-bin-header"],
)
def test_trailing_bytes_are_refused_by_both_paths(tail: bytes) -> None:
    """ormsgpack ignores trailing bytes on its own; the sentinel wrapping must not: anything
    after a complete value is a FormatError, whatever it looks like."""
    body = encode({"a": [1, 2, 3], "b": b"x" * 100})
    assert decode(body) == {"a": [1, 2, 3], "b": b"x" * 100}
    with pytest.raises(FormatError):
        decode(body + tail)
    with pytest.raises(FormatError):
        decode(body[:-1])
