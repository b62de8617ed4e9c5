"""The ``ckdb`` command line: a thin layer over the Store API, one subcommand per operation.

The store path comes from ``--store PATH`` (before the subcommand), else ``CKDB_STORE``, else the
default store ``$XDG_DATA_HOME/ckdb/default.ckdb`` (``~/.local/share/ckdb/default.ckdb``). Only this
package reads environment variables for paths. Errors print one line (no traceback unless
``--debug``) and exit with the error class's code (``docs/errors.md``); 0 is success, 1 means a
check ran and found problems. ``--json`` prints machine-readable output on every command that
prints data. Progress bars (``rich``) go to stderr, only when it is a terminal.

One module per group of commands: ``checkpoints`` (create, list, restore, ...), ``maintenance``
(retention, scrub, monitor, backups, stats, the demo), ``keys`` and ``remote`` (``ckdb remote
...``: shipping, take-over, checks); ``common`` holds what they
share. Each registers its subcommands with :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ckdb
from ckdb.cli import checkpoints, keys, maintenance, remote
from ckdb.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OTHER,
    Handler,
    Progress,
    default_store_path,
    parse_budget,
)
from ckdb.errors import CkdbError

__all__ = ["COMMANDS", "Progress", "build_parser", "default_store_path", "main", "parse_budget"]

#: Every subcommand: name -> (handler, how it opens the store: "create", "open" or None).
COMMANDS: dict[str, tuple[Handler, str | None]] = {}


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
        fn: Handler,
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

    for group in (checkpoints, maintenance, keys, remote):
        group.register(add)
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
            if getattr(args, "attach_remote", False):
                kwargs["remote"] = remote.remote_from_args(args)
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
