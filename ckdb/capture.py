"""Directory capture: working directory -> manifest + content chunks (streaming).

- Walks without following symlinks; records directories (empty ones too), files, symlinks (their
  target text), FIFOs, sockets and devices (never opened).
- Files are read in fixed 1 MiB chunks into one reused buffer, so memory does not grow with file
  size. Each chunk's content id is a keyed digest; a chunk already in the store is referenced, not
  stored again.
- Incremental: a file whose (device, inode, size, mtime_ns, ctime_ns) match the previous capture's
  manifest is not re-read, unless it was changed within ``RACY_NS`` of that capture's start
  (timestamps are coarse: such files are re-read, like git's "racily clean" entries).
- When the new chunks pending for a capture exceed ``AHEAD_BYTES`` they are committed ahead of the
  checkpoint under a lease (see ``ckdb.tables.chunks``); the checkpoint's own commit re-checks them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from attrs import define, field

from ckdb.errors import IntegrityError
from ckdb.layout import Codec
from ckdb.records import FileEntry, FileState

CHUNK_SIZE = 1 << 20
AHEAD_BYTES = 32 << 20
RACY_NS = 2_000_000_000
MANIFEST_VERSION = 1

# manifest entry: a list, positional (compact for 10k-file trees)
(
    E_PATH,
    E_TYPE,
    E_SIZE,
    E_MTIME,
    E_MODE,
    E_DIGEST,
    E_LINK,
    E_CHUNKS,
    E_DEV,
    E_INO,
    E_CTIME,
    E_ERR,
) = range(12)

Progress = Callable[[int, int], None]  # (bytes read so far, entries so far)


class ChunkSink(Protocol):
    def content_id(self, data: bytes | memoryview) -> bytes: ...
    def has_chunk(self, cid: bytes) -> bool: ...
    def chunk_frame(self, cid: bytes, data: bytes | memoryview, codec: Codec) -> bytes: ...
    def commit_ahead(
        self, lease_id: bytes, frames: dict[bytes, bytes], leased: set[bytes]
    ) -> None: ...


@define
class Capture:
    """The result of capturing a directory: what the checkpoint's commit needs."""

    root: str
    doc: dict[str, Any]  # the manifest document (encoded by the caller)
    referenced: set[bytes] = field(factory=set)  # every distinct chunk the manifest names
    pending: dict[bytes, bytes] = field(factory=dict)  # chunk frames not yet committed
    pending_bytes: int = 0
    codec: Codec = Codec.AUTO
    ahead: set[bytes] = field(factory=set)  # chunks committed ahead under the lease
    sources: dict[bytes, tuple[str | bytes, int, int]] = field(
        factory=dict
    )  # cid -> (path, off, len)
    lease_id: bytes | None = None
    warnings: list[str] = field(factory=list)
    bytes_read: int = 0
    files_reused: int = 0


def _type_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def _stored_path(rel: str) -> str | bytes:
    """Paths are text when they are valid UTF-8, else their raw bytes (Linux allows any bytes)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(rel)
    return rel


def _walk(root: Path, exclude: Sequence[str]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(relative posix path, entry) in sorted depth-first order, parents before children."""

    def rec(directory: Path, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            rel = prefix + entry.name
            if any(fnmatch.fnmatchcase(rel, pat) for pat in exclude):
                continue
            yield rel, entry
            if entry.is_dir(follow_symlinks=False):
                try:
                    yield from rec(Path(entry.path), rel + "/")
                except OSError as err:
                    yield rel + "/", _ErrorEntry(entry, err)  # type: ignore[misc]

    yield from rec(root, "")


class _ErrorEntry:
    """Stands for a directory that could not be listed (reported, not fatal)."""

    def __init__(self, entry: os.DirEntry[str], err: OSError) -> None:
        self.entry = entry
        self.err = err


def capture_tree(
    root: str | os.PathLike[str],
    sink: ChunkSink,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    previous: dict[str, Any] | None = None,
    progress: Progress | None = None,
    codec: Codec = Codec.AUTO,
) -> Capture:
    """Capture ``root``. A missing root is recorded as the file state's error, not raised."""
    start_ns = time.time_ns()
    root_path = Path(os.fspath(root)).absolute()
    doc: dict[str, Any] = {
        "v": MANIFEST_VERSION,
        "working_directory": str(root_path),
        "error": None,
        "capture_start_ns": start_ns,
        "chunk_size": CHUNK_SIZE,
        "entries": [],
    }
    cap = Capture(root=str(root_path), doc=doc, codec=codec)
    if not root_path.exists():
        doc["error"] = f"working directory does not exist: {root_path}"
        return cap
    if not root_path.is_dir():
        doc["error"] = f"working directory is not a directory: {root_path}"
        return cap

    prev_entries: dict[Any, list[Any]] = {}
    prev_start = 0
    if previous is not None and previous.get("chunk_size") == CHUNK_SIZE:
        prev_start = int(previous.get("capture_start_ns", 0))
        prev_entries = {e[E_PATH]: e for e in previous.get("entries", ()) if e[E_TYPE] == "file"}

    buf = bytearray(CHUNK_SIZE)
    entries: list[list[Any]] = doc["entries"]
    exclude = list(exclude or ())
    include = list(include or ())
    for rel, entry in _walk(root_path, exclude):
        if isinstance(entry, _ErrorEntry):
            msg = f"{rel}: cannot list directory: {entry.err.strerror}"
            cap.warnings.append(msg)
            for e in reversed(entries):
                if e[E_PATH] == _stored_path(rel[:-1]):
                    e[E_ERR] = msg
                    break
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as err:
            cap.warnings.append(f"{rel}: cannot stat: {err.strerror}")
            continue
        kind = _type_of(st.st_mode)
        if kind != "dir" and include and not any(fnmatch.fnmatchcase(rel, p) for p in include):
            continue
        spath = _stored_path(rel)
        row: list[Any] = [
            spath,
            kind,
            0,
            st.st_mtime_ns,
            stat.S_IMODE(st.st_mode),
            None,
            None,
            None,
            st.st_dev,
            st.st_ino,
            st.st_ctime_ns,
            None,
        ]
        if kind == "symlink":
            try:
                row[E_LINK] = _stored_path(os.readlink(entry.path))
            except OSError as err:
                row[E_ERR] = f"cannot read link: {err.strerror}"
                cap.warnings.append(f"{rel}: {row[E_ERR]}")
        elif kind == "file":
            row[E_SIZE] = st.st_size
            prev = prev_entries.get(spath)
            if (
                prev is not None
                and prev[E_ERR] is None
                and (prev[E_DEV], prev[E_INO], prev[E_SIZE], prev[E_MTIME], prev[E_CTIME])
                == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                and prev_start - st.st_mtime_ns > RACY_NS
                and prev_start - st.st_ctime_ns > RACY_NS
            ):
                row[E_DIGEST] = prev[E_DIGEST]
                row[E_CHUNKS] = [bytes(c) for c in prev[E_CHUNKS]]
                for i, cid in enumerate(row[E_CHUNKS]):
                    cap.referenced.add(cid)
                    off = i * CHUNK_SIZE
                    cap.sources.setdefault(cid, (spath, off, min(CHUNK_SIZE, st.st_size - off)))
                cap.files_reused += 1
            else:
                _read_file(cap, sink, entry.path, spath, row, buf)
        entries.append(row)
        if progress is not None:
            progress(cap.bytes_read, len(entries))
    return cap


def _read_file(
    cap: Capture, sink: ChunkSink, full: str, spath: str | bytes, row: list[Any], buf: bytearray
) -> None:
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        row[E_ERR] = f"cannot open: {err.strerror}"
        cap.warnings.append(f"{os.fsdecode(spath)}: {row[E_ERR]}")
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the listing and the open
            row[E_ERR] = "changed type during capture"
            cap.warnings.append(f"{os.fsdecode(spath)}: {row[E_ERR]}")
            return
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        size = 0
        view = memoryview(buf)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            while True:
                n = 0
                while n < CHUNK_SIZE:  # fill the whole chunk: chunk boundaries are fixed offsets
                    got = f.readinto(view[n:])
                    if not got:
                        break
                    n += got
                if n == 0:
                    break
                data = view[:n]
                digest.update(data)
                cid = sink.content_id(data)
                chunks.append(cid)
                if cid not in cap.referenced:
                    cap.referenced.add(cid)
                    cap.sources[cid] = (spath, size, n)
                    if cid not in cap.pending and cid not in cap.ahead and not sink.has_chunk(cid):
                        frame = sink.chunk_frame(cid, data, cap.codec)
                        cap.pending[cid] = frame
                        cap.pending_bytes += len(frame)
                        if cap.pending_bytes >= AHEAD_BYTES:
                            # Inside the chunk loop, so a single large file never holds more
                            # than AHEAD_BYTES of frames in memory.
                            _commit_ahead(cap, sink)
                size += n
                cap.bytes_read += n
                if n < CHUNK_SIZE:
                    break
        row[E_SIZE] = size
        row[E_DIGEST] = digest.digest()
        row[E_CHUNKS] = chunks
    except OSError as err:
        row[E_ERR] = f"cannot read: {err.strerror}"
        row[E_CHUNKS] = None
        row[E_DIGEST] = None
        cap.warnings.append(f"{os.fsdecode(spath)}: {row[E_ERR]}")
    finally:
        os.close(fd)


def _commit_ahead(cap: Capture, sink: ChunkSink) -> None:
    if cap.lease_id is None:
        cap.lease_id = os.urandom(16)
    cap.ahead.update(cap.pending)
    sink.commit_ahead(cap.lease_id, cap.pending, cap.ahead)
    cap.pending = {}
    cap.pending_bytes = 0


def reread_chunk(root: str, source: tuple[str | bytes, int, int]) -> bytes:
    """Read one chunk again from its source file (the commit found it missing)."""
    path, offset, length = source
    full = os.path.join(os.fsencode(root), os.fsencode(path))
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


_ROW_TYPES: tuple[tuple[type, ...], ...] = (
    (str, bytes),  # path
    (str,),  # type
    (int,),  # size
    (int,),  # mtime_ns
    (int,),  # mode
    (bytes, type(None)),  # digest
    (str, bytes, type(None)),  # link target
    (list, type(None)),  # chunks
    (int,),  # dev
    (int,),  # ino
    (int,),  # ctime_ns
    (str, type(None)),  # error
)
_KINDS = frozenset({"file", "dir", "symlink", "fifo", "socket", "device", "other"})


def check_manifest(doc: Any, where: str) -> dict[str, Any]:
    """Type-check a decoded manifest: a crafted one (tagged with the key) must still be an
    IntegrityError, never a TypeError deep inside restore."""
    bad = f"checkpoint {where}: malformed manifest"
    if type(doc) is not dict or type(doc.get("entries")) is not list:
        raise IntegrityError(bad)
    if type(doc.get("working_directory")) not in (str, type(None)):
        raise IntegrityError(bad)
    if type(doc.get("error")) not in (str, type(None)):
        raise IntegrityError(bad)
    for row in doc["entries"]:
        if type(row) is not list or len(row) != len(_ROW_TYPES):
            raise IntegrityError(f"{bad}: entry of the wrong shape")
        for value, kinds in zip(row, _ROW_TYPES, strict=True):
            if type(value) not in kinds:
                raise IntegrityError(f"{bad}: entry field of type {type(value).__name__}")
        if row[E_TYPE] not in _KINDS or row[E_SIZE] < 0 or row[E_MODE] < 0:
            raise IntegrityError(f"{bad}: entry out of range")
        if row[E_DIGEST] is not None and len(row[E_DIGEST]) != 32:
            raise IntegrityError(f"{bad}: digest of the wrong size")
        if row[E_CHUNKS] is not None and any(
            type(c) is not bytes or len(c) != 32 for c in row[E_CHUNKS]
        ):
            raise IntegrityError(f"{bad}: malformed chunk list")
        if (
            row[E_TYPE] == "file"
            and row[E_ERR] is None
            and (row[E_CHUNKS] is None or row[E_DIGEST] is None)
        ):
            raise IntegrityError(f"{bad}: file entry without content")
        if row[E_TYPE] == "symlink" and row[E_ERR] is None and row[E_LINK] is None:
            raise IntegrityError(f"{bad}: symlink entry without a target")
    return doc


def file_state(doc: dict[str, Any] | None) -> FileState | None:
    """The public view of a manifest document."""
    if doc is None:
        return None
    entries = tuple(
        FileEntry(
            path=os.fsdecode(e[E_PATH]),
            type=e[E_TYPE],
            size=e[E_SIZE],
            mtime_ns=e[E_MTIME],
            mode=e[E_MODE],
            digest=None if e[E_DIGEST] is None else bytes(e[E_DIGEST]).hex(),
            link_target=None if e[E_LINK] is None else os.fsdecode(e[E_LINK]),
            error=e[E_ERR],
        )
        for e in doc.get("entries", ())
    )
    return FileState(
        working_directory=doc.get("working_directory"), entries=entries, error=doc.get("error")
    )


def manifest_chunks(doc: dict[str, Any]) -> set[bytes]:
    """Every distinct chunk a manifest references."""
    out: set[bytes] = set()
    for e in doc.get("entries", ()):
        if e[E_CHUNKS]:
            out.update(bytes(c) for c in e[E_CHUNKS])
    return out
