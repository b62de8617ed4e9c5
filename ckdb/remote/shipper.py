"""The shipper: a thread per store that sends every committed change of the workflows this store
owns to the remote (``docs/remote.md``, "Ship").

It reads what LMDB already holds: ``create`` never waits for the network. A round runs when
something is dirty and ``interval`` passed since the previous one (or at once for
``sync_remote``). Per workflow it diffs the registry against its cursor, uploads new blobs,
creates the next segment (the remote commit point), then advances the cursor in one LMDB
transaction. A create-only PUT that fails or loses its answer is resolved by reading the slot
back: our own segment is adopted, a higher epoch fences this store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import socket
import statistics
import threading
import time
from collections import deque
from typing import Any

from attrs import define, field, frozen

from ckdb._env import Txn
from ckdb.errors import (
    CkdbError,
    FormatError,
    IntegrityError,
    InvalidInput,
    RemoteError,
    RemoteUnsafe,
    UnsupportedVersion,
    WrongKey,
)
from ckdb.layout import (
    DB_REGISTRY,
    DB_WORKFLOWS,
    FLAG_MARKED,
    LIVE_ROW,
    Codec,
    RecordType,
    id_to_text,
    split_registry_key,
)
from ckdb.meta import now_us
from ckdb.remote.export import Exported, Loader, export_checkpoint
from ckdb.remote.format import (
    SEGMENT_MAX_BYTES,
    SEGMENT_MAX_PUTS,
    SHIPPED_FLAGS,
    ZERO_DIGEST,
    Claim,
    Segment,
    blob_key,
    claim_key,
    decode_claim,
    decode_segment,
    digest,
    encode_claim,
    encode_segment,
    log_key,
    pack_live,
    unpack_live,
)
from ckdb.remote.lease import PID_NS, holder_died
from ckdb.remote.link import Link
from ckdb.remote.objects import ObjectStore
from ckdb.tables import Cursor, Tables

_log = logging.getLogger("ckdb")
HOST = socket.gethostname()
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
#: errors that no retry can cure: the shipper stops and says why
FATAL = (WrongKey, RemoteUnsafe, FormatError, UnsupportedVersion, InvalidInput)


@frozen
class ShipReport:
    """What ``sync_remote`` saw: every change committed before the call is in the remote for
    the workflows in ``shipped``; ``fenced`` ones are owned by another host now, ``failed`` ones
    could not be shipped (the reason), ``unshippable`` checkpoints are damaged locally."""

    shipped: dict[str, int]  # workflow -> the last segment number in the remote
    fenced: tuple[str, ...] = ()
    failed: dict[str, str] = field(factory=dict)
    unshippable: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.fenced and not self.failed


@frozen
class WorkflowStatus:
    workflow_id: str
    owner_epoch: int | None  # the epoch this store ships under (None: not shipped yet)
    shipped_up_to: int  # the last segment number in the remote
    live: int  # checkpoints the remote holds live
    pending: bool  # changes not yet shipped
    lag_seconds: float | None  # age of the oldest change not yet shipped
    fenced_by: str | None = None  # "host (epoch n)" of the owner, or "pulled"
    last_error: str | None = None


@frozen
class RemoteStatus:
    url: str
    connected: bool
    last_error: str | None
    workflows: tuple[WorkflowStatus, ...]
    rounds: int
    segments_put: int
    blobs_put: int
    bytes_put: int
    lag_p50: float | None  # seconds from a change to its segment, over recent ships
    lag_p99: float | None
    standby_for: str | None = None  # another process holds the shipping lease


@define
class _Round:
    number: int
    shipped: dict[str, int] = field(factory=dict)
    fenced: list[str] = field(factory=list)
    failed: dict[str, str] = field(factory=dict)
    unshippable: list[str] = field(factory=list)
    network_error: str | None = None
    fatal: CkdbError | None = None
    standby: bool = False  # another process holds the lease and ships


def apply_ops(live: dict[bytes, tuple[int, int]], ops: tuple[tuple[Any, ...], ...]) -> None:
    """Replay a segment's ops onto a live set {id: (seq, flags)}."""
    for op in ops:
        if op[0] == "put":
            live[op[1].cid] = (op[1].seq, op[1].flags)
        elif op[0] == "del":
            for cid in op[1]:
                live.pop(cid, None)
        elif op[1] in live:
            live[op[1]] = (live[op[1]][0], op[2])


class Shipper:
    """Ships one store's workflows to one remote (``Store(remote=...)`` starts it)."""

    def __init__(
        self, t: Tables, objects: ObjectStore, master: bytes, interval: float, durability: str
    ) -> None:
        self.t = t
        self.objects = objects
        self.master = master
        self.interval = interval
        self.durability = durability
        self.link: Link | None = None
        self._cv = threading.Condition()
        self._poked = False
        self._stopping = False
        self._sync_want = 0  # the round number a sync_remote waits for
        self._rounds = 0
        self._done: _Round | None = None
        self._last_error: str | None = None
        self._fatal: CkdbError | None = None
        self._errors: dict[bytes, str] = {}
        self._lags: deque[float] = deque(maxlen=2000)
        self.segments_put = 0
        self.blobs_put = 0
        self.bytes_put = 0
        self._thread = threading.Thread(target=self._run, name="ckdb-shipper", daemon=True)
        self.token = secrets.token_hex(8)
        self.lease_seconds = 30.0 + 3 * interval
        self._lease_until = 0.0  # time.time() until which this process holds the lease
        self._snap_us = 0  # when the snapshot of the workflow being shipped was read
        # Workflows whose cursor this process has seen at the remote's tip. Any other (after a
        # restart, or after a PUT whose answer was lost) is caught up first: the remote may hold
        # segments of ours that the cursor does not know, and a diff against a stale cursor
        # would drop tombstones of checkpoints the remote still lists.
        self._confirmed: set[bytes] = set()
        self.standby_for: str | None = None  # "pid 123 on host" while another process ships
        self.ship_lock = threading.Lock()  # held by a round; gc holds it to pause shipping

    # -- lifecycle -------------------------------------------------------------------------------

    def attach(self) -> None:
        """First contact (WrongKey, RemoteUnsafe raise; an unreachable remote is retried in the
        background), then start the thread."""
        try:
            self._connect()
        except FATAL:
            raise
        except RemoteError as err:
            self._last_error = str(err)
            _log.warning("ckdb remote: %s unreachable, will retry: %s", self.objects.url, err)
        self._thread.start()

    def _connect(self) -> None:
        link = Link.connect(self.objects, self.master)
        self.t.env.write(lambda txn: self._record_attach(txn, link))
        self.link = link

    def _record_attach(self, txn: Txn, link: Link) -> None:
        t = self.t
        doc = t.remote.attached(txn)
        if doc is not None:
            if bytes(doc.get("uuid", b"")) != link.uuid:
                raise InvalidInput(
                    f"this store ships to the remote {doc.get('url')!r} (another remote than "
                    f"{link.url}); a store ships to one remote"
                )
            return
        t.remote.attach(txn, link.uuid, link.url)
        t.set_incompat_remote(txn)
        # Backfill: every workflow already in the store is shipped by the first rounds.
        for key, _value in txn.range(DB_WORKFLOWS):
            t.remote.changed(txn, bytes(key), now_us())

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._lease_until > time.time() and not self.t.env.closed:
            with contextlib.suppress(CkdbError):
                self.t.env.write(self._release)

    # -- the lease: one shipping process per store ----------------------------------------------

    def _release(self, txn: Txn) -> None:
        doc = self.t.remote.lease(txn)
        if doc is not None and doc.get("owner") == self.token:
            self.t.remote.drop_lease(txn)
        self._lease_until = 0.0

    def holds_lease(self) -> bool:
        """Hold (or renew) the lease; False while another live process holds it."""
        now = time.time()
        if self._lease_until - now > self.lease_seconds / 2:
            return True

        def acquire(txn: Txn) -> bool:
            doc = self.t.remote.lease(txn)
            if (doc is not None and doc.get("owner") != self.token
                    and doc.get("expires", 0) > now and not holder_died(doc, HOST)):  # fmt: skip
                self.standby_for = f"pid {doc.get('pid')} on {doc.get('host')}"
                return False
            self.t.remote.put_lease(
                txn,
                {"owner": self.token, "pid": os.getpid(), "host": HOST, "ns": PID_NS,
                 "expires": now + self.lease_seconds},
            )  # fmt: skip
            return True

        if self.t.env.write(acquire):
            self._lease_until = now + self.lease_seconds
            self.standby_for = None
            return True
        return False

    def poke(self) -> None:
        """Something was committed here: ship it (at the next interval)."""
        with self._cv:
            self._poked = True
            self._cv.notify_all()

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        last_start = 0.0
        while True:
            with self._cv:
                deadline = time.monotonic() + (backoff or self.interval)
                while not self._stopping:
                    now = time.monotonic()
                    urgent = self._rounds < self._sync_want and not backoff
                    if urgent or (self._poked and now - last_start >= self.interval):
                        break
                    if now >= deadline and not backoff:
                        break  # poll: other processes' commits are marked dirty too
                    if now >= deadline:
                        break
                    self._cv.wait(max(0.0, deadline - now))
                if self._stopping:
                    return
                self._poked = False
                self._rounds += 1
                number = self._rounds
            last_start = time.monotonic()
            result = self._round(number)
            with self._cv:
                self._done = result
                self._cv.notify_all()
            if result.fatal is not None:
                return
            if result.network_error is not None:
                backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, backoff * 2))
                backoff *= random.uniform(0.8, 1.2)
            else:
                backoff = 0.0

    def _round(self, number: int) -> _Round:
        with self.ship_lock:
            return self._round_locked(number)

    def _round_locked(self, number: int) -> _Round:
        result = _Round(number)
        try:
            if self.link is None:
                self._connect()
            if not self.holds_lease():
                result.standby = True
                return result
            with self.t.env.read() as txn:
                dirty = self.t.remote.dirty(txn)
            for wf_key, count, first in dirty:
                if self._stopping:
                    break
                self._ship_workflow(wf_key, count, first, result)
            self._last_error = None
        except FATAL as err:
            result.fatal = self._fatal = err
            self._last_error = str(err)
            _log.error("ckdb remote: shipping stopped: %s", err)
        except RemoteError as err:
            result.network_error = self._last_error = str(err)
            _log.warning("ckdb remote: %s (will retry)", err)
        except CkdbError as err:  # the local store (closed, full): retried like the network
            result.network_error = self._last_error = str(err)
            _log.warning("ckdb remote: shipping round failed: %s", err)
        return result

    # -- one workflow ----------------------------------------------------------------------------

    def _workflow_id(self, txn: Txn, wf_key: bytes) -> str | None:
        value = txn.get(DB_WORKFLOWS, wf_key)
        if value is not None:
            try:
                return str(self.t.workflows.decode(wf_key, value)["id"])
            except IntegrityError:
                pass
        for key, value in txn.prefix(DB_REGISTRY, wf_key, reverse=True):
            try:
                cid = self.t.registry.entry(key, value)[0]
                return self.t.checkpoints.read(txn, cid).workflow_id
            except CkdbError:
                continue
        return None

    def _ship_workflow(self, wf_key: bytes, count: int, first: int, result: _Round) -> None:
        t = self.t
        assert self.link is not None
        rk = self.link.keys
        known: dict[bytes, bytes] = {}
        while not self._stopping:
            self._snap_us = now_us()  # what this snapshot misses was committed after this
            with t.env.read() as txn:
                if t.remote.is_fenced(txn, wf_key):
                    cursor = t.remote.cursor(txn, wf_key)
                    name = cursor.workflow_id if cursor else self._workflow_id(txn, wf_key)
                    result.fenced.append(name or wf_key.hex())
                    return
                cursor = t.remote.cursor(txn, wf_key)
                wf_id = cursor.workflow_id if cursor else self._workflow_id(txn, wf_key)
                count = (t.remote.dirty_of(txn, wf_key) or (count, first))[0]
                plan = None if wf_id is None else self._diff(txn, wf_key, cursor, rk, known)
                if plan is not None and (plan[0] or plan[1] or plan[2]):
                    # Ship only what a power cut cannot take back: LMDB shows a commit to
                    # readers once its meta page is written, before that page's fsync returns
                    # (and, with durability="relaxed", before any). An fdatasync while this
                    # snapshot is held makes everything it sees durable.
                    t.env.sync()
            if wf_id is not None and wf_key not in self._confirmed:
                caught = self._catch_up(wf_key, rk.wk(wf_id), wf_id, cursor)
                if caught == "adopted":
                    continue  # the cursor moved: diff again
                if caught == "fenced":
                    result.fenced.append(wf_id)
                    return
                if caught == "stuck":
                    result.failed[wf_id] = self._errors.get(wf_key, "conflict")
                    return
                self._confirmed.add(wf_key)
            if wf_id is None or plan is None:
                self._settle(wf_key, count, set())
                return
            puts, flag_ops, dels, stale, truncated, bad = plan
            result.unshippable.extend(bad)
            if not puts and not flag_ops and not dels:
                self._settle(wf_key, count, stale)
                return
            wk = rk.wk(wf_id)
            if cursor is None:
                epoch = self._claim_first(wf_key, wk, wf_id)
                if epoch is None:
                    result.fenced.append(wf_id)
                    return
                cursor = Cursor(wf_id, epoch, 1, ZERO_DIGEST, b"", 0)
            outcome, seq = self._ship_segment(
                wf_key, wk, wf_id, cursor, puts, flag_ops, dels, stale, truncated, count, first
            )
            if outcome == "fenced":
                result.fenced.append(wf_id)
                self._errors.pop(wf_key, None)
                return
            if outcome == "stuck":
                result.failed[wf_id] = self._errors.get(wf_key, "conflict")
                return
            result.shipped[wf_id] = seq  # the segment just written (or adopted)
            if outcome == "done":
                self._errors.pop(wf_key, None)
                return
            # "more" (a segment shipped, more to do) or "adopted" (diff again)

    def _diff(
        self,
        txn: Txn,
        wf_key: bytes,
        cursor: Cursor | None,
        rk: Any,
        known: dict[bytes, bytes],
    ) -> tuple[list[Exported], list[tuple[bytes, int]], set[bytes], set[bytes], bool, list[str]]:
        t = self.t
        live = {} if cursor is None else unpack_live(cursor.live)
        local: dict[bytes, tuple[int, int]] = {}
        for key, value in txn.prefix(DB_REGISTRY, wf_key):
            try:
                cid, _created, flags = t.registry.entry(key, value)
            except IntegrityError:
                continue  # damaged entry: its checkpoint is not shipped until scrub repairs it
            local[cid] = (split_registry_key(key)[1], flags)
        tombs = t.remote.tombs(txn, wf_key)
        puts: list[Exported] = []
        bad: list[str] = []
        size = 0
        truncated = False
        for cid, (_seq, flags) in sorted(local.items(), key=lambda kv: kv[1][0]):
            if cid in live or flags & FLAG_MARKED:
                continue
            if len(puts) >= SEGMENT_MAX_PUTS or size >= SEGMENT_MAX_BYTES:
                truncated = True
                break
            try:
                exported = export_checkpoint(t, txn, rk, cid, flags, known)
            except CkdbError as err:
                bad.append(id_to_text(cid))
                _log.error("ckdb remote: checkpoint %s is not shipped: %s", id_to_text(cid), err)
                continue
            puts.append(exported)
            size += exported.ck.size()
        flag_ops = [
            (cid, local[cid][1] & SHIPPED_FLAGS)
            for cid in live
            if cid in local and local[cid][1] & SHIPPED_FLAGS != live[cid][1]
        ]
        dels = {cid for cid in tombs if cid in live and cid not in local}
        stale = tombs - dels
        return puts, flag_ops, dels, stale, truncated, bad

    def _settle(self, wf_key: bytes, count: int, stale: set[bytes]) -> None:
        """Nothing (more) to ship: drop tombstones of never-shipped checkpoints, clear the mark
        unless a change came since ``count`` was read."""

        def apply(txn: Txn) -> None:
            self.t.remote.drop_tombs(txn, wf_key, stale)
            self.t.remote.clear_dirty(txn, wf_key, count, self._snap_us)

        self.t.env.write(apply)

    def _claim_first(self, wf_key: bytes, wk: str, wf_id: str) -> int | None:
        """Claim epoch 1 of a workflow this store ships for the first time; None if another
        store owns it (then a fence record says so)."""
        assert self.link is not None
        rk = self.link.keys
        key = claim_key(wk, 1)
        claim = Claim(wf_id, 1, self.t.uuid, HOST, now_us())
        try:
            created: bool | None = self.objects.put_if_absent(
                key, rk.frame(RecordType.CLAIM, key, encode_claim(claim))
            )
        except RemoteError:
            created = None  # ambiguous: read back below
        if created:
            return 1
        data = self.objects.get(key)
        if data is None:
            raise RemoteError(f"the claim {key} could not be created (will retry)")
        other = decode_claim(rk.unframe(key, data, RecordType.CLAIM), key)
        if other.owner == self.t.uuid:
            return 1
        self._fence(wf_key, wf_id, other.epoch, other.owner, other.host, "owned elsewhere")
        return None

    def _fence(
        self, wf_key: bytes, wf_id: str, epoch: int, owner: bytes, host: str, reason: str
    ) -> None:
        doc = {"wf": wf_id, "epoch": epoch, "owner": owner, "host": host, "reason": reason}
        self.t.env.write(lambda txn: self.t.remote.put_fence(txn, wf_key, doc))
        _log.warning(
            "ckdb remote: workflow %r is owned by %s (epoch %d) now; this store stops shipping "
            "it and refuses creates for it",
            wf_id,
            host,
            epoch,
        )

    def _upload_blobs(self, wf_key: bytes, wk: str, blobs: dict[bytes, Loader]) -> set[bytes]:
        assert self.link is not None
        rk = self.link.keys
        with self.t.env.read() as txn:
            todo = [(rcid, load) for rcid, load in blobs.items()
                    if not self.t.remote.has_blob(txn, wf_key, rcid)]  # fmt: skip
        done = set()
        for rcid, load in todo:
            raw = load()
            if rk.content_id(raw) != rcid:
                raise IntegrityError(f"blob {rcid.hex()[:16]} changed before its upload")
            key = blob_key(wk, rcid)
            obj = rk.frame(RecordType.BLOB, key, raw)
            if not self.objects.put_if_absent(key, obj):
                existing = self.objects.get(key)
                try:
                    ok = existing is not None and (
                        rk.content_id(rk.unframe(key, existing, RecordType.BLOB)) == rcid
                    )
                except IntegrityError:
                    ok = False
                if not ok:  # a damaged blob under our name: content-addressed, so replace it
                    self.objects.put(key, obj)
            self.blobs_put += 1
            self.bytes_put += len(obj)
            done.add(rcid)
        return done

    def _ship_segment(
        self,
        wf_key: bytes,
        wk: str,
        wf_id: str,
        cursor: Cursor,
        puts: list[Exported],
        flag_ops: list[tuple[bytes, int]],
        dels: set[bytes],
        stale: set[bytes],
        truncated: bool,
        count: int,
        first: int,
    ) -> tuple[str, int]:
        assert self.link is not None
        rk = self.link.keys
        blobs: dict[bytes, Loader] = {}
        cmap: dict[bytes, bytes] = {}
        for e in puts:
            blobs.update(e.blobs)
            cmap.update(e.cmap)
        uploaded = self._upload_blobs(wf_key, wk, blobs)
        ops: list[tuple[Any, ...]] = [("put", e.ck) for e in puts]
        ops += [("flags", cid, flags) for cid, flags in flag_ops]
        if dels:
            ops.append(("del", tuple(sorted(dels))))
        seg = Segment(
            "log", wf_id, cursor.next, cursor.epoch, self.t.uuid, HOST,
            secrets.token_bytes(16), cursor.prev, now_us(), tuple(ops),
        )  # fmt: skip
        key = log_key(wk, seg.seq)
        obj = rk.frame(RecordType.SEGMENT, key, encode_segment(seg), Codec.LZ4)
        created: bool | None
        self._confirmed.discard(wf_key)  # until the answer is known
        try:
            created = self.objects.put_if_absent(key, obj)
        except RemoteError:
            created = None  # the PUT may or may not have happened: read back
        live = unpack_live(cursor.live)
        if created:
            self.segments_put += 1
            self.bytes_put += len(obj)
            apply_ops(live, seg.ops)
            done = not truncated
            self._commit(wf_key, cursor, seg.seq, digest(obj), live, uploaded, cmap,
                         dels | (stale if done else set()), count if done else None)  # fmt: skip
            self._confirmed.add(wf_key)  # the cursor is at the tip again
            if done and first:
                self._lags.append(max(0.0, (now_us() - first) / 1e6))
            return ("done" if done else "more"), seg.seq
        data = self.objects.get(key)
        if data is None:
            raise RemoteError(f"{key} could not be created (will retry)")
        return self._existing(wf_key, wf_id, cursor, key, data, uploaded, cmap), seg.seq

    def _existing(
        self,
        wf_key: bytes,
        wf_id: str,
        cursor: Cursor,
        key: str,
        data: bytes,
        uploaded: set[bytes],
        cmap: dict[bytes, bytes],
    ) -> str:
        """The remote holds ``data`` at ``key``, the segment number the cursor would write next:
        "adopted" (ours: the cursor moves past it), "fenced" (a newer owner's) or "stuck"."""
        assert self.link is not None
        try:
            other = decode_segment(self.link.keys.unframe(key, data, RecordType.SEGMENT), key)
            if other.seq != cursor.next:
                raise IntegrityError(f"remote object {key} holds segment {other.seq}")
        except IntegrityError as err:
            self._errors[wf_key] = f"{err}: shipping of {wf_id!r} stopped (check_remote)"
            _log.error("ckdb remote: %s", self._errors[wf_key])
            return "stuck"
        if other.epoch == cursor.epoch and other.owner == self.t.uuid:
            # Our own segment: an attempt whose answer was lost, or one a crash kept us from
            # recording. Adopt it, then diff again: nothing is shipped twice.
            live = unpack_live(cursor.live)
            apply_ops(live, other.ops)
            self._commit(wf_key, cursor, other.seq, digest(data), live, uploaded, cmap, set(), None)
            return "adopted"
        if other.epoch > cursor.epoch:
            self._fence(wf_key, wf_id, other.epoch, other.owner, other.host, "taken over")
            return "fenced"
        self._errors[wf_key] = (
            f"{key} holds a segment of epoch {other.epoch} by another store, below this store's "
            f"epoch {cursor.epoch}: shipping of {wf_id!r} stopped (check_remote)"
        )
        _log.error("ckdb remote: %s", self._errors[wf_key])
        return "stuck"

    def _catch_up(self, wf_key: bytes, wk: str, wf_id: str, cursor: Cursor | None) -> str:
        """Look at the segment number after the cursor (or, without a cursor, at whether this
        store claimed epoch 1 before a crash): "ok" when the cursor is at the tip, else what
        :meth:`_existing` says."""
        assert self.link is not None
        rk = self.link.keys
        if cursor is None:
            key = claim_key(wk, 1)
            data = self.objects.get(key)
            if data is None:
                return "ok"
            if decode_claim(rk.unframe(key, data, RecordType.CLAIM), key).owner != self.t.uuid:
                return "ok"  # another store's: the first ship finds out and fences
            cursor = Cursor(wf_id, 1, 1, ZERO_DIGEST, b"", 0)
        key = log_key(wk, cursor.next)
        data = self.objects.get(key)
        if data is None:
            return "ok"
        return self._existing(wf_key, wf_id, cursor, key, data, set(), {})

    def _commit(
        self,
        wf_key: bytes,
        cursor: Cursor,
        seq: int,
        prev: bytes,
        live: dict[bytes, tuple[int, int]],
        uploaded: set[bytes],
        cmap: dict[bytes, bytes],
        tombs: set[bytes],
        clear_count: int | None,
    ) -> None:
        new = Cursor(cursor.workflow_id, cursor.epoch, seq + 1, prev, pack_live(live), now_us())

        def apply(txn: Txn) -> None:
            r = self.t.remote
            r.put_cursor(txn, wf_key, new)
            r.add_blobs(txn, wf_key, uploaded)
            r.put_cmap(txn, cmap)
            r.drop_tombs(txn, wf_key, tombs)
            if clear_count is not None:
                r.clear_dirty(txn, wf_key, clear_count, self._snap_us)

        self.t.env.write(apply)

    # -- sync and status -------------------------------------------------------------------------

    def sync(self, timeout: float | None) -> ShipReport:
        """Block until a round that started after this call finished without a network error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            if self._fatal is not None:
                raise self._fatal
            want = self._rounds + 1
            while True:
                done = self._done
                if done is not None and done.number >= want:
                    if done.fatal is not None:
                        raise done.fatal
                    if done.standby:
                        raise RemoteError(
                            f"another process ({self.standby_for}) ships this store: call "
                            "sync_remote there (one process per store ships; the others stand by)"
                        )
                    if done.network_error is None:
                        break
                    want = self._rounds + 1  # that round failed: wait for the next one
                self._sync_want = max(self._sync_want, want)
                self._cv.notify_all()
                if not self._thread.is_alive():
                    raise RemoteError("the shipper is not running (the store was closed?)")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise RemoteError(
                        f"sync_remote: not everything is in {self.objects.url} after "
                        f"{timeout:g} s; last error: {self._last_error or 'none'} "
                        "(local checkpoints are safe; shipping goes on)"
                    )
                self._cv.wait(1.0 if left is None else min(left, 1.0))
        with self.t.env.read() as txn:
            shipped = {c.workflow_id: c.next - 1 for _k, c in self.t.remote.cursors(txn)}
        fenced = set(done.fenced)
        return ShipReport(
            shipped={wf: n for wf, n in shipped.items() if wf not in fenced},
            fenced=tuple(sorted(fenced)),
            failed=dict(done.failed),
            unshippable=tuple(done.unshippable),
        )

    def status(self) -> RemoteStatus:
        t = self.t
        rows: list[WorkflowStatus] = []
        now = now_us()
        with t.env.read() as txn:
            dirty = {wf: first for wf, _count, first in t.remote.dirty(txn)}
            fences = dict(t.remote.fences(txn))
            seen = set()
            for wf_key, cursor in t.remote.cursors(txn):
                seen.add(wf_key)
                rows.append(self._row(wf_key, cursor.workflow_id, cursor, dirty, fences, now))
            for wf_key in list(dirty) + list(fences):
                if wf_key not in seen:
                    seen.add(wf_key)
                    name = self._workflow_id(txn, wf_key) or wf_key.hex()
                    rows.append(self._row(wf_key, name, None, dirty, fences, now))
        lags = sorted(self._lags)
        return RemoteStatus(
            url=self.objects.url,
            connected=self.link is not None and self._last_error is None,
            last_error=self._last_error,
            workflows=tuple(sorted(rows, key=lambda r: r.workflow_id)),
            rounds=self._rounds,
            segments_put=self.segments_put,
            blobs_put=self.blobs_put,
            bytes_put=self.bytes_put,
            lag_p50=statistics.median(lags) if lags else None,
            lag_p99=lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else None,
            standby_for=self.standby_for,
        )

    def _row(
        self,
        wf_key: bytes,
        name: str,
        cursor: Cursor | None,
        dirty: dict[bytes, int],
        fences: dict[bytes, dict[str, Any]],
        now: int,
    ) -> WorkflowStatus:
        fence = fences.get(wf_key)
        fenced_by = None
        if fence is not None:
            fenced_by = (
                "pulled"
                if fence.get("reason") == "pulled"
                else f"{fence.get('host', '?')} (epoch {fence.get('epoch', '?')})"
            )
        first = dirty.get(wf_key)
        return WorkflowStatus(
            workflow_id=name,
            owner_epoch=None if cursor is None else cursor.epoch,
            shipped_up_to=0 if cursor is None else cursor.next - 1,
            live=0 if cursor is None else len(cursor.live) // LIVE_ROW.size,
            pending=wf_key in dirty,
            lag_seconds=None if not first else max(0.0, (now - first) / 1e6),
            fenced_by=fenced_by,
            last_error=self._errors.get(wf_key),
        )
