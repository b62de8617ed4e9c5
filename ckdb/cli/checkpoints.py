"""CLI commands on checkpoints: init, create, list, show, validate, restore, restore-latest,
delete, delete-workflow, pin, unpin. Each is a thin layer over one ``Store`` call."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import attrs

import ckdb
from ckdb.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    HEADER,
    Add,
    jsonable,
    print_json,
    progress,
    read_json,
    row,
    short,
    tree_bytes,
)
from ckdb.errors import CkdbError, InvalidInput
from ckdb.summary import size_text


def cmd_init(store: ckdb.Store, args: argparse.Namespace) -> int:
    doc = {"path": str(store.path), "uuid": store.uuid, "created": not args.existed}
    if args.json:
        print_json(doc)
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
    state = read_json(args.state, "--state")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise InvalidInput("--state must be a JSON object mapping component names to values")
    if args.manual and not args.name:
        raise InvalidInput("a manual checkpoint needs --name")
    total = tree_bytes(Path(args.files)) if args.files else None
    with progress(args, "capturing", total) as bar:
        info = store.create(
            args.workflow,
            args.phase,
            state=state,
            resources=read_json(args.resources, "--resources"),
            dependencies=read_json(args.dependencies, "--dependencies"),
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
        print_json(info)
    else:
        print(info.id)
        for warning in info.warnings:
            print(f"ckdb: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def cmd_list(store: ckdb.Store, args: argparse.Namespace) -> int:
    infos = store.list(args.workflow, phase=args.phase, kind=args.kind, limit=args.limit)
    if args.json:
        print_json(infos)
    else:
        if infos:
            print(HEADER)
        for info in infos:
            print(row(info))
    return EXIT_OK


def cmd_show(store: ckdb.Store, args: argparse.Namespace) -> int:
    if args.state:
        ck = store.load(args.id)
        print_json(
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
        print_json(info)
        return EXIT_OK
    for field, value in attrs.asdict(info, recurse=False).items():
        if field in ("components", "warnings", "damaged_files"):
            continue
        print(f"{field:>12}: {'' if value is None else value}")
    for path in info.damaged_files:
        print(f"{'damaged file':>12}: {path} (its content was lost; restore skips it)")
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
        print_json([{**jsonable(r), "ok": r.ok} for r in reports])
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
        doc = jsonable(report)
        doc["ok"] = report.ok
        print(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False))
        return EXIT_OK if report.ok else EXIT_PROBLEMS
    info = report.checkpoint.info
    for cid, why in report.skipped_checkpoints:
        print(f"skipped {cid}: {why}")
    where = report.target_dir or "(no files restored)"
    print(f"restored {short(info, info.id)} into {where}")
    print(
        f"  {report.files_written} files, {report.directories} directories, {report.links} links, "
        f"{size_text(report.bytes_written)} written; {report.deleted} extra removed"
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
    with progress(args, "restoring", total) as bar:
        report = store.restore(
            args.id,
            target_dir=args.to,
            restore_files=args.files,
            restore_resources=args.resources,
            verify=args.verify,
            delete_extra=args.delete_extra,
            allow_recorded_dir=not args.require_to,
            progress=bar.bytes_callback,
        )
    return _print_restore(report, args)


def cmd_restore_latest(store: ckdb.Store, args: argparse.Namespace) -> int:
    latest = store.latest(args.workflow) if args.files else None
    total = _restore_total(store, args, latest.id if latest else None)
    with progress(args, "restoring", total) as bar:
        report = store.restore_latest(
            args.workflow,
            target_dir=args.to,
            restore_files=args.files,
            restore_resources=args.resources,
            verify=args.verify,
            delete_extra=args.delete_extra,
            allow_recorded_dir=not args.require_to,
            level=args.level,
            progress=bar.bytes_callback,
        )
    return _print_restore(report, args)


def cmd_delete(store: ckdb.Store, args: argparse.Namespace) -> int:
    store.delete(args.id)
    if args.json:
        print_json({"deleted": args.id})
    else:
        print(f"deleted {args.id}")
    return EXIT_OK


def cmd_delete_workflow(store: ckdb.Store, args: argparse.Namespace) -> int:
    count = store.delete_workflow(args.workflow)
    if args.json:
        print_json({"workflow_id": args.workflow, "deleted": count})
    else:
        print(f"deleted workflow {args.workflow} ({count} checkpoints)")
    return EXIT_OK


def _flag(store: ckdb.Store, args: argparse.Namespace, pin: bool) -> int:
    info = store.pin(args.id) if pin else store.unpin(args.id)
    if args.json:
        print_json(info)
    else:
        print(f"{'pinned' if info.pinned else 'unpinned'} {short(info, info.id)}")
    return EXIT_OK


def cmd_pin(store: ckdb.Store, args: argparse.Namespace) -> int:
    return _flag(store, args, True)


def cmd_unpin(store: ckdb.Store, args: argparse.Namespace) -> int:
    return _flag(store, args, False)


def register(add: Add) -> None:
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
        p.add_argument(
            "--require-to",
            action="store_true",
            help="refuse to restore files without --to (never into the working directory the "
            "checkpoint records, which anyone holding the key can set)",
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

    p = add("delete", cmd_delete, "delete one checkpoint")
    p.add_argument("id", metavar="ID", help="checkpoint id")

    p = add("delete-workflow", cmd_delete_workflow, "delete a workflow and all its checkpoints")
    p.add_argument("workflow", metavar="WORKFLOW", help="workflow id")

    p = add("pin", cmd_pin, "pin a checkpoint: retention never deletes it")
    p.add_argument("id", metavar="ID", help="checkpoint id")
    p = add("unpin", cmd_unpin, "unpin a checkpoint")
    p.add_argument("id", metavar="ID", help="checkpoint id")
