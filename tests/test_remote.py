"""Remotes end to end, on every backend (memory twin, a directory, moto; Ceph in CI): ship,
take over, fence, retention mirrored, pull, gc, check_remote, restarts, encryption, refusals."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

import ckdb
from ckdb.errors import CheckpointNotFound, Fenced, RemoteUnsafe, WrongKey
from ckdb.remote import Remote
from tests.remote_helpers import Backends, Faulty, IgnoresConditions

WF = "wf-42"


def state(i: int) -> dict[str, Any]:
    return {
        "phase": {"name": f"step-{i}"},
        "progress": {"step": i, "ratio": i / 7, "big": 2**70 + i},
        "task": {"notes": "x" * (50 * i), "raw": bytes([i % 256]) * 10},
    }


def tree(root: Path, i: int) -> dict[str, bytes]:
    files = {
        "README.md": b"same in every step\n",
        f"out/step-{i}.txt": f"result {i}\n".encode(),
        "data/big.bin": bytes(range(256)) * 4096 * (1 + i % 2),  # 1-2 MiB: chunks as blobs
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def expected_tree(i: int) -> dict[str, bytes]:
    """What ``work`` holds after ``tree(work, j)`` for j = 0..i."""
    out = {f"out/step-{j}.txt": f"result {j}\n".encode() for j in range(i + 1)}
    out["README.md"] = b"same in every step\n"
    out["data/big.bin"] = bytes(range(256)) * 4096 * (1 + i % 2)
    return out


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def open_host(tmp: Path, name: str, remote: Remote, key: bytes, **kw: Any) -> ckdb.Store:
    return ckdb.open(tmp / f"{name}.ckdb", key=key, remote=remote, retention=None, **kw)


def test_ship_and_take_over_round_trip(backend: Backends, tmp_path: Path, fleet_key: bytes) -> None:
    work = tmp_path / "work"
    made: list[ckdb.CheckpointInfo] = []
    with open_host(tmp_path, "a", backend.remote(), fleet_key) as a:
        for i in range(4):
            tree(work, i)
            made.append(a.create(WF, f"step-{i}", state=state(i), files=work,
                                 resources={"cpu": i}, dependencies={"py": "3.11"}))  # fmt: skip
        made.append(a.create(WF, "review", kind="manual", name="before-refactor",
                             state={"big": "z" * 400_000}))  # a payload blob  # fmt: skip
        a.pin(made[1].id)
        report = a.sync_remote(timeout=60)
        assert report.ok and report.shipped[WF] >= 1
        status = a.remote_status()
        assert status.workflows[0].owner_epoch == 1 and not status.workflows[0].pending
    with open_host(tmp_path, "b", backend.remote(), fleet_key) as b:
        taken = b.take_over(WF)
        assert taken.ok and taken.epoch == 2 and taken.imported == 5 and taken.live == 5
        infos = b.list(WF)
        assert [i.id for i in infos] == [m.id for m in reversed(made)]
        assert [i.sequence for i in infos] == [5, 4, 3, 2, 1]
        assert [i.parent_id for i in reversed(infos)] == [None] + [m.id for m in made[:-1]]
        assert [i.pinned for i in reversed(infos)] == [False, True, False, False, False]
        for i, info in enumerate(made[:4]):
            ck = b.load(info.id)
            assert ck.state == state(i) and ck.resources == {"cpu": i}
            assert b.validate(info.id, level="comprehensive").ok
        assert b.load(made[4].id).state == {"big": "z" * 400_000}
        out = tmp_path / "restored"
        report = b.restore(made[2].id, target_dir=out)
        assert report.ok and read_tree(out) == expected_tree(2)
        # B owns it now: its new checkpoints ship, continuing the sequence.
        new = b.create(WF, "step-5", state=state(5))
        assert new.sequence == 6 and new.parent_id == made[-1].id
        assert b.sync_remote(timeout=60).ok
    check = ckdb.check_remote(backend.remote(key=fleet_key), deep=True)
    assert check.ok, check.problems
    assert check.checkpoints == 6 and check.workflows == 1


def test_old_owner_is_fenced_and_its_other_workflows_ship_on(
    backend: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    a = open_host(tmp_path, "a", backend.remote(), fleet_key)
    try:
        a.create(WF, "one", state=state(1))
        a.create("other", "one", state=state(1))
        assert a.sync_remote(timeout=60).ok
        with open_host(tmp_path, "b", backend.remote(), fleet_key) as b:
            assert b.take_over(WF).epoch == 2
            b.create(WF, "b-step", state=state(2))
            assert b.sync_remote(timeout=60).ok
        a.create(WF, "zombie", state=state(3))  # before A learns: local only
        a.create("other", "two", state=state(2))
        report = a.sync_remote(timeout=60)
        assert report.fenced == (WF,) and not report.ok
        assert "other" in report.shipped
        with pytest.raises(Fenced, match="taken over"):
            a.create(WF, "after", state=state(4))
        status = {w.workflow_id: w for w in a.remote_status().workflows}
        assert status[WF].fenced_by is not None and status["other"].fenced_by is None
    finally:
        a.close()
    with open_host(tmp_path, "c", backend.remote(), fleet_key) as c:
        c.pull(WF)
        phases = [i.phase for i in c.list(WF)]
        assert phases == ["b-step", "one"]  # the zombie's checkpoint never reached the remote
        c.pull("other")
        assert [i.phase for i in c.list("other")] == ["two", "one"]
    assert ckdb.check_remote(backend.remote(key=fleet_key)).ok


@pytest.mark.realserver
def test_two_hosts_racing_to_take_over_exactly_one_wins(
    backend: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    if backend.kind == "moto":
        pytest.skip("moto checks If-None-Match without a lock: races run on Ceph (and the twin)")
    with open_host(tmp_path, "a", backend.remote(), fleet_key) as a:
        for i in range(3):
            a.create(WF, f"s{i}", state=state(i))
        assert a.sync_remote(timeout=60).ok
    hosts = [open_host(tmp_path, f"h{n}", backend.remote(), fleet_key) for n in range(4)]
    barrier = threading.Barrier(len(hosts))
    results: dict[int, Any] = {}

    def race(n: int) -> None:
        barrier.wait()
        try:
            results[n] = hosts[n].take_over(WF)
        except Fenced as err:
            results[n] = err

    threads = [threading.Thread(target=race, args=(n,)) for n in range(len(hosts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        winners = [n for n, r in results.items() if not isinstance(r, Exception)]
        assert len(winners) == 1, results
        losers = [r for r in results.values() if isinstance(r, Fenced)]
        assert len(losers) == len(hosts) - 1 and all("taken over" in str(r) for r in losers)
        winner = hosts[winners[0]]
        winner.create(WF, "winner", state=state(9))
        assert winner.sync_remote(timeout=60).ok
        for n, host in enumerate(hosts):
            if n != winners[0]:
                with pytest.raises(Fenced):
                    host.create(WF, "loser", state=state(9))
    finally:
        for host in hosts:
            host.close()
    assert ckdb.check_remote(backend.remote(key=fleet_key)).ok


def test_retention_is_mirrored(backend: Backends, tmp_path: Path, fleet_key: bytes) -> None:
    with open_host(tmp_path, "a", backend.remote(), fleet_key) as a:
        made = [a.create(WF, f"s{i}", state=state(i)).id for i in range(8)]
        a.pin(made[0])
        assert a.sync_remote(timeout=60).ok
        a.prune(WF, ckdb.retention.RetentionPolicy(max_checkpoints=2))
        a.delete(made[6])
        kept = [i.id for i in a.list(WF)]
        assert a.sync_remote(timeout=60).ok
    with open_host(tmp_path, "b", backend.remote(), fleet_key) as b:
        b.pull(WF)
        assert [i.id for i in b.list(WF)] == kept
        assert made[0] in kept


def test_restart_never_reuploads(twin: Backends, tmp_path: Path, fleet_key: bytes) -> None:
    counting = Faulty(twin.objects())
    with open_host(
        tmp_path, "a", Remote(twin.url(), objects=counting, interval=0.05), fleet_key
    ) as a:
        for i in range(5):
            a.create(WF, f"s{i}", state=state(i))
        assert a.sync_remote(timeout=30).ok
    puts = counting.calls.get("put_if_absent", 0)
    with open_host(
        tmp_path, "a", Remote(twin.url(), objects=counting, interval=0.05), fleet_key
    ) as a:
        assert a.sync_remote(timeout=30).ok
        assert a.remote_status().workflows[0].shipped_up_to >= 1
    # Reopening costs the self-test's probe (2 creates), nothing else.
    assert counting.calls["put_if_absent"] == puts + 2


def test_encrypted_store_ships_no_names_or_values(
    backend: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    work = tmp_path / "work"
    (work / "secret-dir").mkdir(parents=True)
    (work / "secret-dir" / "secret-file.txt").write_text("SECRET-FILE-CONTENT " * 100)
    remote = backend.remote()
    with open_host(tmp_path, "a", remote, fleet_key, encryption="aes-gcm") as a:
        a.create("SECRET-WORKFLOW", "SECRET-PHASE",
                 state={"SECRET-COMPONENT": {"v": "SECRET-VALUE"}}, files=work)  # fmt: skip
        assert a.sync_remote(timeout=60).ok
    objects = backend.objects()
    everything = [(info.key, objects.get(info.key) or b"") for info in objects.list("")]
    assert len(everything) >= 4
    for key, data in everything:
        for word in (b"SECRET", b"secret-dir", b"secret-file"):
            assert word not in key.encode() and word not in data, (key, word)


def test_an_endpoint_that_ignores_conditions_is_refused(twin: Backends, tmp_path: Path) -> None:
    unsafe = IgnoresConditions(twin.objects())
    with pytest.raises(RemoteUnsafe, match="If-None-Match"):
        ckdb.open(tmp_path / "a.ckdb", remote=Remote(twin.url(), objects=unsafe))
    assert all(k.startswith("selftest/") for k in unsafe.writes)
    with ckdb.open(tmp_path / "a.ckdb") as s:  # the store is closed and usable without it
        s.create(WF, "p")


def test_wrong_master_key_is_refused_at_first_contact(
    backend: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    with open_host(tmp_path, "a", backend.remote(), fleet_key) as a:
        a.create(WF, "p", state=state(1))
        assert a.sync_remote(timeout=60).ok
    with pytest.raises(WrongKey):
        open_host(tmp_path, "b", backend.remote(), b"another fleet's key, 32 bytes...")


def test_take_over_of_an_unknown_workflow(
    backend: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    with open_host(tmp_path, "a", backend.remote(), fleet_key) as a:
        with pytest.raises(CheckpointNotFound):
            a.take_over("nobody")
        with pytest.raises(CheckpointNotFound):
            a.pull("nobody")


def test_pull_is_read_only_until_take_over(
    twin: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    with open_host(tmp_path, "a", twin.remote(), fleet_key) as a:
        first = a.create(WF, "p", state=state(1)).id
        assert a.sync_remote(timeout=30).ok
        with pytest.raises(ckdb.InvalidInput, match="owns"):
            a.pull(WF)
    with open_host(tmp_path, "b", twin.remote(), fleet_key) as b:
        report = b.pull(WF)
        assert report.epoch is None and report.imported == 1
        assert b.load(first).state == state(1)
        with pytest.raises(Fenced, match="pulled"):
            b.create(WF, "q")
        assert b.take_over(WF).epoch == 2
        b.create(WF, "q", state=state(2))
        assert b.sync_remote(timeout=30).ok


def test_gc_keeps_everything_a_take_over_needs(
    backend: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    from datetime import timedelta

    work = tmp_path / "work"
    with open_host(tmp_path, "a", backend.remote(), fleet_key) as a:
        for i in range(6):
            tree(work, i)
            a.create(WF, f"s{i}", state=state(i), files=work)
            assert a.sync_remote(timeout=60).ok  # one segment each
        a.prune(WF, ckdb.retention.RetentionPolicy(max_checkpoints=2))
        assert a.sync_remote(timeout=60).ok
        first = a.gc_remote(margin=timedelta(0))
        assert first.snapshots_written == 1 and first.segments_deleted >= 6
        a.create(WF, "after-gc", state=state(7), files=work)
        assert a.sync_remote(timeout=60).ok
        kept = [i.id for i in a.list(WF)]
    assert ckdb.check_remote(backend.remote(key=fleet_key), deep=True).ok
    with open_host(tmp_path, "b", backend.remote(), fleet_key) as b:
        report = b.take_over(WF)
        assert report.snapshot is not None and report.ok
        assert [i.id for i in b.list(WF)] == kept
        for cid in kept:
            assert b.validate(cid, level="comprehensive").ok


def test_a_store_ships_to_one_remote(twin: Backends, tmp_path: Path, fleet_key: bytes) -> None:
    with open_host(tmp_path, "a", twin.remote("one"), fleet_key) as a:
        a.create(WF, "p")
    with pytest.raises(ckdb.InvalidInput, match="one remote"):
        open_host(tmp_path, "a", twin.remote("two"), fleet_key)


def test_a_store_with_a_remote_is_refused_by_older_ckdb(
    twin: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    from ckdb import layout

    with open_host(tmp_path, "a", twin.remote(), fleet_key) as a:
        a.create(WF, "p")
        with a.tables.env.read() as txn:
            fmt = txn.get(layout.DB_INFO, layout.INFO_FORMAT)
    assert fmt is not None and layout.FORMAT.unpack(fmt)[2] & layout.INCOMPAT_REMOTE
    with ckdb.open(tmp_path / "a.ckdb", key=fleet_key) as again:  # without the remote: fine
        again.create(WF, "q")


def test_rotating_a_master_key_that_is_the_fleet_key_is_refused(
    twin: Backends, tmp_path: Path
) -> None:
    with ckdb.open(tmp_path / "a.ckdb", remote=twin.remote()) as a:  # fleet key = master key
        a.create(WF, "p", state={"x": 1})
        with pytest.raises(ckdb.InvalidInput, match="fleet key"):
            a.rotate_key()
        assert a.sync_remote(timeout=20).ok  # nothing changed: it still ships
    with ckdb.open(tmp_path / "b.ckdb", key=b"k" * 32, remote=twin.remote("b", key=b"f" * 32)) as b:
        b.rotate_key(b"n" * 32)  # an explicit fleet key: the local key is the store's own
        b.create(WF + "2", "p", state={"x": 2})
        assert b.sync_remote(timeout=20).ok


@pytest.mark.realserver
def test_create_only_put_admits_exactly_one_of_concurrent_creators(backend: Backends) -> None:
    """The primitive every claim and segment rests on, on the server itself."""
    if backend.kind == "moto":
        pytest.skip("moto checks If-None-Match without a lock: runs on Ceph (and the twin)")
    from ckdb.remote.link import self_test

    objects = backend.objects()
    self_test(objects)  # the endpoint honours the condition at all
    for attempt in range(5):
        key = f"race/{attempt}"
        barrier = threading.Barrier(8)
        won: list[bytes] = []

        def create(
            n: int, key: str = key, barrier: threading.Barrier = barrier, won: list[bytes] = won
        ) -> None:
            body = b"writer %d" % n
            barrier.wait()
            if objects.put_if_absent(key, body):
                won.append(body)

        threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1, (key, won)
        assert objects.get(key) == won[0]  # and the winner's bytes are what is stored


@pytest.mark.realserver
def test_objects_are_single_part_puts_etag_is_the_md5(
    backend: Backends, tmp_path: Path, fleet_key: bytes
) -> None:
    """Ceph ignores If-None-Match on CompleteMultipartUpload, so every create-only object must be
    one PUT, however large: a multipart ETag ends in "-<parts>", a single PUT's is the body's
    MD5. Also: ckdb never relies on ETag quoting (Ceph wants it unquoted in If-Match)."""
    if backend.kind not in ("moto", "ceph"):
        pytest.skip("ETags are an S3 matter")
    import hashlib

    from tests.remote_helpers import BUCKET, s3_client

    work = tmp_path / "work"
    tree(work, 1)
    big = {"blob": os.urandom(10 << 20)}  # 10 MiB, incompressible: one blob over a part size
    with open_host(tmp_path, "a", backend.remote(timeout=60), fleet_key) as a:
        a.create(WF, "big", state=big, files=work)
        assert a.sync_remote(timeout=120).ok
    client = s3_client(backend)
    prefix = backend.url().removeprefix(f"s3://{BUCKET}/") + "/"
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    sizes = []
    for obj in listed:
        body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        etag = obj["ETag"].strip('"')
        assert "-" not in etag, f"{obj['Key']} was a multipart upload"
        assert etag == hashlib.md5(body).hexdigest(), obj["Key"]  # noqa: S324 - S3's ETag
        sizes.append(len(body))
    assert max(sizes) > 8 << 20  # the big payload went as one object, in one PUT
