"""Shared helpers for crash rounds: run a writer subprocess on a plfs mount,
collect its acknowledgements, cut the power, run a checker subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

WRITER_TIMEOUT = 180


def fsync_dir(path: os.PathLike | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class WriterResult:
    returncode: int | None
    lines: list[str]
    stderr: str
    timed_out: bool = False
    by_tag: dict[str, list[str]] = field(default_factory=dict)

    def tagged(self, tag: str) -> list[str]:
        return self.by_tag.get(tag, [])


def run_writer(
    argv: list[str],
    timeout: float = WRITER_TIMEOUT,
    env: dict | None = None,
    cwd: str | None = None,
) -> WriterResult:
    """Run a writer; its stdout is lines ``TAG payload``.  Only complete lines
    (newline-terminated) count: a half-printed ack is not an ack."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd or "/",
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
    text = out.decode(errors="replace")
    lines = text.split("\n")[:-1]  # drop an unterminated tail
    by_tag: dict[str, list[str]] = {}
    for ln in lines:
        tag, _, payload = ln.partition(" ")
        by_tag.setdefault(tag, []).append(payload)
    return WriterResult(proc.returncode, lines, err.decode(errors="replace"), timed_out, by_tag)


def run_checker(argv: list[str], timeout: float = 120, env: dict | None = None) -> dict:
    p = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, cwd="/", check=False
    )
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {
            "checker_crashed": True,
            "returncode": p.returncode,
            "stdout": p.stdout[-2000:],
            "stderr": p.stderr[-4000:],
        }


def python() -> str:
    return sys.executable


HERE = Path(__file__).resolve().parent
