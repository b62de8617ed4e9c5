"""CLI commands on keys: rotate-key."""

from __future__ import annotations

import argparse

import ckdb
from ckdb.cli.common import EXIT_OK, Add, print_json
from ckdb.keys import read_key_file


def cmd_rotate_key(store: ckdb.Store, args: argparse.Namespace) -> int:
    new_key = None
    if args.new_key_file:
        new_key = read_key_file(args.new_key_file)
    report = store.rotate_key(new_key, new_data_key=args.new_data_key)
    if args.json:
        print_json(report)
    else:
        print(
            f"key rotated: active data key {report.active_key_id}, retired "
            f"{list(report.retired_key_ids)}, {report.retagged} frames re-tagged"
            + ("" if report.complete else " (re-tagging continues on the next rotate/retag)")
        )
        if new_key is not None:
            print(f"from now on open the store with --key-file {args.new_key_file}")
    return EXIT_OK


def register(add: Add) -> None:
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
