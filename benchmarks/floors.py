"""The floors under ckdb: raw py-lmdb doing only what ckdb's API promises for each operation.

The suite (``python -m benchmarks``) runs these two peers beside ckdb, operation by operation,
and reports each goal's ratio "at the floor". If a goal is missed even there, it cannot be met
with this encoding, tag scheme, these record classes and this layout, however lean ckdb's own
code became. If it is met there, ckdb's own work is what stands in the way.

- ``floor``: ckdb's layout (0.5): a registry entry, the metadata and the payload in three
  sub-databases.
- ``floor-1``: the slot layout of docs/design.md: one record per checkpoint under the workflow's
  sequence key (the metadata and the payload, each part with its own tag), plus the id index
  entry the design writes so that ``load(id)`` can find it.

What each operation does in both, and no more:

- ``create``: encode each state component strictly (``ckdb.encoding.encode``) and take its
  SHA-256; the integrity digest over the component digests (``ckdb.meta.integrity_digest``);
  compress the components as one bundle (``Codec.AUTO``: lz4 below 64 KiB, zstd level 1 above);
  the metadata document (``meta.Meta``'s fields); each record tagged with HMAC-SHA256 over
  sub-database, key and body (``ckdb.codec.tag``; 16 bytes in index entries, as ckdb's registry);
  one write transaction puts them, reads each back and verifies its tag, and commits with
  ``sync=True, metasync=True``; returns the ``CheckpointInfo``. Threads share commits as in ckdb
  (``Env.write``): a writer that finds no commit running leads, and commits its own create and
  every create queued meanwhile; the others wait on their own event. A lone writer takes no
  event.
- ``latest``: one read transaction; the workflow's newest index entry and its metadata, tags
  verified; the ``CheckpointInfo``.
- ``load(id)``: one read transaction; the metadata and payload found by id (and, in ``floor``,
  the registry entry it names, as ckdb checks), tags verified; the bundle decompressed, every
  component's SHA-256 and the integrity digest checked, the components decoded.
- ``list``: the 100 newest, each as ``latest``.
- ``trim`` (the prune floor): each victim's index entry (``floor``) or record head
  (``floor-1``) read and its tag verified, because the pin and the id are in it and a prune
  names what it deletes; its records deleted in one transaction.

Left out: validation of the caller's input, id generation beyond 16 bytes of time and
randomness, the workflow's sequence record, parent ids, marks, retention, headroom, the memo,
nested transactions, file state, resources and dependencies. Reads remember nothing, so the
floors' reads are *cold* reads (ckdb remembers verified bytes, so its repeated reads may go
below them).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import time
from typing import Any

from benchmarks.peers import LmdbPeer, Peer, open_env
from ckdb import codec, encoding, layout
from ckdb import meta as ckmeta
from ckdb.layout import RecordType
from ckdb.meta import TYPE_NAME_OF, integrity_digest
from ckdb.records import CheckpointInfo, ComponentInfo

Record = tuple[bytes, bytes, bytes]  # (sub-database, key, value)
REGISTRY_LEN = 43  # a ckdb registry entry, its truncated tag included
SHORT_TAG = 16
_LEN = struct.Struct(">I")
_COMPONENT = int(RecordType.COMPONENT)
_BUNDLE = int(RecordType.BUNDLE)


class _Item:
    """One create waiting for the group commit."""

    __slots__ = ("done", "promoted", "records", "wake")

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.done = False
        self.promoted = False
        self.wake: threading.Event | None = None  # None: the caller leads (no event needed)


class FloorPeer(Peer):
    """ckdb's layout: registry entry, metadata, payload in three sub-databases."""

    name = "floor"
    note = (
        "raw LMDB doing only what ckdb's API promises (encode, digests, compress, tags, read-back, "
        "verified reads, group commit), ckdb's three records per checkpoint: benchmarks/floors.py"
    )
    DBS: tuple[bytes, ...] = (b"registry", b"checkpoints", b"payloads")
    INDEX = b"registry"  # the sub-database keyed by workflow and sequence

    def open(self, *, fast: bool = False) -> None:
        self.env = open_env(self.root / "env", fast=fast, max_dbs=4)
        self.dbs = {n: self.env.open_db(n) for n in self.DBS}
        self.mac = hmac.new(b"k" * 32, digestmod="sha256")
        self._seq: dict[str, int] = getattr(self, "_seq", {})
        self._lock = threading.Lock()
        self._leading = False
        self._queue: list[_Item] = []
        self.commits = getattr(self, "commits", 0)

    def close(self) -> None:
        self.env.close()

    def size(self) -> int:
        return os.path.getsize(self.root / "env" / "data.mdb")

    # -- tags ------------------------------------------------------------------------------------

    def _tagged(self, db: bytes, key: bytes, body: bytes, n: int = 32) -> bytes:
        return body + codec.tag(self.mac, b"", db, key, body)[:n]

    def _verify(self, db: bytes, key: bytes, value: bytes, n: int = 32) -> bytes:
        body, got = value[:-n], value[-n:]
        if not hmac.compare_digest(codec.tag(self.mac, b"", db, key, body)[:n], got):
            raise AssertionError(f"{db!r}/{key.hex()}: tag")
        return body

    # -- create ----------------------------------------------------------------------------------

    def create(self, wf: str, step: int, state: dict[str, Any]) -> CheckpointInfo:
        parts = [(name, encoding.encode(value)) for name, value in state.items()]
        comps = [[_COMPONENT, n, len(b), 0, hashlib.sha256(b).digest()] for n, b in parts]
        bundle = b"".join(b for _n, b in parts)
        used, body = codec.compress(bundle, codec.Codec.AUTO)
        with self._lock:
            seq = self._seq.get(wf, 0) + 1
            self._seq[wf] = seq
        created = time.time_ns() // 1000
        cid = created.to_bytes(8, "big") + os.urandom(8)  # time-ordered, as a ULID
        # (ckdb also hashes the bundle; its components' digests cover the same bytes)
        comps.append([_BUNDLE, "", len(bundle), len(body), bytes(32)])
        doc = {
            "id": cid, "workflow_id": wf, "phase": "step", "kind": "manual", "name": None,
            "created_at": created, "created_by": "bench", "seq": seq, "parent": None,
            "components": comps, "integrity": integrity_digest(cid, comps), "codec": int(used),
        }  # fmt: skip
        key = LmdbPeer._prefix(wf) + seq.to_bytes(8, "big")  # noqa: SLF001
        self._commit_records(self._records(key, cid, encoding.encode(doc), body))
        return self._info(cid, doc)

    def _records(self, key: bytes, cid: bytes, meta: bytes, body: bytes) -> list[Record]:
        reg = cid + bytes(REGISTRY_LEN - SHORT_TAG - len(cid))
        return [
            (b"registry", key, self._tagged(b"registry", key, reg, SHORT_TAG)),
            (b"checkpoints", cid, self._tagged(b"checkpoints", cid, meta)),
            (b"payloads", cid + b"s", self._tagged(b"payloads", cid + b"s", body)),
        ]

    def _read_back(self, db: bytes, key: bytes, value: bytes) -> None:
        self._verify(db, key, value, SHORT_TAG if db == b"registry" else 32)

    def _commit_records(self, records: list[Record]) -> None:
        """Group commit as ckdb's ``Env.write``: lead if nobody does, else wait on this call's
        own event; a leader commits batches until its own create is in, then promotes the first
        waiting caller (which prepared meanwhile) and returns."""
        item = _Item(records)
        with self._lock:
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                item.wake = threading.Event()
            self._queue.append(item)
        while not lead:
            assert item.wake is not None
            item.wake.wait()
            item.wake.clear()
            if item.done:
                return
            lead = item.promoted
        while True:
            with self._lock:
                if item.done:
                    if self._queue:
                        nxt = self._queue[0]
                        nxt.promoted = True
                        assert nxt.wake is not None
                        nxt.wake.set()
                    else:
                        self._leading = False
                    return
                batch, self._queue = self._queue, []
            with self.env.begin(write=True) as txn:
                for it in batch:
                    for db, k, v in it.records:
                        txn.put(k, v, db=self.dbs[db])
                    for db, k, _v in it.records:
                        got = txn.get(k, db=self.dbs[db])
                        assert got is not None
                        self._read_back(db, k, bytes(got))
            self.commits += 1
            for it in batch:
                it.done = True
                if it.wake is not None:
                    it.wake.set()

    # -- reads -----------------------------------------------------------------------------------

    @staticmethod
    def _info(cid: bytes, doc: dict[str, Any]) -> CheckpointInfo:
        comps = tuple(
            ComponentInfo(TYPE_NAME_OF[t], n, r, st, d.hex())
            for t, n, r, st, d in doc["components"]
        )
        return CheckpointInfo(
            id=layout.id_to_text(cid), workflow_id=doc["workflow_id"], phase=doc["phase"],
            kind=doc["kind"], name=doc["name"], created_at=ckmeta.datetime_of(doc["created_at"]),
            created_by=doc["created_by"], sequence=doc["seq"], parent_id=None, pinned=False,
            status="valid", raw_size=sum(c.raw_size for c in comps[:-1]),
            stored_size=comps[-1].stored_size, integrity=doc["integrity"].hex(), components=comps,
        )  # fmt: skip

    def _meta(self, txn: Any, key: bytes, value: bytes) -> tuple[bytes, dict[str, Any]]:
        """An index entry -> (checkpoint id, its metadata document), tags verified."""
        cid = self._verify(b"registry", key, value, SHORT_TAG)[:16]
        stored = txn.get(cid, db=self.dbs[b"checkpoints"])
        assert stored is not None
        return cid, encoding.decode(self._verify(b"checkpoints", cid, bytes(stored)))

    def _by_id(self, txn: Any, cid: bytes) -> tuple[dict[str, Any], bytes]:
        """load's reads: (metadata document, stored payload body), every tag verified."""
        stored = txn.get(cid, db=self.dbs[b"checkpoints"])
        assert stored is not None
        doc = encoding.decode(self._verify(b"checkpoints", cid, bytes(stored)))
        key = LmdbPeer._prefix(doc["workflow_id"]) + doc["seq"].to_bytes(8, "big")  # noqa: SLF001
        entry = txn.get(key, db=self.dbs[b"registry"])  # the registry entry must name it
        assert entry is not None
        assert self._verify(b"registry", key, bytes(entry), SHORT_TAG)[:16] == cid
        body = txn.get(cid + b"s", db=self.dbs[b"payloads"])
        assert body is not None
        return doc, self._verify(b"payloads", cid + b"s", bytes(body))

    def _newest(self, txn: Any, wf: str, n: int) -> list[tuple[bytes, bytes]]:
        p = LmdbPeer._prefix(wf)  # noqa: SLF001
        cur = txn.cursor(db=self.dbs[self.INDEX])
        ok = cur.set_range(p + b"\xff" * 8)
        ok = cur.prev() if ok else cur.last()
        out = []
        while ok and len(out) < n and cur.key().startswith(p):
            out.append((cur.key(), cur.value()))
            ok = cur.prev()
        return out

    def latest(self, wf: str) -> CheckpointInfo:
        with self.env.begin() as txn:
            ((key, value),) = self._newest(txn, wf, 1)
            return self._info(*self._meta(txn, key, value))

    def load(self, checkpoint_id: str) -> dict[str, Any]:
        cid = layout.id_from_text(checkpoint_id)
        with self.env.begin() as txn:
            doc, body = self._by_id(txn, cid)
        comps = doc["components"]
        *parts, bundle = comps
        if not hmac.compare_digest(integrity_digest(cid, comps), doc["integrity"]):
            raise AssertionError("integrity digest")
        raw = memoryview(codec.decompress(doc["codec"], body, bundle[2]))
        state, at = {}, 0
        for _t, name, size, _st, digest in parts:
            piece = raw[at : at + size]
            at += size
            if not hmac.compare_digest(hashlib.sha256(piece).digest(), digest):
                raise AssertionError(f"{name}: digest")
            state[name] = encoding.decode(piece)
        return state

    def latest_load(self, wf: str) -> Any:
        return self.load(self.latest(wf).id)

    def list100(self, wf: str) -> list[Any]:
        with self.env.begin() as txn:
            return [self._info(*self._meta(txn, k, v)) for k, v in self._newest(txn, wf, 100)]

    # -- the prune floor -------------------------------------------------------------------------

    def trim(self, wf: str, keep: int) -> list[str]:
        last = self._seq.get(wf, 0)
        p = LmdbPeer._prefix(wf)  # noqa: SLF001
        hi = p + (last - keep + 1).to_bytes(8, "big")
        ids: list[str] = []
        with self.env.begin(write=True) as txn:
            cur = txn.cursor(db=self.dbs[self.INDEX])
            cids = []
            if cur.set_range(p):
                while cur.key() and cur.key() < hi:
                    cid = self._victim(cur.key(), cur.value())
                    cids.append(cid)
                    ids.append(layout.id_to_text(cid))
                    if not cur.delete():
                        break
            self._delete_rest(txn, cids)
        return ids

    def _victim(self, key: bytes, value: bytes) -> bytes:
        return self._verify(b"registry", key, value, SHORT_TAG)[:16]

    def _delete_rest(self, txn: Any, cids: list[bytes]) -> None:
        for db, suffix in ((b"checkpoints", b""), (b"payloads", b"s")):
            cur = txn.cursor(db=self.dbs[db])
            for cid in cids:
                if cur.set_key(cid + suffix):
                    cur.delete()


class SlotFloorPeer(FloorPeer):
    """One record per checkpoint: ``u32 length ‖ id ‖ metadata ‖ tag ‖ payload ‖ tag`` under the
    workflow's sequence key in ``slots``, and ``ids``: id -> that key (a 16-byte tag)."""

    name = "floor-1"
    note = "the same work in the slot layout of docs/design.md: one record per checkpoint + an id index entry"
    DBS = (b"slots", b"ids")
    INDEX = b"slots"

    def _records(self, key: bytes, cid: bytes, meta: bytes, body: bytes) -> list[Record]:
        head = self._tagged(b"slots", key, cid + meta)
        value = _LEN.pack(len(head)) + head + self._tagged(b"slots", key + b"s", body)
        return [(b"slots", key, value), (b"ids", cid, self._tagged(b"ids", cid, key, SHORT_TAG))]

    def _read_back(self, db: bytes, key: bytes, value: bytes) -> None:
        if db == b"ids":
            self._verify(db, key, value, SHORT_TAG)
            return
        (n,) = _LEN.unpack_from(value)
        self._verify(db, key, value[4 : 4 + n])
        self._verify(db, key + b"s", value[4 + n :])

    def _head(self, key: bytes, value: bytes) -> bytes:
        (n,) = _LEN.unpack_from(value)
        return self._verify(b"slots", key, bytes(value[4 : 4 + n]))

    def _meta(self, txn: Any, key: bytes, value: bytes) -> tuple[bytes, dict[str, Any]]:
        head = self._head(key, value)
        return head[:16], encoding.decode(head[16:])

    def _by_id(self, txn: Any, cid: bytes) -> tuple[dict[str, Any], bytes]:
        entry = txn.get(cid, db=self.dbs[b"ids"])
        assert entry is not None
        key = self._verify(b"ids", cid, bytes(entry), SHORT_TAG)
        value = txn.get(key, db=self.dbs[b"slots"])
        assert value is not None
        got, doc = self._meta(txn, key, value)
        assert got == cid
        (n,) = _LEN.unpack_from(value)
        return doc, self._verify(b"slots", key + b"s", bytes(value[4 + n :]))

    def _victim(self, key: bytes, value: bytes) -> bytes:
        return self._head(key, value)[:16]  # the head's tag covers the id and the pin

    def _delete_rest(self, txn: Any, cids: list[bytes]) -> None:
        cur = txn.cursor(db=self.dbs[b"ids"])
        for cid in cids:
            if cur.set_key(cid):
                cur.delete()


PEERS = (FloorPeer, SlotFloorPeer)
