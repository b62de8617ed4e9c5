"""Restore never writes or deletes outside its target — even from a crafted manifest.

The attacker here holds the store's key: manifests are forged with valid tags, and the checkpoint's
metadata (component digest, sizes, integrity digest) is rewritten to match, so every frame
verifies and ``validate(..., "comprehensive")`` passes. Only restore's own path checks stand
between the manifest and the file system. The "outside" is a canary tree around the target whose
bytes, modes and mtimes must be exactly unchanged afterwards (nothing new, nothing deleted).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

import ckdb
from ckdb import encoding
from ckdb.capture import CHUNK_SIZE, E_PATH, E_TYPE
from ckdb.codec import decode_frame, encode_frame
from ckdb.errors import IntegrityError
from ckdb.layout import (
    DB_CHECKPOINTS,
    DB_PAYLOADS,
    Codec,
    RecordType,
    id_from_text,
    payload_key,
)
from ckdb.meta import integrity_digest

# --- helpers -------------------------------------------------------------------------------------


def tree_state(root: Path, skip: Path | None = None) -> dict[bytes, tuple[Any, ...]]:
    """Every path under ``root`` (except ``skip``): type, content/target, mode, mtime_ns."""
    out: dict[bytes, tuple[Any, ...]] = {}
    skip_b = None if skip is None else os.fsencode(skip)
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        if skip_b is not None and skip_b in (os.path.join(dirpath, d) for d in dirnames):
            dirnames.remove(os.path.basename(skip_b))
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                content: Any = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    content = f.read()
            else:
                content = None
            out[p] = (stat.S_IFMT(st.st_mode), content, st.st_mode, st.st_mtime_ns)
    return out


class World:
    """zone/ (the outside, a canary) holding target/ (where restores go) and src/ (captured)."""

    def __init__(self, tmp_path: Path) -> None:
        self.zone = tmp_path / "zone"
        self.target = self.zone / "target"
        self.src = tmp_path / "src"
        self.store_path = tmp_path / "store.ckdb"
        self.zone.mkdir()
        (self.zone / "x").write_text("canary x")
        (self.zone / "secret").mkdir()
        (self.zone / "secret" / "keep.txt").write_text("must survive")
        (self.zone / "secret" / "x").write_text("canary secret/x")
        self.src.mkdir()
        (self.src / "payload.txt").write_text("pwned!")
        (self.src / "d").mkdir()
        with ckdb.open(self.store_path) as s:
            self.cid = s.create("wf", "p", files=self.src).id
            with s._env.read() as txn:
                manifest = s.tables.payloads.read_manifest(txn, id_from_text(self.cid))
        assert manifest is not None
        self.manifest: dict[str, Any] = manifest
        self.payload_row = next(e for e in self.manifest["entries"] if e[E_PATH] == "payload.txt")
        self.dir_row = next(e for e in self.manifest["entries"] if e[E_PATH] == "d")

    def file(self, path: Any) -> list[Any]:
        row = list(self.payload_row)
        row[E_PATH] = path
        return row

    def dir(self, path: Any) -> list[Any]:
        row = list(self.dir_row)
        row[E_PATH] = path
        return row

    def link(self, path: Any, target: Any) -> list[Any]:
        row = list(self.payload_row)
        row[E_PATH] = path
        row[E_TYPE] = "symlink"
        row[2], row[5], row[6], row[7] = 0, None, target, None
        return row

    def forge(self, entries: list[list[Any]], *, check_load: bool = True) -> None:
        """Replace the checkpoint's manifest with ``entries``, validly tagged, metadata to match."""
        doc = dict(self.manifest)
        doc["entries"] = entries
        doc["working_directory"] = str(self.target)
        doc["chunk_size"] = CHUNK_SIZE
        cid = id_from_text(self.cid)
        with ckdb.open(self.store_path) as s:
            raw = encoding.encode(doc)
            key = payload_key(cid, RecordType.MANIFEST, "files")
            frame = encode_frame(
                s._keys.active_mac, s._keys.active, RecordType.MANIFEST, DB_PAYLOADS, key, raw,
                Codec.NONE,
            )  # fmt: skip
            with s._env.read() as txn:
                meta_value = txn.get(DB_CHECKPOINTS, cid)
            assert meta_value is not None
            meta = encoding.decode(
                decode_frame(s._keys.mac, DB_CHECKPOINTS, cid, meta_value, RecordType.METADATA)
            )
            for comp in meta["components"]:
                if comp[0] == RecordType.MANIFEST:
                    comp[2], comp[3], comp[4] = len(raw), len(frame), hashlib.sha256(raw).digest()
            meta["integrity"] = integrity_digest(cid, meta["components"])
            meta_frame = encode_frame(
                s._keys.active_mac, s._keys.active, RecordType.METADATA, DB_CHECKPOINTS, cid,
                encoding.encode(meta), Codec.NONE,
            )  # fmt: skip

            def put(txn: Any) -> None:
                txn.put(DB_PAYLOADS, key, frame)
                txn.put(DB_CHECKPOINTS, cid, meta_frame)

            s._env.write(put)
            # The forgery is complete: every check short of restore's own passes.
            if check_load:
                assert s.validate(self.cid, level="comprehensive").ok
                assert len(s.load(self.cid).files.entries) == len(entries)  # type: ignore[union-attr]

    def outside(self) -> dict[bytes, tuple[Any, ...]]:
        return tree_state(self.zone, skip=self.target)

    def restore(self, **kw: Any) -> Any:
        with ckdb.open(self.store_path) as s:
            return s.restore(self.cid, target_dir=self.target, **kw)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _escapes(w: World) -> dict[str, list[list[Any]]]:
    canary_abs = str(w.zone / "x")
    return {
        "dotdot": [w.file("../x")],
        "dotdot-bytes": [w.file(b"../x")],
        "absolute": [w.file(canary_abs)],
        "absolute-bytes": [w.file(os.fsencode(canary_abs))],
        "absolute-new": [w.file(str(w.zone / "secret" / "new"))],
        "nested-dotdot": [w.dir("a"), w.file("a/../../x")],
        "deep-dotdot": [w.file("a/b/../../../secret/x")],
        "dot": [w.file("./x")],
        "empty": [w.file("")],
        "trailing-slash": [w.file("x/")],
        "double-slash": [w.file("a//x")],
        "nul": [w.file("x\x00/../../x")],
        "dotdot-dir": [w.dir("..")],
        "dotdot-link": [w.link("../x", "anything")],
        "link-then-file": [w.link("link", str(w.zone / "secret")), w.file("link/pwned")],
        "link-then-overwrite": [w.link("link", str(w.zone / "secret")), w.file("link/x")],
        "rel-link-then-file": [w.link("link", ".."), w.file("link/x")],
        "link-then-dir": [w.link("link", str(w.zone)), w.dir("link/sub"), w.file("link/sub/f")],
        "link-then-deep": [w.dir("a"), w.link("a/l", "../.."), w.file("a/l/x")],
        "file-then-child": [w.file("f"), w.file("f/x")],
        "duplicate": [w.file("x"), w.dir("x")],
        "duplicate-str-bytes": [w.file("x"), w.link(b"x", str(w.zone / "x"))],
    }


CASES = [
    "dotdot",
    "dotdot-bytes",
    "absolute",
    "absolute-bytes",
    "absolute-new",
    "nested-dotdot",
    "deep-dotdot",
    "dot",
    "empty",
    "trailing-slash",
    "double-slash",
    "nul",
    "dotdot-dir",
    "dotdot-link",
    "link-then-file",
    "link-then-overwrite",
    "rel-link-then-file",
    "link-then-dir",
    "link-then-deep",
    "file-then-child",
    "duplicate",
    "duplicate-str-bytes",
]


@pytest.mark.parametrize("delete_extra", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_crafted_manifest_is_refused(world: World, case: str, delete_extra: bool) -> None:
    entries = _escapes(world)[case]
    world.forge(entries)
    before = world.outside()
    with pytest.raises(IntegrityError, match="refus"):
        world.restore(delete_extra=delete_extra)
    assert world.outside() == before
    # refused before anything was written: the target holds nothing
    assert not world.target.exists() or os.listdir(world.target) == []


@pytest.mark.parametrize("delete_extra", [False, True])
def test_existing_symlink_in_target_without_dir_entry(world: World, delete_extra: bool) -> None:
    """target/sub -> outside, manifest has sub/x but no entry for sub: refused."""
    world.target.mkdir()
    os.symlink(world.zone / "secret", world.target / "sub")
    world.forge([world.file("sub/x"), world.file("sub/new")])
    before = world.outside()
    with pytest.raises(IntegrityError, match="sub"):
        world.restore(delete_extra=delete_extra)
    assert world.outside() == before
    assert os.readlink(world.target / "sub") == str(world.zone / "secret")


@pytest.mark.parametrize("delete_extra", [False, True])
def test_existing_relative_symlink_deeper(world: World, delete_extra: bool) -> None:
    (world.target / "a").mkdir(parents=True)
    os.symlink("../..", world.target / "a" / "up")
    world.forge([world.dir("a"), world.file("a/up/x")])
    before = world.outside()
    with pytest.raises(IntegrityError):
        world.restore(delete_extra=delete_extra)
    assert world.outside() == before


@pytest.mark.parametrize("delete_extra", [False, True])
def test_existing_symlink_replaced_by_declared_dir(world: World, delete_extra: bool) -> None:
    """target/sub -> outside, manifest has a dir entry sub and sub/x: the link becomes a real
    directory; the outside is untouched."""
    world.target.mkdir()
    os.symlink(world.zone / "secret", world.target / "sub")
    world.forge([world.dir("sub"), world.file("sub/x")])
    before = world.outside()
    report = world.restore(delete_extra=delete_extra)
    assert report.ok
    assert world.outside() == before
    sub = world.target / "sub"
    assert not sub.is_symlink() and sub.is_dir()
    assert (sub / "x").read_text() == "pwned!"
    assert sorted(os.listdir(sub)) == ["x"]


@pytest.mark.parametrize("delete_extra", [False, True])
def test_existing_symlink_at_final_component(world: World, delete_extra: bool) -> None:
    """target/x -> zone/x and manifest has a file x: the link is replaced, never written through.
    The same for a fifo and a directory entry over a link to an outside directory."""
    world.target.mkdir()
    os.symlink(world.zone / "x", world.target / "x")
    os.symlink(world.zone / "secret", world.target / "d")
    os.symlink(world.zone / "secret" / "x", world.target / "f")
    fifo = world.file("f")
    fifo[E_TYPE] = "fifo"
    fifo[2], fifo[5], fifo[7] = 0, None, None
    world.forge([world.file("x"), world.dir("d"), fifo])
    before = world.outside()
    report = world.restore(delete_extra=delete_extra)
    assert report.ok
    assert world.outside() == before
    assert not (world.target / "x").is_symlink()
    assert (world.target / "x").read_text() == "pwned!"
    assert not (world.target / "d").is_symlink() and (world.target / "d").is_dir()
    assert os.listdir(world.target / "d") == []
    assert stat.S_ISFIFO(os.lstat(world.target / "f").st_mode)


def test_delete_extra_does_not_follow_links(world: World) -> None:
    """Extra symlinks to outside files and dirs are removed as links; their targets survive."""
    world.target.mkdir()
    os.symlink(world.zone / "secret", world.target / "extra_dir_link")
    os.symlink(world.zone / "x", world.target / "extra_file_link")
    (world.target / "d").mkdir()
    os.symlink(world.zone, world.target / "d" / "zone_link")
    world.forge([world.dir("d"), world.file("d/f")])
    before = world.outside()
    report = world.restore(delete_extra=True)
    assert report.ok and report.deleted == 3
    assert world.outside() == before
    assert sorted(os.listdir(world.target)) == ["d"]
    assert sorted(os.listdir(world.target / "d")) == ["f"]


def test_symlinks_pointing_outside_are_recreated_as_links(world: World) -> None:
    """A stored link may point anywhere: it is restored as a link and never followed."""
    world.forge(
        [
            world.link("abs", str(world.zone / "x")),
            world.link("rel", "../secret"),
            world.link("x", "../x"),
        ]
    )
    before = world.outside()
    report = world.restore(delete_extra=True)
    assert report.ok
    assert world.outside() == before
    assert os.readlink(world.target / "abs") == str(world.zone / "x")
    assert os.readlink(world.target / "rel") == "../secret"
    # restoring again over the links is still safe
    assert world.restore(delete_extra=True).ok
    assert world.outside() == before


def test_genuine_tree_with_outward_links_round_trips(tmp_path: Path) -> None:
    """Not crafted: a real tree whose links point outside restores, and a second restore over it
    with delete_extra never follows them."""
    w = World(tmp_path)
    os.symlink(w.zone / "secret", w.src / "out_dir")
    os.symlink("../zone/x", w.src / "out_file")
    with ckdb.open(w.store_path) as s:
        cid = s.create("wf", "p2", files=w.src).id
        before = w.outside()
        for _ in range(2):
            report = s.restore(cid, target_dir=w.target, delete_extra=True)
            assert report.ok
        assert w.outside() == before
        assert os.readlink(w.target / "out_file") == "../zone/x"


@pytest.mark.parametrize("shape", ["int-path", "short-row", "none-path"])
def test_malformed_manifest_rows_are_integrity_errors(world: World, shape: str) -> None:
    rows = {
        "int-path": [world.file(17)],
        "short-row": [["x", "file"]],
        "none-path": [world.file(None)],
    }[shape]
    world.forge(rows, check_load=False)
    before = world.outside()
    with pytest.raises(IntegrityError):
        world.restore()
    assert world.outside() == before
