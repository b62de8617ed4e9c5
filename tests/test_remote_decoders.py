"""Property tests for the remote's decoders (``ckdb.remote.format``): whatever bytes a bucket
holds, decoding raises only ckdb errors; documents with hostile field values are refused; valid
objects round-trip; any flipped bit of a framed object is detected."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ckdb import encoding
from ckdb.errors import CkdbError, IntegrityError, WrongKey
from ckdb.layout import RecordType
from ckdb.remote.format import (
    Claim,
    Segment,
    decode_claim,
    decode_segment,
    decode_snapshot,
    encode_claim,
    encode_segment,
    new_root,
    open_root,
    unpack_live,
)

MASTER = bytes(range(32))
ROOT, KEYS = new_root(MASTER, 1)
DECODERS = (decode_segment, decode_claim, decode_snapshot)

# JSON-ish values the codec accepts, for hostile documents.
leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=20), st.binary(max_size=40),
)  # fmt: skip
value = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                       max_size=4),
    max_leaves=20,
)  # fmt: skip
FIELDS = ["v", "kind", "wf", "seq", "epoch", "owner", "host", "batch", "prev", "at", "ops", "live"]


def _only_ckdb_errors(fn: Any, *args: Any) -> None:
    with contextlib.suppress(CkdbError):
        fn(*args)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_ckdb_errors(data: bytes) -> None:
    for decode in DECODERS:
        _only_ckdb_errors(decode, data, "wf/x/log/1")
    _only_ckdb_errors(open_root, MASTER, data)
    _only_ckdb_errors(unpack_live, data)
    _only_ckdb_errors(KEYS.unframe, "wf/x/log/1", data, RecordType.SEGMENT)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(FIELDS), value, max_size=12), st.booleans())
def test_hostile_documents_are_refused_never_half_parsed(doc: dict[str, Any], v1: bool) -> None:
    if v1:
        doc["v"] = 1
    try:
        raw = encoding.encode(doc, "doc")
    except CkdbError:
        return  # not even encodable
    for decode in DECODERS:
        try:
            out = decode(raw, "obj")
        except CkdbError:
            continue
        # Accepted: then every field has the type and range the protocol needs.
        assert out.epoch >= 1 and len(out.owner) == 16
        if isinstance(out, Segment):
            assert out.seq >= 1 and len(out.prev) == 32


segments = st.builds(
    Segment,
    kind=st.sampled_from(["log", "fence"]),
    wf=st.text(min_size=1, max_size=30),
    seq=st.integers(1, 2**40),
    epoch=st.integers(1, 2**20),
    owner=st.binary(min_size=16, max_size=16),
    host=st.text(max_size=20),
    batch=st.binary(min_size=16, max_size=16),
    prev=st.binary(min_size=32, max_size=32),
    at=st.integers(0, 2**62),
    ops=st.just(()),
)


@settings(max_examples=100)
@given(segments, st.data())
def test_segments_round_trip_and_every_bit_flip_is_caught(
    seg: Segment, data: st.DataObject
) -> None:
    key = "wf/ab/log/0000000000000001"
    raw = encode_segment(seg)
    assert decode_segment(raw, key) == seg
    obj = KEYS.frame(RecordType.SEGMENT, key, raw)
    assert KEYS.unframe(key, obj, RecordType.SEGMENT) == raw
    bit = data.draw(st.integers(0, len(obj) * 8 - 1))
    flipped = bytearray(obj)
    flipped[bit // 8] ^= 1 << (bit % 8)
    try:
        KEYS.unframe(key, bytes(flipped), RecordType.SEGMENT)
    except IntegrityError:
        pass
    else:
        raise AssertionError(f"bit {bit} flipped and the segment still verified")
    # Under another key (a swapped object) it does not verify either.
    try:
        KEYS.unframe("wf/ab/log/0000000000000002", obj, RecordType.SEGMENT)
    except IntegrityError:
        pass
    else:
        raise AssertionError("a segment verified under another object's key")


def test_claims_round_trip_and_the_root_needs_the_key() -> None:
    claim = Claim("wf", 3, b"o" * 16, "host", 7)
    assert decode_claim(encode_claim(claim), "c") == claim
    assert open_root(MASTER, ROOT).uuid == KEYS.uuid
    try:
        open_root(b"x" * 32, ROOT)
    except WrongKey:
        pass
    else:
        raise AssertionError("another key opened the root")
