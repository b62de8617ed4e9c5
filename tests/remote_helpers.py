"""Backends for the remote tests, and an object store that misbehaves on purpose.

``backend`` fixture values: ``memory`` (the twin), ``file`` (a directory), ``moto`` (moto's S3
server in this process, started once per session) and ``ceph`` (a real radosgw: only when
``CKDB_CEPH_ENDPOINT`` is set, as ``.ci/run`` does after starting it). Each test gets a fresh
namespace (memory name, directory or bucket prefix).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ckdb.errors import RemoteError
from ckdb.remote import Remote
from ckdb.remote.objects import MemoryObjects, ObjectInfo, ObjectStore

CEPH = os.environ.get("CKDB_CEPH_ENDPOINT")
CEPH_KEYS = ("ckdbtest", "ckdbtestsecret")
BUCKET = "ckdb-tests"

_moto_lock = threading.Lock()
_moto: dict[str, Any] = {}


def _s3_client(endpoint: str, access: str, secret: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        ),
    )


def moto_endpoint() -> str:
    with _moto_lock:
        if "endpoint" not in _moto:
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            _s3_client(endpoint, "test", "test").create_bucket(Bucket=BUCKET)
            _moto.update(server=server, endpoint=endpoint)
        return str(_moto["endpoint"])


def s3_client(backend: Backends) -> Any:
    """boto3 on the backend's server (moto or ceph), for looking at what ckdb wrote."""
    if backend.kind == "moto":
        return _s3_client(moto_endpoint(), "test", "test")
    assert CEPH
    return _s3_client(CEPH, *CEPH_KEYS)


def ceph_bucket() -> None:
    assert CEPH
    client = _s3_client(CEPH, *CEPH_KEYS)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)


class Backends:
    """Makes Remotes on one backend, each call a fresh namespace unless ``name`` repeats."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.ns = secrets.token_hex(6)
        if kind == "ceph":
            ceph_bucket()

    def url(self, name: str = "fleet") -> str:
        if self.kind == "memory":
            return f"memory://{self.ns}-{name}"
        if self.kind == "file":
            return f"file://{self.tmp / ('remote-' + name)}"
        return f"s3://{BUCKET}/{self.ns}/{name}"

    def remote(self, name: str = "fleet", **kw: Any) -> Remote:
        kw.setdefault("interval", 0.05)
        kw.setdefault("timeout", 10.0)
        if self.kind == "moto":
            kw.setdefault("endpoint", moto_endpoint())
            kw.setdefault("access_key", "test")
            kw.setdefault("secret_key", "test")
        elif self.kind == "ceph":
            assert CEPH
            kw.setdefault("endpoint", CEPH)
            kw.setdefault("access_key", CEPH_KEYS[0])
            kw.setdefault("secret_key", CEPH_KEYS[1])
        return Remote(self.url(name), **kw)

    def objects(self, name: str = "fleet") -> ObjectStore:
        return self.remote(name).objects

    def close(self) -> None:
        if self.kind == "memory":
            for name in list(MemoryObjects._all):
                if name.startswith(self.ns):
                    MemoryObjects.forget(name)


class Faulty:
    """Wraps an object store: with probability ``fail`` a call raises before doing anything,
    with ``lose`` a PUT is performed and then its answer is lost (the worst case), with
    ``timeout`` a call raises after a delay. ``calls`` counts calls by operation."""

    def __init__(
        self,
        inner: ObjectStore,
        *,
        fail: float = 0.0,
        lose: float = 0.0,
        seed: int = 0,
        only: tuple[str, ...] = ("put_if_absent", "put", "get", "list", "delete"),
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail = fail
        self.lose = lose
        self.rng = random.Random(seed)
        self.only = only
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.faults = 0
        self.enabled = True
        # Outcomes forced on the next PUTs (``"fail"`` / ``"lose"``), before the dice decide.
        self.script: list[str] = []

    def _roll(self, op: str) -> tuple[bool, bool]:
        with self.lock:
            self.calls[op] = self.calls.get(op, 0) + 1
            if not self.enabled or op not in self.only:
                return False, False
            if self.script and op.startswith("put"):
                forced = self.script.pop(0)
                self.faults += 1
                return forced == "fail", forced == "lose"
            fail = self.rng.random() < self.fail
            lose = not fail and op.startswith("put") and self.rng.random() < self.lose
            if fail or lose:
                self.faults += 1
            return fail, lose

    def put_if_absent(self, key: str, data: bytes) -> bool:
        fail, lose = self._roll("put_if_absent")
        if fail:
            raise RemoteError(f"injected failure before PUT {key}")
        created = self.inner.put_if_absent(key, data)
        if lose:
            raise RemoteError(f"injected: PUT {key} performed, answer lost")
        return created

    def put(self, key: str, data: bytes) -> None:
        fail, lose = self._roll("put")
        if fail:
            raise RemoteError(f"injected failure before PUT {key}")
        self.inner.put(key, data)
        if lose:
            raise RemoteError(f"injected: PUT {key} performed, answer lost")

    def get(self, key: str) -> bytes | None:
        fail, _ = self._roll("get")
        if fail:
            raise RemoteError(f"injected failure of GET {key}")
        return self.inner.get(key)

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        fail, _ = self._roll("list")
        if fail:
            raise RemoteError(f"injected failure of LIST {prefix}")
        return self.inner.list(prefix, start_after)

    def delete(self, keys: Iterable[str]) -> None:
        fail, _ = self._roll("delete")
        if fail:
            raise RemoteError("injected failure of DELETE")
        self.inner.delete(keys)


class IgnoresConditions:
    """An endpoint that ignores If-None-Match: every create succeeds."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.writes: list[str] = []

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self.writes.append(key)
        self.inner.put(key, data)
        return True

    def put(self, key: str, data: bytes) -> None:
        self.writes.append(key)
        self.inner.put(key, data)

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, start_after)

    def delete(self, keys: Iterable[str]) -> None:
        self.inner.delete(keys)
