"""Opening and creating stores: the format record, key resolution, atomic creation, and the
record layer (:class:`~ckdb.tables.Tables`) of an open store."""

from __future__ import annotations

import contextlib
import getpass
import hmac
import os
import secrets
import shutil
import socket
from pathlib import Path

from ckdb import keys
from ckdb._env import DEFAULT_MAP_SIZE, Env, Txn, create_environment, fsync_path
from ckdb.errors import (
    FormatError,
    InvalidInput,
    StoreNotFound,
    UnsupportedVersion,
    WrongKey,
)
from ckdb.layout import (
    CIPHERS,
    DB_INFO,
    DB_REMOTE,
    FORMAT,
    FORMAT_VERSION,
    INCOMPAT_BUNDLES,
    INCOMPAT_KNOWN,
    INCOMPAT_SEQ_FLOOR,
    INFO_FORMAT,
    INFO_KEYCHECK,
    INFO_KEYRING,
    STORE_MAGIC,
)
from ckdb.meta import now_us
from ckdb.retention import RetentionPolicy
from ckdb.tables import Tables

# --- helpers -------------------------------------------------------------------------------------


def default_creator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def check_format(record: bytes) -> bytes:
    """Validate the format record; return the store uuid."""
    if len(record) != FORMAT.size:
        raise FormatError(f"format record of {len(record)} bytes (expected {FORMAT.size})")
    magic, version, incompat, _compat, uuid, _created = FORMAT.unpack(record)
    if magic != STORE_MAGIC:
        raise FormatError("not a ckdb store (bad format magic)")
    if version > FORMAT_VERSION:
        raise UnsupportedVersion(
            f"store format version {version} is newer than this ckdb supports ({FORMAT_VERSION}); "
            "upgrade ckdb"
        )
    if version < 1:
        raise FormatError(f"invalid store format version {version}")
    unknown = incompat & ~INCOMPAT_KNOWN
    if unknown:
        raise UnsupportedVersion(
            f"store uses mandatory features this ckdb does not know (flags {unknown:#x}); "
            "upgrade ckdb"
        )
    return bytes(uuid)


def resolve_key(path: Path, key: bytes | None, key_file: str | os.PathLike[str] | None) -> bytes:
    if key is not None:
        return key
    if key_file is not None:
        return keys.read_key_file(key_file)
    default = path / keys.KEY_FILE_NAME
    if not default.exists():
        raise WrongKey(
            f"no key for {path}: pass key= or key_file=, or set CKDB_KEY_FILE "
            f"(no generated key file at {default})"
        )
    return keys.read_key_file(default)


def cipher_of(fmt: bytes) -> str | None:
    incompat = FORMAT.unpack(fmt)[2]
    for name, flag in CIPHERS.items():
        if incompat & flag:
            return name
    return None


def create_store(
    path: Path,
    key: bytes | None,
    key_file: str | os.PathLike[str] | None,
    map_size: int,
    encryption: str | None = None,
) -> None:
    """Create a store atomically: build it in a temporary sibling directory, fsync, rename into
    place, fsync the parent. A crash at any point leaves either no store or a complete one (plus,
    at worst, a stale temporary directory that the next creation ignores)."""
    del map_size  # the environment starts at the default map and grows on demand
    parent = path.parent
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if (path / "data.mdb").exists():
            return  # another process created the store since the caller looked: use theirs
        raise FormatError(f"{path} exists and is not an empty directory nor a ckdb store")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInput(f"cannot create {parent}: {err.strerror}") from None
    tmp = parent / f".{path.name}.ckdb-new-{secrets.token_hex(6)}"
    tmp.mkdir(mode=0o700)
    try:
        if key is not None:
            master = key
        elif key_file is not None and Path(key_file).exists():
            master = keys.read_key_file(key_file)
        else:
            master = keys.new_master_key()
            target = Path(key_file) if key_file is not None else tmp / keys.KEY_FILE_NAME
            try:
                keys.write_key_file(target, master)
            except FileExistsError:  # another process creating with the same key file won
                master = keys.read_key_file(target)
            if key_file is not None:
                fsync_path(target.absolute().parent, directory=True)
        uuid = secrets.token_bytes(16)
        incompat = INCOMPAT_BUNDLES | INCOMPAT_SEQ_FLOOR
        incompat |= 0 if encryption is None else CIPHERS[encryption]
        fmt = FORMAT.pack(STORE_MAGIC, FORMAT_VERSION, incompat, 0, uuid, now_us())
        kek = keys.kek_for(master, uuid)
        ring = keys.Keyring.generate()

        def init(txn: Txn) -> None:
            txn.put(DB_INFO, INFO_FORMAT, fmt)
            txn.put(DB_INFO, INFO_KEYCHECK, keys.key_check(kek, fmt))
            txn.put(DB_INFO, INFO_KEYRING, ring.wrap(kek, uuid))

        create_environment(tmp, init)
        try:
            os.rename(tmp, path)
        except OSError as err:
            if (path / "data.mdb").exists():
                # Another process created the store first: use theirs.
                shutil.rmtree(tmp, ignore_errors=True)
                return
            raise InvalidInput(f"cannot create the store at {path}: {err.strerror}") from None
        fsync_path(parent, directory=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def finish_pending_key_file(path: Path) -> None:
    """A rotation committed but crashed before renaming ``key.new`` over ``key``: finish it."""
    pending = path / (keys.KEY_FILE_NAME + ".new")
    try:
        os.replace(pending, path / keys.KEY_FILE_NAME)
    except FileNotFoundError:
        return  # the rotating process (or another opener) finished it first
    fsync_path(path, directory=True)


def open_tables(
    path: Path,
    *,
    key: bytes | None,
    key_file: str | os.PathLike[str] | None,
    readonly: bool,
    durability: str,
    create: bool,
    map_size: int | None,
    encryption: str | None,
    retention: RetentionPolicy | None,
    created_by: str,
    unsafe_nosync: bool = False,
) -> Tables:
    """Open (creating it first if missing and allowed) the store at ``path``; its record layer.

    The caller has validated the arguments. If opening fails halfway, what was opened is closed
    before the error propagates."""
    if not (path / "data.mdb").exists():
        if readonly or not create:
            if not path.exists():
                raise StoreNotFound(f"there is no store at {path}")
            raise FormatError(f"{path} is not a ckdb store (no data.mdb)")
        create_store(path, key, key_file, map_size or DEFAULT_MAP_SIZE, encryption)
    size = map_size or DEFAULT_MAP_SIZE
    with contextlib.suppress(OSError):
        size = max(size, int(os.path.getsize(path / "data.mdb") * 1.5))
    env = Env(path, readonly=readonly, durability=durability, map_size=size,
              unsafe_nosync=unsafe_nosync)  # fmt: skip
    try:
        # The remote's local state lives in a sub-database every writer must be able to mark
        # (tables/remote.py): created empty here, so that older stores gain it on open.
        if not readonly or env.has_db(DB_REMOTE):
            env.ensure_db(DB_REMOTE)
        tables = _unlock(env, path, key, key_file, readonly, retention, created_by)
        if encryption is not None and encryption != tables.keys.cipher:
            raise InvalidInput(
                f"{path} exists with encryption={tables.keys.cipher!r}; encryption is "
                "fixed when a store is created"
            )
    except BaseException:
        env.close()
        raise
    return tables


def _unlock(
    env: Env,
    path: Path,
    key: bytes | None,
    key_file: str | os.PathLike[str] | None,
    readonly: bool,
    retention: RetentionPolicy | None,
    created_by: str,
) -> Tables:
    # Check the format version and mandatory features before anything else: an unknown
    # format must not be interpreted, let alone written (borg Repository.open).
    with env.read() as txn:
        fmt = txn.get(DB_INFO, INFO_FORMAT)
        check = txn.get(DB_INFO, INFO_KEYCHECK)
        ring = txn.get(DB_INFO, INFO_KEYRING)
    if fmt is None:
        raise FormatError(f"{path} has no ckdb format record")
    uuid = check_format(fmt)
    if check is None or ring is None:
        raise FormatError(f"{path} has no key records: the store header is damaged")
    master = resolve_key(path, key, key_file)
    key_source = "argument" if key is not None else ("file" if key_file is not None else "store")
    kek = keys.kek_for(master, uuid)
    if not hmac.compare_digest(keys.key_check(kek, fmt), check):
        pending = path / (keys.KEY_FILE_NAME + ".new")
        if key_source == "store" and pending.exists():
            # A rotation committed but crashed before renaming key.new over key.
            master = keys.read_key_file(pending)
            kek = keys.kek_for(master, uuid)
            if not hmac.compare_digest(keys.key_check(kek, fmt), check):
                raise WrongKey(f"neither key nor key.new opens {path} (a damaged store header?)")
            if not readonly:
                finish_pending_key_file(path)
        else:
            raise WrongKey(f"the key does not open {path} (wrong key, or a damaged store header)")
    # A key.new that `key` opens past is left alone: it may belong to a rotation in progress
    # in another process (deleting it would lose the new key). The next rotation replaces it.
    ring_keys = keys.Keyring.unwrap(kek, uuid, ring)
    ring_keys.cipher = cipher_of(fmt)
    incompat = FORMAT.unpack(fmt)[2]
    return Tables(
        env,
        ring_keys,
        path=path,
        uuid=uuid,
        master=master,
        key_source=key_source,
        readonly=readonly,
        bundles=bool(incompat & INCOMPAT_BUNDLES),
        seq_floor=bool(incompat & INCOMPAT_SEQ_FLOOR),
        retention=retention,
        created_by=created_by,
    )
