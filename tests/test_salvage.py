"""Salvaging repair with real byte flips in ``data.mdb``.

The issue's case: two checkpoints of one workflow share one 2 MB file; one byte of its chunk is
flipped on disk (in the LMDB file, no ckdb or py-lmdb write involved). ``scrub(repair=True)``
without a backup must keep both checkpoints with their state, mark the file damaged, restore the
rest, prefer a fully valid checkpoint in ``restore_latest``, and heal when the content is
captured again.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import lmdb
import pytest

import ckdb
from ckdb import cli
from ckdb.capture import E_CHUNKS, E_PATH
from ckdb.errors import IntegrityError
from ckdb.layout import (
    DB_CHUNKS,
    DB_MARKS,
    DB_PAYLOADS,
    DB_REGISTRY,
    RecordType,
    id_from_text,
    payload_key,
)

BIG = random.Random(7).randbytes(2_000_000)  # two chunks of at most 1 MiB
SMALL = b"notes that stay intact\n" * 20


def state(n: int) -> dict[str, Any]:
    return {"phase": {"n": n}, "task": {"items": list(range(n, n + 20))}}


def raw_value(path: Path, db: bytes, key: bytes) -> bytes:
    env = lmdb.open(str(path), max_dbs=32, readonly=True)
    try:
        with env.begin() as txn:
            value = txn.get(key, db=env.open_db(db, txn=txn, create=False))
            assert value is not None
            return bytes(value)
    finally:
        env.close()


def flip_on_disk(path: Path, value: bytes) -> None:
    """Flip one bit of ``value`` where it lies in data.mdb (it must lie there exactly once)."""
    data_file = path / "data.mdb"
    data = bytearray(data_file.read_bytes())
    probe = value[len(value) // 2 : len(value) // 2 + 64]
    at = data.find(probe)
    assert at >= 0 and data.find(probe, at + 1) < 0
    data[at + 10] ^= 0x04
    data_file.write_bytes(bytes(data))


def flip_everywhere(path: Path, value: bytes, offset: int = -30) -> None:
    """Flip one bit of byte ``offset`` of every copy of ``value`` in data.mdb (LMDB may keep
    stale copies of a small value on freed pages; which copy is live is not known from
    outside)."""
    data_file = path / "data.mdb"
    data = bytearray(data_file.read_bytes())
    at = data.find(value)
    assert at >= 0
    while at >= 0:
        data[at + offset % len(value)] ^= 0x04
        at = data.find(value, at + 1)
    data_file.write_bytes(bytes(data))


class Case:
    """A store: ``old`` (small file only), then ``a`` and ``b`` sharing BIG; BIG's second chunk
    flipped on disk."""

    def __init__(self, root: Path, *, with_old: bool = True) -> None:
        self.root = root
        self.path = root / "store.ckdb"
        self.work = root / "work"
        self.work.mkdir()
        (self.work / "small.txt").write_bytes(SMALL)
        self.states: dict[str, dict[str, Any]] = {}
        with ckdb.open(self.path, retention=None) as store:
            self.old = None
            if with_old:
                self.old = self._create(store, 0)
            (self.work / "big.bin").write_bytes(BIG)
            self.a = self._create(store, 1)
            self.b = self._create(store, 2)
            with store._env.read() as txn:
                manifest = store.tables.payloads.read_manifest(txn, id_from_text(self.b))
            assert manifest is not None
            (big,) = [e for e in manifest["entries"] if e[E_PATH] in ("big.bin", b"big.bin")]
            assert len(big[E_CHUNKS]) == 2
            self.chunk = bytes(big[E_CHUNKS][1])
        flip_on_disk(self.path, raw_value(self.path, DB_CHUNKS, self.chunk))

    def _create(self, store: ckdb.Store, n: int) -> str:
        cid = store.create("wf", f"p{n}", state=state(n), files=self.work).id
        self.states[cid] = state(n)
        return cid


@pytest.fixture
def case(tmp_path: Path) -> Case:
    return Case(tmp_path)


def test_two_checkpoints_sharing_a_flipped_chunk_keep_their_state(case: Case) -> None:
    with ckdb.open(case.path, retention=None) as store:
        # Before repair: the damage is found (comprehensive), and nothing is salvaged yet.
        assert not store.validate(case.b, level="comprehensive").ok
        report = store.scrub(repair=True)
        assert (report.deleted, report.salvaged) == (0, 2)
        assert not report.ok
        assert {f.checkpoint_id for f in report.findings} == {case.a, case.b}
        infos = {i.id: i for i in store.list("wf")}
        assert set(infos) == {case.old, case.a, case.b}
        for cid in (case.a, case.b):
            assert (infos[cid].status, infos[cid].damaged_files) == ("damaged", ("big.bin",))
            assert store.load(cid).state == case.states[cid]
        assert infos[case.old].status == "valid"
        assert store.latest("wf").id == case.old  # latest never returns a damaged checkpoint

        out = case.root / "out"
        restored = store.restore(case.b, target_dir=out)
        assert not restored.ok
        assert restored.checkpoint.info.damaged_files == ("big.bin",)
        assert [u.split(":")[0] for u in restored.unrestored] == ["big.bin"]
        assert restored.unrestored[0] in restored.findings
        assert sorted(p.name for p in out.iterdir()) == ["small.txt"]
        assert (out / "small.txt").read_bytes() == SMALL

        # restore_latest prefers the older, fully valid checkpoint, and says why.
        latest = store.restore_latest("wf", target_dir=case.root / "latest")
        assert latest.ok
        assert latest.checkpoint.info.id == case.old
        assert [cid for cid, _why in latest.skipped_checkpoints] == [case.b, case.a]
        assert all("damaged files: big.bin" in why for _c, why in latest.skipped_checkpoints)


def test_restore_latest_restores_the_newest_salvaged_one_when_none_is_valid(
    tmp_path: Path,
) -> None:
    case = Case(tmp_path, with_old=False)
    with ckdb.open(case.path, retention=None) as store:
        store.scrub(repair=True)
        out = tmp_path / "out"
        (out).mkdir()
        (out / "big.bin").write_bytes(b"what was here before")
        report = store.restore_latest("wf", target_dir=out, delete_extra=True)
        assert report.checkpoint.info.id == case.b
        assert report.checkpoint.state == case.states[case.b]
        assert not report.ok
        assert [u.split(":")[0] for u in report.unrestored] == ["big.bin"]
        assert [cid for cid, _w in report.skipped_checkpoints] == [case.a]
        # The damaged file is neither written nor deleted: what was at its path stays.
        assert (out / "big.bin").read_bytes() == b"what was here before"
        assert (out / "small.txt").read_bytes() == SMALL


def test_capturing_the_content_again_heals_the_salvaged_checkpoints(case: Case) -> None:
    with ckdb.open(case.path, retention=None) as store:
        store.scrub(repair=True)
        # The damaged chunk's record is gone, so the next capture of BIG (the file is unchanged
        # in the working directory) finds it missing at commit, re-reads it and writes it...
        healer = store.create("wf", "again", state=state(3), files=case.work)
        assert store.validate(healer.id, level="comprehensive").ok
        # ...and the next repairing scrub finds the salvaged ones whole and clears their marks.
        report = store.scrub(repair=True)
        assert {f.checkpoint_id: f.action for f in report.findings} == {
            case.a: "repaired",
            case.b: "repaired",
        }
        for cid in (case.a, case.b):
            info = store.get_info(cid)
            assert (info.status, info.damaged_files) == ("valid", ())
            out = case.root / f"healed-{cid}"
            assert store.restore(cid, target_dir=out).ok
            assert (out / "big.bin").read_bytes() == BIG
        assert store.scrub(repair=True).findings == ()


def test_show_names_the_damaged_files(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    with ckdb.open(case.path, retention=None) as store:
        store.scrub(repair=True)
    assert cli.main(["--store", str(case.path), "show", case.b]) == 0
    out = capsys.readouterr().out
    assert "status: damaged" in out
    assert "damaged file: big.bin" in out
    assert cli.main(["--store", str(case.path), "show", case.b, "--json"]) == 0
    assert '"damaged_files": [\n    "big.bin"\n  ]' in capsys.readouterr().out


def test_a_salvaged_checkpoint_is_still_verified_in_full(case: Case) -> None:
    with ckdb.open(case.path, retention=None) as store:
        store.scrub(repair=True)
    # Later damage to its state: load refuses it, whatever the damage record says.
    key = payload_key(id_from_text(case.b), RecordType.BUNDLE, "")
    flip_on_disk(case.path, raw_value(case.path, DB_PAYLOADS, key))
    with ckdb.open(case.path, retention=None) as store:
        with pytest.raises(IntegrityError):
            store.load(case.b)
        assert store.load(case.a).state == case.states[case.a]
        # A manual mark for another reason ends the salvage: it is plainly corrupted now.
        store.mark(case.a, "operator: do not use")
        assert store.get_info(case.a).status == "corrupted"
        with pytest.raises(IntegrityError):
            store.load(case.a)


def test_a_damaged_damage_record_leaves_the_checkpoint_corrupted(case: Case) -> None:
    with ckdb.open(case.path, retention=None) as store:
        store.scrub(repair=True)
    record = raw_value(case.path, DB_MARKS, id_from_text(case.b) + b"\x01")
    env = lmdb.open(str(case.path), max_dbs=32)
    with env.begin(write=True) as txn:
        damaged = bytearray(record)
        damaged[-1] ^= 0x01
        txn.put(id_from_text(case.b) + b"\x01", bytes(damaged), db=env.open_db(DB_MARKS, txn=txn))
    env.close()
    with ckdb.open(case.path, retention=None) as store:
        assert store.get_info(case.b).status == "corrupted"
        with pytest.raises(IntegrityError):
            store.load(case.b)


def test_chunk_and_state_damage_together_is_not_salvaged(case: Case) -> None:
    key = payload_key(id_from_text(case.b), RecordType.BUNDLE, "")
    flip_on_disk(case.path, raw_value(case.path, DB_PAYLOADS, key))
    with ckdb.open(case.path, retention=None) as store:
        report = store.scrub(repair=True)
        actions = {f.checkpoint_id: f.action for f in report.findings if f.checkpoint_id}
        assert actions[case.b] == "deleted"
        assert actions[case.a].startswith("salvaged")
        assert {i.id for i in store.list("wf")} == {case.old, case.a}


def test_a_pinned_checkpoint_is_salvaged_and_stays_pinned(case: Case) -> None:
    shutil.rmtree(case.root / "work")
    with ckdb.open(case.path, retention=None) as store:
        store.pin(case.a)
        report = store.scrub(repair=True)
        assert report.salvaged == 2
        info = store.get_info(case.a)
        assert (info.pinned, info.status) == (True, "damaged")


def test_a_healed_checkpoint_ships_to_the_remote(case: Case) -> None:
    """Marked checkpoints are not shipped. Once a salvaged one heals, the scrub that clears its
    mark marks its workflow for the shipper, so the next sync ships it."""
    remote_dir = case.root / "remote"
    remote_dir.mkdir()
    fleet_key = bytes(range(32))
    remote = ckdb.Remote(f"file://{remote_dir}", key=fleet_key, interval=0.05)
    with ckdb.open(case.path, retention=None, remote=remote) as store:
        assert store.scrub(repair=True).salvaged == 2
        assert store.sync_remote(timeout=60).ok
        assert ckdb.check_remote(remote).checkpoints == 1  # only the valid one
        healer = store.create("wf", "again", state=state(3), files=case.work)
        assert store.sync_remote(timeout=60).ok
        assert ckdb.check_remote(remote).checkpoints == 2  # the healer; a and b still marked
        assert store.get_info(healer.id).status == "valid"
        assert {f.checkpoint_id for f in store.scrub(repair=True).findings} == {case.a, case.b}
        assert store.sync_remote(timeout=60).ok
    check = ckdb.check_remote(remote, deep=True)
    assert check.ok, check.problems
    assert check.checkpoints == 4  # old, a, b (healed) and the healer


def test_a_lower_level_repair_scrub_leaves_a_salvaged_checkpoint_alone(case: Case) -> None:
    """Below "comprehensive" no chunk is read, so a salvaged checkpoint looks fine: its mark and
    damage record must stay (the chunk is still gone), and latest must still skip it."""
    with ckdb.open(case.path, retention=None) as store:
        assert store.scrub(repair=True).salvaged == 2
        for level in ("basic", "standard"):
            report = store.scrub(repair=True, level=level)
            assert report.repaired == 0, level
            infos = {i.id: i for i in store.list("wf")}
            assert infos[case.b].status == "damaged", level
            assert store.latest("wf").id == case.old


def test_new_damage_seen_by_a_report_only_scrub_keeps_the_state_readable(case: Case) -> None:
    """A second chunk of a salvaged checkpoint rots; a scrub without repair must not turn the
    checkpoint into a plain "corrupted" one (that would make its intact state unreadable); a
    repairing scrub then adds the new damage to its record."""
    with ckdb.open(case.path, retention=None) as store:
        store.scrub(repair=True)
        with store._env.read() as txn:
            manifest = store.tables.payloads.read_manifest(txn, id_from_text(case.b))
        assert manifest is not None
        (small,) = [e for e in manifest["entries"] if e[E_PATH] in ("small.txt", b"small.txt")]
        small_chunk = bytes(small[E_CHUNKS][0])
    flip_everywhere(case.path, raw_value(case.path, DB_CHUNKS, small_chunk))
    with ckdb.open(case.path, retention=None) as store:
        report = store.scrub()
        actions = {f.checkpoint_id: f.action for f in report.findings}
        assert actions[case.b] == actions[case.a] == "kept (damaged files)"
        infos = {i.id: i for i in store.list("wf")}
        assert infos[case.b].status == "damaged"
        assert store.load(case.b).state == case.states[case.b]

        store.scrub(repair=True)
        infos = {i.id: i for i in store.list("wf")}
        for cid in (case.a, case.b):
            assert infos[cid].status == "damaged"
            assert set(infos[cid].damaged_files) == {"big.bin", "small.txt"}
            assert store.load(cid).state == case.states[cid]


def test_a_partly_healed_checkpoint_restores_the_healed_file(tmp_path: Path) -> None:
    """Two damaged files, one captured again (its chunk written afresh): the next repairing
    scrub drops it from the damage record, and restore writes it."""
    work = tmp_path / "work"
    work.mkdir()
    one, two = random.Random(1).randbytes(300_000), random.Random(2).randbytes(300_000)
    (work / "one.bin").write_bytes(one)
    (work / "two.bin").write_bytes(two)
    path = tmp_path / "s.ckdb"
    with ckdb.open(path, retention=None) as store:
        cid = store.create("wf", "p", state=state(1), files=work).id
        with store._env.read() as txn:
            manifest = store.tables.payloads.read_manifest(txn, id_from_text(cid))
        assert manifest is not None
        chunks = {e[E_PATH]: bytes(e[E_CHUNKS][0]) for e in manifest["entries"] if e[E_CHUNKS]}
    for name in ("one.bin", "two.bin"):
        flip_on_disk(path, raw_value(path, DB_CHUNKS, chunks[name]))
    with ckdb.open(path, retention=None) as store:
        store.scrub(repair=True)
        assert set(store.list("wf")[0].damaged_files) == {"one.bin", "two.bin"}
        again = tmp_path / "again"
        again.mkdir()
        (again / "one.bin").write_bytes(one)
        store.create("other", "p", state=state(2), files=again)  # writes one.bin's chunk again
        report = store.scrub(repair=True)
        assert any("damage record updated" in f.action for f in report.findings)
        info = store.list("wf")[0]
        assert (info.status, info.damaged_files) == ("damaged", ("two.bin",))
        out = tmp_path / "out"
        restored = store.restore(cid, target_dir=out)
        assert (out / "one.bin").read_bytes() == one
        assert not (out / "two.bin").exists()
        assert [u.split(":")[0] for u in restored.unrestored] == ["two.bin"]


def test_restore_latest_falls_back_to_an_older_salvaged_checkpoint(tmp_path: Path) -> None:
    """No valid checkpoint; the newest salvaged one's state rots too: restore_latest restores
    the older salvaged one instead of giving up."""
    case = Case(tmp_path, with_old=False)
    with ckdb.open(case.path, retention=None) as store:
        assert store.scrub(repair=True).salvaged == 2
    key = payload_key(id_from_text(case.b), RecordType.BUNDLE, "")
    flip_on_disk(case.path, raw_value(case.path, DB_PAYLOADS, key))
    with ckdb.open(case.path, retention=None) as store:
        report = store.restore_latest("wf", target_dir=tmp_path / "out")
        assert report.checkpoint.info.id == case.a
        assert report.checkpoint.state == case.states[case.a]
        assert case.b in dict(report.skipped_checkpoints)
        assert (tmp_path / "out" / "small.txt").read_bytes() == SMALL


def test_restore_latest_salvages_a_candidate_whose_chunk_is_gone(case: Case) -> None:
    """restore_latest meets the damage first (no scrub ran): the candidates that fail on the
    chunk only are salvaged ("damaged", state readable), not marked corrupted; the older fully
    valid checkpoint is restored."""
    with ckdb.open(case.path, retention=None) as store:
        report = store.restore_latest("wf", target_dir=case.root / "out")
        assert report.checkpoint.info.id == case.old
        infos = {i.id: i for i in store.list("wf")}
        for cid in (case.a, case.b):
            assert (infos[cid].status, infos[cid].damaged_files) == ("damaged", ("big.bin",))
            assert store.load(cid).state == case.states[cid]


def test_a_salvaged_checkpoint_whose_registry_entry_rots_is_corrupted(case: Case) -> None:
    """The damage record says "damaged", but a registry entry that fails its tag makes the
    checkpoint "corrupted" in listings, as load treats it."""
    with ckdb.open(case.path, retention=None) as store:
        store.scrub(repair=True)
        with store._env.read() as txn:
            reg_key = store.tables.registry.key_of(txn, id_from_text(case.b), None)
        assert reg_key is not None
    flip_everywhere(case.path, raw_value(case.path, DB_REGISTRY, reg_key), offset=-1)  # tag
    with ckdb.open(case.path, retention=None) as store:
        infos = {i.id: i for i in store.list("wf")}
        assert infos[case.b].status == "corrupted"
        assert infos[case.a].status == "damaged"
