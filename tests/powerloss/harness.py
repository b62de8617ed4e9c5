"""Friendly test-side API for the power-loss FUSE filesystem (plfs.py).

    with PowerLossFS(tmp_path) as fs:
        ... run a writer on fs.mountpoint ...
        fs.arm_cut_at_sync(n, seed)       # power fails at the n-th sync point from now
        image = fs.cut(mode="drop"|"subset", seed=...)   # durable image (plain dir)

`probe()` mounts a scratch filesystem and does a write+fsync round-trip;
`require_powerloss(request)` turns an unavailable FUSE into a LOUD skip (or a
failure when CKDB_REQUIRE_POWERLOSS=1).
"""

from __future__ import annotations

import atexit
import contextlib
import errno as _errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLFS = HERE / "plfs.py"
READY_TIMEOUT = 30.0
CMD_TIMEOUT = 120.0

_live_mounts: weakref.WeakSet[PowerLossFS] = weakref.WeakSet()


class PowerLossError(RuntimeError):
    pass


def _is_mounted(path: str) -> bool:
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and parts[4].replace("\\040", " ") == path:
                    return True
    except OSError:
        pass
    return False


def force_unmount(path: str) -> None:
    """Unmount `path` by every means available; never raises."""
    for cmd in (
        ["fusermount", "-u", "-q", path],
        ["fusermount3", "-u", "-q", path],
        ["umount", path],
        ["fusermount", "-u", "-z", "-q", path],
        ["fusermount3", "-u", "-z", "-q", path],
        ["umount", "-l", path],
    ):
        if not _is_mounted(path):
            return
        if shutil.which(cmd[0]) is None:
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20, check=False
            )


class PowerLossFS:
    """A mounted plfs instance (context manager)."""

    def __init__(self, base: os.PathLike | str, debug: bool = False):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.backing = self.base / "plfs-backing"
        self.mountpoint = self.base / "plfs-mnt"
        self.state = self.base / "plfs-state"
        self.images = self.base / "plfs-images"
        self.logfile = self.base / "plfs.log"
        for d in (self.backing, self.mountpoint, self.state, self.images):
            d.mkdir(exist_ok=True)
        self.debug = debug
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._rfile = None
        self._lock = threading.Lock()
        self._n_images = 0
        self.last_cut: dict | None = None

    # ---------------------------------------------------------- lifecycle
    def __enter__(self) -> PowerLossFS:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [
            sys.executable,
            str(PLFS),
            "--backing",
            str(self.backing),
            "--mount",
            str(self.mountpoint),
            "--state",
            str(self.state),
            "--ctl-fd",
            str(theirs.fileno()),
        ]
        if self.debug:
            cmd.append("--debug")
        log = open(self.logfile, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                cmd,
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
            theirs.close()
        self._sock = ours
        self._rfile = ours.makefile("rb")
        _live_mounts.add(self)
        self._finalizer = weakref.finalize(self, _cleanup, self.proc, str(self.mountpoint), ours)
        ours.settimeout(READY_TIMEOUT)
        try:
            msg = self._read_msg()
        except (TimeoutError, OSError, PowerLossError) as e:
            self.close()
            raise PowerLossError(
                f"plfs did not become ready: {e}; log:\n{self.log_tail()}"
            ) from None
        if msg.get("event") != "ready":
            self.close()
            raise PowerLossError(f"unexpected message {msg}; log:\n{self.log_tail()}")
        ours.settimeout(CMD_TIMEOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while not _is_mounted(str(self.mountpoint)):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise PowerLossError(f"mount did not appear; log:\n{self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def close(self) -> None:
        """Unmount and stop the daemon (idempotent, never leaves a mount)."""
        fin = getattr(self, "_finalizer", None)
        if fin is not None:
            fin()
        _live_mounts.discard(self)

    # ---------------------------------------------------------- control
    def _read_msg(self) -> dict:
        while True:
            line = self._rfile.readline()
            if not line:
                raise PowerLossError("plfs control channel closed (daemon died?)")
            msg = json.loads(line)
            if msg.get("event") == "exited":
                continue
            return msg

    def _cmd(self, cmd: str, **kw) -> dict:
        if self._sock is None:
            raise PowerLossError("plfs not running")
        with self._lock:
            self._sock.sendall((json.dumps({"cmd": cmd, **kw}) + "\n").encode())
            resp = self._read_msg()
        if not resp.get("ok"):
            raise PowerLossError(
                f"plfs {cmd} failed: {resp.get('error')}\n{resp.get('traceback', '')}"
            )
        return resp

    def stats(self) -> dict:
        r = self._cmd("stats")
        return {
            **r["stats"],
            "dead": r["dead"],
            "dead_reason": r["dead_reason"],
            "armed": r["armed"],
            "faults": r["faults"],
        }

    def sync_count(self) -> int:
        return self._cmd("stats")["stats"]["sync_count"]

    def is_dead(self) -> bool:
        return self._cmd("stats")["dead"]

    def arm_cut_at_sync(self, n: int, seed: int = 0, after: bool | None = None) -> dict:
        """Power fails at the n-th sync point (fsync/fdatasync/fsyncdir/O_DSYNC write)
        counted from now; before or after applying it (chosen by `seed` unless `after`
        is given).  From then on every operation fails with EIO."""
        return self._cmd("arm_cut", kind="sync", n=n, seed=seed, after=after)["armed"]

    def arm_cut_at_write(self, n: int) -> dict:
        """Power fails at the n-th data write counted from now (the write fails)."""
        return self._cmd("arm_cut", kind="write", n=n)["armed"]

    def disarm(self) -> None:
        self._cmd("disarm")

    def inject_fault(
        self,
        op: str = "fsync",
        nth: int = 1,
        errno: int | str = _errno.EIO,
        path_suffix: str | None = None,
        persistent: bool = False,
        lose_on_error: bool = True,
    ) -> None:
        """Fail the nth matching `op` ('write', 'fsync' (incl. fdatasync and O_DSYNC
        writes), 'fsyncdir', 'sync' (= fsync or fsyncdir)) counted from now with
        `errno`, once or (persistent) also every later matching op.  With
        lose_on_error a failed fsync forgets the inode's unsynced data (Linux
        semantics: it never becomes durable unless rewritten)."""
        self._cmd(
            "inject_fault",
            op=op,
            nth=nth,
            errno=errno,
            path_suffix=path_suffix,
            persistent=persistent,
            lose_on_error=lose_on_error,
        )

    def clear_faults(self) -> None:
        self._cmd("clear_faults")

    def freeze(self) -> None:
        """Cut the power now (all further ops fail with EIO) without building an image."""
        self._cmd("freeze")

    def cut(self, mode: str = "drop", seed: int = 0) -> Path:
        """Cut the power (if an armed cut has not already) and materialise the durable
        image into a fresh plain directory, which is returned."""
        self._n_images += 1
        dest = self.images / f"image-{self._n_images}"
        r = self._cmd("cut", mode=mode, seed=seed, dest=str(dest))
        self.last_cut = r
        return Path(r["image"])


def _cleanup(proc: subprocess.Popen | None, mountpoint: str, sock: socket.socket | None) -> None:
    try:
        force_unmount(mountpoint)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        force_unmount(mountpoint)
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


@atexit.register
def _cleanup_all() -> None:
    for m in list(_live_mounts):
        with contextlib.suppress(Exception):
            m.close()


# ---------------------------------------------------------------- probe
_probe_result: tuple[bool, str] | None = None


def probe() -> tuple[bool, str]:
    """Mount a scratch plfs and check a write+fsync round-trip lands in the image.
    Returns (ok, reason).  Cached per process."""
    global _probe_result
    if _probe_result is not None:
        return _probe_result
    _probe_result = _probe()
    return _probe_result


def _probe() -> tuple[bool, str]:
    try:
        import mfusepy  # noqa: F401
    except Exception as e:  # ImportError, OSError (libfuse missing)
        return False, f"mfusepy/libfuse not importable: {type(e).__name__}: {e}"
    if not os.path.exists("/dev/fuse"):
        return False, "/dev/fuse does not exist"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return False, "/dev/fuse is not accessible"
    tmp = tempfile.mkdtemp(prefix="plfs-probe-")
    try:
        with PowerLossFS(tmp) as fs:
            p = fs.mountpoint / "probe.txt"
            fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
            try:
                os.write(fd, b"hello power loss")
                os.fsync(fd)
            finally:
                os.close(fd)
            dfd = os.open(fs.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            n = fs.sync_count()
            image = fs.cut("drop", 0)
            got = (image / "probe.txt").read_bytes() if (image / "probe.txt").exists() else None
        if n < 2:
            return False, f"sync calls do not reach the FUSE daemon (sync_count={n})"
        if got != b"hello power loss":
            return False, f"durable image wrong after write+fsync: {got!r}"
        return True, "ok"
    except Exception as e:
        return False, f"{type(e).__name__}: {e}"
    finally:
        force_unmount(os.path.join(tmp, "plfs-mnt"))
        shutil.rmtree(tmp, ignore_errors=True)


def require_powerloss(request=None) -> None:
    """Skip LOUDLY (or fail if CKDB_REQUIRE_POWERLOSS=1) when plfs cannot run."""
    ok, reason = probe()
    if ok:
        return
    import pytest

    msg = f"SKIPPED powerloss: {reason}"
    print(msg, file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        os.write(2, (msg + "\n").encode())
    if request is not None:
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(msg, yellow=True, bold=True)
    if os.environ.get("CKDB_REQUIRE_POWERLOSS", "") not in ("", "0"):
        pytest.fail(
            f"powerloss harness required (CKDB_REQUIRE_POWERLOSS) but unavailable: {reason}"
        )
    pytest.skip(msg)
