"""``check_remote``: verify a whole remote without changing it (``docs/remote.md``)."""

from __future__ import annotations

from collections import defaultdict

from attrs import frozen

from ckdb.errors import IntegrityError, InvalidInput
from ckdb.layout import RecordType
from ckdb.remote import Remote
from ckdb.remote.chain import read_chain
from ckdb.remote.format import parse_number
from ckdb.remote.link import Link


@frozen
class RemoteCheckReport:
    """What ``check_remote`` found; ``ok`` when nothing is wrong."""

    url: str
    workflows: int
    segments: int  # segments verified
    checkpoints: int  # checkpoints live in the remote
    blobs: int  # blobs present (verified with deep=True)
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_remote(
    remote: Remote | str, *, key: bytes | None = None, deep: bool = False
) -> RemoteCheckReport:
    """Verify every workflow of a remote: the root (WrongKey if the key does not open it), every
    claim and snapshot, every chain from its newest snapshot (tags, prev digests, contiguous
    numbers, epochs and their claims), that every blob a live checkpoint names is present, and
    with ``deep`` every older segment and every blob's content. Changes nothing."""
    remote = remote if isinstance(remote, Remote) else Remote(remote, key=key)
    master = key or remote.key
    if master is None:
        raise InvalidInput("check_remote needs the fleet's master key (key= or Remote(key=...))")
    link = Link.connect(remote.objects, master)
    rk = link.keys
    by_wf: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for info in remote.objects.list("wf/"):
        parts = info.key.split("/")
        if len(parts) == 4:
            by_wf[parts[1]][parts[2]].append(info.key)
    problems: list[str] = []
    segments = checkpoints = blobs = 0
    for wk, kinds in sorted(by_wf.items()):
        chain = read_chain(link, wk=wk)
        problems.extend(chain.problems)
        segments += len(chain.segments)
        checkpoints += len(chain.live)
        numbers = sorted(n for k in kinds.get("log", []) if (n := parse_number(k)) is not None)
        beyond = [n for n in numbers if n > chain.last_seq]
        if beyond:
            problems.append(
                f"wf/{wk}: segments {beyond[0]}..{beyond[-1]} are not reachable from segment "
                f"{chain.last_seq} (a gap, or damage at segment {chain.last_seq + 1})"
            )
        if not chain.claims and numbers:
            problems.append(f"wf/{wk}: segments without any claim")
        present = {k.rpartition("/")[2] for k in kinds.get("blob", [])}
        blobs += len(present)
        for ck in chain.live.values():
            names = [f[4] for f in ck.frames if f[2] == -1] + [r for _s, r in ck.chunks]
            problems.extend(
                f"wf/{wk}/blob/{rcid.hex()} is missing (named by a checkpoint)"
                for rcid in names
                if rcid.hex() not in present
            )
        if deep:
            first = chain.snapshot.seq if chain.snapshot is not None else chain.last_seq
            for n in numbers:
                if n > first:
                    continue
                k = f"wf/{wk}/log/{n:016x}"
                data = remote.objects.get(k)
                try:
                    if data is not None:
                        rk.unframe(k, data, RecordType.SEGMENT)
                except IntegrityError as err:
                    problems.append(str(err))
            for name in sorted(present):
                k = f"wf/{wk}/blob/{name}"
                data = remote.objects.get(k)
                try:
                    if (
                        data is None
                        or rk.content_id(rk.unframe(k, data, RecordType.BLOB)).hex() != name
                    ):
                        problems.append(f"remote object {k}: content does not match its name")
                except IntegrityError as err:
                    problems.append(str(err))
    return RemoteCheckReport(
        url=remote.objects.url,
        workflows=len(by_wf),
        segments=segments,
        checkpoints=checkpoints,
        blobs=blobs,
        problems=tuple(problems),
    )
