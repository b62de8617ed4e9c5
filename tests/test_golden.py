"""Stores written by released formats still open, verify and restore (borg keeps repo12.tar.gz).

Both archives were written by tests/data/make_golden.py with format version 1:
golden-v1.tar.gz by ckdb 0.1 (a frame per component), golden-v1-bundles.tar.gz by ckdb 0.2
(incompatible feature 0x4: small state components share a bundle frame)."""

from __future__ import annotations

import math
import shutil
import tarfile
from pathlib import Path

import pytest

import ckdb
from ckdb.layout import DB_INFO, FORMAT, INCOMPAT_BUNDLES, INFO_FORMAT

DATA = Path(__file__).resolve().parent / "data"
KEY = b"golden-store-key-0123456789abcdef"


ARCHIVES = ["golden-v1.tar.gz", "golden-v1-bundles.tar.gz"]


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
    bundles = bool(_incompat(path) & INCOMPAT_BUNDLES)
    assert bundles == ((golden / "ARCHIVE").read_text() == "golden-v1-bundles.tar.gz")
    with ckdb.open(path, key=KEY, retention=None) as s:
        old = s.list("golden")[1]  # "work": components "task" and "f"
        assert {c.type for c in old.components} >= {"component"}
        assert ("bundle" in {c.type for c in old.components}) == bundles
        info = s.create("golden", "new", state={"a": {"x": 1}, "b": [2.5, None]})
        assert ("bundle" in {c.type for c in info.components}) == bundles
        assert all(c.stored_size > 0 for c in info.components) != bundles
        assert s.load(info.id).state == {"a": {"x": 1}, "b": [2.5, None]}
        assert s.validate(info.id, "comprehensive").ok
        assert s.scrub().ok
    assert bool(_incompat(path) & INCOMPAT_BUNDLES) == bundles  # never changed by a write


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
