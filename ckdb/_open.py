"""Opening and creating stores: the format record, key resolution, atomic creation."""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import socket
from datetime import datetime
from pathlib import Path

from ckdb import keys
from ckdb._env import Txn, create_environment, fsync_path
from ckdb.errors import (
    FormatError,
    InvalidInput,
    UnsupportedVersion,
    WrongKey,
)
from ckdb.layout import (
    CIPHERS,
    DB_INFO,
    FORMAT,
    FORMAT_VERSION,
    INCOMPAT_BUNDLES,
    INCOMPAT_KNOWN,
    INFO_FORMAT,
    INFO_KEYCHECK,
    INFO_KEYRING,
    STORE_MAGIC,
)
from ckdb.meta import _now_us

# --- helpers -------------------------------------------------------------------------------------


def _default_creator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _aware_us(value: datetime | None, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime, not {value!r}")
    return int(value.timestamp() * 1_000_000)


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


def _resolve_key(path: Path, key: bytes | None, key_file: str | os.PathLike[str] | None) -> bytes:
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


def _cipher_of(fmt: bytes) -> str | None:
    incompat = FORMAT.unpack(fmt)[2]
    for name, flag in CIPHERS.items():
        if incompat & flag:
            return name
    return None


def _create_store(
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
        incompat = INCOMPAT_BUNDLES | (0 if encryption is None else CIPHERS[encryption])
        fmt = FORMAT.pack(STORE_MAGIC, FORMAT_VERSION, incompat, 0, uuid, _now_us())
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
