"""The ``ckdb`` command line: a thin layer over the Store API, one subcommand per operation.

The store path comes from ``--store PATH`` (before the subcommand), else ``CKDB_STORE``, else the
default store ``$XDG_DATA_HOME/ckdb/default.ckdb`` (``~/.local/share/ckdb/default.ckdb``). Only this
module reads environment variables for paths. Errors print one line (no traceback unless
``--debug``) and exit with the error class's code (``docs/errors.md``); 0 is success, 1 means a
check ran and found problems. ``--json`` prints machine-readable output on every command that
prints data. Progress bars (``rich``) go to stderr, only when it is a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

import ckdb
from ckdb.errors import CkdbError, InvalidInput
from ckdb.retention import RetentionPolicy

EXIT_OK = 0
EXIT_PROBLEMS = 1  # a check (validate, scrub, monitor, restore verification) found problems
EXIT_OTHER = 2  # usage errors (argparse) and errors that are not CkdbError (e.g. OSError)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


def default_store_path() -> Path:
    """``$CKDB_STORE``, else ``$XDG_DATA_HOME/ckdb/default.ckdb`` (XDG default: ~/.local/share)."""
    env = os.environ.get("CKDB_STORE")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "ckdb" / "default.ckdb"


# --- output helpers ------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Records, reports and state values as JSON: bytes as {"$bytes": hex}, non-finite floats as
    strings, datetimes as ISO 8601, timedeltas as seconds."""
    if attrs.has(type(obj)):
        return {k: _jsonable(v) for k, v in attrs.asdict(obj, recurse=False).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
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


def _print_json(obj: Any) -> None:
    print(json.dumps(_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _row(info: ckdb.CheckpointInfo) -> str:
    flags = ("P" if info.pinned else "-") + ("!" if info.status != "valid" else "-")
    name = f" {info.name!r}" if info.name else ""
    return (
        f"{info.id}  {flags}  {info.workflow_id:<16} #{info.sequence:<5} {info.phase:<14} "
        f"{info.kind:<9} {info.created_at:%Y-%m-%d %H:%M:%S}{name}"
    )


_HEADER = f"{'ID':<26}  {'PF'}  {'WORKFLOW':<16} {'SEQ':<6} {'PHASE':<14} {'KIND':<9} CREATED (UTC)"


def _short(info: ckdb.CheckpointInfo | None, cid: str) -> str:
    if info is None:
        return cid
    label = f"#{info.sequence} {info.phase}" + (f" '{info.name}'" if info.name else "")
    return f"{cid} ({label})"


# --- progress (rich, only on a terminal) ---------------------------------------------------------


class _Progress:
    """Progress display on stderr, shown only when stderr is a terminal and rich is installed."""

    def __init__(self, enabled: bool, label: str, total: int | None = None) -> None:
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
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
        except ImportError:  # pragma: no cover - rich is a dependency; degrade quietly
            return
        self._console = Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )

    def __enter__(self) -> _Progress:
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

    def stage(self, text: str) -> None:
        """A ``progress(stage)`` callback (backup, compact)."""
        if self._progress is not None:
            with self._lock:
                self._progress.update(self._task, description=f"{self.label}: {text}")

    @property
    def bytes_callback(self) -> Callable[[int, int], None] | None:
        return self.bytes if self._progress is not None else None

    @property
    def stage_callback(self) -> Callable[[str], None] | None:
        return self.stage if self._progress is not None else None


def _progress(args: argparse.Namespace, label: str, total: int | None = None) -> _Progress:
    enabled = not args.no_progress and not args.json and sys.stderr.isatty()
    return _Progress(enabled, label, total)


def _tree_bytes(root: Path) -> int | None:
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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    if value > threading.TIMEOUT_MAX:  # Event.wait would raise OverflowError in the monitor
        raise argparse.ArgumentTypeError(f"must be at most {threading.TIMEOUT_MAX:.0f}: {text!r}")
    return value


def _read_json(spec: str | None, what: str) -> Any:
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


# --- commands ------------------------------------------------------------------------------------


def cmd_init(store: ckdb.Store, args: argparse.Namespace) -> int:
    doc = {"path": str(store.path), "uuid": store.uuid, "created": not args.existed}
    if args.json:
        _print_json(doc)
    else:
        verb = "created" if doc["created"] else "exists"
        print(f"store {verb} at {store.path} (uuid {store.uuid})")
    return EXIT_OK


def cmd_create(store: ckdb.Store, args: argparse.Namespace) -> int:
    from_stdin = [
        o
        for o, v in (
            ("--state", args.state),
            ("--resources", args.resources),
            ("--dependencies", args.dependencies),
        )
        if v == "-"
    ]
    if len(from_stdin) > 1:
        raise InvalidInput(f"only one option can read stdin ('-'), not {', '.join(from_stdin)}")
    state = _read_json(args.state, "--state")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise InvalidInput("--state must be a JSON object mapping component names to values")
    if args.manual and not args.name:
        raise InvalidInput("a manual checkpoint needs --name")
    total = _tree_bytes(Path(args.files)) if args.files else None
    with _progress(args, "capturing", total) as bar:
        info = store.create(
            args.workflow,
            args.phase,
            state=state,
            resources=_read_json(args.resources, "--resources"),
            dependencies=_read_json(args.dependencies, "--dependencies"),
            files=args.files,
            include=args.include or None,
            exclude=args.exclude or None,
            include_files=not args.no_files,
            compression=not args.no_compression,
            kind="manual" if args.manual else "automatic",
            name=args.name,
            pinned=args.pin,
            progress=bar.bytes_callback,
        )
    if args.json:
        _print_json(info)
    else:
        print(info.id)
        for warning in info.warnings:
            print(f"ckdb: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def cmd_list(store: ckdb.Store, args: argparse.Namespace) -> int:
    infos = store.list(args.workflow, phase=args.phase, kind=args.kind, limit=args.limit)
    if args.json:
        _print_json(infos)
    else:
        if infos:
            print(_HEADER)
        for info in infos:
            print(_row(info))
    return EXIT_OK


def cmd_show(store: ckdb.Store, args: argparse.Namespace) -> int:
    if args.state:
        ck = store.load(args.id)
        _print_json(
            {
                "info": ck.info,
                "state": ck.state,
                "resources": ck.resources,
                "dependencies": ck.dependencies,
                "files": ck.files,
            }
        )
        return EXIT_OK
    info = store.get_info(args.id)
    if args.json:
        _print_json(info)
        return EXIT_OK
    for field, value in attrs.asdict(info, recurse=False).items():
        if field in ("components", "warnings"):
            continue
        print(f"{field:>12}: {'' if value is None else value}")
    for comp in info.components:
        if comp.type == "bundle":
            stored = (
                f"{comp.stored_size} B stored (the frame the components marked 'in bundle' share)"
            )
        elif comp.stored_size == 0:
            stored = "in bundle"
        else:
            stored = f"{comp.stored_size} B stored"
        print(f"{'component':>12}: {comp.type}/{comp.name}: {comp.raw_size} B raw, {stored}")
    return EXIT_OK


def cmd_validate(store: ckdb.Store, args: argparse.Namespace) -> int:
    ids = args.ids or [info.id for info in store.list(args.workflow)]
    reports = [store.validate(cid, level=args.level) for cid in ids]
    if args.json:
        _print_json([{**_jsonable(r), "ok": r.ok} for r in reports])
    else:
        for report in reports:
            if report.ok:
                print(f"{report.checkpoint_id}  ok ({report.level})")
            else:
                print(f"{report.checkpoint_id}  FAILED ({report.level})")
                for finding in report.findings or ("a check failed",):
                    print(f"    {finding}")
        bad = sum(not r.ok for r in reports)
        print(f"{len(reports)} checked, {bad} failed")
    return EXIT_OK if all(r.ok for r in reports) else EXIT_PROBLEMS


def _restore_total(store: ckdb.Store, args: argparse.Namespace, cid: str | None) -> int | None:
    """The bytes a restore will write, for the progress bar (only computed on a terminal)."""
    if args.no_progress or args.json or not sys.stderr.isatty() or cid is None:
        return None
    with contextlib.suppress(CkdbError):
        files = store.load(cid).files
        if files is not None:
            return sum(e.size for e in files.entries if e.type == "file")
    return None


def _print_restore(report: ckdb.RestoreReport, args: argparse.Namespace) -> int:
    if args.json:
        doc = _jsonable(report)
        doc["ok"] = report.ok
        print(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False))
        return EXIT_OK if report.ok else EXIT_PROBLEMS
    info = report.checkpoint.info
    for cid, why in report.skipped_checkpoints:
        print(f"skipped {cid}: {why}")
    where = report.target_dir or "(no files restored)"
    print(f"restored {_short(info, info.id)} into {where}")
    print(
        f"  {report.files_written} files, {report.directories} directories, {report.links} links, "
        f"{_size(report.bytes_written)} written; {report.deleted} extra removed"
    )
    if report.components_restored:
        print(f"  components restored: {', '.join(report.components_restored)}")
    for line in report.warnings:
        print(f"  warning: {line}")
    for line in report.skipped:
        print(f"  not restored: {line}")
    for line in report.mismatches:
        print(f"  MISMATCH: {line}")
    if args.verify and report.target_dir:
        print("  verified" if report.ok else "  verification FAILED")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_restore(store: ckdb.Store, args: argparse.Namespace) -> int:
    total = _restore_total(store, args, args.id) if args.files else None
    with _progress(args, "restoring", total) as bar:
        report = store.restore(
            args.id,
            target_dir=args.to,
            restore_files=args.files,
            restore_resources=args.resources,
            verify=args.verify,
            delete_extra=args.delete_extra,
            progress=bar.bytes_callback,
        )
    return _print_restore(report, args)


def cmd_restore_latest(store: ckdb.Store, args: argparse.Namespace) -> int:
    latest = store.latest(args.workflow) if args.files else None
    total = _restore_total(store, args, latest.id if latest else None)
    with _progress(args, "restoring", total) as bar:
        report = store.restore_latest(
            args.workflow,
            target_dir=args.to,
            restore_files=args.files,
            restore_resources=args.resources,
            verify=args.verify,
            delete_extra=args.delete_extra,
            level=args.level,
            progress=bar.bytes_callback,
        )
    return _print_restore(report, args)


def cmd_prune(store: ckdb.Store, args: argparse.Namespace) -> int:
    infos = {info.id: info for info in store.list(args.workflow)}
    result = store.prune(args.workflow, args.policy, dry_run=args.dry_run)
    if args.json:
        _print_json(result)
        return EXIT_OK
    for plan in result.plans:
        print(
            f"workflow {plan.workflow_id} (policy {plan.policy}): keep {len(plan.keep)}, "
            f"delete {len(plan.delete)}"
        )
        for keep in plan.keep:
            print(f"  keep    {_short(infos.get(keep.id), keep.id)}: {'; '.join(keep.reasons)}")
        for cid in plan.delete:
            print(f"  delete  {_short(infos.get(cid), cid)}")
    if not result.plans:
        print("no workflow has a retention policy: nothing to do")
    if result.dry_run:
        print("dry run: nothing was deleted")
    else:
        print(f"deleted {len(result.deleted)} checkpoints")
        for cid in result.skipped:
            print(f"  not deleted (pinned, changed meanwhile, or marked): {cid}")
    return EXIT_OK


def cmd_delete(store: ckdb.Store, args: argparse.Namespace) -> int:
    store.delete(args.id)
    if args.json:
        _print_json({"deleted": args.id})
    else:
        print(f"deleted {args.id}")
    return EXIT_OK


def cmd_delete_workflow(store: ckdb.Store, args: argparse.Namespace) -> int:
    count = store.delete_workflow(args.workflow)
    if args.json:
        _print_json({"workflow_id": args.workflow, "deleted": count})
    else:
        print(f"deleted workflow {args.workflow} ({count} checkpoints)")
    return EXIT_OK


def _flag(store: ckdb.Store, args: argparse.Namespace, pin: bool) -> int:
    info = store.pin(args.id) if pin else store.unpin(args.id)
    if args.json:
        _print_json(info)
    else:
        print(f"{'pinned' if info.pinned else 'unpinned'} {_short(info, info.id)}")
    return EXIT_OK


def cmd_pin(store: ckdb.Store, args: argparse.Namespace) -> int:
    return _flag(store, args, True)


def cmd_unpin(store: ckdb.Store, args: argparse.Namespace) -> int:
    return _flag(store, args, False)


def _finding_line(finding: Any) -> str:
    return f"{finding.kind} {finding.where}: {finding.problem} [{finding.action}]"


def cmd_scrub(store: ckdb.Store, args: argparse.Namespace) -> int:
    status: Any = contextlib.nullcontext()
    if not args.no_progress and not args.json and sys.stderr.isatty():
        # Store.scrub has no progress callback: a spinner shows that it is working.
        with contextlib.suppress(ImportError):
            from rich.console import Console  # noqa: PLC0415

            status = Console(stderr=True).status("scrubbing...")
    with status:
        report = store.scrub(
            workflow_id=args.workflow,
            level=args.level,
            repair=args.repair,
            backup=args.backup,
            budget=args.budget,
        )
    if args.json:
        doc = _jsonable(report)
        doc["ok"] = report.ok
        print(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        for finding in report.findings:
            print(_finding_line(finding))
        coverage = "complete" if report.complete else "partial (budget; resumes next time)"
        print(
            f"checked {report.checkpoints_checked} checkpoints, {_size(report.bytes_checked)}; "
            f"{coverage}; {len(report.findings)} findings, {report.repaired} repaired, "
            f"{report.deleted} deleted: {'ok' if report.ok else 'PROBLEMS'}"
        )
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_monitor(store: ckdb.Store, args: argparse.Namespace) -> int:
    lock = threading.Lock()
    found: list[Any] = []

    def on_corruption(finding: Any) -> None:
        with lock:
            found.append(finding)
            if args.json:
                print(json.dumps(_jsonable(finding), ensure_ascii=False), flush=True)
            else:
                print(_finding_line(finding), flush=True)

    if not args.json:
        runs = f"{args.runs} runs" if args.runs else "until interrupted"
        print(f"monitoring {store.path} every {args.interval:g} s ({runs})", flush=True)
    monitor = store.monitor(
        args.interval,
        budget=args.budget,
        level=args.level,
        repair=args.repair,
        backup=args.backup,
        on_corruption=on_corruption,
    )
    stopped = threading.Event()
    try:
        with monitor:
            while monitor.running and not (args.runs and monitor.runs >= args.runs):
                stopped.wait(0.2)
    except KeyboardInterrupt:
        pass
    for error in monitor.errors:
        print(f"ckdb: monitor: {error}", file=sys.stderr)
    unrepaired = [f for f in found if f.action not in ("repaired", "removed", "rebuilt")]
    if not args.json:
        print(f"monitor stopped after {monitor.runs} runs; {len(found)} findings")
    return EXIT_PROBLEMS if unrepaired or monitor.errors else EXIT_OK


def _print_backup(report: Any, args: argparse.Namespace, what: str) -> int:
    if args.json:
        _print_json(report)
    else:
        print(
            f"{what} written to {report.path}: {report.checkpoints} checkpoints, "
            f"{_size(report.bytes)}; verified (structure and scrub clean)"
        )
    return EXIT_OK


def cmd_backup(store: ckdb.Store, args: argparse.Namespace) -> int:
    with _progress(args, "backup") as bar:
        report = store.backup(args.dest, progress=bar.stage_callback)
    return _print_backup(report, args, "backup")


def cmd_compact(store: ckdb.Store, args: argparse.Namespace) -> int:
    with _progress(args, "compact") as bar:
        report = store.compact(args.dest, progress=bar.stage_callback)
    return _print_backup(report, args, "compacted copy")


def cmd_rotate_key(store: ckdb.Store, args: argparse.Namespace) -> int:
    new_key = None
    if args.new_key_file:
        from ckdb.keys import read_key_file  # noqa: PLC0415 - the documented key file format

        new_key = read_key_file(args.new_key_file)
    report = store.rotate_key(new_key, new_data_key=args.new_data_key)
    if args.json:
        _print_json(report)
    else:
        print(
            f"key rotated: active data key {report.active_key_id}, retired "
            f"{list(report.retired_key_ids)}, {report.retagged} frames re-tagged"
            + ("" if report.complete else " (re-tagging continues on the next rotate/retag)")
        )
        if new_key is not None:
            print(f"from now on open the store with --key-file {args.new_key_file}")
    return EXIT_OK


def _policy_from(args: argparse.Namespace) -> RetentionPolicy | str | None:
    custom = (
        args.max_checkpoints,
        args.max_age_days,
        args.keep_within_days,
        args.keep_daily,
        args.keep_weekly,
    )
    if args.policy == "custom":
        return RetentionPolicy(
            max_checkpoints=args.max_checkpoints,
            max_age=args.max_age_days,
            keep_within=args.keep_within_days,
            keep_daily=args.keep_daily or 0,
            keep_weekly=args.keep_weekly or 0,
        )
    if any(v is not None for v in custom):
        raise InvalidInput("--max-checkpoints, --max-age-days, ... need the policy 'custom'")
    return None if args.policy == "none" else str(args.policy)


def _policy_doc(policy: RetentionPolicy | None) -> dict[str, Any] | None:
    return None if policy is None else policy.to_doc()


def _policy_text(policy: RetentionPolicy | None) -> str:
    if policy is None:
        return "none (no automatic retention)"
    parts = []
    if policy.max_checkpoints is not None:
        parts.append(f"newest {policy.max_checkpoints}")
    if policy.max_age is not None:
        parts.append(f"younger than {policy.max_age.total_seconds() / 86400:g} days")
    if policy.keep_within is not None:
        parts.append(f"all within {policy.keep_within.total_seconds() / 86400:g} days")
    if policy.keep_daily:
        parts.append(f"{policy.keep_daily} daily")
    if policy.keep_weekly:
        parts.append(f"{policy.keep_weekly} weekly")
    return f"{policy.name}: keep {', '.join(parts) or 'everything'}"


def cmd_set_retention(store: ckdb.Store, args: argparse.Namespace) -> int:
    store.set_retention(args.workflow, _policy_from(args))
    policy = store.get_retention(args.workflow)
    if args.json:
        _print_json({"workflow_id": args.workflow, "policy": _policy_doc(policy)})
    else:
        print(f"retention of {args.workflow}: {_policy_text(policy)}")
    return EXIT_OK


def cmd_get_retention(store: ckdb.Store, args: argparse.Namespace) -> int:
    policy = store.get_retention(args.workflow)
    if args.json:
        _print_json({"workflow_id": args.workflow, "policy": _policy_doc(policy)})
    else:
        print(f"retention of {args.workflow}: {_policy_text(policy)}")
    return EXIT_OK


def collect_stats(store: ckdb.Store) -> dict[str, Any]:
    """Store statistics from the public API: ``Store.stats()`` plus logical sizes.

    - ``state_bytes``: the encoded (uncompressed) size of every checkpoint's components,
      manifests included; ``stored_bytes``: their stored frames (compressed, tagged).
    - ``file_bytes``: the size of every captured file summed over checkpoints (what a copy per
      checkpoint would take); ``unique_file_bytes``: the distinct contents among them;
      ``dedup_ratio``: their quotient.
    Corrupt checkpoints are counted but their payloads are not read.
    """
    base = store.stats()
    infos = store.list()
    file_bytes = 0
    unique: dict[tuple[str, int], int] = {}
    corrupted = 0
    for info in infos:
        if info.status != "valid":
            corrupted += 1
            continue
        if not any(c.type == "manifest" for c in info.components):
            continue
        try:
            files = store.load(info.id).files
        except CkdbError:
            corrupted += 1
            continue
        for entry in files.entries if files is not None else ():
            if entry.type == "file":
                file_bytes += entry.size
                if entry.digest is not None:
                    unique[(entry.digest, entry.size)] = entry.size
    unique_bytes = sum(unique.values())
    out: dict[str, Any] = {
        "checkpoints": base.get("checkpoints", len(infos)),
        "workflows": base.get("workflows", len(store.workflows())),
        "pinned": sum(i.pinned for i in infos),
        "corrupted": corrupted,
        "state_bytes": sum(i.raw_size for i in infos),
        "stored_bytes": sum(i.stored_size for i in infos),
        "file_bytes": file_bytes,
        "unique_file_bytes": unique_bytes,
        "dedup_ratio": round(file_bytes / unique_bytes, 2) if unique_bytes else None,
    }
    for key, value in base.items():
        out.setdefault(key, value)
    return out


_STAT_LABELS = {
    "state_bytes": "state (logical)",
    "stored_bytes": "state (stored)",
    "file_bytes": "files (logical)",
    "unique_file_bytes": "files (unique)",
    "file_size": "data.mdb size",
    "map_size": "map size",
}


def _stat_value(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key == "dedup_ratio":
        return f"{value:g}x"
    if key.endswith(("bytes", "_size")) and isinstance(value, int):
        return f"{_size(value)} ({value} B)" if value >= 1024 else _size(value)
    return str(value)


def print_stats(
    stats: dict[str, Any], indent: str = "", out: Callable[[str], None] = print
) -> None:
    for key, value in stats.items():
        label = _STAT_LABELS.get(key, key.replace("_", " "))
        out(f"{indent}{label:>16}: {_stat_value(key, value)}")


def cmd_stats(store: ckdb.Store, args: argparse.Namespace) -> int:
    stats = collect_stats(store)
    if args.json:
        _print_json(stats)
    else:
        print_stats(stats)
    return EXIT_OK


def cmd_workflows(store: ckdb.Store, args: argparse.Namespace) -> int:
    names = store.workflows()
    if args.json:
        _print_json(names)
    else:
        for name in names:
            print(name)
    return EXIT_OK


def cmd_demo(_store: None, args: argparse.Namespace) -> int:
    from ckdb.demo import run_demo  # noqa: PLC0415 - only the demo needs it

    return run_demo(args.dir, keep=args.keep)


# --- parser --------------------------------------------------------------------------------------

#: Every subcommand: name -> (handler, how it opens the store: "create", "open" or None).
COMMANDS: dict[str, tuple[Callable[[Any, argparse.Namespace], int], str | None]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckdb",
        description="ckdb: an embedded, crash-safe checkpoint database (LMDB).",
        epilog="Exit codes: 0 ok, 1 a check found problems, 2 usage or other errors, and one "
        "code per error class (docs/errors.md).",
    )
    parser.add_argument(
        "--store",
        type=Path,
        metavar="PATH",
        help="store path (default: $CKDB_STORE, else $XDG_DATA_HOME/ckdb/default.ckdb, "
        "i.e. ~/.local/share/ckdb/default.ckdb)",
    )
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        help="master key file (default: $CKDB_KEY_FILE, else the store's own key file)",
    )
    parser.add_argument(
        "--retention",
        metavar="POLICY",
        default=None,
        help="default retention policy for workflows without their own, applied by create and "
        "prune (minimal, standard, extended, default). Default: none. The API's open-time default "
        "is not stored in the store, so the CLI never assumes the application's: a store an "
        "application opens with retention=None must not lose checkpoints to a CLI create",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and ckdb's log")
    parser.add_argument("--no-progress", action="store_true", help="never show progress bars")
    parser.add_argument("--version", action="version", version=f"ckdb {ckdb.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str,
        fn: Callable[[Any, argparse.Namespace], int],
        help_: str,
        opens: str | None = "open",
        json_flag: bool = True,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        p.set_defaults(func=fn, opens=opens, json=False)
        COMMANDS[name] = (fn, opens)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    def restore_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--to",
            metavar="DIR",
            help="target directory (default: the working directory recorded at capture)",
        )
        p.add_argument(
            "--no-files", dest="files", action="store_false", help="do not restore files"
        )
        p.add_argument(
            "--no-resources",
            dest="resources",
            action="store_false",
            help="do not run the resources restorer",
        )
        p.add_argument(
            "--no-verify",
            dest="verify",
            action="store_false",
            help="do not re-hash restored files",
        )
        p.add_argument(
            "--delete-extra",
            action="store_true",
            help="remove files in the target that the checkpoint does not have",
        )

    p = add("init", cmd_init, "create the store if missing and print where it is", "create")
    p.add_argument(
        "--encryption",
        choices=["aes-gcm", "chacha20-poly1305"],
        help="encrypt every value (fixed when the store is created)",
    )

    p = add("create", cmd_create, "create a checkpoint and print its id", "create")
    p.add_argument("workflow", metavar="WORKFLOW", help="workflow id")
    p.add_argument("phase", metavar="PHASE", help="phase name")
    p.add_argument(
        "--state", metavar="FILE", help="JSON object of state components ('-' for stdin)"
    )
    p.add_argument("--resources", metavar="FILE", help="JSON resource state ('-' for stdin)")
    p.add_argument("--dependencies", metavar="FILE", help="JSON dependency state ('-' for stdin)")
    p.add_argument(
        "--files",
        metavar="DIR",
        help="capture this working directory (later checkpoints of the workflow capture it too)",
    )
    p.add_argument("--no-files", action="store_true", help="capture no files this time")
    p.add_argument("--include", action="append", metavar="GLOB", help="capture only these")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="do not capture these")
    p.add_argument("--no-compression", action="store_true", help="store values uncompressed")
    p.add_argument("--manual", action="store_true", help="a manual checkpoint (needs --name)")
    p.add_argument("--name", help="checkpoint name")
    p.add_argument("--pin", action="store_true", help="pin it (retention never deletes it)")

    p = add("list", cmd_list, "list checkpoints, newest first")
    p.add_argument(
        "workflow", nargs="?", metavar="WORKFLOW", help="only this workflow (default: all)"
    )
    p.add_argument("--phase", help="only this phase")
    p.add_argument("--kind", choices=["automatic", "manual"], help="only this kind")
    p.add_argument("--limit", type=int, metavar="N", help="at most N checkpoints")

    p = add("show", cmd_show, "show a checkpoint's metadata (--state: also its decoded state)")
    p.add_argument("id", metavar="ID", help="checkpoint id")
    p.add_argument("--state", action="store_true", help="load, verify and print everything as JSON")

    p = add("validate", cmd_validate, "validate checkpoints (exit 1 if any fails)")
    p.add_argument("ids", nargs="*", metavar="ID", help="checkpoint ids (default: every one)")
    p.add_argument("--workflow", help="without ids: only this workflow's checkpoints")
    p.add_argument(
        "--level",
        choices=["basic", "standard", "comprehensive"],
        default="standard",
        help="validation level (default: standard)",
    )

    p = add("restore", cmd_restore, "restore a checkpoint's files (exit 1 if verification fails)")
    p.add_argument("id", metavar="ID", help="checkpoint id")
    restore_options(p)

    p = add(
        "restore-latest",
        cmd_restore_latest,
        "restore a workflow's newest valid checkpoint, skipping (and marking) corrupt ones",
    )
    p.add_argument("workflow", metavar="WORKFLOW", help="workflow id")
    restore_options(p)
    p.add_argument(
        "--level",
        choices=["basic", "standard", "comprehensive"],
        default="standard",
        help="validation level for candidates (default: standard)",
    )

    p = add("prune", cmd_prune, "apply retention and show why each kept checkpoint is kept")
    p.add_argument(
        "workflow", nargs="?", metavar="WORKFLOW", help="only this workflow (default: all)"
    )
    p.add_argument(
        "--policy",
        choices=["minimal", "standard", "extended", "default"],
        help="policy to apply (default: each workflow's own)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")

    p = add("delete", cmd_delete, "delete one checkpoint")
    p.add_argument("id", metavar="ID", help="checkpoint id")

    p = add("delete-workflow", cmd_delete_workflow, "delete a workflow and all its checkpoints")
    p.add_argument("workflow", metavar="WORKFLOW", help="workflow id")

    p = add("pin", cmd_pin, "pin a checkpoint: retention never deletes it")
    p.add_argument("id", metavar="ID", help="checkpoint id")
    p = add("unpin", cmd_unpin, "unpin a checkpoint")
    p.add_argument("id", metavar="ID", help="checkpoint id")

    def integrity_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--level",
            choices=["basic", "standard", "comprehensive"],
            default="comprehensive",
            help="how deep to verify (default: comprehensive)",
        )
        p.add_argument(
            "--repair",
            action="store_true",
            help="repair from --backup, rebuild reference counts, remove orphans",
        )
        p.add_argument(
            "--backup", metavar="PATH", help="a backup store to repair damaged values from"
        )

    p = add("scrub", cmd_scrub, "verify the whole store (exit 1 if problems remain)")
    p.add_argument("--workflow", help="only this workflow's checkpoints")
    integrity_options(p)
    p.add_argument(
        "--budget",
        type=parse_budget,
        metavar="AMOUNT",
        help="verify at most this much now and resume next time: time (30s, 5m) or bytes (512MiB)",
    )

    p = add(
        "monitor",
        cmd_monitor,
        "run the background integrity monitor in the foreground (Ctrl-C stops it)",
    )
    p.add_argument(
        "--interval",
        type=_positive_float,
        default=3600.0,
        metavar="SECONDS",
        help="seconds between scrubs (default: 3600)",
    )
    p.add_argument(
        "--budget",
        type=parse_budget,
        default=timedelta(seconds=2),
        metavar="AMOUNT",
        help="work per scrub: time (2s) or bytes (64MiB); default 2s",
    )
    p.add_argument("--runs", type=int, metavar="N", help="stop after N scrubs")
    integrity_options(p)

    p = add("backup", cmd_backup, "write a consistent, verified hot copy of the store")
    p.add_argument("dest", metavar="DEST", help="destination (must not exist, or be empty)")
    p = add("compact", cmd_compact, "write a compacted copy (to replace a bloated store)")
    p.add_argument("dest", metavar="DEST", help="destination (must not exist, or be empty)")

    p = add("rotate-key", cmd_rotate_key, "re-wrap the store's keys under a new master key")
    p.add_argument(
        "--new-key-file",
        metavar="FILE",
        help="the new master key (64 hex digits or raw bytes; default: generate one into the "
        "store's own key file, for stores that use it)",
    )
    p.add_argument(
        "--new-data-key",
        action="store_true",
        help="also start a new data key and re-tag every stored value",
    )

    p = add("set-retention", cmd_set_retention, "set a workflow's retention policy")
    p.add_argument("workflow", metavar="WORKFLOW", help="workflow id")
    p.add_argument(
        "policy",
        metavar="POLICY",
        choices=["minimal", "standard", "extended", "default", "none", "custom"],
        help="minimal, standard, extended, default, none (no automatic retention) or custom "
        "(with the options below)",
    )
    p.add_argument("--max-checkpoints", type=int, metavar="N", help="custom: keep the newest N")
    p.add_argument("--max-age-days", type=float, metavar="DAYS", help="custom: delete older")
    p.add_argument("--keep-within-days", type=float, metavar="DAYS", help="custom: keep all within")
    p.add_argument("--keep-daily", type=int, metavar="N", help="custom: newest of N days")
    p.add_argument("--keep-weekly", type=int, metavar="N", help="custom: newest of N weeks")

    p = add("get-retention", cmd_get_retention, "show the retention policy a workflow uses")
    p.add_argument("workflow", metavar="WORKFLOW", help="workflow id")

    add("stats", cmd_stats, "counts, logical and stored sizes, deduplication, file and map size")
    add("workflows", cmd_workflows, "list workflow ids")

    p = add(
        "demo",
        cmd_demo,
        "run the demo: an agent checkpoints, is killed, resumes; damage is caught",
        None,
        json_flag=False,
    )
    p.add_argument(
        "--dir", type=Path, metavar="DIR", help="work in DIR (default: a temporary directory)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser


@contextlib.contextmanager
def _quiet_log(debug: bool) -> Iterator[None]:
    """The CLI prints findings itself; ckdb's log (CRITICAL corruption events) goes to stderr
    only with --debug, so output stays one clear line per problem."""
    log = logging.getLogger("ckdb")
    handler: logging.Handler
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ckdb: %(levelname)s: %(message)s"))
        log.setLevel(logging.DEBUG)
    else:
        handler = logging.NullHandler()
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _quiet_log(args.debug):
        try:
            if args.opens is None:
                code: int = args.func(None, args)
                return code
            path = args.store or default_store_path()
            args.existed = (path / "data.mdb").exists()
            retention = args.retention if args.retention not in (None, "none") else None
            kwargs: dict[str, Any] = {"key_file": args.key_file, "retention": retention}
            if args.opens == "create":
                if not args.existed:
                    path.parent.mkdir(parents=True, exist_ok=True)
                if getattr(args, "encryption", None):
                    kwargs["encryption"] = args.encryption
            else:
                kwargs["create"] = False
            with ckdb.open(path, **kwargs) as store:
                return int(args.func(store, args))
        except CkdbError as err:
            if args.debug:
                raise
            print(f"ckdb: error: {_one_line(err)}", file=sys.stderr)
            return type(err).exit_code
        except BrokenPipeError:
            # The reader went away (``ckdb list | head``): not an error worth a message.
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except OSError as err:
            if args.debug:
                raise
            print(f"ckdb: error: {_one_line(err)}", file=sys.stderr)
            return EXIT_OTHER
        except KeyboardInterrupt:
            print("ckdb: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
