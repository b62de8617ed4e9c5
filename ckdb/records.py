"""Records ckdb returns: attrs frozen classes, never dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from attrs import field, frozen

STATUS_VALID = "valid"
STATUS_CORRUPTED = "corrupted"
# Salvaged by scrub's repair: state and the other files intact, ``damaged_files`` lost.
STATUS_DAMAGED = "damaged"

KIND_AUTOMATIC = "automatic"
KIND_MANUAL = "manual"
KINDS = (KIND_AUTOMATIC, KIND_MANUAL)


@frozen
class ComponentInfo:
    """One stored component of a checkpoint (a state component, resources, dependencies, ...)."""

    type: str  # "component" | "resources" | "dependencies" | "manifest" | "bundle"
    name: str  # "" for the bundle
    raw_size: int  # encoded, uncompressed bytes
    # Bytes of its stored frame; 0 for a state component stored inside the checkpoint's bundle
    # (the frame that small state components share: docs/format.md, "Bundles").
    stored_size: int
    digest: str  # SHA-256 of the encoded bytes, hex


@frozen
class CheckpointInfo:
    """A checkpoint's metadata: what ``list``, ``latest`` and ``create`` return."""

    id: str
    workflow_id: str
    phase: str
    kind: str
    name: str | None
    created_at: datetime  # timezone-aware, UTC
    created_by: str
    sequence: int  # per-workflow order, assigned inside the write transaction
    parent_id: str | None  # the workflow's newest checkpoint when this one was created
    pinned: bool
    status: str  # "valid" | "corrupted" | "damaged" (salvaged: see ``damaged_files``)
    raw_size: int = 0
    stored_size: int = 0
    integrity: str = ""  # digest over the component digests, hex (the seed's integrity_hash)
    components: tuple[ComponentInfo, ...] = ()
    warnings: tuple[str, ...] = ()  # from create: files that could not be read, ...
    # status "damaged": the files whose content scrub found damaged (and could not repair);
    # restore restores everything else and names these.
    damaged_files: tuple[str, ...] = ()

    @property
    def type(self) -> str:
        """The seed's name for ``kind``."""
        return self.kind

    @property
    def checkpoint_id(self) -> str:
        """The seed's name for ``id``."""
        return self.id


@frozen
class FileEntry:
    """One manifest entry of a captured working directory."""

    path: str
    type: str  # "file" | "dir" | "symlink" | "fifo" | "socket" | "device" | "other"
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    digest: str | None = None
    link_target: str | None = None
    error: str | None = None


@frozen
class FileState:
    """The working-directory state of a checkpoint."""

    working_directory: str | None
    entries: tuple[FileEntry, ...] = ()
    error: str | None = None


@frozen
class Checkpoint:
    """A loaded, verified checkpoint."""

    info: CheckpointInfo
    state: dict[str, Any] = field(factory=dict)
    resources: Any = None
    dependencies: Any = None
    files: FileState | None = None

    @property
    def id(self) -> str:
        return self.info.id
