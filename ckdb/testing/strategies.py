"""Hypothesis strategies for what ckdb stores (needs ``pip install 'ckdb[testing]'``).

- :func:`state_values`: nested values ckdb round-trips exactly: None, bool, int of any size,
  float (NaN, ±inf and -0.0 included), str without lone surrogates, bytes, list, dict with str
  keys. Compare with :func:`same_value` (NaN equals NaN, -0.0 differs from 0.0).
- :func:`states`: the ``state=`` mapping of ``Store.create`` (component name -> value).
- :func:`workflow_ids`, :func:`phases`, :func:`names`: non-empty, at most 200 UTF-8 bytes, no NUL.
- :func:`file_trees`: small directory trees as :class:`~ckdb.testing.trees.FileTree` values;
  ``tree.materialize(path)`` writes one.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from hypothesis import strategies as st

from ckdb.testing.runner import same_result
from ckdb.testing.trees import FileTree

__all__ = [
    "MAX_NAME_BYTES",
    "file_trees",
    "names",
    "phases",
    "same_value",
    "scalars",
    "state_values",
    "states",
    "text",
    "workflow_ids",
]

#: ckdb's bound on workflow ids, phases, component and checkpoint names (UTF-8 bytes).
MAX_NAME_BYTES = 200

_CHARS = st.characters(codec="utf-8")  # lone surrogates have no UTF-8 form
_NAME_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")


def same_value(a: Any, b: Any) -> bool:
    """Exact equality of ckdb values: NaN equals NaN, -0.0 is not 0.0, True is not 1."""
    return same_result(a, b)


def text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Any Unicode text ckdb can store (no lone surrogates)."""
    return st.text(_CHARS, max_size=max_size)


def scalars(max_bytes: int = 64) -> st.SearchStrategy[Any]:
    """None, bool, int (beyond 64 bits too), float (NaN, ±inf, -0.0), str, bytes."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**200), max_value=2**200),
        st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, float("inf"), float("-inf"), float("nan")]),
        text(),
        st.binary(max_size=max_bytes),
    )


def state_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Nested lists and dicts (str keys) of :func:`scalars`."""
    return st.recursive(
        scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.dictionaries(text(), children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


def names(max_bytes: int = MAX_NAME_BYTES) -> st.SearchStrategy[str]:
    """Non-empty text without NUL, at most ``max_bytes`` in UTF-8 (ckdb's name rules)."""
    short = st.text(_NAME_CHARS, min_size=1, max_size=max(1, max_bytes // 4))
    if max_bytes < 8:
        return short.filter(lambda s: len(s.encode("utf-8")) <= max_bytes)
    # At the bound too: ASCII up to exactly max_bytes, and multi-byte text cut to fit.
    ascii_long = st.text(
        st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=max_bytes
    )
    wide = st.text(_NAME_CHARS, min_size=1, max_size=max_bytes).map(lambda s: _fit(s, max_bytes))
    return st.one_of(short, ascii_long, wide)


def _fit(value: str, max_bytes: int) -> str:
    out = []
    size = 0
    for ch in value:
        n = len(ch.encode("utf-8"))
        if size + n > max_bytes:
            break
        out.append(ch)
        size += n
    return "".join(out) or "x"


def workflow_ids() -> st.SearchStrategy[str]:
    """Workflow ids ckdb accepts."""
    return names()


def phases() -> st.SearchStrategy[str]:
    """Phase names ckdb accepts."""
    return names()


def states(max_components: int = 5, max_leaves: int = 30) -> st.SearchStrategy[dict[str, Any]]:
    """A ``state=`` mapping for ``Store.create``: component name -> :func:`state_values`."""
    return st.dictionaries(names(), state_values(max_leaves), max_size=max_components)


_FILE_NAME_CHARS = st.one_of(
    st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_. "),
    st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF, exclude_categories=["Cs", "Cc"]),
)


def _file_name() -> st.SearchStrategy[str]:
    # Portable: NFC, no "/" or NUL, not "." or "..", at most 255 bytes (12 chars * 4).
    return (
        st.text(_FILE_NAME_CHARS, min_size=1, max_size=12)
        .map(lambda s: unicodedata.normalize("NFC", s))
        .filter(lambda s: s not in (".", "..") and "/" not in s)
    )


def _contents(max_file_size: int) -> st.SearchStrategy[bytes]:
    small = st.binary(max_size=min(256, max_file_size))
    # Repetitive larger files: exercise chunking and compression without slow generation.
    large = st.builds(
        lambda unit, n: (unit * n)[:max_file_size],
        st.binary(min_size=1, max_size=16),
        st.integers(1, max(1, max_file_size // 4)),
    )
    return st.one_of(small, large) if max_file_size > 256 else small


def file_trees(
    max_files: int = 8, max_depth: int = 3, max_file_size: int = 64 * 1024
) -> st.SearchStrategy[FileTree]:
    """Small directory trees (files, nested and empty directories) as :class:`FileTree`.
    Names in one directory are unique ignoring case, so a tree also fits case-insensitive file
    systems."""

    def directory(depth: int) -> st.SearchStrategy[dict[str, object]]:
        child: st.SearchStrategy[object] = _contents(max_file_size)
        if depth < max_depth:
            child = st.one_of(_contents(max_file_size), st.deferred(lambda: directory(depth + 1)))
        entries = st.lists(
            st.tuples(_file_name(), child),
            max_size=max_files,
            unique_by=lambda e: e[0].casefold(),
        )
        return entries.map(dict)

    return directory(1).map(FileTree.from_nested)
