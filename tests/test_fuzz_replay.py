"""Replay the fuzz corpus: every file in ``fuzz/corpus/<target>/`` through its raw target.

A target swallows ``CkdbError`` and checks its own post-conditions, so a file fails here exactly
when the decoder let another exception escape (or broke a round trip). Crash reproducers from a
fuzzing run are added as ``fuzz/corpus/<target>/crash-<what>`` (see ``fuzz/README.md``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"


def _load_targets():  # type: ignore[no-untyped-def]
    name = "ckdb_fuzz_targets"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FUZZ / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


targets = _load_targets()

CASES = sorted(
    (folder.name, path)
    for folder in (FUZZ / "corpus").iterdir()
    if folder.is_dir()
    for path in folder.iterdir()
    if path.is_file() and not path.name.startswith(".")
)


def test_every_corpus_folder_has_a_target() -> None:
    folders = {p.name for p in (FUZZ / "corpus").iterdir() if p.is_dir()}
    assert folders <= set(targets.TARGETS), folders - set(targets.TARGETS)
    assert set(targets.TARGETS) <= folders, "a target without seeds: run fuzz/make_corpus.py"


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_replay(target: str, path: Path) -> None:
    # Not targets.run(): known bugs must fail here until they are fixed.
    targets.TARGETS[target](path.read_bytes())
