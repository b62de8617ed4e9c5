"""Frames under the store's keyring: encode (tag, maybe encrypt) and verify, with the memo.

Every table of the record layer writes and reads its values through one :class:`Frames`, so the
keyring a rotation swaps in is seen by all of them at once, and the verified-bytes memo
(``verified.py``) is shared.
"""

from __future__ import annotations

from ckdb.codec import decode_frame, encode_frame
from ckdb.keys import Keyring
from ckdb.layout import Codec, RecordType
from ckdb.tables.verified import Verified

#: Small records read again and again (listing, ``latest``, retention): memoised once verified.
#: Metadata and registry entries have memo rules of their own (``checkpoints.py``).
MEMO_TYPES = frozenset((RecordType.WORKFLOW, RecordType.SETTING))


class Frames:
    """The keyring of one open store and the memo of values that verified under it."""

    __slots__ = ("keys", "verified")

    def __init__(self, keys: Keyring) -> None:
        self.keys = keys  # swapped whole by key rotation: read it once per operation
        self.verified = Verified()

    def frame(self, rtype: RecordType, db: bytes, key: bytes, raw: bytes, codec: Codec) -> bytes:
        """``raw`` as a frame at ``db``/``key``, tagged (and encrypted) under the active key."""
        k = self.keys  # one read: a concurrent rotate_key swaps the whole keyring
        return encode_frame(k.active_mac, k.active, rtype, db, key, raw, codec, k.active_aead)

    def unframe(self, db: bytes, key: bytes, value: bytes, expect: RecordType) -> bytes:
        """Verify (tag, decryption, length) and decompress the frame ``value`` read at
        ``db``/``key``. Byte-identical repeats of a small frame that verified are recognised
        by comparison (see ``verified.py``)."""
        if expect not in MEMO_TYPES:  # payloads and chunks: verified on every read
            k = self.keys
            return decode_frame(k.mac, db, key, value, expect, k.aead)
        address = (db, key, expect)
        raw: bytes | None = self.verified.get(address, value)
        if raw is None:
            k = self.keys
            raw = decode_frame(k.mac, db, key, value, expect, k.aead)
            self.verified.put(address, value, raw, len(raw))
        return raw

    def unframe_uncached(self, db: bytes, key: bytes, value: bytes, expect: RecordType) -> bytes:
        """Verify and decompress without the memo (values of another store's copy, leases)."""
        k = self.keys
        return decode_frame(k.mac, db, key, value, expect, k.aead)
