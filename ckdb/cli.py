"""The ``ckdb`` command line: a thin layer over the Store API.

The store path comes from ``--store PATH`` (before the subcommand), else ``CKDB_STORE``, else the
default store ``$XDG_DATA_HOME/ckdb/default.ckdb`` (``~/.local/share/ckdb/default.ckdb``). Only this
module reads environment variables for paths. Errors print one line (no traceback unless
``--debug``) and exit with the error class's code; 0 is success.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

import ckdb
from ckdb.errors import CkdbError, InvalidInput


def default_store_path() -> Path:
    env = os.environ.get("CKDB_STORE")
    if env:
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "ckdb" / "default.ckdb"


def _jsonable(obj: Any) -> Any:
    if attrs.has(type(obj)):
        return {k: _jsonable(v) for k, v in attrs.asdict(obj, recurse=False).items()}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return {"$bytes": obj.hex()}
    if isinstance(obj, float) and obj != obj:  # NaN
        return "NaN"
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def _print_json(obj: Any) -> None:
    print(json.dumps(_jsonable(obj), indent=2, ensure_ascii=False))


def _row(info: ckdb.CheckpointInfo) -> str:
    flags = ("P" if info.pinned else "-") + ("!" if info.status != "valid" else "-")
    name = f" {info.name!r}" if info.name else ""
    return (
        f"{info.id}  {flags}  {info.workflow_id:<16} #{info.sequence:<5} {info.phase:<14} "
        f"{info.kind:<9} {info.created_at:%Y-%m-%d %H:%M:%S}{name}"
    )


# --- commands ------------------------------------------------------------------------------------


def cmd_init(store: ckdb.Store, args: argparse.Namespace) -> int:
    print(f"store ready at {store.path} (uuid {store.uuid})")
    return 0


def cmd_create(store: ckdb.Store, args: argparse.Namespace) -> int:
    if args.state == "-":
        text = sys.stdin.read()
    elif args.state:
        text = Path(args.state).read_text(encoding="utf-8")
    else:
        text = "{}"
    try:
        state = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInput(f"--state is not valid JSON: {err}") from None
    if not isinstance(state, dict):
        raise InvalidInput("--state must be a JSON object mapping component names to values")
    info = store.create(
        args.workflow,
        args.phase,
        state=state,
        kind="manual" if args.manual else "automatic",
        name=args.name,
        pinned=args.pin,
    )
    if args.json:
        _print_json(info)
    else:
        print(info.id)
    return 0


def cmd_list(store: ckdb.Store, args: argparse.Namespace) -> int:
    infos = store.list(args.workflow, phase=args.phase, kind=args.kind, limit=args.limit)
    if args.json:
        _print_json(infos)
    else:
        for info in infos:
            print(_row(info))
    return 0


def cmd_show(store: ckdb.Store, args: argparse.Namespace) -> int:
    if args.state:
        ck = store.load(args.id)
        doc = {
            "info": ck.info,
            "state": ck.state,
            "resources": ck.resources,
            "dependencies": ck.dependencies,
        }
        _print_json(doc)
        return 0
    info = store.get_info(args.id)
    if args.json:
        _print_json(info)
    else:
        for field, value in attrs.asdict(info, recurse=False).items():
            if field != "components":
                print(f"{field:>12}: {value}")
        for comp in info.components:
            print(
                f"{'component':>12}: {comp.type}/{comp.name} {comp.raw_size} B raw, "
                f"{comp.stored_size} B stored"
            )
    return 0


def cmd_delete(store: ckdb.Store, args: argparse.Namespace) -> int:
    store.delete(args.id)
    print(f"deleted {args.id}")
    return 0


def cmd_workflows(store: ckdb.Store, args: argparse.Namespace) -> int:
    names = store.workflows()
    if args.json:
        _print_json(names)
    else:
        for name in names:
            print(name)
    return 0


def cmd_stats(store: ckdb.Store, args: argparse.Namespace) -> int:
    stats = store.stats()
    if args.json:
        _print_json(stats)
    else:
        for k, v in stats.items():
            print(f"{k:>16}: {v}")
    return 0


def cmd_demo(store: ckdb.Store, args: argparse.Namespace) -> int:
    """Create a few checkpoints of a sample workflow, list them, load the latest."""
    wf = "demo-agent"
    phases = ["planning", "research", "drafting", "review"]
    print(f"ckdb demo on {store.path}")
    created = []
    for step, phase in enumerate(phases, 1):
        state = {
            "phase": {"name": phase, "step": step},
            "task": {"goal": "write a report", "done": phases[: step - 1]},
            "agent": {"model": "demo", "temperature": 0.2},
            "progress": {"fraction": step / len(phases), "tokens": 1500 * step},
            "configuration": {"max_steps": 10, "tools": ["search", "write"]},
        }
        info = store.create(wf, phase, state=state)
        created.append((info, state))
        print(f"  created #{info.sequence} {phase:<9} {info.id} ({info.stored_size} bytes stored)")
    print("checkpoints, newest first:")
    for info in store.list(wf):
        print("  " + _row(info))
    latest = store.latest(wf)
    if latest is None:
        print("FAILED: no latest checkpoint")
        return 1
    ck = store.load(latest.id)
    expected = created[-1][1]
    ok = ck.state == expected and latest.id == created[-1][0].id
    print(
        f"latest is #{latest.sequence} ({latest.phase}); loaded and verified: "
        f"{'state matches' if ok else 'STATE DIFFERS'}"
    )
    return 0 if ok else 1


# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ckdb", description="ckdb: a checkpoint database")
    parser.add_argument(
        "--store",
        type=Path,
        help="store path (default: $CKDB_STORE or ~/.local/share/ckdb/default.ckdb)",
    )
    parser.add_argument("--key-file", help="master key file (default: the store's own key file)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help_: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=fn)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    add("init", cmd_init, "create the store if missing and print where it is", json_flag=False)
    p = add("create", cmd_create, "create a checkpoint")
    p.add_argument("workflow")
    p.add_argument("phase")
    p.add_argument("--state", help="JSON file of state components ('-' for stdin)")
    p.add_argument("--manual", action="store_true", help="a manual checkpoint (needs --name)")
    p.add_argument("--name", help="checkpoint name")
    p.add_argument("--pin", action="store_true", help="pin it (retention never deletes it)")
    p = add("list", cmd_list, "list checkpoints, newest first")
    p.add_argument("workflow", nargs="?")
    p.add_argument("--phase")
    p.add_argument("--kind", choices=["automatic", "manual"])
    p.add_argument("--limit", type=int)
    p = add("show", cmd_show, "show a checkpoint's metadata (--state: and its decoded state)")
    p.add_argument("id")
    p.add_argument("--state", action="store_true", help="load, verify and print the state as JSON")
    p = add("delete", cmd_delete, "delete a checkpoint", json_flag=False)
    p.add_argument("id")
    add("workflows", cmd_workflows, "list workflows")
    add("stats", cmd_stats, "counts and sizes")
    add(
        "demo", cmd_demo, "run the demo: a sample workflow checkpointed and loaded", json_flag=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    path = args.store or default_store_path()
    try:
        with ckdb.open(path, key_file=args.key_file) as store:
            code: int = args.func(store, args)
            return code
    except CkdbError as err:
        if args.debug:
            raise
        print(f"ckdb: error: {err}", file=sys.stderr)
        return type(err).exit_code
    except OSError as err:
        if args.debug:
            raise
        print(f"ckdb: error: {err}", file=sys.stderr)
        return 2
