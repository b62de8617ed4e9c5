"""pytest fixtures for ckdb users: ``ckdb_store`` and ``crash_resume``.

Installed as a pytest plugin (entry point ``pytest11``) with ckdb; without the entry point,
enable it with ``-p ckdb.testing.pytest_plugin``, or with
``pytest_plugins = ["ckdb.testing.pytest_plugin"]`` in your root ``conftest.py``.

    def test_resumes(crash_resume):
        report = crash_resume("myagent.flows:run", random_kills=5)
        assert len(report.kills) >= 20

``crash_resume(workflow, **options)`` runs :meth:`ckdb.testing.CrashResume.run` in a directory
under ``tmp_path`` and fails the test (printing the minimal kill schedule) unless every trial
passed. Options: those of :class:`~ckdb.testing.CrashResume` (``store_options``,
``compare_checkpoints``, ``normalize``, ``timeout``, ``start_method``) and of ``run``
(``schedules``, ``sweep``, ``max_examples``, ``max_kills``, ``random_kills``, ``seed``).
``--ckdb-crash-examples N`` and ``--ckdb-random-kills N`` override the defaults for a whole run
(e.g. more in a nightly job).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ckdb
from ckdb.testing.runner import CrashResume, CrashResumeReport

__all__ = ["CrashResumeFixture", "ckdb_store", "ckdb_store_path", "crash_resume"]

_RUNNER_OPTIONS = (
    "store_options",
    "compare_checkpoints",
    "normalize",
    "timeout",
    "max_attempts",
    "start_method",
    "keep_passing",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ckdb", "ckdb crash-resume harness")
    group.addoption(
        "--ckdb-crash-examples",
        type=int,
        default=None,
        help="Hypothesis kill schedules per crash_resume call (default 25)",
    )
    group.addoption(
        "--ckdb-random-kills",
        type=int,
        default=None,
        help="random-time kills per crash_resume call (default: as the test asks, else 0)",
    )


class CrashResumeFixture:
    """The ``crash_resume`` fixture's value: call it with a workflow import path."""

    def __init__(self, base: Path, config: pytest.Config) -> None:
        self._base = base
        self._config = config
        self._count = 0
        self.reports: list[CrashResumeReport] = []

    def runner(self, workflow: str, **options: Any) -> CrashResume:
        """A :class:`CrashResume` in a fresh directory under ``tmp_path`` (close it yourself,
        or use it as a context manager), for replaying schedules by hand."""
        self._count += 1
        return CrashResume(workflow, self._base / f"crash-resume-{self._count}", **options)

    def __call__(self, workflow: str, *, check: bool = True, **options: Any) -> CrashResumeReport:
        runner_opts = {k: options.pop(k) for k in _RUNNER_OPTIONS if k in options}
        examples = self._config.getoption("--ckdb-crash-examples")
        if examples is not None:
            options["max_examples"] = examples
        random_kills = self._config.getoption("--ckdb-random-kills")
        if random_kills is not None:
            options["random_kills"] = random_kills
        with self.runner(workflow, **runner_opts) as runner:
            report = runner.run(**options)
        self.reports.append(report)
        if check and not report.ok:
            pytest.fail(report.summary(), pytrace=False)
        return report


@pytest.fixture
def ckdb_store_path(tmp_path: Path) -> Path:
    """A path for a new store under ``tmp_path`` (nothing created yet)."""
    return tmp_path / "store.ckdb"


@pytest.fixture
def ckdb_store(ckdb_store_path: Path) -> Iterator[ckdb.Store]:
    """An open, empty store with automatic retention off (so tests can count checkpoints);
    closed after the test."""
    with ckdb.open(ckdb_store_path, retention=None) as store:
        yield store


@pytest.fixture
def crash_resume(tmp_path: Path, request: pytest.FixtureRequest) -> CrashResumeFixture:
    """Run a workflow under the crash-resume harness; see :class:`CrashResumeFixture`."""
    return CrashResumeFixture(tmp_path / "ckdb-crash-resume", request.config)
