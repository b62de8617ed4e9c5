"""Remote garbage collection, by the owner (``docs/remote.md``, "Garbage collection").

Per workflow this store owns: write a snapshot of the live state as of the last segment; then
delete the segments and snapshots that a snapshot at least ``margin`` old covers, and the blobs
that no checkpoint live now (or in that snapshot) names and that are older than ``margin``.
Shipping is paused meanwhile (the round lock), so no segment can name a blob while it goes.
"""

from __future__ import annotations

import functools
import time
from datetime import timedelta

from attrs import frozen

from ckdb._env import Txn
from ckdb.errors import InvalidInput, RemoteError
from ckdb.layout import RecordType
from ckdb.meta import now_us
from ckdb.remote.chain import read_chain
from ckdb.remote.format import (
    Ck,
    Snapshot,
    decode_snapshot,
    encode_snapshot,
    parse_number,
    snap_key,
    wf_dir,
)
from ckdb.remote.shipper import Shipper
from ckdb.tables import Tables


@frozen
class GcReport:
    workflows: int
    snapshots_written: int
    segments_deleted: int
    snapshots_deleted: int
    blobs_deleted: int
    problems: tuple[str, ...] = ()


def _names(cks: list[Ck] | tuple[Ck, ...]) -> set[str]:
    out: set[str] = set()
    for ck in cks:
        out.update(f[4].hex() for f in ck.frames if f[2] == -1)
        out.update(r.hex() for _s, r in ck.chunks)
    return out


def _forget(t: Tables, wf_key: bytes, gone: set[bytes], txn: Txn) -> None:
    t.remote.forget_blobs(txn, wf_key, gone)


def gc(t: Tables, shipper: Shipper, *, margin: timedelta = timedelta(hours=1)) -> GcReport:
    if not isinstance(margin, timedelta) or margin < timedelta(0):
        raise InvalidInput(f"margin must be a non-negative timedelta, not {margin!r}")
    link = shipper.link
    if link is None:
        raise RemoteError("the remote is not reachable now; gc needs it")
    rk = link.keys
    objects = link.objects
    written = seg_deleted = snap_deleted = blob_deleted = 0
    problems: list[str] = []
    with shipper.ship_lock:
        if not shipper.holds_lease():
            raise RemoteError(
                f"another process ({shipper.standby_for}) ships this store: run gc there"
            )
        with t.env.read() as txn:
            owned = [
                (wf_key, c)
                for wf_key, c in t.remote.cursors(txn)
                if not t.remote.is_fenced(txn, wf_key)
            ]
        for wf_key, cursor in owned:
            chain = read_chain(link, cursor.workflow_id)
            if chain.problems:
                problems.extend(chain.problems)
                continue  # never collect a history that does not verify
            if chain.last_owner != t.uuid or chain.last_epoch != cursor.epoch:
                continue  # another store owns it now: not ours to collect
            wk = chain.wk
            live = tuple(sorted(chain.live.values(), key=lambda c: c.seq))
            head = chain.snapshot.seq if chain.snapshot is not None else 0
            if chain.last_seq > head:
                key = snap_key(wk, chain.last_seq)
                snap = Snapshot(cursor.workflow_id, chain.last_seq, chain.last_epoch, t.uuid,
                                chain.last_digest, now_us(), live)  # fmt: skip
                if objects.put_if_absent(key, rk.frame(RecordType.SNAPSHOT, key,
                                                       encode_snapshot(snap))):  # fmt: skip
                    written += 1
            cutoff = time.time() - margin.total_seconds()
            snaps = sorted(
                (n, info)
                for info in objects.list(wf_dir(wk) + "snap/")
                if (n := parse_number(info.key)) is not None
            )
            old = [(n, info) for n, info in snaps if info.modified <= cutoff]
            if not old:
                continue
            keep_n, keep_info = old[-1]  # the newest snapshot at least `margin` old
            data = objects.get(keep_info.key)
            if data is None:
                continue
            kept = decode_snapshot(rk.unframe(keep_info.key, data, RecordType.SNAPSHOT),
                                   keep_info.key)  # fmt: skip
            doomed = [
                info.key
                for info in objects.list(wf_dir(wk) + "log/")
                if (n := parse_number(info.key)) is not None and n <= keep_n
            ]
            doomed_snaps = [info.key for n, info in snaps if n < keep_n]
            referenced = _names(live) | _names(kept.live)
            doomed_blobs = [
                info.key
                for info in objects.list(wf_dir(wk) + "blob/")
                if info.key.rpartition("/")[2] not in referenced and info.modified <= cutoff
            ]
            if doomed_blobs:
                gone = {bytes.fromhex(k.rpartition("/")[2]) for k in doomed_blobs}
                # Forgotten before the delete: a later ship re-uploads them, never assumes them.
                t.env.write(functools.partial(_forget, t, wf_key, gone))
            objects.delete(doomed + doomed_snaps + doomed_blobs)
            seg_deleted += len(doomed)
            snap_deleted += len(doomed_snaps)
            blob_deleted += len(doomed_blobs)
    return GcReport(len(owned), written, seg_deleted, snap_deleted, blob_deleted, tuple(problems))
