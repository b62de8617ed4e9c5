"""ckdb: an embedded, crash-safe checkpoint database for long-running agents and workflows.

import ckdb

with ckdb.open("agent.ckdb") as store:
    info = store.create("wf-42", "planning", state={"task": {...}, "progress": {...}})
    checkpoint = store.load(info.id)
"""

import logging as _logging

from ckdb.components import (
    DependencyDrift,
    capture_dependencies,
    check_dependencies,
    dependency_drift,
)
from ckdb.errors import (
    CheckpointNotFound,
    CkdbError,
    Fenced,
    FormatError,
    IntegrityError,
    InvalidInput,
    ReadOnlyStore,
    RemoteError,
    RemoteUnsafe,
    RestoreFailed,
    StorageError,
    StoreClosed,
    StoreFull,
    StoreLocked,
    StoreNotFound,
    UnsupportedVersion,
    WorkflowNotFound,
    WrongKey,
)
from ckdb.integrity import ValidationReport
from ckdb.records import (
    Checkpoint,
    CheckpointInfo,
    ComponentInfo,
    FileEntry,
    FileState,
)
from ckdb.remote import Remote
from ckdb.remote.check import check_remote
from ckdb.restore import RestoreReport
from ckdb.store import Store, open

__version__ = "0.5.2"

# Library practice: ckdb logs corruption events at CRITICAL on the "ckdb" logger; the application
# decides where they go (and gets them through on_corruption callbacks regardless).
_logging.getLogger("ckdb").addHandler(_logging.NullHandler())

__all__ = [
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointNotFound",
    "CkdbError",
    "ComponentInfo",
    "DependencyDrift",
    "Fenced",
    "FileEntry",
    "FileState",
    "FormatError",
    "IntegrityError",
    "InvalidInput",
    "ReadOnlyStore",
    "Remote",
    "RemoteError",
    "RemoteUnsafe",
    "RestoreFailed",
    "RestoreReport",
    "StorageError",
    "Store",
    "StoreClosed",
    "StoreFull",
    "StoreLocked",
    "StoreNotFound",
    "UnsupportedVersion",
    "ValidationReport",
    "WorkflowNotFound",
    "WrongKey",
    "__version__",
    "capture_dependencies",
    "check_dependencies",
    "check_remote",
    "dependency_drift",
    "open",
]
