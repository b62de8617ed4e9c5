"""Backups, compaction and the background integrity monitor.

Backup: a consistent, compacted copy taken while writers keep working (LMDB's ``env.copy`` runs in
a read transaction), written into a temporary sibling of the destination, fsynced (``env.copy``
does not fsync), verified — LMDB's structural check in a subprocess, then opened and scrubbed
clean — and only then renamed into place, and the parent directory fsynced. A crash at any point
leaves either no backup at the destination or a complete, verified one. The copy carries the
store's key file when the store uses a generated one, so it opens with the same master key and can
serve as a repair source.

Monitor: incremental scrubs on an interval in a daemon thread, for agents that run for weeks.
One monitor per store across processes: a lease in ``settings`` elects the active one; the others
stand by and take over when the lease expires. Errors in a callback never kill it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from attrs import frozen

from ckdb._env import Txn, fsync_path
from ckdb._open import open_tables
from ckdb.errors import CkdbError, IntegrityError, InvalidInput
from ckdb.keys import KEY_FILE_NAME
from ckdb.reading import list_checkpoints, stats
from ckdb.restore import check_path
from ckdb.scrub import Finding, ScrubReport, scrub
from ckdb.tables import Tables

log = logging.getLogger("ckdb")

MONITOR_LEASE_KEY = b"monitor/lease"

_VERIFY_SNIPPET = (
    "import sys\n"
    "from lmdb import verify\n"
    "problems = verify.verify(sys.argv[1])\n"
    "print('\\n'.join(problems))\n"
    "sys.exit(1 if problems else 0)\n"
)


@frozen
class BackupReport:
    path: str
    bytes: int
    checkpoints: int
    scrub: ScrubReport  # the copy's scrub (findings only for checkpoints already marked)


def backup(
    t: Tables,
    dest: str | os.PathLike[str],
    *,
    progress: Callable[[str], None] | None = None,
) -> BackupReport:
    """A consistent, compacted, fsynced and verified copy at ``dest`` (which must not exist
    or be empty), taken while writers keep working. It opens with the same master key."""
    t.env.check()
    dest_path = Path(check_path(dest, "backup destination")).absolute()
    if dest_path == t.path or t.path in dest_path.parents:
        raise InvalidInput(f"the backup destination {dest_path} is inside the store itself")
    if dest_path.exists() and (not dest_path.is_dir() or any(dest_path.iterdir())):
        raise InvalidInput(
            f"backup destination {dest_path} exists and is not empty; nothing was written"
        )
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_path.parent / f".{dest_path.name}.ckdb-backup-{secrets.token_hex(6)}"
    tmp.mkdir(mode=0o700)
    try:
        if progress:
            progress("copying")
        t.env.copy_to(tmp, compact=True)
        key_file = t.path / KEY_FILE_NAME
        if t.key_source == "store" and key_file.exists():
            shutil.copyfile(key_file, tmp / KEY_FILE_NAME)
            os.chmod(tmp / KEY_FILE_NAME, 0o600)
        for name in os.listdir(tmp):
            fsync_path(tmp / name)
        fsync_path(tmp, directory=True)
        if progress:
            progress("verifying structure")
        # LMDB's structural check runs in a subprocess: a damaged page must not crash us.
        proc = subprocess.run(
            [sys.executable, "-c", _VERIFY_SNIPPET, str(tmp)],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if proc.returncode != 0:
            raise IntegrityError(
                f"the backup copy fails LMDB's structural check: {proc.stdout.strip()[:500]} "
                f"{proc.stderr.strip()[-500:]}"
            )
        if progress:
            progress("scrubbing the copy")
        # Open the copy the way a user will: with the key file it carries, if it carries one.
        copied_key = tmp / KEY_FILE_NAME
        how: dict[str, Any] = (
            {"key": None, "key_file": copied_key}
            if copied_key.exists()
            else {"key": t.master, "key_file": None}
        )
        copy = open_tables(
            tmp,
            readonly=False,
            durability="sync",
            create=False,
            map_size=None,
            encryption=None,
            retention=None,
            created_by=t.created_by,
            **how,
        )
        try:
            # Checkpoints the store itself has marked corrupted are copied as they are (marked):
            # the copy is faithful. Any other finding means the copy is bad.
            already = {i.id for i in list_checkpoints(copy) if i.status != "valid"}
            report = scrub(copy, notify=lambda _finding: None)
            count = stats(copy)["checkpoints"]
        finally:
            copy.env.close()
        new_problems = [f for f in report.findings if f.checkpoint_id not in already]
        if new_problems:
            raise IntegrityError(
                "the backup copy does not scrub clean: "
                + "; ".join(f.problem for f in new_problems[:5])
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp / "lock.mdb")  # a reader table, not data; recreated on open
        fsync_path(tmp, directory=True)
        os.rename(tmp, dest_path)
        fsync_path(dest_path.parent, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = os.path.getsize(dest_path / "data.mdb")
    return BackupReport(path=str(dest_path), bytes=size, checkpoints=count, scrub=report)


class Monitor:
    """A running integrity monitor (``Store.monitor``). Use as a context manager or ``stop()``."""

    def __init__(
        self,
        t: Tables,
        notify: Callable[[Finding, Callable[[Finding], object] | None], None],
        interval: float,
        *,
        budget: timedelta | int | None,
        level: str,
        repair: bool,
        backup: str | os.PathLike[str] | None,
        on_corruption: Callable[[Finding], object] | None,
        lease_seconds: float | None,
    ) -> None:
        if (
            not isinstance(interval, int | float)
            or isinstance(interval, bool)
            or not 0 < interval <= threading.TIMEOUT_MAX
        ):
            raise InvalidInput(
                f"interval must be a positive number of seconds (at most "
                f"{threading.TIMEOUT_MAX:.0f}), not {interval!r}"
            )
        self.t = t
        self._notify_all = notify
        self.interval = float(interval)
        self.budget = budget
        self.level = level
        self.repair = repair
        self.backup = backup
        self.on_corruption = on_corruption
        self.lease_seconds = lease_seconds or max(3 * self.interval, 30.0)
        self.owner = secrets.token_hex(8)
        self.runs = 0
        self.reported: set[tuple[str, str, str]] = set()
        self.errors: list[str] = []
        self.last_report: ScrubReport | None = None
        self.active = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ckdb-monitor", daemon=True)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.active and not self.t.env.closed:
            with contextlib.suppress(CkdbError):
                self.t.env.write(self._release)
        self.active = False

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # -- lease -----------------------------------------------------------------------------------

    def _lease_doc(self, txn: Txn) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] | None = self.t.settings.read(txn, MONITOR_LEASE_KEY, memo=False)
            return doc
        except CkdbError:
            return None  # a damaged lease is treated as free

    def _acquire(self, txn: Txn) -> bool:
        now = time.time()
        doc = self._lease_doc(txn)
        if doc is not None and doc.get("owner") != self.owner and doc.get("expires", 0) > now:
            return False
        doc = {
            "owner": self.owner,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "expires": now + self.lease_seconds,
        }
        self.t.settings.put(txn, MONITOR_LEASE_KEY, doc)
        return True

    def _release(self, txn: Txn) -> None:
        doc = self._lease_doc(txn)
        if doc is not None and doc.get("owner") == self.owner:
            self.t.settings.delete(txn, MONITOR_LEASE_KEY)

    # -- loop ------------------------------------------------------------------------------------

    def _notify(self, finding: Finding) -> None:
        key = (finding.kind, finding.where, finding.problem)
        if key in self.reported:
            return
        self.reported.add(key)
        self._notify_all(finding, self.on_corruption)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.active = self.t.env.write(self._acquire)
                if self.active:
                    self.last_report = scrub(
                        self.t,
                        level=self.level,
                        repair=self.repair,
                        backup=self.backup,
                        budget=self.budget,
                        notify=self._notify,
                    )
                    self.runs += 1
            except Exception as err:
                self.errors.append(f"{type(err).__name__}: {err}")
                log.exception("ckdb monitor: scrub failed")
            if self._stop.wait(self.interval):
                break
