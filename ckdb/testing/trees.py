"""Small directory trees as values: describe one, materialise it, snapshot a directory back.

A :class:`FileTree` is a plain description (relative paths to file contents, plus directories),
so a Hypothesis strategy can produce it, a failure report can print it, and a test can compare a
restored directory with it. Nothing here imports Hypothesis.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from attrs import frozen

#: What :func:`snapshot` records per relative path: file contents (bytes), a symlink's target
#: (str), or ``None`` for a directory.
Entry = bytes | str | None

__all__ = ["Entry", "FileTree", "materialize", "snapshot"]


def _check_rel(path: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or any(p in ("", ".", "..") for p in path.split("/")):
        raise ValueError(f"tree paths must be relative, without '.', '..' or empty parts: {path!r}")
    if "\x00" in path:
        raise ValueError(f"tree paths must not contain NUL: {path!r}")
    return path


@frozen
class FileTree:
    """A directory tree: ``files`` maps a relative POSIX path to its contents; ``dirs`` lists
    directories that exist even when empty. Parent directories of files are implied."""

    files: Mapping[str, bytes]
    dirs: frozenset[str] = frozenset()

    def __attrs_post_init__(self) -> None:
        for path in [*self.files, *self.dirs]:
            _check_rel(path)
        for path in self.files:
            parents = PurePosixPath(path).parents
            for parent in list(parents)[:-1]:
                if str(parent) in self.files:
                    raise ValueError(f"{str(parent)!r} is both a file and a directory")
        for d in self.dirs:
            if d in self.files:
                raise ValueError(f"{d!r} is both a file and a directory")

    @classmethod
    def from_nested(cls, nested: Mapping[str, object]) -> FileTree:
        """Build from nested dicts: ``{"a.txt": b"..", "sub": {"b": b""}, "empty": {}}``."""
        files: dict[str, bytes] = {}
        dirs: set[str] = set()

        def walk(node: Mapping[str, object], prefix: str) -> None:
            for name, child in node.items():
                path = prefix + name
                if isinstance(child, bytes):
                    files[path] = child
                elif isinstance(child, Mapping):
                    dirs.add(path)
                    walk(child, path + "/")
                else:
                    raise TypeError(f"{path!r}: expected bytes or a mapping, not {child!r}")

        walk(nested, "")
        return cls(files=files, dirs=frozenset(dirs))

    def materialize(self, root: str | os.PathLike[str]) -> Path:
        """Write this tree under ``root`` (created if missing); returns ``root`` as a Path."""
        return materialize(self, root)

    def expected_snapshot(self) -> dict[str, Entry]:
        """What :func:`snapshot` returns for a directory holding exactly this tree."""
        out: dict[str, Entry] = {}
        for d in self.dirs:
            out[d] = None
        for path, data in self.files.items():
            out[path] = data
            for parent in list(PurePosixPath(path).parents)[:-1]:
                out[str(parent)] = None
        return dict(sorted(out.items()))

    @property
    def total_bytes(self) -> int:
        return sum(len(d) for d in self.files.values())


def materialize(tree: FileTree, root: str | os.PathLike[str]) -> Path:
    """Write ``tree`` under ``root`` (created if missing); returns ``root`` as a Path."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    for d in sorted(tree.dirs):
        (base / d).mkdir(parents=True, exist_ok=True)
    for path, data in sorted(tree.files.items()):
        target = base / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return base


def snapshot(root: str | os.PathLike[str]) -> dict[str, Entry]:
    """Relative POSIX path -> contents (files), link target (symlinks) or None (directories),
    sorted by path. Symlinks are not followed. A missing ``root`` is an empty snapshot."""
    out: dict[str, Entry] = {}
    base = Path(root)
    if not base.is_dir():
        return out

    def walk(d: Path, prefix: str) -> None:
        for name in sorted(os.listdir(d)):
            full = d / name
            rel = prefix + name
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                out[rel] = os.readlink(full)
            elif stat.S_ISDIR(mode):
                out[rel] = None
                walk(full, rel + "/")
            elif stat.S_ISREG(mode):
                out[rel] = full.read_bytes()

    walk(base, "")
    return out
