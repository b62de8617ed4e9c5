"""Stores written by released formats still open, verify and restore (borg keeps repo12.tar.gz).

tests/data/golden-v1.tar.gz was written by tests/data/make_golden.py with format version 1."""

from __future__ import annotations

import math
import shutil
import tarfile
from pathlib import Path

import pytest

import ckdb

DATA = Path(__file__).resolve().parent / "data"
KEY = b"golden-store-key-0123456789abcdef"


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("golden")
    with tarfile.open(DATA / "golden-v1.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root


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
