"""Write a golden store archive: a small store of format version 1, as this ckdb writes it.

    python tests/data/make_golden.py golden-v1-bundles.tar.gz

- ``golden-v1.tar.gz``: written by ckdb 0.1 (one payload frame per component);
- ``golden-v1-bundles.tar.gz``: written by ckdb 0.2 (incompatible flag 0x4: small state
  components share a bundle frame).
- ``golden-v1-seqfloor.tar.gz``: written by ckdb 0.4 (flags 0x4 and 0x10: the workflow record
  is not rewritten per create; a fourth checkpoint, the newest, was deleted, so the record's
  ``next_seq`` is 5 while the newest entry is 3).

Run once per released format or format feature (never to "fix" a failing test_golden: that test exists to prove
that stores written by this format still open). The key is fixed so the test can open it.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

import ckdb

KEY = b"golden-store-key-0123456789abcdef"
HERE = Path(__file__).resolve().parent


def main(archive: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = root / "work"
        (work / "sub").mkdir(parents=True)
        (work / "a.txt").write_text("alpha\n")
        (work / "sub" / "b.bin").write_bytes(bytes(range(256)) * 8)
        os.symlink("a.txt", work / "link")
        for name, enc in (("plain", None), ("encrypted", "aes-gcm")):
            with ckdb.open(root / name, key=KEY, encryption=enc, retention=None) as s:
                s.create("golden", "planning", state={"task": {"n": 1, "big": 2**70}})
                s.create(
                    "golden",
                    "work",
                    state={"task": {"n": 2}, "f": {"x": float("inf")}},
                    files=work,
                    resources={"cpu": 2},
                    dependencies={"python": "3.11"},
                )
                s.create("golden", "review", kind="manual", name="before-risky-step", pinned=True)
                # From the seq-floor archive on: its sequence (4) must never be handed out again.
                s.delete(s.create("golden", "scratch", state={"tmp": 1}).id)
                s.set_retention("golden", "minimal")
                if enc:
                    s.rotate_key(KEY, new_data_key=True)
        with tarfile.open(HERE / archive, "w:gz") as tar:
            for name in ("plain", "encrypted"):
                tar.add(root / name / "data.mdb", arcname=f"{name}/data.mdb")


if __name__ == "__main__":
    import sys

    main(sys.argv[1])
