"""CLI commands that keep a store healthy: prune, set-retention, get-retention, scrub, monitor,
backup, compact, stats, workflows, and the demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import ckdb
from ckdb.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    Add,
    jsonable,
    parse_budget,
    positive_float,
    print_json,
    progress,
    short,
)
from ckdb.errors import InvalidInput
from ckdb.retention import RetentionPolicy
from ckdb.summary import collect_stats, print_stats, size_text


def cmd_prune(store: ckdb.Store, args: argparse.Namespace) -> int:
    infos = {info.id: info for info in store.list(args.workflow)}
    result = store.prune(args.workflow, args.policy, dry_run=args.dry_run)
    if args.json:
        print_json(result)
        return EXIT_OK
    for plan in result.plans:
        print(
            f"workflow {plan.workflow_id} (policy {plan.policy}): keep {len(plan.keep)}, "
            f"delete {len(plan.delete)}"
        )
        for keep in plan.keep:
            print(f"  keep    {short(infos.get(keep.id), keep.id)}: {'; '.join(keep.reasons)}")
        for cid in plan.delete:
            print(f"  delete  {short(infos.get(cid), cid)}")
    if not result.plans:
        print("no workflow has a retention policy: nothing to do")
    if result.dry_run:
        print("dry run: nothing was deleted")
    else:
        print(f"deleted {len(result.deleted)} checkpoints")
        for cid in result.skipped:
            print(f"  not deleted (pinned, changed meanwhile, or marked): {cid}")
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
        print_json({"workflow_id": args.workflow, "policy": _policy_doc(policy)})
    else:
        print(f"retention of {args.workflow}: {_policy_text(policy)}")
    return EXIT_OK


def cmd_get_retention(store: ckdb.Store, args: argparse.Namespace) -> int:
    policy = store.get_retention(args.workflow)
    if args.json:
        print_json({"workflow_id": args.workflow, "policy": _policy_doc(policy)})
    else:
        print(f"retention of {args.workflow}: {_policy_text(policy)}")
    return EXIT_OK


def finding_line(finding: Any) -> str:
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
        doc = jsonable(report)
        doc["ok"] = report.ok
        print(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        for finding in report.findings:
            print(finding_line(finding))
        coverage = "complete" if report.complete else "partial (budget; resumes next time)"
        print(
            f"checked {report.checkpoints_checked} checkpoints, {size_text(report.bytes_checked)}; "
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
                print(json.dumps(jsonable(finding), ensure_ascii=False), flush=True)
            else:
                print(finding_line(finding), flush=True)

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
        print_json(report)
    else:
        print(
            f"{what} written to {report.path}: {report.checkpoints} checkpoints, "
            f"{size_text(report.bytes)}; verified (structure and scrub clean)"
        )
    return EXIT_OK


def cmd_backup(store: ckdb.Store, args: argparse.Namespace) -> int:
    with progress(args, "backup") as bar:
        report = store.backup(args.dest, progress=bar.stage_callback)
    return _print_backup(report, args, "backup")


def cmd_compact(store: ckdb.Store, args: argparse.Namespace) -> int:
    with progress(args, "compact") as bar:
        report = store.compact(args.dest, progress=bar.stage_callback)
    return _print_backup(report, args, "compacted copy")


def cmd_stats(store: ckdb.Store, args: argparse.Namespace) -> int:
    stats = collect_stats(store)
    if args.json:
        print_json(stats)
    else:
        print_stats(stats)
    return EXIT_OK


def cmd_workflows(store: ckdb.Store, args: argparse.Namespace) -> int:
    names = store.workflows()
    if args.json:
        print_json(names)
    else:
        for name in names:
            print(name)
    return EXIT_OK


def cmd_demo(_store: None, args: argparse.Namespace) -> int:
    if args.fleet:
        from ckdb.demo_fleet import run_fleet_demo  # noqa: PLC0415 - only the demo needs it

        return run_fleet_demo(args.dir, keep=args.keep)
    from ckdb.demo import run_demo  # noqa: PLC0415 - only the demo needs it

    return run_demo(args.dir, keep=args.keep)


def register(add: Add) -> None:
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
            help=(
                "repair from --backup, else keep checkpoints whose only damage is file chunks "
                "(their damaged files marked) and delete the rest; rebuild reference counts, "
                "remove orphans"
            ),
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
        type=positive_float,
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
    p.add_argument(
        "--fleet",
        action="store_true",
        help="the two-host act: host A ships to a file:// remote and dies, host B takes over",
    )
