"""Damage on purpose: flip one bit of a stored value, to drill that corruption is caught.

For drills and demos (``ckdb demo`` uses it): the public API never writes damaged data, so this
reaches into the store's record layer (``Store.tables``) and writes the bytes raw.
"""

from __future__ import annotations

from ckdb.errors import InvalidInput
from ckdb.layout import DB_PAYLOADS, RecordType, id_from_text
from ckdb.store import Store


def corrupt_component(store: Store, checkpoint_id: str, name: str) -> bytes:
    """Flip one bit in the middle of the stored frame holding state component ``name`` of a
    checkpoint (its own frame, or the bundle it shares). Returns the frame's ``payloads`` key."""
    t = store.tables
    cid = id_from_text(checkpoint_id)
    with t.env.read() as txn:
        meta = t.checkpoints.read(txn, cid)
        key = t.payloads.address(meta, RecordType.COMPONENT, name)
        value = txn.get(DB_PAYLOADS, key)
    if not value:
        raise InvalidInput(f"checkpoint {checkpoint_id} has no stored frame for {name!r}")
    damaged = bytearray(value)
    damaged[len(damaged) // 2] ^= 0x01
    t.env.write(lambda txn: txn.put(DB_PAYLOADS, key, bytes(damaged)))
    return key
