"""Hypothesis strategies shared by the tests."""

from __future__ import annotations

from hypothesis import strategies as st

#: Text that ckdb can store (no lone surrogates: they have no UTF-8 form).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # any size: beyond 64 bits they take msgpack's extension path
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=64),
)

#: Everything ckdb promises to round-trip exactly.
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(text, children, max_size=6),
    ),
    max_leaves=30,
)

names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=30,
)

state = st.dictionaries(names, values, max_size=5)
