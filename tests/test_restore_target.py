"""Restore without a target writes into the recorded working directory; operators can refuse that
(issue 17): ``allow_recorded_dir=False`` and ``--require-to`` are an InvalidInput without a target,
and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

import ckdb
from ckdb import cli
from ckdb.errors import InvalidInput


@pytest.fixture
def captured(tmp_path: Path) -> tuple[ckdb.Store, Path, str]:
    src = tmp_path / "work"
    src.mkdir()
    (src / "notes.txt").write_text("as captured")
    store = ckdb.open(tmp_path / "s.ckdb", retention=None)
    info = store.create("wf", "p", state={"task": {"n": 1}}, files=src)
    (src / "notes.txt").write_text("changed since")  # a restore into src would undo this
    yield store, src, info.id
    store.close()


def test_default_restores_into_the_recorded_directory(
    captured: tuple[ckdb.Store, Path, str],
) -> None:
    store, src, cid = captured
    report = store.restore(cid)
    assert report.target_dir == str(src) and report.ok
    assert (src / "notes.txt").read_text() == "as captured"


@pytest.mark.parametrize("latest", [False, True])
def test_refused_without_a_target_and_nothing_written(
    captured: tuple[ckdb.Store, Path, str], latest: bool
) -> None:
    store, src, cid = captured

    def attempt() -> object:
        if latest:
            return store.restore_latest("wf", allow_recorded_dir=False)
        return store.restore(cid, allow_recorded_dir=False)

    with pytest.raises(InvalidInput, match="target_dir"):
        attempt()
    assert (src / "notes.txt").read_text() == "changed since"
    assert store.get_info(cid).status == "valid"  # restore_latest marked nothing


def test_an_explicit_target_or_no_files_is_fine(
    captured: tuple[ckdb.Store, Path, str], tmp_path: Path
) -> None:
    store, src, cid = captured
    out = tmp_path / "out"
    report = store.restore(cid, target_dir=out, allow_recorded_dir=False)
    assert report.ok and (out / "notes.txt").read_text() == "as captured"
    report = store.restore_latest("wf", restore_files=False, allow_recorded_dir=False)
    assert report.target_dir is None and report.checkpoint.state == {"task": {"n": 1}}
    assert (src / "notes.txt").read_text() == "changed since"


def test_cli_require_to(
    captured: tuple[ckdb.Store, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, src, cid = captured
    path = str(store.path)
    store.close()
    code = cli.main(["--store", path, "restore", "--require-to", cid])
    err = capsys.readouterr().err
    assert code == InvalidInput.exit_code and "target_dir" in err
    code = cli.main(["--store", path, "restore-latest", "--require-to", "wf"])
    assert code == InvalidInput.exit_code
    assert (src / "notes.txt").read_text() == "changed since"
    out = tmp_path / "cli-out"
    code = cli.main(["--store", path, "restore", "--require-to", "--to", str(out), cid])
    assert code == 0 and (out / "notes.txt").read_text() == "as captured"
