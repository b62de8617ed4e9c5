"""Key rotation: re-wrap under a new master key; optionally a new data key and re-tagging.

1. ``rotate_key(new_master)`` re-wraps the keyring and rewrites the key check in ONE transaction.
   When the store uses its generated key file, the new key is first written to ``key.new``
   (fsynced), then the transaction commits, then ``key.new`` is renamed over ``key``. A crash in
   between leaves ``key`` (old) and ``key.new`` (new) with the store under one of them: open tries
   ``key``, then ``key.new``, and finishes the rename (see ``ckdb._open``).
2. With ``new_data_key=True`` the same transaction adds a random data key and makes it active:
   new frames are tagged with it at once. Old frames are then re-tagged in bounded transactions
   (``RETAG_BATCH`` records each) with a cursor in ``settings``, so an interrupted rotation resumes
   (``Store.retag()``, also run by the next ``rotate_key``). Retired data keys stay in the keyring,
   so backups taken before the rotation still verify and can serve as repair sources.
"""

from __future__ import annotations

import hmac
import os
import secrets

from attrs import frozen

from ckdb import encoding, keys
from ckdb._env import Txn, fsync_path
from ckdb.codec import (
    ENCRYPTED,
    decode_frame,
    decode_registry,
    encode_frame,
    encode_registry,
    parse_frame,
    tag,
)
from ckdb.errors import CkdbError, IntegrityError, InvalidInput, WrongKey
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_CHUNKS,
    DB_INFO,
    DB_MARKS,
    DB_PAYLOADS,
    DB_REFS,
    DB_REGISTRY,
    DB_SETTINGS,
    DB_WORKFLOWS,
    FRAME_HEADER,
    FRAME_MAGIC,
    INFO_FORMAT,
    INFO_KEYCHECK,
    INFO_KEYRING,
    TAG_SIZE,
    Codec,
    RecordType,
)
from ckdb.tables import Tables
from ckdb.tables.chunks import decode_refs, encode_refs

RETAG_BATCH = 500
RETAG_CURSOR = b"rotation/cursor"
FRAME_DBS = (DB_CHECKPOINTS, DB_PAYLOADS, DB_CHUNKS, DB_WORKFLOWS, DB_SETTINGS, DB_MARKS)
ALL_RETAG = (*FRAME_DBS, DB_REGISTRY, DB_REFS)  # plus integrations' sub-databases, at run time


@frozen
class RotationReport:
    active_key_id: int
    retired_key_ids: tuple[int, ...]
    retagged: int
    complete: bool


def rotate_key(t: Tables, new_master: bytes | None, new_data_key: bool) -> RotationReport:
    """Re-wrap the store's keys under ``new_master`` (None: generate one, for stores that use
    their own key file); with ``new_data_key``, start a new data key and re-tag old frames."""
    t.env.check()
    if new_master is None:
        if t.key_source != "store":
            raise InvalidInput("pass the new master key (this store's key is not its own file)")
        new_master = keys.new_master_key()
    rotate(t, new_master, new_data_key)
    return retag(t) if new_data_key else report(t, 0, True)


def report(t: Tables, count: int, complete: bool) -> RotationReport:
    active = t.keys.active
    retired = tuple(k for k in sorted(t.keys.data_keys) if k != active)
    return RotationReport(active, retired, count, complete)


def rotate(t: Tables, new_master: bytes, new_data_key: bool) -> None:
    """Step 1: re-wrap (and maybe add a data key) in one transaction.

    The transaction starts from the keyring *as stored* (another process may have added a data
    key since this one opened the store), after checking that this process's master key still
    opens it; it never writes back a stale in-memory copy.
    """
    new_master = keys.check_master_key(new_master)
    key_path = t.path / keys.KEY_FILE_NAME
    pending = t.path / (keys.KEY_FILE_NAME + ".new")
    use_file = t.key_source == "store"
    if use_file:
        pending.unlink(missing_ok=True)
        keys.write_key_file(pending, new_master)
        fsync_path(t.path, directory=True)
    cipher = t.keys.cipher

    def apply(txn: Txn) -> keys.Keyring:
        fmt = txn.get(DB_INFO, INFO_FORMAT)
        check = txn.get(DB_INFO, INFO_KEYCHECK)
        wrapped = txn.get(DB_INFO, INFO_KEYRING)
        if fmt is None or check is None or wrapped is None:
            raise IntegrityError("the store header is damaged: cannot rotate keys")
        old_kek = keys.kek_for(t.master, t.uuid)
        if not hmac.compare_digest(keys.key_check(old_kek, fmt), check):
            raise WrongKey(
                "the store was re-keyed by another process since it was opened here; reopen it "
                "with the current key before rotating"
            )
        stored = keys.Keyring.unwrap(old_kek, t.uuid, wrapped)
        data = dict(stored.data_keys)
        active = stored.active
        if new_data_key:
            active = max(data) + 1
            data[active] = secrets.token_bytes(32)
        ring = keys.Keyring(data, active, stored.content_key)
        ring.cipher = cipher
        kek = keys.kek_for(new_master, t.uuid)
        txn.put(DB_INFO, INFO_KEYCHECK, keys.key_check(kek, fmt))
        txn.put(DB_INFO, INFO_KEYRING, ring.wrap(kek, t.uuid))
        if new_data_key:
            txn.put(DB_SETTINGS, RETAG_CURSOR, encoding.encode([0, b""]))
        return ring

    ring = t.env.write(apply)
    # The key file may only name the new key once the store durably uses it. With
    # durability="relaxed" the commit above is not durable yet (its meta page waits for the next
    # commit's sync): a power cut after the rename would leave a key file that opens nothing.
    # Found by the relaxed power-loss rounds (tests/test_powerloss_ckdb.py).
    t.env.sync()
    t.use_keys(ring, new_master)
    if use_file:
        try:
            os.replace(pending, key_path)
        except FileNotFoundError:
            # Another process opening the store finished the rename for us, or key.new went
            # missing: make sure `key` holds the new key (atomically, from memory).
            if keys.read_key_file(key_path) != new_master:
                tmp = t.path / (keys.KEY_FILE_NAME + f".{secrets.token_hex(4)}.tmp")
                keys.write_key_file(tmp, new_master)
                os.replace(tmp, key_path)
        fsync_path(t.path, directory=True)


def _retag_value(t: Tables, db: bytes, key: bytes, value: bytes) -> bytes | None:
    """The value re-tagged under the active key, or None if it already is (or is not a frame)."""
    ring = t.keys
    if db == DB_REGISTRY:
        cid, created, flags = decode_registry(ring.mac, key, value)
        if int.from_bytes(value[25:27], "big") == ring.active:
            return None
        return encode_registry(ring.active_mac, ring.active, key, cid, created, flags)
    if db == DB_REFS:
        count = decode_refs(ring, key, value)
        if int.from_bytes(value[8:10], "big") == ring.active:
            return None
        return encode_refs(ring, key, count)
    if len(value) < FRAME_HEADER.size + TAG_SIZE or value[:3] != FRAME_MAGIC:
        return None  # not a frame (e.g. the scrub cursor)
    magic, version, rtype, codec, key_id, raw_len = FRAME_HEADER.unpack_from(value)
    if key_id == ring.active:
        return None
    if codec & ENCRYPTED:
        # The body is encrypted under the old key, with the header as associated data:
        # decrypt, then encrypt anew under the active key.
        raw = decode_frame(ring.mac, db, key, value, None, ring.aead)
        return encode_frame(
            ring.active_mac,
            ring.active,
            RecordType(rtype),
            db,
            key,
            raw,
            Codec(codec & ~ENCRYPTED),
            ring.active_aead,
        )
    frame = parse_frame(ring.mac, db, key, value)  # verify under the old key first
    header = FRAME_HEADER.pack(magic, version, rtype, codec, ring.active, raw_len)
    return b"".join((header, frame.body, tag(ring.active_mac, header, db, key, frame.body)))


def retag(t: Tables, max_batches: int | None = None) -> RotationReport:
    """Re-tag frames not under the active key, resuming from the cursor."""
    total = 0
    batches = 0
    while True:
        if max_batches is not None and batches >= max_batches:
            return report(t, total, False)

        extra = t.env.extra_dbs()
        for name in extra:
            t.env.ensure_db(name)
        order = (*FRAME_DBS, *extra, DB_REGISTRY, DB_REFS)

        def apply(txn: Txn, order: tuple[bytes, ...] = order) -> tuple[int, bool]:
            raw = txn.get(DB_SETTINGS, RETAG_CURSOR)
            if raw is None:
                return 0, True
            try:
                db_index, after = encoding.decode(raw)
                db_index, after = int(db_index), bytes(after)
            except (CkdbError, TypeError, ValueError):
                db_index, after = 0, b""  # a damaged cursor only costs re-checking from the start
            done = 0
            while db_index < len(order):
                db = order[db_index]
                items = []
                for key, value in txn.range(db, bytes(after)):
                    if key == after or (db == DB_SETTINGS and key == RETAG_CURSOR):
                        continue
                    items.append((bytes(key), bytes(value)))
                    if len(items) >= RETAG_BATCH - done:
                        break
                for key, value in items:
                    try:
                        new = _retag_value(t, db, key, value)
                    except IntegrityError:
                        new = None  # damaged: left for scrub, never re-tagged into validity
                    if new is not None:
                        txn.put(db, key, new)
                    done += 1
                if items and done >= RETAG_BATCH:
                    txn.put(DB_SETTINGS, RETAG_CURSOR, encoding.encode([db_index, items[-1][0]]))
                    return done, False
                db_index += 1
                after = b""
            txn.delete(DB_SETTINGS, RETAG_CURSOR)
            return done, True

        count, complete = t.env.write(apply)
        total += count
        batches += 1
        if complete:
            return report(t, total, True)
