"""A worker subprocess whose complete stdout lines (JSON, one acknowledgement each) a thread
collects, until it is SIGKILLed: the harness of the kill tests (test_crash_kill.py,
test_remote_kill.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Lines = list[dict[str, Any]]


class Killable:
    def __init__(self, argv: list[str], cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=None if cwd is None else str(cwd),
        )
        self.lines: Lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if not raw.endswith(b"\n"):
                break  # a half-printed line is not an acknowledgement
            with self._cond:
                self.lines.append(json.loads(raw))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Lines], bool], timeout: float) -> bool:
        """Wait until ``predicate(lines)`` holds, the worker is gone, or ``timeout``; -> whether
        it holds."""
        end = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.lines):
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return predicate(self.lines)
                self._cond.wait(min(left, 0.05))
            return True

    def kill(self) -> tuple[Lines, str, int]:
        """SIGKILL (if still running) -> (the lines it acknowledged, its stderr, its exit code)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait()
        self._reader.join(10)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        with self._cond:
            return list(self.lines), err, code
