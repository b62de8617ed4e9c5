"""The docs tell the truth: byte tables match the structs, every error class is listed."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from ckdb import layout
from ckdb.errors import all_errors

DOCS = Path(__file__).resolve().parent.parent / "docs"


def byte_tables(text: str) -> dict[str, list[tuple[int, int, str]]]:
    """Tables under headings that name a struct in backticks: name -> [(offset, size, code)]."""
    tables: dict[str, list[tuple[int, int, str]]] = {}
    current = None
    for line in text.splitlines():
        heading = re.match(r"^#+ .*\(`([A-Z_]+)`\)\s*$", line)
        if heading:
            current = heading.group(1)
            tables[current] = []
            continue
        if line.startswith("#"):
            current = None
            continue
        row = re.match(r"^\| (\d+) \| (\d+) \| `([0-9]*[a-zA-Z])` \|", line)
        if current and row:
            tables[current].append((int(row.group(1)), int(row.group(2)), row.group(3)))
    return tables


def test_format_tables_match_the_structs() -> None:
    tables = byte_tables((DOCS / "format.md").read_text(encoding="utf-8"))
    assert set(tables) == {"FORMAT", "FRAME_HEADER", "REGISTRY_VALUE", "REFS_VALUE"}
    for name, rows in tables.items():
        packed: struct.Struct = getattr(layout, name)
        assert packed.format == ">" + "".join(code for _o, _s, code in rows), name
        offset = 0
        for row_offset, size, code in rows:
            assert row_offset == offset, (name, code)
            assert struct.calcsize(">" + code) == size, (name, code)
            offset += size
        assert offset == packed.size, name


def test_remote_tables_match_the_structs() -> None:
    from ckdb.remote import format as remote_format

    tables = byte_tables((DOCS / "remote.md").read_text(encoding="utf-8"))
    assert set(tables) == {"REMOTE_ROOT", "DIRTY_VALUE", "LIVE_ROW"}
    for name, rows in tables.items():
        packed: struct.Struct = getattr(remote_format, name, None) or getattr(layout, name)
        assert packed.format == ">" + "".join(code for _o, _s, code in rows), name
        offset = 0
        for row_offset, size, code in rows:
            assert row_offset == offset and struct.calcsize(">" + code) == size, (name, code)
            offset += size
        assert offset == packed.size, name


def test_record_types_are_documented() -> None:
    text = (DOCS / "format.md").read_text(encoding="utf-8")
    for rtype in layout.RecordType:
        assert re.search(rf"^\| {int(rtype)} \| ", text, re.M), rtype


@pytest.mark.parametrize("cls", all_errors(), ids=lambda c: c.__name__)
def test_every_error_is_listed_with_its_exit_code(cls: type) -> None:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    assert re.search(rf"^\| `{cls.__name__}` \| {cls.exit_code} \|", text, re.M), cls  # type: ignore[attr-defined]


def test_errors_page_is_generated_from_the_hierarchy() -> None:
    import contextlib
    import io
    import runpy

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(DOCS / "gen_errors.py"), run_name="__main__")
    assert (DOCS / "errors.md").read_text(encoding="utf-8") == out.getvalue(), (
        "docs/errors.md is stale: python docs/gen_errors.py > docs/errors.md"
    )
