"""State components: the registry of a store's captures and restorers, and ready-made ones.

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
import threading
from collections.abc import Callable
from typing import Any

from ckdb.errors import CkdbError, InvalidInput
from ckdb.layout import check_name


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


class Registered:
    """The components registered on one store (``Store.register_component``): how each is
    captured by ``create`` and handed back by ``restore``. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._map: dict[str, tuple[Callable[[], Any] | None, Callable[[Any], None] | None]] = {}

    def register(
        self,
        name: str,
        capture: Callable[[], Any] | None,
        restore: Callable[[Any], None] | None,
    ) -> None:
        check_name(name, "component name")
        if capture is not None and not callable(capture):
            raise InvalidInput(f"capture for {name!r} must be callable")
        if restore is not None and not callable(restore):
            raise InvalidInput(f"restore for {name!r} must be callable")
        if capture is None and restore is None:
            raise InvalidInput(f"register_component({name!r}) needs capture= or restore=")
        with self._lock:
            self._map[name] = (capture, restore)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._map.pop(name, None)

    def captured_names(self) -> list[str]:
        with self._lock:
            return [n for n, (cap, _r) in self._map.items() if cap is not None]

    def capture(self, name: str) -> Any:
        """The registered capture's value (None without one); its failure is an InvalidInput."""
        with self._lock:
            capture = self._map.get(name, (None, None))[0]
        if capture is None:
            return None
        try:
            return capture()
        except CkdbError:
            raise
        except Exception as err:
            raise InvalidInput(
                f"capture of component {name!r} failed: {type(err).__name__}: {err}"
            ) from err

    def restorers(self) -> dict[str, Callable[[Any], None]]:
        with self._lock:
            return {n: r for n, (_c, r) in self._map.items() if r is not None}
