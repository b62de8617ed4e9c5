"""A connection to a remote: its keys (after the first contact) and the endpoint self-test."""

from __future__ import annotations

import contextlib
import secrets

from ckdb.errors import CkdbError, RemoteError, RemoteUnsafe
from ckdb.meta import now_us
from ckdb.remote.format import ROOT_KEY, RemoteKeys, new_root, open_root
from ckdb.remote.objects import ObjectStore


def self_test(objects: ObjectStore) -> None:
    """Refuse an endpoint that ignores ``If-None-Match: *`` (RemoteUnsafe): create a random key
    twice; the second create must be refused. The probe is deleted again."""
    key = f"selftest/{secrets.token_hex(12)}"
    try:
        first = objects.put_if_absent(key, b"ckdb self-test 1")
        second = objects.put_if_absent(key, b"ckdb self-test 2")
        stored = objects.get(key)
    finally:
        with contextlib.suppress(CkdbError):  # a stray probe costs bytes; the verdict matters
            objects.delete([key])
    if not first:
        raise RemoteUnsafe(f"{objects.url}: a create-only PUT of a new key was refused")
    if second or stored != b"ckdb self-test 1":
        raise RemoteUnsafe(
            f"{objects.url} does not honour create-only writes (If-None-Match: *): a second "
            "create of the same key succeeded. ckdb refuses it: two hosts could both own a "
            "workflow. Use a server that supports conditional writes (AWS S3, Ceph radosgw, "
            "MinIO, R2, ...)"
        )


class Link:
    """An opened remote: its object store and its keys."""

    __slots__ = ("keys", "objects", "url")

    def __init__(self, objects: ObjectStore, keys: RemoteKeys) -> None:
        self.objects = objects
        self.keys = keys
        self.url = objects.url

    @property
    def uuid(self) -> bytes:
        return self.keys.uuid

    @classmethod
    def connect(cls, objects: ObjectStore, master: bytes) -> Link:
        """First contact: read (or create) the root, check the key (WrongKey), self-test the
        endpoint (RemoteUnsafe) before this host writes anything of its own."""
        data = objects.get(ROOT_KEY)
        self_test(objects)
        if data is None:
            root, keys = new_root(master, now_us())
            if objects.put_if_absent(ROOT_KEY, root):
                return cls(objects, keys)
            data = objects.get(ROOT_KEY)  # another host created it first: use theirs
            if data is None:
                raise RemoteError(f"{objects.url}: the remote root vanished while it was created")
        return cls(objects, open_root(master, data))
