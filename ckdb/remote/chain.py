"""Reading a workflow's history from a remote, verifying every object on the way.

Claims, the newest snapshot that verifies, then segments from there until one is absent (16
reads in flight). Each segment must verify (tag), carry the number of its key and the workflow's
id, chain to its predecessor (``prev``), never lower the epoch, and come from the owner that
claimed its epoch. The first object that fails ends the chain: what came before it is the
history, the problem is named, nothing after it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import attrs
from attrs import define, field

from ckdb.errors import IntegrityError
from ckdb.layout import RecordType
from ckdb.remote.format import (
    ZERO_DIGEST,
    Ck,
    Claim,
    Segment,
    Snapshot,
    decode_claim,
    decode_segment,
    decode_snapshot,
    digest,
    log_key,
    parse_number,
    wf_dir,
)
from ckdb.remote.link import Link

PARALLEL = 16


@define
class Chain:
    """A workflow's verified history in a remote."""

    wk: str
    workflow_id: str
    claims: dict[int, Claim] = field(factory=dict)
    snapshot: Snapshot | None = None
    segments: list[Segment] = field(factory=list)
    live: dict[bytes, Ck] = field(factory=dict)  # checkpoint id -> ck, after every op
    last_seq: int = 0
    last_digest: bytes = ZERO_DIGEST
    last_epoch: int = 0
    last_owner: bytes | None = None
    problems: list[str] = field(factory=list)
    objects_read: int = 0

    @property
    def max_epoch(self) -> int:
        return max(self.claims, default=0)

    @property
    def exists(self) -> bool:
        return bool(self.claims) or self.last_seq > 0

    def apply(self, seg: Segment, obj_digest: bytes) -> None:
        """Replay a verified segment."""
        for op in seg.ops:
            if op[0] == "put":
                self.live[op[1].cid] = op[1]
            elif op[0] == "del":
                for cid in op[1]:
                    self.live.pop(cid, None)
            elif op[1] in self.live:
                self.live[op[1]] = attrs.evolve(self.live[op[1]], flags=op[2])
        self.segments.append(seg)
        self.last_seq = seg.seq
        self.last_digest = obj_digest
        self.last_epoch = seg.epoch
        self.last_owner = seg.owner

    def check(self, seg: Segment, key: str) -> str | None:
        """Why ``seg`` (read at ``key``) cannot follow the chain, or None."""
        if seg.seq != self.last_seq + 1:
            return f"{key}: holds segment {seg.seq}"
        if seg.wf != self.workflow_id:
            return f"{key}: belongs to another workflow"
        if seg.prev != self.last_digest:
            return f"{key}: does not chain to segment {self.last_seq} (prev digest differs)"
        if seg.epoch < self.last_epoch:
            return f"{key}: epoch {seg.epoch} after epoch {self.last_epoch}"
        claim = self.claims.get(seg.epoch)
        if claim is None or claim.owner != seg.owner:
            return f"{key}: written by a store that did not claim epoch {seg.epoch}"
        return None


def read_chain(
    link: Link,
    workflow_id: str | None = None,
    *,
    wk: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Chain:
    """The verified history of ``workflow_id`` (or of the workflow digest ``wk``: its id is
    then taken from its first claim that verifies and matches the digest)."""
    rk = link.keys
    objects = link.objects
    if wk is None:
        assert workflow_id is not None
        wk = rk.wk(workflow_id)
    chain = Chain(wk, workflow_id or "")
    base = wf_dir(wk)
    for info in objects.list(base + "claim/"):
        data = objects.get(info.key)
        chain.objects_read += 1
        if data is None:
            continue
        try:
            claim = decode_claim(rk.unframe(info.key, data, RecordType.CLAIM), info.key)
            if not chain.workflow_id and rk.wk(claim.wf) == wk:
                chain.workflow_id = claim.wf
            if claim.epoch != parse_number(info.key) or claim.wf != chain.workflow_id:
                raise IntegrityError(f"remote object {info.key}: claim of another slot")
        except IntegrityError as err:
            chain.problems.append(str(err))
            continue
        chain.claims[claim.epoch] = claim
    snaps = sorted(
        (n, info.key)
        for info in objects.list(base + "snap/")
        if (n := parse_number(info.key)) is not None
    )
    for n, key in reversed(snaps):
        data = objects.get(key)
        chain.objects_read += 1
        if data is None:
            continue
        try:
            snap = decode_snapshot(rk.unframe(key, data, RecordType.SNAPSHOT), key)
            if snap.seq != n or snap.wf != chain.workflow_id:
                raise IntegrityError(f"remote object {key}: snapshot of another slot")
        except IntegrityError as err:
            chain.problems.append(str(err))
            continue  # an older snapshot (or the log from 1) still gives the history
        chain.snapshot = snap
        chain.live = {ck.cid: ck for ck in snap.live}
        chain.last_seq, chain.last_digest, chain.last_epoch = snap.seq, snap.prev, snap.epoch
        chain.last_owner = snap.owner
        break
    _read_log(link, chain, progress)
    return chain


def _read_log(link: Link, chain: Chain, progress: Callable[[int], None] | None) -> None:
    rk = link.keys
    with ThreadPoolExecutor(PARALLEL, thread_name_prefix="ckdb-remote-read") as pool:
        while True:
            start = chain.last_seq + 1
            keys = [log_key(chain.wk, n) for n in range(start, start + PARALLEL)]
            datas = list(pool.map(link.objects.get, keys))
            chain.objects_read += len(keys)
            for key, data in zip(keys, datas, strict=True):
                if data is None:
                    return
                try:
                    seg = decode_segment(rk.unframe(key, data, RecordType.SEGMENT), key)
                except IntegrityError as err:
                    chain.problems.append(str(err))
                    return
                problem = chain.check(seg, key)
                if problem is not None:
                    chain.problems.append(problem)
                    return
                chain.apply(seg, digest(data))
                if progress is not None:
                    progress(chain.last_seq)
