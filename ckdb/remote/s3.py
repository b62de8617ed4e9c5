"""``s3://bucket/prefix`` through obstore (Rust's object_store; the optional extra ``ckdb[s3]``).

Create-only writes are single PUTs with ``If-None-Match: *`` (``mode="create"``,
``use_multipart=False``: servers such as Ceph ignore the condition on a multipart upload's
completion). obstore retries transient failures itself (bounded here by ``timeout``); what it
finally raises is translated: "exists" is ``False``, "absent" is ``None``, anything else a
:class:`~ckdb.errors.RemoteError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from ckdb.errors import InvalidInput, RemoteError
from ckdb.remote.objects import ObjectInfo, check_key

try:
    import obstore
    from obstore.exceptions import (
        AlreadyExistsError,
        PermissionDeniedError,
        PreconditionError,
        UnauthenticatedError,
    )
    from obstore.store import S3Store
except ImportError:  # pragma: no cover - the extra is not installed
    obstore = None  # type: ignore[assignment]


class S3Objects:
    """One prefix of one bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint: str | None,
        access_key: str | None,
        secret_key: str | None,
        region: str,
        timeout: float,
    ) -> None:
        if obstore is None:
            raise InvalidInput("s3:// remotes need obstore: pip install 'ckdb[s3]'")
        if not bucket:
            raise InvalidInput("s3:// remotes are s3://bucket/prefix")
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        config: dict[str, Any] = {"region": region}
        if endpoint:
            config["endpoint"] = endpoint
        if access_key:
            config["access_key_id"] = access_key
        if secret_key:
            config["secret_access_key"] = secret_key
        client: dict[str, Any] = {
            "timeout": timedelta(seconds=timeout),
            "connect_timeout": timedelta(seconds=min(timeout, 10.0)),
        }
        if endpoint and endpoint.startswith("http://"):
            client["allow_http"] = True
        retry = {"max_retries": 3, "retry_timeout": timedelta(seconds=timeout)}
        try:
            self._store = S3Store(
                bucket,
                prefix=prefix or None,
                client_options=client,  # type: ignore[arg-type]
                retry_config=retry,  # type: ignore[arg-type]
                **config,
            )
        except Exception as err:
            raise InvalidInput(f"{self.url}: {err}") from None

    def _fail(self, what: str, key: str, err: Exception) -> RemoteError:
        if isinstance(err, PermissionDeniedError | UnauthenticatedError):
            return RemoteError(f"{self.url}: {what} {key}: access denied (credentials?): {err}")
        return RemoteError(f"{self.url}: {what} {key}: {type(err).__name__}: {err}")

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            obstore.put(self._store, check_key(key), data, mode="create", use_multipart=False)
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as err:
            raise self._fail("create", key, err) from None
        return True

    def put(self, key: str, data: bytes) -> None:
        try:
            obstore.put(self._store, check_key(key), data, use_multipart=False)
        except Exception as err:
            raise self._fail("write", key, err) from None

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(obstore.get(self._store, check_key(key)).bytes())
        except FileNotFoundError:
            return None
        except Exception as err:
            raise self._fail("read", key, err) from None

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        try:
            stream = obstore.list(self._store, prefix, offset=start_after or None)
            for batch in stream:
                for meta in batch:
                    path = str(meta["path"])
                    if path.startswith(prefix) and path > start_after:
                        yield ObjectInfo(path, int(meta["size"]), meta["last_modified"].timestamp())
        except Exception as err:
            raise self._fail("list", prefix, err) from None

    def delete(self, keys: Iterable[str]) -> None:
        batch = [check_key(k) for k in keys]
        if not batch:
            return
        try:
            obstore.delete(self._store, batch)
        except FileNotFoundError:
            return
        except Exception as err:
            raise self._fail("delete", batch[0], err) from None
