"""A per-store memo of stored values whose verification succeeded, keyed by address.

Reading a frame or a registry entry always reads its bytes from the store. If they are
byte-for-byte the bytes that verified at the same address before (a tag check, decryption and,
for metadata, strict parsing), the result is the same: a tag is a deterministic function of the
key and those bytes, and data keys are never replaced (rotation adds keys; retired ones stay). So
a repeated read compares the bytes (``memcmp``) instead of recomputing the HMAC, and returns the
earlier result. Bytes that differ in any way, damage included, miss and are verified in full.

Only small records are kept: metadata (parsed), registry entries, workflow records and settings,
which listing, ``latest`` and retention planning read again and again; both the stored value and
what it verified to must fit in ``MAX_VALUE``. Payloads and chunks are verified on every read.
The memo is bounded in bytes (counting the stored value, the result and an overhead per entry)
and dropped whole when full. A registry entry and a workflow record that create's read-back just
verified in full (inside the write transaction) are added, so the next read compares.
"""

from __future__ import annotations

from typing import Any

MAX_VALUE = 4096  # bytes: larger values are never memoised
MAX_BYTES = 8 << 20  # the whole memo, counting ~160 bytes of overhead per entry
_OVERHEAD = 160


class Verified:
    __slots__ = ("_bytes", "_map")

    def __init__(self) -> None:
        self._map: dict[tuple[Any, ...], tuple[bytes, Any]] = {}
        self._bytes = 0

    def get(self, address: tuple[Any, ...], value: bytes) -> Any:
        """The earlier result for exactly ``value`` at ``address``, or None."""
        hit = self._map.get(address)
        if hit is not None and hit[0] == value:
            return hit[1]
        return None

    def put(self, address: tuple[Any, ...], value: bytes, result: Any, extra: int = 0) -> None:
        """Remember that ``value`` at ``address`` verified to ``result`` (never None);
        ``extra``: bytes the result holds (a decompressed body), for the bound."""
        size = len(value)
        if size > MAX_VALUE or extra > MAX_VALUE or type(value) is not bytes:
            return
        if self._bytes > MAX_BYTES:
            self.clear()
        self._map[address] = (value, result)
        self._bytes += size + extra + _OVERHEAD

    def clear(self) -> None:
        self._map = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._map)
