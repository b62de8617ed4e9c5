"""plfs -- a power-loss simulating FUSE passthrough filesystem.

Processes using the mountpoint see ordinary POSIX semantics: every operation is
passed through to a *live* backing directory.  Separately the filesystem keeps
a model of what a real disk would hold after a sudden power loss (the *durable
image*):

* per inode: durable content.  ``fsync``/``fdatasync`` (and ``O_SYNC``/``O_DSYNC``
  writes) copy the inode's dirty 4 KiB sectors from the live file into a shadow
  file and make the current size durable.
* per directory: durable entries (name -> inode).  Creating, renaming,
  unlinking, linking ... only become durable when the *containing directory* is
  fsynced (FUSE ``fsyncdir``).  A file whose directory entry never became
  durable does not exist after power loss, even if its data was fsynced.

On "cut" the daemon stops serving (every further operation fails with EIO) and
materialises the durable image into a fresh plain directory:

* ``drop``:   every unsynced change is lost;
* ``subset``: a seeded random subset of the unsynced 4 KiB sectors survives
  (content = the latest written content of that sector) -> torn writes;
  an unsynced truncate survives with probability 1/2.

The cut can be *armed* to happen on the N-th sync point (fsync, fdatasync,
fsyncdir, synchronous write) -- before or after applying it, chosen by a seed --
or on the N-th data write.  Faults (an errno returned once or persistently on
the N-th write/fsync, optionally only for paths ending in a suffix) can be
injected.

Unsynced directory operations are always dropped (also in subset mode).

Run as a process:  python plfs.py --backing B --mount M --state S --ctl-fd FD
The control channel is a stream socket (inherited fd) speaking JSON lines:
request ``{"cmd": ..., ...}`` -> response ``{"ok": true, ...}`` or
``{"ok": false, "error": ...}``.  See ``Control._handle``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import threading
import traceback

import mfusepy
from mfusepy import FUSE, FuseOSError, Operations

SECTOR = 4096
ROOT_ID = 0

log = logging.getLogger("plfs")


class FileState:
    """Durability state of one file inode (identified by our own id)."""

    __slots__ = ("dirty", "durable_size", "id", "live_fd", "min_trunc", "shadow")

    def __init__(self, ident: int, shadow: str):
        self.id = ident
        self.shadow = shadow  # path of the durable content
        self.durable_size = 0
        self.dirty: set[int] = set()  # sector numbers written since last sync
        self.min_trunc: int | None = None  # smallest unsynced truncate size
        self.live_fd: int | None = None  # read fd on the live backing inode


class PowerLossOps(Operations):
    use_ns = True
    flag_nullpath_ok = True

    def __init__(self, backing: str, state_dir: str, ctl: Control):
        self.root = os.path.realpath(backing)
        self.state_dir = os.path.realpath(state_dir)
        os.makedirs(os.path.join(self.state_dir, "shadow"), exist_ok=True)
        self.ctl = ctl
        self._mu = threading.RLock()
        self.next_id = 1
        self.ids: dict[int, int] = {}  # backing st_ino -> our id
        self.files: dict[int, FileState] = {}  # our id -> FileState
        # durable directory entries: dir id -> {name: (id, kind, mode, target)}
        self.dur_dirs: dict[int, dict[str, tuple]] = {ROOT_ID: {}}
        self.fhs: dict[int, tuple[int, int, int]] = {}  # fh(=fd) -> (fd, id, flags)
        # fhs whose last op was an O_(D)SYNC write: the kernel follows such a
        # write with its own FUSE_FSYNC (generic_write_sync); that one is part
        # of the write, already modelled as a range sync, so it is swallowed.
        self.pending_sync_tail: set[int] = set()
        self.dead = False
        self.dead_reason = ""
        self.armed: dict | None = None
        self.faults: list[dict] = []
        self.stats = {
            "writes": 0,
            "write_bytes": 0,
            "fsync": 0,
            "fdatasync": 0,
            "fsyncdir": 0,
            "sync_writes": 0,
            "sync_count": 0,
            "faults_fired": 0,
            "ops": 0,
        }
        root_st = os.lstat(self.root)
        self.ids[root_st.st_ino] = ROOT_ID
        self._import_existing()

    # ------------------------------------------------------------ helpers
    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _id_for_ino(self, ino: int) -> int:
        ident = self.ids.get(ino)
        if ident is None:
            ident = self.next_id
            self.next_id += 1
            self.ids[ino] = ident
        return ident

    def _id_for_path(self, path: str) -> int:
        return self._id_for_ino(os.lstat(self._full(path)).st_ino)

    def _file(self, ident: int) -> FileState:
        fs = self.files.get(ident)
        if fs is None:
            shadow = os.path.join(self.state_dir, "shadow", str(ident))
            open(shadow, "wb").close()
            fs = self.files[ident] = FileState(ident, shadow)
        return fs

    def _ensure_live_fd(self, fs: FileState, fd: int | None = None, full: str | None = None):
        if fs.live_fd is None:
            if fd is not None:
                fs.live_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
            elif full is not None:
                fs.live_fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)

    def _forget_ino(self, ino: int):
        self.ids.pop(ino, None)

    def _check_alive(self):
        self.stats["ops"] += 1
        if self.dead:
            raise FuseOSError(errno.EIO)

    def die(self, reason: str):
        if not self.dead:
            self.dead = True
            self.dead_reason = reason
            log.info("power cut: %s", reason)

    def _import_existing(self):
        """Everything present in the backing dir at mount time is durable."""
        for dirpath, _dirnames, filenames in os.walk(self.root):
            rel = "/" + os.path.relpath(dirpath, self.root)
            if rel == "/.":
                rel = "/"
            self._snapshot_dir(rel)
            for name in filenames:
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                if stat.S_ISREG(st.st_mode):
                    fs = self._file(self._id_for_ino(st.st_ino))
                    self._ensure_live_fd(fs, full=full)
                    fs.dirty.update(range(0, (st.st_size + SECTOR - 1) // SECTOR))
                    self._sync_file(fs)

    # ------------------------------------------------------------ model
    def _mark_write(self, fs: FileState, offset: int, length: int):
        if length <= 0:
            return
        fs.dirty.update(range(offset // SECTOR, (offset + length - 1) // SECTOR + 1))

    def _sync_file(self, fs: FileState, rng: tuple[int, int] | None = None):
        """Make the live content durable (whole file, or only a byte range)."""
        live_size = os.fstat(fs.live_fd).st_size if fs.live_fd is not None else 0
        with open(fs.shadow, "r+b") as sh:
            shfd = sh.fileno()
            if rng is None:
                if fs.min_trunc is not None:
                    os.ftruncate(shfd, min(fs.min_trunc, fs.durable_size))
                os.ftruncate(shfd, live_size)
                sectors = sorted(fs.dirty)
                fs.dirty.clear()
                fs.min_trunc = None
                fs.durable_size = live_size
            else:
                start, end = rng
                sectors = sorted(
                    s for s in fs.dirty if s * SECTOR < end and (s + 1) * SECTOR > start
                )
                fs.dirty.difference_update(sectors)
                if end > fs.durable_size:
                    fs.durable_size = min(end, live_size)
                    os.ftruncate(shfd, fs.durable_size)
            for s in sectors:
                off = s * SECTOR
                if off >= live_size:
                    continue
                data = os.pread(fs.live_fd, SECTOR, off)
                os.pwrite(shfd, data, off)
            if rng is not None and fs.durable_size < os.fstat(shfd).st_size:
                os.ftruncate(shfd, fs.durable_size)

    def _snapshot_dir(self, path: str):
        """Make the current live entries of directory `path` durable."""
        full = self._full(path)
        did = self._id_for_ino(os.lstat(full).st_ino)
        entries = {}
        for name in os.listdir(full):
            p = os.path.join(full, name)
            st = os.lstat(p)
            ident = self._id_for_ino(st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                entries[name] = (ident, "d", stat.S_IMODE(st.st_mode), None)
                self.dur_dirs.setdefault(ident, {})
            elif stat.S_ISLNK(st.st_mode):
                entries[name] = (ident, "l", 0, os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                entries[name] = (ident, "f", stat.S_IMODE(st.st_mode), None)
                self._file(ident)
            # other node types are not modelled
        self.dur_dirs[did] = entries

    def _sync_point(self, kind: str, apply, path: str | None, lose=None):
        """Count a sync point, handle an armed cut and injected faults."""
        self.stats["sync_count"] += 1
        self.stats[kind] += 1
        n = self.stats["sync_count"]
        a = self.armed
        if a and a["kind"] == "sync" and n >= a["n"]:
            self.armed = None
            if a["after"]:
                apply()
                self.die(f"armed cut after sync point #{n} ({kind} {path})")
                return
            self.die(f"armed cut before sync point #{n} ({kind} {path})")
            raise FuseOSError(errno.EIO)
        err = self._fault("fsyncdir" if kind == "fsyncdir" else "fsync", path)
        if err:
            if err[1] and lose is not None:
                # Linux semantics: failed writeback marks pages clean -> the
                # unsynced data of this inode will never become durable.
                lose()
            raise FuseOSError(err[0])
        apply()

    def _fault(self, op: str, path: str | None):
        for f in self.faults:
            if f["op"] != op and not (f["op"] == "sync" and op in ("fsync", "fsyncdir")):
                continue
            if f["suffix"] and not (path or "").endswith(f["suffix"]):
                continue
            f["count"] += 1
            if f["count"] == f["nth"] or (f["persistent"] and f["count"] > f["nth"]):
                self.stats["faults_fired"] += 1
                f["fired"] += 1
                return (f["errno"], f["lose_on_error"])
        return None

    # ------------------------------------------------------------ fs ops
    def getattr(self, path, fh=None):
        with self._mu:
            self._check_alive()
            st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
            return {
                k: getattr(st, k)
                for k in (
                    "st_mode",
                    "st_nlink",
                    "st_uid",
                    "st_gid",
                    "st_size",
                    "st_blocks",
                    "st_atime_ns",
                    "st_mtime_ns",
                    "st_ctime_ns",
                    "st_ino",
                )
            } | {"st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns}

    def readdir(self, path, fh):
        with self._mu:
            self._check_alive()
            return [".", "..", *os.listdir(self._full(path))]

    def readlink(self, path):
        with self._mu:
            self._check_alive()
            return os.readlink(self._full(path))

    def access(self, path, amode):
        with self._mu:
            self._check_alive()
            if not os.access(self._full(path), amode):
                raise FuseOSError(errno.EACCES)
            return 0

    def statfs(self, path):
        with self._mu:
            self._check_alive()
            st = os.statvfs(self._full(path))
            return {
                k: getattr(st, k)
                for k in (
                    "f_bavail",
                    "f_bfree",
                    "f_blocks",
                    "f_bsize",
                    "f_favail",
                    "f_ffree",
                    "f_files",
                    "f_flag",
                    "f_frsize",
                    "f_namemax",
                )
            }

    def chmod(self, path, mode):
        with self._mu:
            self._check_alive()
            os.chmod(self._full(path), mode)
            return 0

    def chown(self, path, uid, gid):
        with self._mu:
            self._check_alive()
            os.lchown(self._full(path), uid, gid)
            return 0

    def utimens(self, path, times=None):
        with self._mu:
            self._check_alive()
            if times is None:
                os.utime(self._full(path), follow_symlinks=False)
            else:
                os.utime(self._full(path), ns=times, follow_symlinks=False)
            return 0

    def mkdir(self, path, mode):
        with self._mu:
            self._check_alive()
            os.mkdir(self._full(path), mode)
            self._id_for_path(path)
            return 0

    def rmdir(self, path):
        with self._mu:
            self._check_alive()
            full = self._full(path)
            ino = os.lstat(full).st_ino
            os.rmdir(full)
            self._forget_ino(ino)
            return 0

    def unlink(self, path):
        with self._mu:
            self._check_alive()
            full = self._full(path)
            st = os.lstat(full)
            os.unlink(full)
            if st.st_nlink <= 1:
                self._forget_ino(st.st_ino)
            return 0

    def symlink(self, target, source):
        with self._mu:
            self._check_alive()
            os.symlink(source, self._full(target))
            self._id_for_path(target)
            return 0

    def link(self, target, source):
        with self._mu:
            self._check_alive()
            os.link(self._full(source), self._full(target))
            return 0

    def rename(self, old, new):
        with self._mu:
            self._check_alive()
            fnew = self._full(new)
            try:
                st = os.lstat(fnew)
            except FileNotFoundError:
                st = None
            os.rename(self._full(old), fnew)
            if st is not None and (st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode)):
                self._forget_ino(st.st_ino)
            return 0

    def _register_fh(self, fd: int, flags: int) -> int:
        ident = self._id_for_ino(os.fstat(fd).st_ino)
        fs = self._file(ident)
        self._ensure_live_fd(fs, fd=fd)
        self.fhs[fd] = (fd, ident, flags)
        return fd

    def open(self, path, flags):
        with self._mu:
            self._check_alive()
            full = self._full(path)
            fl = flags & ~(
                os.O_CREAT | os.O_EXCL | os.O_SYNC | os.O_DSYNC | os.O_NOCTTY | os.O_APPEND
            )
            if flags & os.O_TRUNC:
                ident = self._id_for_path(path)
                fs = self._file(ident)
                self._ensure_live_fd(fs, full=full)
                self._note_trunc(ident, 0)
            fd = os.open(full, fl)
            return self._register_fh(fd, flags)

    def create(self, path, mode, flags=os.O_WRONLY):
        with self._mu:
            self._check_alive()
            fl = (
                flags & ~(os.O_SYNC | os.O_DSYNC | os.O_NOCTTY | os.O_APPEND | os.O_TRUNC)
            ) | os.O_CREAT
            if not fl & (os.O_WRONLY | os.O_RDWR):
                fl |= os.O_WRONLY
            fd = os.open(self._full(path), fl, mode)
            return self._register_fh(fd, flags)

    def _note_trunc(self, ident: int, length: int):
        fs = self._file(ident)
        cur = os.fstat(fs.live_fd).st_size if fs.live_fd is not None else 0
        if length < cur:
            fs.min_trunc = length if fs.min_trunc is None else min(fs.min_trunc, length)
            fs.dirty = {s for s in fs.dirty if s * SECTOR < length}
            if length % SECTOR:
                fs.dirty.add(length // SECTOR)
        elif length > cur:
            self._mark_write(fs, cur, length - cur)

    def truncate(self, path, length, fh=None):
        with self._mu:
            self._check_alive()
            if fh is not None and fh in self.fhs:
                ident = self.fhs[fh][1]
                fs = self._file(ident)
                self._ensure_live_fd(fs, fd=fh)
                self._note_trunc(ident, length)
                os.ftruncate(fh, length)
            else:
                full = self._full(path)
                ident = self._id_for_path(path)
                fs = self._file(ident)
                self._ensure_live_fd(fs, full=full)
                self._note_trunc(ident, length)
                os.truncate(full, length)
            return 0

    def read(self, path, size, offset, fh):
        with self._mu:
            self._check_alive()
            return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        with self._mu:
            self._check_alive()
            self.stats["writes"] += 1
            n = self.stats["writes"]
            a = self.armed
            if a and a["kind"] == "write" and n >= a["n"]:
                self.armed = None
                self.die(f"armed cut at write #{n} ({path})")
                raise FuseOSError(errno.EIO)
            err = self._fault("write", path)
            if err:
                raise FuseOSError(err[0])
            fd, ident, flags = self.fhs[fh]
            written = os.pwrite(fd, data, offset)
            self.stats["write_bytes"] += written
            fs = self._file(ident)
            self._mark_write(fs, offset, written)
            self.pending_sync_tail.discard(fh)
            if flags & (os.O_SYNC | os.O_DSYNC):
                # a synchronous write makes (only) its own range durable
                self.pending_sync_tail.add(fh)
                self._sync_point(
                    "sync_writes",
                    lambda: self._sync_file(fs, (offset, offset + written)),
                    path,
                    lambda: fs.dirty.difference_update(
                        range(offset // SECTOR, (offset + written - 1) // SECTOR + 1)
                    ),
                )
            return written

    def flush(self, path, fh):
        with self._mu:
            self._check_alive()
            return 0

    def release(self, path, fh):
        with self._mu:
            self.pending_sync_tail.discard(fh)
            ent = self.fhs.pop(fh, None)
            if ent is not None:
                os.close(ent[0])
            return 0

    def fsync(self, path, datasync, fh):
        with self._mu:
            self._check_alive()
            ent = self.fhs.get(fh)
            if ent is None:
                raise FuseOSError(errno.EBADF)
            if fh in self.pending_sync_tail:
                self.pending_sync_tail.discard(fh)
                self.stats["sync_tails_swallowed"] = self.stats.get("sync_tails_swallowed", 0) + 1
                return 0
            fs = self._file(ent[1])
            self._ensure_live_fd(fs, fd=fh)

            def lose():
                fs.dirty.clear()
                fs.min_trunc = None

            self._sync_point(
                "fdatasync" if datasync else "fsync", lambda: self._sync_file(fs), path, lose
            )
            return 0

    def fsyncdir(self, path, datasync, fh):
        with self._mu:
            self._check_alive()
            self._sync_point("fsyncdir", lambda: self._snapshot_dir(path), path)
            return 0

    def fallocate(self, path, mode, offset, size, fh):
        with self._mu:
            self._check_alive()
            if mode != 0:
                raise FuseOSError(errno.EOPNOTSUPP)
            fd, ident, _ = self.fhs[fh]
            cur = os.fstat(fd).st_size
            os.posix_fallocate(fd, offset, size)
            if offset + size > cur:
                self._mark_write(self._file(ident), cur, offset + size - cur)
            return 0

    def destroy(self, path):
        with self._mu:
            for ent in list(self.fhs.values()):
                with contextlib.suppress(OSError):
                    os.close(ent[0])
            self.fhs.clear()

    def init(self, path):
        self.ctl.send({"event": "ready", "pid": os.getpid()})

    # ------------------------------------------------------------ image
    def materialise(self, mode: str, seed: int, dest: str) -> dict:
        if mode not in ("drop", "subset"):
            raise ValueError(f"unknown cut mode {mode!r}")
        rng = random.Random(seed)
        os.makedirs(dest, exist_ok=False)
        info = {"files": 0, "dirs": 0, "kept_sectors": 0, "dropped_sectors": 0}
        made_files: dict[int, str] = {}
        visited_dirs = {ROOT_ID}

        def build_file(fs: FileState, out: str):
            shutil.copyfile(fs.shadow, out)
            if mode == "drop":
                info["dropped_sectors"] += len(fs.dirty)
                return
            size = fs.durable_size
            live_size = os.fstat(fs.live_fd).st_size if fs.live_fd is not None else 0
            with open(out, "r+b") as f:
                fd = f.fileno()
                if fs.min_trunc is not None and rng.random() < 0.5:
                    size = min(size, fs.min_trunc)
                    os.ftruncate(fd, size)
                for s in sorted(fs.dirty):
                    off = s * SECTOR
                    if rng.random() < 0.5 or off >= live_size:
                        info["dropped_sectors"] += 1
                        continue
                    data = os.pread(fs.live_fd, SECTOR, off)
                    os.pwrite(fd, data, off)
                    size = max(size, off + len(data))
                    info["kept_sectors"] += 1
                os.ftruncate(fd, size)

        def build_dir(did: int, out: str):
            for name, (ident, kind, fmode, target) in sorted(self.dur_dirs.get(did, {}).items()):
                p = os.path.join(out, name)
                if kind == "d":
                    if ident in visited_dirs:
                        continue
                    visited_dirs.add(ident)
                    os.mkdir(p)
                    info["dirs"] += 1
                    build_dir(ident, p)
                    os.chmod(p, fmode or 0o755)
                elif kind == "l":
                    os.symlink(target, p)
                else:
                    if ident in made_files:
                        os.link(made_files[ident], p)
                        continue
                    build_file(self._file(ident), p)
                    os.chmod(p, fmode or 0o644)
                    made_files[ident] = p
                    info["files"] += 1

        build_dir(ROOT_ID, dest)
        return info


class Control:
    """JSON-lines control channel over an inherited stream socket."""

    def __init__(self, fd: int, mountpoint: str):
        self.mountpoint = mountpoint
        self.closing = False
        self.sock = socket.socket(fileno=fd)
        self.wlock = threading.Lock()
        self.ops: PowerLossOps | None = None
        self.rfile = self.sock.makefile("rb")

    def send(self, obj: dict):
        data = (json.dumps(obj) + "\n").encode()
        with self.wlock, contextlib.suppress(OSError):
            self.sock.sendall(data)

    def serve(self):
        for line in self.rfile:
            try:
                req = json.loads(line)
                resp = self._handle(req)
                resp.setdefault("ok", True)
            except Exception as e:  # report, keep serving
                resp = {
                    "ok": False,
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(),
                }
            self.send(resp)
        # control connection closed: the test process is gone (maybe SIGKILLed).
        # Never leave a stale mount behind: detach it and exit.
        if not self.closing:
            log.info("control channel closed: unmounting %s", self.mountpoint)
            self.ops.die("control channel closed")
            for cmd in (
                ["fusermount", "-u", "-z", "-q", self.mountpoint],
                ["fusermount3", "-u", "-z", "-q", self.mountpoint],
                ["umount", "-l", self.mountpoint],
            ):
                try:
                    if (
                        subprocess.run(
                            cmd,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            timeout=20,
                            check=False,
                        ).returncode
                        == 0
                    ):
                        break
                except (OSError, subprocess.SubprocessError):
                    pass
            os._exit(0)

    def _handle(self, req: dict) -> dict:
        ops = self.ops
        cmd = req["cmd"]
        with ops._mu:
            if cmd == "ping":
                return {}
            if cmd == "stats":
                return {
                    "stats": dict(ops.stats),
                    "dead": ops.dead,
                    "dead_reason": ops.dead_reason,
                    "armed": ops.armed,
                    "faults": [
                        {k: v for k, v in f.items() if not k.startswith("_")} for f in ops.faults
                    ],
                }
            if cmd == "arm_cut":
                kind = req.get("kind", "sync")
                if kind not in ("sync", "write"):
                    raise ValueError(f"bad kind {kind}")
                n = int(req["n"])
                rng = random.Random(req.get("seed", 0))
                after = req.get("after")
                if after is None:
                    after = rng.random() < 0.5
                base = ops.stats["sync_count" if kind == "sync" else "writes"]
                ops.armed = {"kind": kind, "n": base + n, "after": bool(after) and kind == "sync"}
                return {"armed": ops.armed}
            if cmd == "disarm":
                ops.armed = None
                return {}
            if cmd == "inject_fault":
                op = req["op"]
                if op not in ("write", "fsync", "fsyncdir", "sync"):
                    raise ValueError(f"bad op {op}")
                en = req.get("errno", errno.EIO)
                if isinstance(en, str):
                    en = getattr(errno, en)
                ops.faults.append(
                    {
                        "op": op,
                        "nth": int(req.get("nth", 1)),
                        "errno": int(en),
                        "suffix": req.get("path_suffix"),
                        "persistent": bool(req.get("persistent")),
                        "lose_on_error": bool(req.get("lose_on_error", True)),
                        "count": 0,
                        "fired": 0,
                    }
                )
                return {"n_faults": len(ops.faults)}
            if cmd == "clear_faults":
                ops.faults.clear()
                return {}
            if cmd == "freeze":
                ops.die(req.get("reason", "freeze requested"))
                return {}
            if cmd == "cut":
                ops.die(req.get("reason", "cut requested"))
                info = ops.materialise(
                    req.get("mode", "drop"), int(req.get("seed", 0)), req["dest"]
                )
                return {
                    "image": req["dest"],
                    "info": info,
                    "dead_reason": ops.dead_reason,
                    "stats": dict(ops.stats),
                }
        raise ValueError(f"unknown command {cmd!r}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--backing", required=True)
    ap.add_argument("--mount", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--ctl-fd", type=int, required=True)
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="plfs[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    ctl = Control(args.ctl_fd, os.path.realpath(args.mount))
    ops = PowerLossOps(args.backing, args.state, ctl)
    ctl.ops = ops
    threading.Thread(target=ctl.serve, name="plfs-control", daemon=True).start()
    opts = {
        "foreground": True,
        "nothreads": True,
        "fsname": "plfs",
        "subtype": "plfs",
        "hard_remove": True,
        "big_writes": True,
        "max_write": 131072,
        "attr_timeout": 0,
        "entry_timeout": 0,
        "negative_timeout": 0,
    }
    if mfusepy.fuse_version_major == 3:
        opts.pop("big_writes")
    FUSE(ops, args.mount, **opts)
    ctl.closing = True
    ctl.send({"event": "exited"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
