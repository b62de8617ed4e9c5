"""Remotes: ship every checkpoint to S3-compatible object storage; take a workflow over on
another host. ``docs/remote.md`` has the protocol, ``docs/fleet.md`` a walk-through.

Modules: ``format`` (the bytes, pure), ``objects`` / ``s3`` (the backends), ``link`` (first
contact, self-test), ``export`` (a local checkpoint as the remote holds it), ``shipper`` (the
thread), ``chain`` (reading a workflow's history, verified), ``importer`` (take-over, pull),
``gc``, ``check`` and ``lease`` (the shipping lease's liveness test).
"""

from __future__ import annotations

import math
import os
from urllib.parse import urlparse

from ckdb import keys
from ckdb.errors import InvalidInput
from ckdb.remote.objects import FileObjects, MemoryObjects, ObjectStore

__all__ = ["Remote"]


class Remote:
    """Where a fleet's checkpoints go: ``s3://bucket/prefix``, ``file:///dir`` or
    ``memory://name``.

    ``endpoint``, ``access_key``, ``secret_key``, ``region``: for S3-compatible servers;
    they default to ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
    ``AWS_REGION``. ``key`` / ``key_file``: the fleet's master key (default: the local store's
    master key; every host that takes workflows over needs the same one). ``interval``: seconds
    between ship rounds (at most one PUT per busy workflow per interval). ``timeout``: seconds
    per request. ``objects``: an object store of your own (tests wrap one to inject faults).
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        key: bytes | None = None,
        key_file: str | os.PathLike[str] | None = None,
        interval: float = 1.0,
        timeout: float = 30.0,
        objects: ObjectStore | None = None,
    ) -> None:
        if not isinstance(url, str):
            raise InvalidInput(f"a remote is a URL string, not {type(url).__name__}")
        for name, value in (("interval", interval), ("timeout", timeout)):
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise InvalidInput(f"{name} must be a positive number of seconds, not {value!r}")
        if key is not None and key_file is not None:
            raise InvalidInput("pass key= or key_file=, not both")
        self.url = url
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.key = (
            keys.check_master_key(key)
            if key is not None
            else (None if key_file is None else keys.read_key_file(key_file))
        )
        self.objects: ObjectStore
        if objects is not None:
            self.objects = objects
            return
        parsed = urlparse(url)
        if parsed.scheme == "memory":
            name = (parsed.netloc + parsed.path).strip("/")
            if not name:
                raise InvalidInput("memory:// needs a name: memory://fleet")
            self.objects = MemoryObjects(name)
        elif parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
                raise InvalidInput(f"file remotes are file:///absolute/dir, not {url!r}")
            self.objects = FileObjects(parsed.path)
        elif parsed.scheme == "s3":
            from ckdb.remote.s3 import S3Objects  # noqa: PLC0415 - the optional extra ckdb[s3]

            self.objects = S3Objects(
                parsed.netloc,
                parsed.path.strip("/"),
                endpoint=endpoint or os.environ.get("AWS_ENDPOINT_URL"),
                access_key=access_key or os.environ.get("AWS_ACCESS_KEY_ID"),
                secret_key=secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY"),
                region=region or os.environ.get("AWS_REGION") or "us-east-1",
                timeout=self.timeout,
            )
        else:
            raise InvalidInput(
                f"unknown remote {url!r}: use s3://bucket/prefix, file:///dir or memory://name"
            )

    def __repr__(self) -> str:
        return f"<ckdb.Remote {self.url!r}>"
