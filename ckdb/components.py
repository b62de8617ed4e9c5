"""Ready-made state components.

``capture_dependencies()`` records what an agent runs on, out of the box::

    store.register_component("dependencies", capture=ckdb.capture_dependencies,
                             restore=ckdb.check_dependencies)

``check_dependencies(recorded)`` raises :class:`DependencyDrift` listing what differs now; as the
``dependencies`` restorer its failure becomes a warning in the restore report (seed behaviour:
restoration continues).
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any


class DependencyDrift(RuntimeError):
    """The environment differs from the one recorded in a checkpoint."""


def capture_dependencies() -> dict[str, Any]:
    """Python version, implementation, platform and installed distributions with versions."""
    dists: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            dists[name.lower()] = dist.version or ""
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
        },
        "distributions": dict(sorted(dists.items())),
    }


def dependency_drift(recorded: Any) -> list[str]:
    """What differs between a recorded dependency state and the current one."""
    if not isinstance(recorded, dict):
        return ["recorded dependencies are not a mapping"]
    now = capture_dependencies()
    out = []
    old_py = recorded.get("python", {}).get("version")
    if old_py != now["python"]["version"]:
        out.append(f"python {old_py} -> {now['python']['version']}")
    old = recorded.get("distributions", {})
    new = now["distributions"]
    out.extend(
        f"{name} {old.get(name, '(absent)')} -> {new.get(name, '(absent)')}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    )
    return out


def check_dependencies(recorded: Any) -> None:
    drift = dependency_drift(recorded)
    if drift:
        raise DependencyDrift("; ".join(drift[:20]) + (" ..." if len(drift) > 20 else ""))
