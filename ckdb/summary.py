"""Store statistics for people: ``Store.stats()`` plus logical sizes and deduplication, and
one way to print them (``ckdb stats`` and the demo share it). Public API only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ckdb.errors import CkdbError
from ckdb.store import Store


def size_text(n: float) -> str:
    """``1.5 KiB``: a byte count for people."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def collect_stats(store: Store) -> dict[str, Any]:
    """Store statistics from the public API: ``Store.stats()`` plus logical sizes.

    - ``state_bytes``: the encoded (uncompressed) size of every checkpoint's components,
      manifests included; ``stored_bytes``: their stored frames (compressed, tagged).
    - ``file_bytes``: the size of every captured file summed over checkpoints (what a copy per
      checkpoint would take); ``unique_file_bytes``: the distinct contents among them;
      ``dedup_ratio``: their quotient.
    Corrupt checkpoints are counted but their payloads are not read.
    """
    base = store.stats()
    infos = store.list()
    file_bytes = 0
    unique: dict[tuple[str, int], int] = {}
    corrupted = 0
    for info in infos:
        if info.status != "valid":
            corrupted += 1
            continue
        if not any(c.type == "manifest" for c in info.components):
            continue
        try:
            files = store.load(info.id).files
        except CkdbError:
            corrupted += 1
            continue
        for entry in files.entries if files is not None else ():
            if entry.type == "file":
                file_bytes += entry.size
                if entry.digest is not None:
                    unique[(entry.digest, entry.size)] = entry.size
    unique_bytes = sum(unique.values())
    out: dict[str, Any] = {
        "checkpoints": base.get("checkpoints", len(infos)),
        "workflows": base.get("workflows", len(store.workflows())),
        "pinned": sum(i.pinned for i in infos),
        "corrupted": corrupted,
        "state_bytes": sum(i.raw_size for i in infos),
        "stored_bytes": sum(i.stored_size for i in infos),
        "file_bytes": file_bytes,
        "unique_file_bytes": unique_bytes,
        "dedup_ratio": round(file_bytes / unique_bytes, 2) if unique_bytes else None,
    }
    for key, value in base.items():
        out.setdefault(key, value)
    return out


_STAT_LABELS = {
    "state_bytes": "state (logical)",
    "stored_bytes": "state (stored)",
    "file_bytes": "files (logical)",
    "unique_file_bytes": "files (unique)",
    "file_size": "data.mdb size",
    "map_size": "map size",
}


def _stat_value(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key == "dedup_ratio":
        return f"{value:g}x"
    if key.endswith(("bytes", "size_text")) and isinstance(value, int):
        return f"{size_text(value)} ({value} B)" if value >= 1024 else size_text(value)
    return str(value)


def print_stats(
    stats: dict[str, Any], indent: str = "", out: Callable[[str], None] = print
) -> None:
    for key, value in stats.items():
        label = _STAT_LABELS.get(key, key.replace("_", " "))
        out(f"{indent}{label:>16}: {_stat_value(key, value)}")
