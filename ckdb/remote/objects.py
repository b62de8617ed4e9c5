"""The object-store interface the remote protocol needs, and two of its backends.

Five operations (``docs/remote.md``, "The object store contract"); ``put_if_absent`` is the only
condition used. ``memory://name`` (one process, the tests' twin) and ``file:///dir`` (a
directory, on a shared filesystem too) live here; ``s3://`` is ``s3.py`` (obstore).

Backends raise :class:`~ckdb.errors.RemoteError` for anything but "absent" and "exists": the
protocol decides what an error means (a failed ``put_if_absent`` may or may not have written).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar, Protocol

from attrs import frozen

from ckdb.errors import InvalidInput, RemoteError


@frozen
class ObjectInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch


class ObjectStore(Protocol):
    """What a remote backend does; keys are relative to the remote's prefix."""

    url: str

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` holding ``data`` unless it exists: True if this call created it."""
        ...

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, None if there is none."""
        ...

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order, after ``start_after``."""
        ...

    def delete(self, keys: Iterable[str]) -> None: ...


def check_key(key: str) -> str:
    """Keys are ours: ASCII path parts, no empty, ``.`` or ``..`` parts, no leading slash."""
    parts = key.split("/")
    if not key or not key.isascii() or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"invalid remote object key {key!r}")
    return key


class MemoryObjects:
    """``memory://name``: objects in this process, shared by every ``Remote`` of that name."""

    _all: ClassVar[dict[str, dict[str, tuple[bytes, float]]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str) -> None:
        self.url = f"memory://{name}"
        with MemoryObjects._lock:
            self._objects = MemoryObjects._all.setdefault(name, {})

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop every object of ``memory://name`` (tests)."""
        with cls._lock:
            cls._all.pop(name, None)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with MemoryObjects._lock:
            if check_key(key) in self._objects:
                return False
            self._objects[key] = (bytes(data), time.time())
            return True

    def put(self, key: str, data: bytes) -> None:
        with MemoryObjects._lock:
            self._objects[check_key(key)] = (bytes(data), time.time())

    def get(self, key: str) -> bytes | None:
        with MemoryObjects._lock:
            hit = self._objects.get(check_key(key))
        return None if hit is None else hit[0]

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        with MemoryObjects._lock:
            items = sorted(
                (k, len(v[0]), v[1])
                for k, v in self._objects.items()
                if k.startswith(prefix) and k > start_after
            )
        for key, size, modified in items:
            yield ObjectInfo(key, size, modified)

    def delete(self, keys: Iterable[str]) -> None:
        with MemoryObjects._lock:
            for key in keys:
                self._objects.pop(key, None)


_TMP = ".ckdb-tmp-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileObjects:
    """``file:///dir``: one file per object. Create-only by ``link()`` of a fsynced temporary
    file to the object's name (which fails if the name exists), then the directory fsynced: so
    a created object is whole and durable, and of two creators exactly one wins, also on a
    shared filesystem whose ``link()`` is atomic (NFSv3+, CephFS, local disks)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RemoteError(f"cannot create the remote directory {self.root}: {err}") from err

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write_tmp(self, directory: Path, data: bytes) -> Path:
        created = []
        here = directory
        while not here.exists():
            created.append(here)
            here = here.parent
        directory.mkdir(parents=True, exist_ok=True)
        for made in reversed(created):  # new directories: durable before the file in them
            _fsync_dir(made.parent)
        tmp = directory / f"{_TMP}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            tmp = self._write_tmp(path.parent, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            _fsync_dir(path.parent)
            return True
        except OSError as err:
            raise RemoteError(f"{self.url}: cannot create {key}: {err}") from err

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            tmp = self._write_tmp(path.parent, data)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as err:
            raise RemoteError(f"{self.url}: cannot write {key}: {err}") from err

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise RemoteError(f"{self.url}: cannot read {key}: {err}") from err

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        base = prefix.rpartition("/")[0]
        top = self.root / base if base else self.root
        found = []
        try:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                rel = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith(_TMP):
                        continue
                    key = name if rel == "." else f"{rel}/{name}"
                    if key.startswith(prefix) and key > start_after:
                        with contextlib.suppress(FileNotFoundError):
                            st = os.stat(os.path.join(dirpath, name))
                            found.append(ObjectInfo(key, st.st_size, st.st_mtime))
        except OSError as err:
            raise RemoteError(f"{self.url}: cannot list {prefix}: {err}") from err
        found.sort(key=lambda info: info.key)
        yield from found

    def delete(self, keys: Iterable[str]) -> None:
        dirs = set()
        try:
            for key in keys:
                path = self._path(key)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    dirs.add(path.parent)
            for directory in dirs:
                _fsync_dir(directory)
        except OSError as err:
            raise RemoteError(f"{self.url}: cannot delete: {err}") from err
