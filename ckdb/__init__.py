"""ckdb: an embedded, crash-safe checkpoint database for long-running agents and workflows.

import ckdb

with ckdb.open("agent.ckdb") as store:
    info = store.create("wf-42", "planning", state={"task": {...}, "progress": {...}})
    checkpoint = store.load(info.id)
"""

from ckdb.errors import (
    CheckpointNotFound,
    CkdbError,
    FormatError,
    IntegrityError,
    InvalidInput,
    ReadOnlyStore,
    StorageError,
    StoreClosed,
    StoreFull,
    StoreLocked,
    StoreNotFound,
    UnsupportedVersion,
    WorkflowNotFound,
    WrongKey,
)
from ckdb.records import (
    Checkpoint,
    CheckpointInfo,
    ComponentInfo,
    FileEntry,
    FileState,
)
from ckdb.store import Store, open

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointNotFound",
    "CkdbError",
    "ComponentInfo",
    "FileEntry",
    "FileState",
    "FormatError",
    "IntegrityError",
    "InvalidInput",
    "ReadOnlyStore",
    "StorageError",
    "Store",
    "StoreClosed",
    "StoreFull",
    "StoreLocked",
    "StoreNotFound",
    "UnsupportedVersion",
    "WorkflowNotFound",
    "WrongKey",
    "__version__",
    "open",
]
