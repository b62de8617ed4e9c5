"""The command line: every subcommand through ``main(argv)`` and as a real process, exit codes,
``--json`` output, one-line errors, and ``docs/cli.md`` agreeing with the parser."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ckdb
from ckdb import cli
from ckdb.layout import DB_PAYLOADS, RecordType, id_from_text, payload_key

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"


@pytest.fixture
def populated(tmp_path: Path) -> dict[str, Any]:
    """A closed store with workflow "wf": #1 with files, #2 pinned manual. Paths and ids."""
    store_path = tmp_path / "store.ckdb"
    workdir = tmp_path / "work"
    (workdir / "sub").mkdir(parents=True)
    (workdir / "a.txt").write_text("alpha\n")
    (workdir / "sub" / "b.bin").write_bytes(b"\x00\x01" * 100)
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"task": {"goal": "x"}, "progress": {"step": 1}}))
    with ckdb.open(store_path) as store:
        first = store.create("wf", "plan", state={"task": {"goal": "x"}}, files=workdir)
        second = store.create(
            "wf", "review", state={"b": b"\x00", "f": float("nan")}, kind="manual", name="m"
        )
        store.pin(second.id)
    # A fleet: another host shipped workflow "fleet-wf" to a file:// remote under a shared key.
    fleet_key = tmp_path / "fleet.key"
    fleet_key.write_text(os.urandom(32).hex())
    remote_url = f"file://{tmp_path / 'remote'}"
    fleet = ckdb.Remote(remote_url, key=bytes.fromhex(fleet_key.read_text()))
    with ckdb.open(tmp_path / "other.ckdb", remote=fleet) as other:
        other.create("fleet-wf", "a", state={"progress": {"step": 1}})
        other.create("fleet-wf", "b", state={"progress": {"step": 2}})
        assert other.sync_remote(timeout=30).ok
    return {
        "remote": remote_url,
        "fleetkey": str(fleet_key),
        "store": str(store_path),
        "tmp": str(tmp_path),
        "work": str(workdir),
        "state": str(state_file),
        "id0": first.id,
        "id": second.id,
    }


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_proc(argv: list[str], stdin: str | None = None, **env: str) -> tuple[int, str, str]:
    environ = {**os.environ, **env}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "ckdb", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


# (name, argv after --store, expected exit code, what --json prints: "object" | "array" | "lines")
CASES: list[tuple[str, list[str], int, str]] = [
    ("init", ["init", "--json"], 0, "object"),
    (
        "create",
        ["create", "wf", "draft", "--state", "{state}", "--files", "{work}", "--json"],
        0,
        "object",
    ),
    ("list", ["list", "--json"], 0, "array"),
    ("show", ["show", "{id}", "--json"], 0, "object"),
    ("show-state", ["show", "{id}", "--state"], 0, "object"),
    ("validate", ["validate", "--level", "comprehensive", "--json"], 0, "array"),
    ("restore", ["restore", "{id0}", "--to", "{tmp}/out", "--json"], 0, "object"),
    (
        "restore-latest",
        ["restore-latest", "wf", "--to", "{tmp}/out2", "--delete-extra", "--json"],
        0,
        "object",
    ),
    ("prune", ["prune", "--dry-run", "--json"], 0, "object"),
    ("delete", ["delete", "{id0}", "--json"], 0, "object"),
    ("delete-workflow", ["delete-workflow", "wf", "--json"], 0, "object"),
    ("pin", ["pin", "{id0}", "--json"], 0, "object"),
    ("unpin", ["unpin", "{id}", "--json"], 0, "object"),
    ("scrub", ["scrub", "--budget", "64MiB", "--json"], 0, "object"),
    ("monitor", ["monitor", "--interval", "0.05", "--runs", "1", "--json"], 0, "lines"),
    ("backup", ["backup", "{tmp}/backup.ckdb", "--json"], 0, "object"),
    ("compact", ["compact", "{tmp}/compact.ckdb", "--json"], 0, "object"),
    ("rotate-key", ["rotate-key", "--json"], 0, "object"),
    ("set-retention", ["set-retention", "wf", "minimal", "--json"], 0, "object"),
    ("get-retention", ["get-retention", "wf", "--json"], 0, "object"),
    ("stats", ["stats", "--json"], 0, "object"),
    ("workflows", ["workflows", "--json"], 0, "array"),
    *[
        (
            f"remote {sub}",
            ["remote", sub, *args, "--remote", "{remote}", *key, "--json"],
            0,
            "object",
        )
        for sub, args, key in [
            ("init", [], ["--remote-key-file", "{fleetkey}"]),
            ("status", [], ["--remote-key-file", "{fleetkey}"]),
            ("sync", [], ["--remote-key-file", "{fleetkey}"]),
            ("pull", ["fleet-wf"], ["--remote-key-file", "{fleetkey}"]),
            ("take-over", ["fleet-wf"], ["--remote-key-file", "{fleetkey}"]),
            ("check", ["--deep"], ["--remote-key-file", "{fleetkey}"]),
            ("gc", ["--margin", "0s"], ["--remote-key-file", "{fleetkey}"]),
            ("selftest", [], []),
        ]
    ],
]


def _argv(case: list[str], p: dict[str, Any]) -> list[str]:
    return ["--store", p["store"], *(a.format(**p) for a in case)]


def _check_json(out: str, shape: str) -> Any:
    if shape == "lines":
        return [json.loads(line) for line in out.splitlines() if line.strip()]
    doc = json.loads(out)
    assert isinstance(doc, list if shape == "array" else dict), out
    return doc


def test_every_subcommand_has_a_case() -> None:
    names = {c[0].removesuffix("-state") for c in CASES} | {"demo"}
    assert names == set(_subparsers())


@pytest.mark.parametrize(("name", "argv", "code", "shape"), CASES, ids=[c[0] for c in CASES])
def test_subcommand_in_process(
    name: str,
    argv: list[str],
    code: int,
    shape: str,
    populated: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    got, out, err = run_main(_argv(argv, populated), capsys)
    assert got == code, err
    _check_json(out, shape)
    # And the same command without --json prints something readable (or nothing for monitor).
    if "--json" in argv and name not in ("delete", "delete-workflow", "backup", "compact"):
        plain = [a for a in argv if a != "--json"]
        if name in ("restore", "restore-latest"):
            plain = [a.replace("/out", "/plain") for a in plain]
        got, out, err = run_main(_argv(plain, populated), capsys)
        assert got == code, err
        assert out.strip(), name


@pytest.mark.parametrize(("name", "argv", "code", "shape"), CASES, ids=[c[0] for c in CASES])
def test_subcommand_as_a_process(
    name: str, argv: list[str], code: int, shape: str, populated: dict[str, Any]
) -> None:
    got, out, err = run_proc(_argv(argv, populated))
    assert got == code, err
    _check_json(out, shape)
    assert "Traceback" not in err


def test_list_json_is_an_array_of_checkpoints(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = run_main(["--store", populated["store"], "list", "wf", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert [d["id"] for d in doc] == [populated["id"], populated["id0"]]
    assert doc[0]["pinned"] is True and doc[0]["kind"] == "manual"


def test_create_reads_state_from_stdin_and_show_prints_it(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        sys, "stdin", io.StringIO('{"progress": {"step": 7, "big": 12345678901234567890}}')
    )
    store = ["--store", populated["store"]]
    code, out, err = run_main([*store, "create", "wf", "p", "--state", "-"], capsys)
    assert code == 0, err
    cid = out.strip()
    code, out, _ = run_main([*store, "show", cid, "--state"], capsys)
    assert json.loads(out)["state"] == {"progress": {"step": 7, "big": 12345678901234567890}}
    # Bytes and NaN from the API come out as strict JSON.
    code, out, _ = run_main([*store, "show", populated["id"], "--state"], capsys)
    assert json.loads(out)["state"] == {"b": {"$bytes": "00"}, "f": "nan"}


def test_manual_and_pin_via_process(populated: dict[str, Any]) -> None:
    code, out, err = run_proc(
        [
            "--store",
            populated["store"],
            "create",
            "wf",
            "r",
            "--manual",
            "--name",
            "n",
            "--pin",
            "--json",
        ],
        stdin="",
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["kind"] == "manual" and info["name"] == "n" and info["pinned"] is True


def test_prune_shows_keep_reasons(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(
        ["--store", populated["store"], "--retention", "standard", "prune", "wf", "--dry-run"],
        capsys,
    )
    assert code == 0
    assert "newest valid checkpoint" in out and "pinned" in out
    assert "dry run: nothing was deleted" in out


def test_cli_never_assumes_a_retention_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An application that opens its store with retention=None must not lose checkpoints to a
    CLI create or prune (the CLI used to open with the library's default, "standard", and a
    create deleted 6 of 15). Found in review. Stored per-workflow policies still apply."""
    path = tmp_path / "app.ckdb"
    with ckdb.open(path, retention=None) as app:
        for i in range(15):
            app.create("wf", "p", state={"i": {"v": i}})
    state_file = tmp_path / "s.json"
    state_file.write_text('{"step": {"n": 1}}')
    code, _out, _ = run_main(
        ["--store", str(path), "create", "wf", "cli", "--state", str(state_file)], capsys
    )
    assert code == 0
    code, _out, _ = run_main(["--store", str(path), "prune"], capsys)
    assert code == 0
    code, _out, _ = run_main(["--store", str(path), "get-retention", "wf"], capsys)
    assert code == 0
    with ckdb.open(path, retention=None) as app:
        assert len(app.list("wf")) == 16
        app.set_retention("wf", "minimal")  # a stored policy is the store's own: it applies
    code, _out, _ = run_main(["--store", str(path), "prune", "wf"], capsys)
    assert code == 0
    with ckdb.open(path, retention=None) as app:
        assert len(app.list("wf")) == 3


def _damage(store_path: str, cid: str) -> None:
    with ckdb.open(store_path) as store:
        key = payload_key(id_from_text(cid), RecordType.COMPONENT, "task")
        with store._env.read() as txn:
            value = bytearray(txn.get(DB_PAYLOADS, key) or b"")
        value[len(value) // 2] ^= 1
        store._env.write(lambda txn: txn.put(DB_PAYLOADS, key, bytes(value)))


def test_validate_and_scrub_exit_1_on_damage(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _damage(populated["store"], populated["id0"])
    store = ["--store", populated["store"]]
    code, out, _ = run_main([*store, "validate", populated["id0"]], capsys)
    assert code == 1 and "FAILED" in out
    code, out, _ = run_main([*store, "validate", "--json"], capsys)
    assert code == 1
    assert [r["ok"] for r in json.loads(out)] == [True, False]
    code, out, _ = run_main([*store, "scrub"], capsys)
    assert code == 1 and "PROBLEMS" in out
    code, out, _ = run_main([*store, "list"], capsys)
    assert re.search(rf"{populated['id0']}  -!", out)


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["show", "01M8CFX66G1MF364D3V73KT3KZ"], ckdb.CheckpointNotFound.exit_code),
        (["show", "not-an-id"], ckdb.CheckpointNotFound.exit_code),
        (["delete-workflow", "nope"], ckdb.WorkflowNotFound.exit_code),
        (["create", "wf", "p", "--state", "{tmp}/missing.json"], ckdb.InvalidInput.exit_code),
        (["create", "wf", "p", "--manual"], ckdb.InvalidInput.exit_code),
        (["prune", "wf", "--policy", "bogus"], 2),
        (["set-retention", "wf", "standard", "--max-checkpoints", "3"], 3),
        (["scrub", "--budget", "lots"], 2),
        (["backup", "{store}"], ckdb.InvalidInput.exit_code),
        (["--key-file", "{tmp}/other.key", "list"], ckdb.WrongKey.exit_code),
    ],
)
def test_errors_are_one_line_with_the_class_exit_code(
    argv: list[str], code: int, populated: dict[str, Any]
) -> None:
    (Path(populated["tmp"]) / "other.key").write_text("ab" * 32 + "\n")
    got, _out, err = run_proc(_argv(argv, populated))
    assert got == code, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == (1 if code != 2 else len(err.strip().splitlines()))
    if code != 2:  # argparse usage errors print usage + one error line
        assert err.startswith("ckdb: error: ")


def test_missing_store_is_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.ckdb"
    code, _out, err = run_main(["--store", str(path), "list"], capsys)
    assert code == ckdb.StoreNotFound.exit_code
    assert err.count("\n") == 1 and not path.exists()


def test_debug_shows_the_traceback(populated: dict[str, Any]) -> None:
    code, _out, err = run_proc(["--store", populated["store"], "--debug", "show", "bad"])
    assert code != 0 and "Traceback" in err


def test_store_path_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CKDB_STORE", str(tmp_path / "env.ckdb"))
    assert cli.default_store_path() == tmp_path / "env.ckdb"
    monkeypatch.delenv("CKDB_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert cli.default_store_path() == tmp_path / "xdg" / "ckdb" / "default.ckdb"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli.default_store_path() == tmp_path / "home/.local/share/ckdb/default.ckdb"


def test_env_store_is_used_and_created_by_init(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "s.ckdb"
    code, out, err = run_proc(["init"], CKDB_STORE=str(path))
    assert code == 0, err
    assert str(path) in out and (path / "data.mdb").exists()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("30s", "0:00:30"),
        ("5m", "0:05:00"),
        ("2", "0:00:02"),
        ("512MiB", 512 * 1024**2),
        ("2GB", 2 * 10**9),
        ("4096B", 4096),
    ],
)
def test_parse_budget(text: str, value: object) -> None:
    got = cli.parse_budget(text)
    assert (str(got) if isinstance(value, str) else got) == value


def test_progress_display_runs_with_rich(capsys: pytest.CaptureFixture[str]) -> None:
    with cli.Progress(True, "capturing", 100) as bar:
        assert bar.bytes_callback is not None and bar.stage_callback is not None
        bar.bytes(50, 3)
        bar.stage("copying")
    off = cli.Progress(False, "x")
    assert off.bytes_callback is None and off.stage_callback is None


# --- help and the CLI reference -----------------------------------------------------------------


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return None


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    """Every leaf command: ``create``, ..., and a group's as ``remote sync``."""
    top = _choices(cli.build_parser())
    assert top, "no subcommands"
    leaves = {}
    for name, parser in top.items():
        nested = _choices(parser)
        if nested is None:
            leaves[name] = parser
        else:
            leaves.update({f"{name} {sub}": p for sub, p in nested.items()})
    return leaves


def _documented_names(parser: argparse.ArgumentParser) -> list[str]:
    names = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            names.append(max(action.option_strings, key=len))
        else:
            names.append(str(action.metavar))
    return names


def _doc_sections() -> dict[str, str]:
    text = CLI_DOC.read_text(encoding="utf-8")
    sections: dict[str, str] = {}
    for part in re.split(r"^### ", text, flags=re.M)[1:]:
        match = re.match(r"`ckdb ([a-z-]+(?: [a-z-]+)?)`", part)
        assert match, part[:40]
        sections[match.group(1)] = part
    sections["(global)"] = text.split("## Global options", 1)[1].split("## Commands", 1)[0]
    return sections


def test_every_subcommand_is_documented_and_nothing_else() -> None:
    assert set(_doc_sections()) - {"(global)"} == set(_subparsers())


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_every_option_of_a_subcommand_is_documented(name: str) -> None:
    section = _doc_sections()[name]
    for option in _documented_names(_subparsers()[name]):
        assert re.search(rf"^- `{re.escape(option)}[` ]", section, re.M), (name, option)
    documented = set(re.findall(r"^- `([^` ]+)", section, re.M))
    assert documented <= set(_documented_names(_subparsers()[name])), name


def test_global_options_are_documented() -> None:
    section = _doc_sections()["(global)"]
    for option in _documented_names(cli.build_parser()):
        if option != "COMMAND":
            assert f"- `{option}" in section, option


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([*name.split(), "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ckdb {name}")
    assert _subparsers()[name].description and _subparsers()[name].description in " ".join(
        out.split()
    )


def test_top_level_help_and_version_as_a_process() -> None:
    code, out, _ = run_proc(["--help"])
    assert code == 0
    for name in _subparsers():
        assert name.split()[0] in out
    code, out, _ = run_proc(["--version"])
    assert code == 0 and out.strip() == f"ckdb {ckdb.__version__}"


def test_remote_take_over_fences_the_old_owner_and_errors_are_one_line(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    remote = ["--remote", populated["remote"], "--remote-key-file", populated["fleetkey"]]
    code, out, err = run_main(["--store", populated["store"], "remote", "take-over", "fleet-wf",
                               *remote], capsys)  # fmt: skip
    assert code == 0, err
    assert "took fleet-wf over (epoch 2): 2 checkpoints in the remote, 2 imported" in out
    # The old owner does not know yet; its next ship of fleet-wf finds the fence ...
    other = str(Path(populated["tmp"]) / "other.ckdb")
    code, out, err = run_main(["--store", other, "create", "fleet-wf", "late"], capsys)
    assert code == 0, err
    code, out, err = run_main(["--store", other, "remote", "sync", *remote], capsys)
    assert code == 1 and "fleet-wf: FENCED" in out
    # ... and from then on its creates of fleet-wf are refused (exit code of Fenced).
    code, out, err = run_main(["--store", other, "create", "fleet-wf", "later"], capsys)
    assert code == ckdb.Fenced.exit_code and "Fenced" not in out
    code, _out, err = run_main(["--store", other, "remote", "status", *remote, "--json"], capsys)
    doc = json.loads(_out)
    assert [w["fenced_by"] is not None for w in doc["workflows"]] == [True]
    # No remote named: one clear line, the InvalidInput code, nothing opened.
    code, out, err = run_main(["--store", other, "remote", "status"], capsys)
    assert code == ckdb.InvalidInput.exit_code
    assert err.startswith("ckdb: error: which remote?") and len(err.splitlines()) == 1


def test_remote_sync_shows_progress_on_a_terminal(
    populated: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    remote = ["--remote", populated["remote"], "--remote-key-file", populated["fleetkey"]]
    code, out, err = run_main(["--store", populated["store"], "remote", "sync", *remote], capsys)
    assert code == 0, err
    assert "everything committed before this call is remote" in out
    assert "wf: shipped up to segment 1" in out
