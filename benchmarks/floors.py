"""The floors under ckdb: raw py-lmdb doing only what every ckdb create and read must do.

The suite (``python -m benchmarks``) runs these two peers beside ckdb, operation by operation,
and reports each goal's ratio "at the floor": if a goal is missed even there, nothing ckdb's
Python does can meet it; if it is met there, ckdb's own work is what stands in the way.

- ``floor``: ckdb's layout (0.5): three records per checkpoint in three sub-databases.
- ``floor-1``: one record per checkpoint (the slot layout of docs/design.md): the metadata and
  the payload in one value under the workflow's sequence key, each part with its own tag.

What a create does in both, per checkpoint: encode the state (``ckdb.encoding.encode``,
strict, one call where ckdb makes one per component); SHA-256 of the encoded state (the digest
the metadata records); compress it (``Codec.AUTO``: lz4 below 64 KiB, zstd level 1 above); the
records, each tagged with HMAC-SHA256 over sub-database, key and body (``ckdb.codec.tag``;
truncated to 16 bytes in a registry entry, as ckdb's); one write transaction puts them, reads
each back and verifies its tag, and commits with ``sync=True, metasync=True``. Threads share
commits: a create queues its records, and whichever thread takes the commit lock writes every
queued create in one transaction (group commit, as ckdb's). Left out: ids beyond 16 bytes of
time and randomness, validation, the workflow's sequence kept in a record, retention, headroom.

A read (latest + load): a read transaction; the workflow's newest checkpoint, its metadata and
payload, each tag verified; the metadata decoded into the ``CheckpointInfo`` that ``latest``
returns (no field checked beyond what building it needs); the payload decompressed and decoded
(``ckdb.encoding.decode``); the SHA-256 is not checked again (the tag covers the stored body). A
list: the 100 newest checkpoints, each with its ``CheckpointInfo`` as for ``latest``. A trim
(the prune floor): every victim's entry read and its tag verified (a pin is in it), its records
deleted in one transaction, its id as text (a prune names what it deleted). Reads remember
nothing: the floor of a *cold* read (ckdb remembers verified bytes, so its repeated reads may go
below this).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import threading
import time
from typing import Any

import lmdb

from benchmarks.peers import LmdbPeer, Peer
from ckdb import codec, encoding, layout
from ckdb import meta as ckmeta
from ckdb.layout import RecordType
from ckdb.meta import TYPE_NAME_OF
from ckdb.records import CheckpointInfo, ComponentInfo

Record = tuple[bytes, bytes, bytes]  # (sub-database, key, value)
REGISTRY_LEN = 43  # a ckdb registry entry, its truncated tag included
SHORT_TAG = 16
_LEN = struct.Struct(">I")


class FloorPeer(Peer):
    """ckdb's layout: registry entry, metadata, payload in three sub-databases."""

    name = "floor"
    note = (
        "raw LMDB doing only what every ckdb create/read must (encode, SHA-256, compress, tag, "
        "read back, group commit), ckdb's three records per checkpoint: benchmarks/floors.py"
    )
    DBS: tuple[bytes, ...] = (b"registry", b"checkpoints", b"payloads")
    INDEX = b"registry"  # the sub-database keyed by workflow and sequence

    def open(self, *, fast: bool = False) -> None:
        (self.root / "env").mkdir(exist_ok=True)
        self.env = lmdb.open(
            str(self.root / "env"),
            map_size=8 << 30,
            sync=not fast,
            metasync=not fast,
            writemap=False,
            max_dbs=4,
            lib_version=0,
        )
        self.dbs = {n: self.env.open_db(n) for n in self.DBS}
        self.mac = hmac.new(b"k" * 32, digestmod="sha256")
        self._seq: dict[str, int] = getattr(self, "_seq", {})
        self._lock = threading.Lock()
        self._commit = threading.Lock()
        self._queue: list[tuple[list[Record], threading.Event]] = []

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

    def create(self, wf: str, step: int, state: dict[str, Any]) -> None:
        raw = encoding.encode(state)
        digest = hashlib.sha256(raw).digest()
        used, body = codec.compress(raw, codec.Codec.AUTO)
        with self._lock:
            seq = self._seq.get(wf, 0) + 1
            self._seq[wf] = seq
        created = time.time_ns() // 1000
        cid = created.to_bytes(8, "big") + os.urandom(8)  # time-ordered, as a ULID
        # The metadata document a ckdb create writes (meta.Meta), one entry per state
        # component (the digests hash the same bytes in total as one digest of the state).
        comps = [[int(RecordType.COMPONENT), n, len(raw), 0, digest] for n in state]
        comps.append([int(RecordType.BUNDLE), "", len(raw), len(body), digest])
        doc = {
            "id": cid, "workflow_id": wf, "phase": "step", "kind": "manual", "name": None,
            "created_at": created, "created_by": "bench", "seq": seq, "parent": None,
            "components": comps, "integrity": digest, "codec": int(used), "raw_len": len(raw),
        }  # fmt: skip
        key = LmdbPeer._prefix(wf) + seq.to_bytes(8, "big")  # noqa: SLF001
        self._commit_records(self._records(key, cid, encoding.encode(doc), body))

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
        done = threading.Event()
        with self._lock:
            self._queue.append((records, done))
        while not done.is_set():
            with self._commit:
                if done.is_set():
                    break
                with self._lock:
                    batch, self._queue = self._queue, []
                with self.env.begin(write=True) as txn:
                    for recs, _ev in batch:
                        for db, k, v in recs:
                            txn.put(k, v, db=self.dbs[db])
                        for db, k, _v in recs:
                            got = txn.get(k, db=self.dbs[db])
                            assert got is not None
                            self._read_back(db, k, bytes(got))
                for _recs, ev in batch:
                    ev.set()

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
            status="valid", raw_size=doc["raw_len"], stored_size=comps[-1].stored_size,
            integrity=doc["integrity"].hex(), components=comps,
        )  # fmt: skip

    def _meta(self, txn: Any, key: bytes, value: bytes) -> tuple[bytes, dict[str, Any]]:
        """An index entry -> (checkpoint id, its metadata document), tags verified."""
        cid = self._verify(b"registry", key, value, SHORT_TAG)[:16]
        stored = txn.get(cid, db=self.dbs[b"checkpoints"])
        assert stored is not None
        return cid, encoding.decode(self._verify(b"checkpoints", cid, bytes(stored)))

    def _body(self, txn: Any, key: bytes, value: bytes, cid: bytes) -> bytes:
        stored = txn.get(cid + b"s", db=self.dbs[b"payloads"])
        assert stored is not None
        return self._verify(b"payloads", cid + b"s", bytes(stored))

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

    def latest_load(self, wf: str) -> Any:
        with self.env.begin() as txn:
            ((key, value),) = self._newest(txn, wf, 1)
            cid, doc = self._meta(txn, key, value)
            info = self._info(cid, doc)
            body = self._body(txn, key, value, cid)
        assert info.id
        return encoding.decode(codec.decompress(doc["codec"], body, doc["raw_len"]))

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
    """One record per checkpoint: ``u32 length ‖ metadata ‖ tag ‖ payload ‖ tag`` under the
    workflow's sequence key, in one sub-database (the id is in the metadata)."""

    name = "floor-1"
    note = "the same work, one record per checkpoint (metadata and payload, each tagged)"
    DBS = (b"slots",)
    INDEX = b"slots"

    def _records(self, key: bytes, cid: bytes, meta: bytes, body: bytes) -> list[Record]:
        head = self._tagged(b"slots", key, cid + meta)
        value = _LEN.pack(len(head)) + head + self._tagged(b"slots", key + b"s", body)
        return [(b"slots", key, value)]

    def _read_back(self, db: bytes, key: bytes, value: bytes) -> None:
        (n,) = _LEN.unpack_from(value)
        self._verify(db, key, value[4 : 4 + n])
        self._verify(db, key + b"s", value[4 + n :])

    def _meta(self, txn: Any, key: bytes, value: bytes) -> tuple[bytes, dict[str, Any]]:
        (n,) = _LEN.unpack_from(value)
        head = self._verify(b"slots", key, bytes(value[4 : 4 + n]))
        return head[:16], encoding.decode(head[16:])

    def _body(self, txn: Any, key: bytes, value: bytes, cid: bytes) -> bytes:
        (n,) = _LEN.unpack_from(value)
        return self._verify(b"slots", key + b"s", bytes(value[4 + n :]))

    def _victim(self, key: bytes, value: bytes) -> bytes:
        return self._meta(None, key, value)[0]  # the pin would be in the verified metadata

    def _delete_rest(self, txn: Any, cids: list[bytes]) -> None:
        pass  # nothing else to delete: the record was the whole checkpoint


PEERS = (FloorPeer, SlotFloorPeer)
