"""Checkpoint -> target directory: atomic, fsynced, and unable to write outside the target.

Every path is walked from a file descriptor of the target with ``O_NOFOLLOW`` one component at a
time (``openat`` style), so neither a crafted manifest nor a symlink already in the target can lead
a write or a delete outside it. Manifest paths that are absolute, contain ``..``/``.``/empty
components, or pass through an entry the manifest itself records as a symlink are refused before
anything is written.

Files are written to a temporary name in their directory, fsynced, given their mode (masked to
0o777: never setuid/setgid) and mtime, then renamed over the old name; directories are fsynced
after their entries change. A restore cut short by a crash leaves every file either old or new
(plus, at worst, a ``.ckdb-restore-*`` temporary file) and can simply be run again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from typing import Any

from attrs import define, field, frozen

from ckdb.capture import E_CHUNKS, E_DIGEST, E_ERR, E_LINK, E_MODE, E_MTIME, E_PATH, E_SIZE, E_TYPE
from ckdb.errors import IntegrityError, InvalidInput, RestoreFailed
from ckdb.records import Checkpoint

TMP_PREFIX = b".ckdb-restore-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

ReadChunk = Callable[[bytes], bytes]


@frozen
class RestoreReport:
    """What :meth:`Store.restore` did. ``checkpoint`` is exactly what was restored."""

    checkpoint: Checkpoint
    target_dir: str | None
    files_written: int = 0
    directories: int = 0
    links: int = 0
    deleted: int = 0
    bytes_written: int = 0
    components_restored: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # entries not restored (sockets, devices, unreadable at capture)
    skipped_checkpoints: tuple[tuple[str, str], ...] = ()  # restore_latest: (id, why)
    warnings: tuple[str, ...] = ()  # e.g. a failing resource restorer (seed: continue)
    mismatches: tuple[str, ...] = ()  # verify=True: restored files that do not match
    # a "damaged" (salvaged) checkpoint: its files whose content was lost, not restored
    unrestored: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unrestored

    @property
    def findings(self) -> tuple[str, ...]:
        return self.unrestored + self.mismatches + self.warnings + self.skipped


@define
class _Stats:
    files: int = 0
    dirs: int = 0
    links: int = 0
    deleted: int = 0
    bytes: int = 0
    skipped: list[str] = field(factory=list)
    mismatches: list[str] = field(factory=list)
    unrestored: list[str] = field(factory=list)


def safe_parts(path: Any) -> tuple[bytes, ...]:
    """A manifest path as components; refuses absolute, empty, '.', '..' and NUL."""
    raw = os.fsencode(path) if isinstance(path, str | bytes) else None
    if not raw:
        raise IntegrityError(f"manifest entry with an invalid path {path!r}: refused")
    if raw.startswith(b"/"):
        raise IntegrityError(f"manifest entry {path!r} is an absolute path: refused")
    parts = tuple(raw.split(b"/"))
    for part in parts:
        if part in (b"", b".", b"..") or b"\x00" in part:
            raise IntegrityError(f"manifest entry {path!r} escapes the target: refused")
    return parts


def _plan(entries: list[list[Any]]) -> list[tuple[tuple[bytes, ...], list[Any]]]:
    planned = sorted(((safe_parts(e[E_PATH]), e) for e in entries), key=lambda pe: pe[0])
    kinds = {parts: e[E_TYPE] for parts, e in planned}
    if len(kinds) != len(planned):
        raise IntegrityError("manifest names the same path twice: refused")
    for parts, _e in planned:
        for i in range(1, len(parts)):
            parent = kinds.get(parts[:i])
            if parent is not None and parent != "dir":
                raise IntegrityError(
                    f"manifest entry {os.fsdecode(b'/'.join(parts))!r} passes through "
                    f"{os.fsdecode(b'/'.join(parts[:i]))!r}, which is a {parent}: refused"
                )
    return planned


def _lstat(name: bytes, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(name: bytes, dir_fd: int, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: never follows symlinks
    else:
        os.unlink(name, dir_fd=dir_fd)


class _Walker:
    """A stack of open directory fds along the current path; fsyncs directories it changed."""

    def __init__(self, root_fd: int) -> None:
        self.stack: list[tuple[tuple[bytes, ...], int, bool]] = [((), root_fd, False)]

    def touch(self) -> None:
        parts, fd, _ = self.stack[-1]
        self.stack[-1] = (parts, fd, True)

    def enter(self, parent: tuple[bytes, ...], declared_dirs: set[tuple[bytes, ...]]) -> int:
        while self.stack[-1][0] != parent[: len(self.stack[-1][0])]:
            self._pop()
        while len(self.stack[-1][0]) < len(parent):
            here, fd, _ = self.stack[-1]
            name = parent[len(here)]
            child = (*here, name)
            try:
                cfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=fd)
                self.touch()
                cfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                    # A problem of the target (permissions, too many open files, a long name):
                    # not damage in the store, so not an IntegrityError (restore_latest would
                    # mark the checkpoint corrupted for it).
                    raise RestoreFailed(
                        f"cannot open {os.fsdecode(b'/'.join(child))!r} in the target: "
                        f"{err.strerror}"
                    ) from None
                if child not in declared_dirs:
                    raise IntegrityError(
                        f"{os.fsdecode(b'/'.join(child))!r} in the target is not a directory "
                        "(a symlink or file): refusing to restore through it"
                    ) from None
                st = _lstat(name, fd)
                if st is not None:
                    _remove(name, fd, st)
                os.mkdir(name, 0o700, dir_fd=fd)
                self.touch()
                cfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            self.stack.append((child, cfd, False))
        return self.stack[-1][1]

    def _pop(self) -> None:
        _parts, fd, touched = self.stack.pop()
        try:
            if touched:
                os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        while len(self.stack) > 1:
            self._pop()
        _parts, fd, touched = self.stack[0]
        if touched:
            os.fsync(fd)


def restore_tree(
    manifest: dict[str, Any],
    target: str,
    read_chunk: ReadChunk,
    *,
    delete_extra: bool = False,
    verify: bool = True,
    progress: Callable[[int, int], None] | None = None,
    damaged: frozenset[bytes] = frozenset(),
) -> _Stats:
    """Restore a manifest's tree into ``target``. Files in ``damaged`` (manifest paths of a
    salvaged checkpoint) are not written, and whatever is at their path is left alone."""
    entries: list[list[Any]] = manifest.get("entries", [])
    planned = _plan(entries)
    declared_dirs = {parts for parts, e in planned if e[E_TYPE] == "dir"}
    os.makedirs(target, exist_ok=True)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stats = _Stats()
    walker = _Walker(root_fd)
    finalize: list[tuple[tuple[bytes, ...], int, int]] = []
    try:
        for done, (parts, e) in enumerate(planned, 1):
            pfd = walker.enter(parts[:-1], declared_dirs)
            name = parts[-1]
            kind = e[E_TYPE]
            if e[E_ERR] is not None and kind != "dir":
                stats.skipped.append(f"{os.fsdecode(e[E_PATH])}: not captured ({e[E_ERR]})")
                continue
            existing = _lstat(name, pfd)
            if kind == "dir":
                if existing is not None and not stat.S_ISDIR(existing.st_mode):
                    _remove(name, pfd, existing)
                    existing = None
                if existing is None:
                    os.mkdir(name, 0o700, dir_fd=pfd)
                    walker.touch()
                finalize.append((parts, e[E_MODE] & 0o777, e[E_MTIME]))
                stats.dirs += 1
            elif kind == "file" and os.fsencode(e[E_PATH]) in damaged:
                stats.unrestored.append(
                    f"{os.fsdecode(e[E_PATH])}: its content is damaged (salvaged by scrub); "
                    "not restored"
                )
            elif kind == "file":
                stats.bytes += _write_file(name, pfd, e, read_chunk, existing)
                walker.touch()
                stats.files += 1
            elif kind == "symlink":
                tmp = TMP_PREFIX + secrets.token_hex(8).encode()
                os.symlink(os.fsencode(e[E_LINK]), tmp, dir_fd=pfd)
                with contextlib.suppress(OSError):
                    os.utime(tmp, ns=(e[E_MTIME], e[E_MTIME]), dir_fd=pfd, follow_symlinks=False)
                if existing is not None and stat.S_ISDIR(existing.st_mode):
                    _remove(name, pfd, existing)
                os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                walker.touch()
                stats.links += 1
            elif kind == "fifo":
                if existing is None or not stat.S_ISFIFO(existing.st_mode):
                    if existing is not None:
                        _remove(name, pfd, existing)
                    os.mkfifo(name, e[E_MODE] & 0o777, dir_fd=pfd)
                    walker.touch()
                os.chmod(name, e[E_MODE] & 0o777, dir_fd=pfd)
            else:
                stats.skipped.append(f"{os.fsdecode(e[E_PATH])}: a {kind} is not restored")
            if progress is not None:
                progress(stats.bytes, done)
        walker.close()
        if delete_extra:
            keep = {parts for parts, _e in planned}
            stats.deleted = _delete_extra(root_fd, (), keep)
        # Directory modes and mtimes last: writing their contents changed the mtimes, and a
        # read-only directory mode would have stopped us writing into it.
        for parts, mode, mtime in reversed(finalize):
            fd = _open_dir(root_fd, parts)
            try:
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)
        os.fsync(root_fd)
        if verify:
            stats.mismatches = _verify(
                root_fd, [(p, e) for p, e in planned if os.fsencode(e[E_PATH]) not in damaged]
            )
    finally:
        walker.close()
        os.close(root_fd)
    return stats


def _write_file(
    name: bytes, pfd: int, e: list[Any], read_chunk: ReadChunk, existing: os.stat_result | None
) -> int:
    tmp = TMP_PREFIX + secrets.token_hex(8).encode()
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd
    )
    written = 0
    try:
        digest = hashlib.sha256()
        for chunk in e[E_CHUNKS] or ():
            data = read_chunk(bytes(chunk))
            digest.update(data)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            written += len(data)
        if written != e[E_SIZE] or (e[E_DIGEST] is not None and digest.digest() != e[E_DIGEST]):
            raise IntegrityError(
                f"{os.fsdecode(e[E_PATH])}: restored content does not match the manifest"
            )
        os.fchmod(fd, e[E_MODE] & 0o777)
        os.fsync(fd)
        os.utime(fd, ns=(e[E_MTIME], e[E_MTIME]))
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=pfd)
        raise
    os.close(fd)
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        _remove(name, pfd, existing)
    os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
    return written


def _open_dir(root_fd: int, parts: tuple[bytes, ...]) -> int:
    fd = os.dup(root_fd)
    for part in parts:
        try:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


def _scandir(fd: int) -> Iterator[os.DirEntry[bytes]]:
    dup = os.dup(fd)  # scandir(fd) closes nothing, but keep our fd's position untouched
    try:
        with os.scandir(dup) as it:
            yield from it
    finally:
        os.close(dup)


def _delete_extra(dir_fd: int, here: tuple[bytes, ...], keep: set[tuple[bytes, ...]]) -> int:
    deleted = 0
    for entry in list(_scandir(dir_fd)):
        name = os.fsencode(entry.name)
        parts = (*here, name)
        if parts in keep:
            if entry.is_dir(follow_symlinks=False):
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    deleted += _delete_extra(sub, parts, keep)
                    os.fsync(sub)
                finally:
                    os.close(sub)
            continue
        st = _lstat(name, dir_fd)
        if st is not None:
            _remove(name, dir_fd, st)
            deleted += 1
    return deleted


def _verify(root_fd: int, planned: list[tuple[tuple[bytes, ...], list[Any]]]) -> list[str]:
    problems = []
    for parts, e in planned:
        if e[E_ERR] is not None or e[E_TYPE] not in ("file", "symlink"):
            continue
        path = os.fsdecode(e[E_PATH])
        try:
            pfd = _open_dir(root_fd, parts[:-1])
        except OSError as err:
            problems.append(f"{path}: cannot reach it ({err.strerror})")
            continue
        try:
            if e[E_TYPE] == "symlink":
                if os.readlink(parts[-1], dir_fd=pfd) != os.fsencode(e[E_LINK]):
                    problems.append(f"{path}: symlink target differs")
                continue
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                digest = hashlib.sha256()
                size = 0
                while data := os.read(fd, 1 << 20):
                    digest.update(data)
                    size += len(data)
            finally:
                os.close(fd)
            if size != e[E_SIZE] or digest.digest() != e[E_DIGEST]:
                problems.append(f"{path}: content differs from the manifest")
        except OSError as err:
            problems.append(f"{path}: {err.strerror}")
        finally:
            os.close(pfd)
    return problems


def check_target(target: object) -> str:
    return check_path(target, "target_dir", must_be_dir=True)


def check_path(path: object, what: str, *, must_be_dir: bool = False) -> str:
    """A caller's filesystem path: a str or PathLike, no NUL; if it exists and must be a
    directory, it is one. Clear InvalidInput instead of TypeError/ValueError from os later."""
    if not isinstance(path, str | os.PathLike):
        raise InvalidInput(f"{what} must be a path (str or os.PathLike), not {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a text path, not {type(text).__name__}")
    if not text or "\x00" in text:
        raise InvalidInput(f"{what} must be a non-empty path without NUL characters")
    if must_be_dir and os.path.lexists(text) and not os.path.isdir(text):
        raise InvalidInput(f"{what} {text!r} exists and is not a directory")
    return text
