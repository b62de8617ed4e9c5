"""The README's two commands, verbatim, in a fresh copy of the repository and fresh virtual
environments (slow: they pip-install). The test command only collects (running the suite from
inside the suite would recurse)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = {
    ".git",
    ".venv",
    ".tox",
    "site",
    "build",
    "dist",
    ".hypothesis",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "__pycache__",
}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [
        line
        for block in blocks
        for line in block.splitlines()
        if line.startswith("python3 -m venv .venv && ")
    ][:2]


def _copy_repo(dest: Path) -> Path:
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP or n.endswith(".egg-info")}

    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    return dest


def _run(command: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "CKDB_STORE")
    }
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


def test_readme_has_the_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert commands[0].endswith(".venv/bin/ckdb demo")
    assert commands[1].endswith(".venv/bin/python -m pytest -m 'not slow'")


def test_ci_runs_the_readme_test_command_in_a_private_clone() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = readme_commands()[1]
    assert test_command in ci
    # ... inside a clone made under a fresh mktemp -d directory (issue 17)
    before = ci.split(test_command, 1)[0]
    assert "mktemp -d" in before and "git clone" in before and 'cd "$clone_parent/ckdb"' in before


@pytest.mark.slow
def test_readme_demo_command_in_a_fresh_venv(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path / "repo")
    proc = _run(readme_commands()[0], repo, tmp_path / "home")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "every step behaved" in proc.stdout


@pytest.mark.slow
def test_readme_test_command_installs_and_collects(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path / "repo")
    command = readme_commands()[1] + " --collect-only -q -p no:cacheprovider"
    proc = _run(command, repo, tmp_path / "home")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"\d+ tests? collected", proc.stdout), proc.stdout[-2000:]
    assert "test_cli.py" in proc.stdout and "test_demo.py" in proc.stdout


def test_docs_build_strict(tmp_path: Path) -> None:
    """The documentation builds with warnings as errors (needs the ``docs`` extra)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "cli" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "index.html").exists()
