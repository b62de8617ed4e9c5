"""Stores written by released formats still open, verify and restore (borg keeps repo12.tar.gz).

Every archive was written by tests/data/make_golden.py with format version 1:
golden-v1.tar.gz by ckdb 0.1 (a frame per component), golden-v1-bundles.tar.gz by ckdb 0.2
(incompatible feature 0x4: small state components share a bundle frame),
golden-v1-seqfloor.tar.gz by ckdb 0.4 (0x4 and 0x10: the workflow record's next_seq is a floor,
not rewritten per create; its newest checkpoint, sequence 4, was deleted)."""

from __future__ import annotations

import math
import shutil
import tarfile
from pathlib import Path

import pytest

import ckdb
from ckdb.layout import DB_INFO, FORMAT, INCOMPAT_BUNDLES, INCOMPAT_SEQ_FLOOR, INFO_FORMAT

DATA = Path(__file__).resolve().parent / "data"
KEY = b"golden-store-key-0123456789abcdef"


ARCHIVES = ["golden-v1.tar.gz", "golden-v1-bundles.tar.gz", "golden-v1-seqfloor.tar.gz"]
WITH_BUNDLES = {"golden-v1-bundles.tar.gz", "golden-v1-seqfloor.tar.gz"}


@pytest.fixture(scope="module", params=ARCHIVES)
def golden(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    root = tmp_path_factory.mktemp("golden")
    with tarfile.open(DATA / request.param) as tar:
        tar.extractall(root, filter="data")
    (root / "ARCHIVE").write_text(request.param)
    return root


def _incompat(path: Path) -> int:
    with ckdb.open(path, key=KEY, readonly=True) as s, s._env.read() as txn:
        fmt = txn.get(DB_INFO, INFO_FORMAT)
    assert fmt is not None
    return int(FORMAT.unpack(fmt)[2])


@pytest.mark.parametrize("name", ["plain", "encrypted"])
def test_a_store_keeps_its_layout(golden: Path, tmp_path: Path, name: str) -> None:
    """A store written before bundles keeps one frame per component (so that ckdb 0.1 can still
    open it); a store with bundles bundles new checkpoints. Both read either layout."""
    path = tmp_path / name
    shutil.copytree(golden / name, path)
    archive = (golden / "ARCHIVE").read_text()
    bundles = bool(_incompat(path) & INCOMPAT_BUNDLES)
    assert bundles == (archive in WITH_BUNDLES)
    floor = bool(_incompat(path) & INCOMPAT_SEQ_FLOOR)
    assert floor == (archive == "golden-v1-seqfloor.tar.gz")
    with ckdb.open(path, key=KEY, retention=None) as s:
        old = s.list("golden")[1]  # "work": components "task" and "f"
        assert {c.type for c in old.components} >= {"component"}
        assert ("bundle" in {c.type for c in old.components}) == bundles
        info = s.create("golden", "new", state={"a": {"x": 1}, "b": [2.5, None]})
        # The seq-floor store's deleted newest (4) is never handed out again.
        assert info.sequence == (5 if floor else 4)
        assert ("bundle" in {c.type for c in info.components}) == bundles
        assert all(c.stored_size > 0 for c in info.components) != bundles
        assert s.load(info.id).state == {"a": {"x": 1}, "b": [2.5, None]}
        assert s.validate(info.id, "comprehensive").ok
        assert s.scrub().ok
    assert bool(_incompat(path) & INCOMPAT_BUNDLES) == bundles  # never changed by a write
    assert bool(_incompat(path) & INCOMPAT_SEQ_FLOOR) == floor


@pytest.mark.parametrize("name", ["plain", "encrypted"])
def test_golden_v1_store_opens_verifies_and_restores(
    golden: Path, tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    shutil.copytree(golden / name, path)
    with ckdb.open(path, key=KEY, retention=None) as s:
        infos = s.list("golden")
        assert [i.phase for i in infos] == ["review", "work", "planning"]
        assert infos[0].kind == "manual" and infos[0].pinned
        assert s.get_retention("golden") is not None
        assert s.get_retention("golden").name == "minimal"  # type: ignore[union-attr]
        first = s.load(infos[2].id)
        assert first.state == {"task": {"n": 1, "big": 2**70}}
        work = s.load(infos[1].id)
        assert work.state["task"] == {"n": 2} and math.isinf(work.state["f"]["x"])
        assert work.resources == {"cpu": 2} and work.dependencies == {"python": "3.11"}
        for info in infos:
            assert s.validate(info.id, "comprehensive").ok
        assert s.scrub().ok
        report = s.restore(infos[1].id, target_dir=tmp_path / "out")
        assert report.ok
    out = tmp_path / "out"
    assert (out / "a.txt").read_text() == "alpha\n"
    assert (out / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 8
    assert (out / "link").is_symlink()
    # A wrong key is refused at open, even on an old store.
    with pytest.raises(ckdb.WrongKey):
        ckdb.open(path, key=b"another-key-0123456789abcdef00")
