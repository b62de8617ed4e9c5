"""What every command module of the CLI shares: exit codes, the default store path, JSON and
table output, progress bars (``rich``, stderr, only on a terminal), argument parsers.

Only the CLI reads environment variables for paths."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import attrs

import ckdb
from ckdb.errors import InvalidInput

EXIT_OK = 0
EXIT_PROBLEMS = 1  # a check (validate, scrub, monitor, restore verification) found problems
EXIT_OTHER = 2  # usage errors (argparse) and errors that are not CkdbError (e.g. OSError)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE

#: A command: (the open store, or None for commands that open none; the parsed args) -> exit code
Handler = Callable[[Any, argparse.Namespace], int]


class Add(Protocol):
    """Registers a subcommand: ``add(name, handler, help, opens="open", json_flag=True)``;
    ``opens`` is how the store is opened: "create", "open" or None (no store)."""

    def __call__(
        self,
        name: str,
        fn: Handler,
        help_: str,
        opens: str | None = "open",
        json_flag: bool = True,
    ) -> argparse.ArgumentParser: ...


def default_store_path() -> Path:
    """``$CKDB_STORE``, else ``$XDG_DATA_HOME/ckdb/default.ckdb`` (XDG default: ~/.local/share)."""
    env = os.environ.get("CKDB_STORE")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "ckdb" / "default.ckdb"


# --- output --------------------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """Records, reports and state values as JSON: bytes as {"$bytes": hex}, non-finite floats as
    strings, datetimes as ISO 8601, timedeltas as seconds."""
    if attrs.has(type(obj)):
        return {k: jsonable(v) for k, v in attrs.asdict(obj, recurse=False).items()}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"$bytes": bytes(obj).hex()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "nan", "inf", "-inf": strict JSON has no such numbers
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def print_json(obj: Any) -> None:
    print(json.dumps(jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False))


def row(info: ckdb.CheckpointInfo) -> str:
    flags = ("P" if info.pinned else "-") + ("!" if info.status != "valid" else "-")
    name = f" {info.name!r}" if info.name else ""
    return (
        f"{info.id}  {flags}  {info.workflow_id:<16} #{info.sequence:<5} {info.phase:<14} "
        f"{info.kind:<9} {info.created_at:%Y-%m-%d %H:%M:%S}{name}"
    )


HEADER = f"{'ID':<26}  {'PF'}  {'WORKFLOW':<16} {'SEQ':<6} {'PHASE':<14} {'KIND':<9} CREATED (UTC)"


def short(info: ckdb.CheckpointInfo | None, cid: str) -> str:
    if info is None:
        return cid
    label = f"#{info.sequence} {info.phase}" + (f" '{info.name}'" if info.name else "")
    return f"{cid} ({label})"


# --- progress (rich, only on a terminal) ---------------------------------------------------------


class Progress:
    """Progress display on stderr, shown only when stderr is a terminal and rich is installed."""

    def __init__(
        self, enabled: bool, label: str, total: int | None = None, *, counting: bool = False
    ) -> None:
        """``counting``: the bar counts items (``done/total``), not bytes."""
        self.label = label
        self.total = total
        self._progress: Any = None
        self._status: Any = None
        self._task: Any = None
        self._lock = threading.Lock()
        if not enabled:
            return
        try:
            from rich.console import Console  # noqa: PLC0415 - optional, terminal-only
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
        except ImportError:  # pragma: no cover - rich is a dependency; degrade quietly
            return
        self._console = Console(stderr=True)
        amounts = (MofNCompleteColumn(),) if counting else (DownloadColumn(), TransferSpeedColumn())
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            *amounts,
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )

    def __enter__(self) -> Progress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def bytes(self, done: int, entries: int) -> None:
        """A ``progress(bytes_done, entries_done)`` callback (create, restore)."""
        if self._progress is not None:
            with self._lock:
                self._progress.update(
                    self._task,
                    completed=done,
                    description=f"{self.label} ({entries} entries)",
                )

    def steps(self, done: int, total: int) -> None:
        """A ``progress(done, total)`` callback (take-over, pull)."""
        if self._progress is not None:
            with self._lock:
                self._progress.update(self._task, completed=done, total=total)

    def stage(self, text: str) -> None:
        """A ``progress(stage)`` callback (backup, compact)."""
        if self._progress is not None:
            with self._lock:
                self._progress.update(self._task, description=f"{self.label}: {text}")

    @property
    def bytes_callback(self) -> Callable[[int, int], None] | None:
        return self.bytes if self._progress is not None else None

    @property
    def steps_callback(self) -> Callable[[int, int], None] | None:
        return self.steps if self._progress is not None else None

    @property
    def stage_callback(self) -> Callable[[str], None] | None:
        return self.stage if self._progress is not None else None


def progress(
    args: argparse.Namespace, label: str, total: int | None = None, *, counting: bool = False
) -> Progress:
    enabled = not args.no_progress and not args.json and sys.stderr.isatty()
    return Progress(enabled, label, total, counting=counting)


def tree_bytes(root: Path) -> int | None:
    """Total size of the regular files under ``root`` (for a progress bar's total)."""
    total = 0
    try:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(dirpath, name))
                    total += st.st_size
    except OSError:
        return None
    return total


# --- argument parsing helpers --------------------------------------------------------------------

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

_TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "ms": 0.001}

_BYTE_UNITS = {
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_budget(text: str) -> timedelta | int:
    """``30s``, ``5m``, ``1h`` (time) or ``512MiB``, ``2GB``, ``4096B`` (bytes); a bare number is
    seconds."""
    match = _BUDGET.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a budget: {text!r} (e.g. 30s, 5m, 512MiB)")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit in ("", *_TIME_UNITS):
        return timedelta(seconds=number * _TIME_UNITS.get(unit, 1.0))
    if unit in _BYTE_UNITS:
        return int(number * _BYTE_UNITS[unit])
    raise argparse.ArgumentTypeError(f"unknown budget unit {unit!r} (s, m, h, B, KiB, MiB, GiB)")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    if value > threading.TIMEOUT_MAX:  # Event.wait would raise OverflowError in the monitor
        raise argparse.ArgumentTypeError(f"must be at most {threading.TIMEOUT_MAX:.0f}: {text!r}")
    return value


def read_json(spec: str | None, what: str) -> Any:
    """JSON from a file, or stdin for ``-``; None when not given."""
    if spec is None:
        return None
    try:
        text = sys.stdin.read() if spec == "-" else Path(spec).read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidInput(f"{what}: cannot read {spec!r}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{what}: {spec!r} is not UTF-8: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInput(f"{what} is not valid JSON: {err}") from None
