"""CLI commands on remotes: ``ckdb remote init|status|sync|pull|take-over|check|gc|selftest``.

Every command takes the remote as ``--remote URL`` (default ``$CKDB_REMOTE``); S3 credentials
and endpoint come from ``--endpoint`` and the usual ``AWS_*`` variables; the fleet's master key
from ``--remote-key-file`` (default: the store's own master key). A store does not remember its
remote: the application passes ``remote=`` to ``ckdb.open`` each time, and so does each command.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from datetime import timedelta
from typing import Any

import ckdb
from ckdb.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    Add,
    default_store_path,
    jsonable,
    parse_budget,
    positive_float,
    print_json,
    progress,
)
from ckdb.errors import InvalidInput
from ckdb.keys import KEY_FILE_NAME, read_key_file
from ckdb.remote.link import self_test
from ckdb.summary import size_text


def remote_from_args(args: argparse.Namespace, *, with_key: bool = False) -> ckdb.Remote:
    """The ``ckdb.Remote`` a remote command names. ``with_key``: the command opens no store, so
    the fleet key must come from a file (``--remote-key-file``, ``--key-file``,
    ``$CKDB_KEY_FILE``, else the key file inside the store directory)."""
    url = args.remote or os.environ.get("CKDB_REMOTE")
    if not url:
        raise InvalidInput("which remote? pass --remote URL or set CKDB_REMOTE")
    kw: dict[str, Any] = {"endpoint": args.endpoint, "timeout": args.timeout}
    key_file = args.remote_key_file
    if with_key and key_file is None:
        key_file = args.key_file or os.environ.get("CKDB_KEY_FILE")
        if key_file is None:
            own = (args.store or default_store_path()) / KEY_FILE_NAME
            if own.is_file():
                key_file = str(own)
    if key_file is not None:
        kw["key"] = read_key_file(key_file)
    return ckdb.Remote(url, **kw)


def _sync(store: ckdb.Store, args: argparse.Namespace) -> Any:
    """``sync_remote``, with a live count of what is shipped on a terminal's stderr."""
    if args.no_progress or args.json or not sys.stderr.isatty():
        return store.sync_remote(timeout=args.wait)
    try:
        from rich.console import Console  # noqa: PLC0415 - terminal-only
    except ImportError:  # pragma: no cover - rich is a dependency
        return store.sync_remote(timeout=args.wait)
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["report"] = store.sync_remote(timeout=args.wait)
        except BaseException as err:  # re-raised in the main thread
            done["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    with Console(stderr=True).status("shipping...") as status:
        worker.start()
        while worker.is_alive():
            st = store.remote_status()
            status.update(f"shipping: {st.segments_put} segments, {st.blobs_put} blobs, "
                          f"{size_text(st.bytes_put)} put")  # fmt: skip
            worker.join(0.2)
    if "error" in done:
        raise done["error"]
    return done["report"]


def cmd_init(store: ckdb.Store, args: argparse.Namespace) -> int:
    # Opening the store with the remote made first contact (the root created or its key
    # checked, the endpoint self-tested); ship what the store holds.
    report = _sync(store, args)
    if args.json:
        print_json({"url": store.remote_status().url, "store": store.path, "shipped": report})
    else:
        print(
            f"remote {store.remote_status().url} ready for {store.path}: root opened, "
            f"self-test passed, {len(report.shipped)} workflows shipped"
        )
        print("open the store with ckdb.open(..., remote=ckdb.Remote(URL)) to keep shipping")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _lag(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}s"


def cmd_status(store: ckdb.Store, args: argparse.Namespace) -> int:
    status = store.remote_status()
    problems = status.last_error is not None or any(w.last_error for w in status.workflows)
    if args.json:
        print_json(status)
        return EXIT_PROBLEMS if problems else EXIT_OK
    state = "connected" if status.connected else "not connected"
    print(
        f"remote {status.url}: {state}"
        + (
            f", standing by (pid/host {status.standby_for} ships this store)"
            if status.standby_for
            else ""
        )
    )
    if status.last_error:
        print(f"  last error: {status.last_error}")
    print(
        f"  {status.rounds} rounds, {status.segments_put} segments and {status.blobs_put} blobs "
        f"put ({status.bytes_put} bytes); lag p50 {_lag(status.lag_p50)}, "
        f"p99 {_lag(status.lag_p99)}"
    )
    for w in status.workflows:
        owner = "not shipped yet" if w.owner_epoch is None else f"epoch {w.owner_epoch}"
        line = (
            f"  {w.workflow_id:<20} {owner:<16} segment {w.shipped_up_to:<6} live {w.live:<5}"
            f" {'pending, lag ' + _lag(w.lag_seconds) if w.pending else 'up to date'}"
        )
        if w.fenced_by:
            line += f"  FENCED by {w.fenced_by}"
        if w.last_error:
            line += f"  error: {w.last_error}"
        print(line)
    return EXIT_PROBLEMS if problems else EXIT_OK


def cmd_sync(store: ckdb.Store, args: argparse.Namespace) -> int:
    report = _sync(store, args)
    if args.json:
        print_json({"ok": report.ok, **jsonable(report)})
    else:
        for wf, seq in sorted(report.shipped.items()):
            print(f"  {wf}: shipped up to segment {seq}")
        for wf in report.fenced:
            print(f"  {wf}: FENCED (owned by another host now)")
        for wf, why in sorted(report.failed.items()):
            print(f"  {wf}: FAILED: {why}")
        for wf in report.unshippable:
            print(f"  {wf}: not shipped (damaged locally; see scrub)")
        print(
            "everything committed before this call is remote"
            if report.ok
            else "not everything is remote: see above"
        )
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _import(store: ckdb.Store, args: argparse.Namespace, take: bool) -> int:
    label = ("taking over " if take else "pulling ") + args.workflow
    with progress(args, label, counting=True) as bar:
        fn = store.take_over if take else store.pull
        report = fn(args.workflow, progress=bar.steps_callback)
    if args.json:
        print_json({"ok": report.ok, **jsonable(report)})
    else:
        what = (
            f"took {args.workflow} over (epoch {report.epoch})"
            if take
            else (f"pulled {args.workflow} read-only")
        )
        print(
            f"{what}: {report.live} checkpoints in the remote, {report.imported} imported, "
            f"{report.segments_read} segments read in {report.seconds:.2f}s; latest "
            f"{report.latest_id or '-'}"
        )
        if report.deleted_local:
            print(
                f"  {report.deleted_local} local checkpoints the remote does not hold were "
                "removed (a fork)"
            )
        if report.late_segments:
            print(f"  {report.late_segments} late segments of the old owner imported")
        for problem in report.problems:
            print(f"  PROBLEM: {problem}")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_pull(store: ckdb.Store, args: argparse.Namespace) -> int:
    return _import(store, args, take=False)


def cmd_take_over(store: ckdb.Store, args: argparse.Namespace) -> int:
    return _import(store, args, take=True)


def cmd_check(_store: None, args: argparse.Namespace) -> int:
    report = ckdb.check_remote(remote_from_args(args, with_key=True), deep=args.deep)
    if args.json:
        print_json({"ok": report.ok, **jsonable(report)})
    else:
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
        print(
            f"{report.url}: {report.workflows} workflows, {report.segments} segments, "
            f"{report.checkpoints} live checkpoints, {report.blobs} blobs"
            f"{' (contents verified)' if args.deep else ''}: "
            f"{'ok' if report.ok else 'PROBLEMS'}"
        )
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_gc(store: ckdb.Store, args: argparse.Namespace) -> int:
    report = store.gc_remote(margin=args.margin)
    if args.json:
        print_json({"ok": not report.problems, **jsonable(report)})
    else:
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
        print(
            f"gc of {report.workflows} workflows: {report.snapshots_written} snapshots "
            f"written; deleted {report.segments_deleted} segments, {report.snapshots_deleted} "
            f"snapshots, {report.blobs_deleted} blobs"
        )
    return EXIT_PROBLEMS if report.problems else EXIT_OK


def cmd_selftest(_store: None, args: argparse.Namespace) -> int:
    remote = remote_from_args(args)
    self_test(remote.objects)  # RemoteUnsafe (its exit code) when the server ignores it
    if args.json:
        print_json({"ok": True, "url": remote.url})
    else:
        print(f"{remote.url}: create-only writes (If-None-Match: *) are honoured: safe for ckdb")
    return EXIT_OK


def _margin(text: str) -> timedelta:
    value = parse_budget(text)
    if not isinstance(value, timedelta):
        raise argparse.ArgumentTypeError(f"a time, not a size: {text!r} (e.g. 30m, 1h)")
    return value


def register(add: Add) -> None:
    group = add(
        "remote",
        _no_subcommand,
        "ship checkpoints to a remote, take workflows over",
        opens=None,
        json_flag=False,
    )
    sub = group.add_subparsers(dest="remote_command", required=True, metavar="SUBCOMMAND")

    def leaf(
        name: str, fn: Any, help_: str, opens: str | None = "open", keyed: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_[0].upper() + help_[1:] + ".",
            prog=f"ckdb remote {name}",
        )
        p.set_defaults(func=fn, opens=opens, json=False, attach_remote=opens is not None)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument(
            "--remote",
            metavar="URL",
            help="s3://bucket/prefix, file:///dir or memory://name (default: $CKDB_REMOTE)",
        )
        p.add_argument(
            "--endpoint",
            metavar="URL",
            help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL; credentials "
            "from $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY)",
        )
        if keyed:
            p.add_argument(
                "--remote-key-file",
                metavar="FILE",
                help="the fleet's master key (default: the store's master key)",
            )
        else:
            p.set_defaults(remote_key_file=None)
        p.add_argument(
            "--timeout",
            type=positive_float,
            default=30.0,
            metavar="SECONDS",
            help="seconds per request (default 30)",
        )
        return p

    p = leaf(
        "init",
        cmd_init,
        "attach a store to a remote: create the remote's root (or check "
        "that this key opens it), self-test the endpoint, ship everything",
        opens="create",
    )
    p.add_argument(
        "--wait",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="give up shipping after this long (default 300)",
    )
    leaf("status", cmd_status, "show what is shipped, pending and fenced, per workflow")
    p = leaf("sync", cmd_sync, "ship everything committed so far; wait until it is remote")
    p.add_argument(
        "--wait",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="give up after this long (default 300)",
    )
    p = leaf("pull", cmd_pull, "import a workflow read-only, to inspect or restore it")
    p.add_argument("workflow", metavar="WORKFLOW", help="workflow id")
    p = leaf(
        "take-over",
        cmd_take_over,
        "import a workflow, claim it and fence its old owner; this store ships it now",
    )
    p.add_argument("workflow", metavar="WORKFLOW", help="workflow id")
    p = leaf("check", cmd_check, "verify every object of the remote (changes nothing)", opens=None)
    p.add_argument(
        "--deep",
        action="store_true",
        help="also verify every older segment and every blob's content",
    )
    p = leaf("gc", cmd_gc, "collect the remote's garbage for the workflows this store owns")
    p.add_argument(
        "--margin",
        type=_margin,
        default=timedelta(hours=1),
        metavar="TIME",
        help="delete only what a snapshot at least this old makes unnecessary (default 1h)",
    )
    leaf(
        "selftest",
        cmd_selftest,
        "check that the endpoint honours create-only writes (If-None-Match)",
        opens=None,
        keyed=False,
    )


def _no_subcommand(_store: None, _args: argparse.Namespace) -> int:  # pragma: no cover
    raise InvalidInput("ckdb remote needs a subcommand")


__all__ = ["register", "remote_from_args"]
