"""ckdb.testing: check that your agent resumes correctly after a crash.

- :class:`CrashResume` / :func:`check_crash_resume`: run a workflow (``"package.module:function"``
  called as ``function(store, workdir, effects)``), kill it at deterministic hook points (before
  and after each checkpoint commits, around each side effect) and at random times, restart it until
  it completes, and compare the result and final state with an uninterrupted run. A failure
  reports the smallest kill schedule that reproduces it.
- :class:`Effects`, :func:`side_effect`, :func:`kill_point`: mark side effects and extra kill
  points in the workflow (no-ops outside the harness).
- :class:`FileTree`, :func:`materialize`, :func:`snapshot`: small directory trees as values.
- :func:`corrupt_component`: flip one bit of a stored component, to drill corruption handling.
- ``ckdb.testing.strategies``: Hypothesis strategies for checkpointable state, workflow ids,
  phases and file trees. Importing it needs Hypothesis (``pip install 'ckdb[testing]'``);
  importing ``ckdb.testing`` does not.
- ``ckdb.testing.pytest_plugin``: the ``ckdb_store`` and ``crash_resume`` fixtures.

See docs/testing.md for a worked example.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from ckdb.testing._hooks import (
    AFTER_CHECKPOINT,
    AFTER_EFFECT,
    BEFORE_CHECKPOINT,
    BEFORE_EFFECT,
    Effects,
    HookedStore,
    kill_point,
    side_effect,
)
from ckdb.testing.damage import corrupt_component
from ckdb.testing.runner import (
    CrashResume,
    CrashResumeFailure,
    CrashResumeReport,
    HookEvent,
    Kill,
    KillPoint,
    Trial,
    check_crash_resume,
)
from ckdb.testing.trees import FileTree, materialize, snapshot

if TYPE_CHECKING:
    from ckdb.testing import strategies

__all__ = [
    "AFTER_CHECKPOINT",
    "AFTER_EFFECT",
    "BEFORE_CHECKPOINT",
    "BEFORE_EFFECT",
    "CrashResume",
    "CrashResumeFailure",
    "CrashResumeReport",
    "Effects",
    "FileTree",
    "HookEvent",
    "HookedStore",
    "Kill",
    "KillPoint",
    "Trial",
    "check_crash_resume",
    "corrupt_component",
    "kill_point",
    "materialize",
    "side_effect",
    "snapshot",
    "strategies",
]


def __getattr__(name: str) -> ModuleType:
    # Hypothesis is imported only when the strategies are used (the optional "testing" extra).
    if name == "strategies":
        return importlib.import_module("ckdb.testing.strategies")
    raise AttributeError(f"module 'ckdb.testing' has no attribute {name!r}")
