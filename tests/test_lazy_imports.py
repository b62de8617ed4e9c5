"""Once ``import ckdb`` returns, a store's whole life imports nothing more from disk.

Issue 17: a capture or restore run in a process that dropped privileges after importing ckdb
could not read the virtual environment of a checkout under a 0700 directory, and py-lmdb's lazy
``lmdb._envid`` import failed at the first ``ckdb.open``. The child below imports ckdb, then
records every import that is not already in ``sys.modules`` (built-in modules need no file and
are allowed) while it creates, captures, loads, validates, restores, lists, prunes, scrubs and
rotates keys, plain and encrypted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import json, os, sys
    import ckdb

    later = []

    class Recorder:
        def find_spec(self, name, path=None, target=None):
            if name not in sys.modules and name not in sys.builtin_module_names:
                later.append(name)
            return None

    sys.meta_path.insert(0, Recorder())
    os.makedirs("src/sub")
    with open("src/a.txt", "w") as f:
        f.write("x" * 70000)
    with open("src/sub/b", "w") as f:
        f.write("y")
    for name, extra in (("plain.ckdb", {}), ("enc.ckdb", {"encryption": "aes-gcm"})):
        with ckdb.open(name, **extra) as s:
            info = s.create("wf", "p", state={"task": {"n": 1}, "big": "z" * 100000}, files="src")
            s.create("wf", "q", kind="manual", name="m", verification_level="comprehensive")
            s.load(info.id)
            s.validate(info.id, level="comprehensive")
            s.restore(info.id, target_dir="out-" + name)
            s.restore_latest("wf", target_dir="latest-" + name)
            s.list()
            s.latest("wf")
            s.prune("wf", "minimal")
            s.scrub(repair=True)
            s.rotate_key(new_data_key=True)
            s.load(info.id)
    print(json.dumps(later))
    """
)


def test_a_store_life_imports_nothing_after_import_ckdb(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_the_recorder_sees_a_lazy_import(tmp_path: Path) -> None:
    # The check above must be able to fail: a module imported after ckdb is recorded.
    code = CHILD.replace("print(json.dumps(later))", "import wave\nprint(json.dumps(later))")
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "wave" in json.loads(res.stdout.strip().splitlines()[-1])
