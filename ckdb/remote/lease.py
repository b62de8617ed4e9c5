"""The shipping lease's liveness test: one process per store ships (``shipper``); a restarted
process need not wait for the lease of a holder that died on this host."""

from __future__ import annotations

import os
from typing import Any


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


#: This process's PID namespace (0 where /proc does not say): PIDs compare only within one.
PID_NS = _pid_namespace()


def holder_died(doc: dict[str, Any], host: str) -> bool:
    """True if the lease holder was a process of this host and PID namespace that no longer
    exists (killed, crashed): a restart need not wait for its lease to expire. A reused PID
    only makes us wait for the expiry, as for a holder on another host."""
    if doc.get("host") != host or doc.get("ns", -1) != PID_NS or not PID_NS:
        return False
    pid = doc.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, another user's
    return False
