"""Master key, wrapped data keys and derived subkeys.

- The caller's master key (bytes, a key file, ``CKDB_KEY_FILE``, or a key file generated in the
  store directory at creation) never tags anything itself. HKDF turns it into a key-encryption key
  (KEK) bound to the store's uuid.
- ``info/keycheck`` = HMAC(KEK, label ‖ format record): a wrong key fails at open as ``WrongKey``.
- ``info/keyring`` = AES-GCM(KEK) of the random data keys (by key id), the active key id and the
  content key (which never rotates: content ids must stay stable for deduplication). Retired data
  keys stay in the keyring so older frames and backups still verify.
- Frame tags use HKDF(data key, "mac") for the key id written in each frame's header.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ckdb import encoding
from ckdb.errors import FormatError, IntegrityError, InvalidInput, WrongKey
from ckdb.layout import workflow_key

KEY_FILE_NAME = "key"
MIN_KEY_BYTES = 16
_LABEL = b"ckdb/v1/"


def hkdf(key: bytes, purpose: bytes, salt: bytes | None = None, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=_LABEL + purpose).derive(
        key
    )


def check_master_key(key: object) -> bytes:
    if not isinstance(key, bytes | bytearray):
        raise InvalidInput(f"key must be bytes, not {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise InvalidInput(f"key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return bytes(key)


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """A key file holds 64 hex digits (what ckdb writes) or raw key bytes."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise WrongKey(f"key file {os.fspath(path)!r} does not exist") from None
    except OSError as err:
        raise WrongKey(f"cannot read key file {os.fspath(path)!r}: {err.strerror}") from None
    text = data.strip()
    try:
        if len(text) >= 2 * MIN_KEY_BYTES and all(c in b"0123456789abcdefABCDEF" for c in text):
            return bytes.fromhex(text.decode("ascii"))
    except ValueError:
        pass
    return check_master_key(data)


def write_key_file(path: Path, key: bytes) -> None:
    """Create ``path`` with mode 0600 (never replacing an existing file) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def new_master_key() -> bytes:
    return secrets.token_bytes(32)


class Mac(Protocol):
    """A keyed HMAC-SHA256 state to ``copy()`` per message (``hmac.HMAC`` or OpenSSL's own)."""

    def copy(self) -> Mac: ...
    def update(self, data: bytes | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...


def new_mac(key: bytes) -> Mac:
    """HMAC-SHA256 keyed with ``key``: the OpenSSL object behind ``hmac.new`` when there is one
    (its ``copy``/``update``/``digest`` skip a Python wrapper per call: ~0.4 µs of ~1.5 per tag),
    else ``hmac.new`` itself. Same digests either way."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    fast = getattr(mac, "_hmac", None)
    return mac if fast is None else cast(Mac, fast)


class Keyring:
    """The unwrapped keys of one open store."""

    def __init__(self, data_keys: Mapping[int, bytes], active: int, content_key: bytes) -> None:
        if active not in data_keys:
            raise IntegrityError(f"keyring names active key {active}, which it does not hold")
        self.data_keys = dict(data_keys)
        self.active = active
        self.content_key = content_key
        self._macs = {kid: new_mac(hkdf(k, b"mac")) for kid, k in self.data_keys.items()}
        self.active_mac = self._macs[active]
        self.content_mac = new_mac(hkdf(content_key, b"content-id"))
        self.cipher: str | None = None  # set by the store: "aes-gcm" or "chacha20-poly1305"
        self._aeads: dict[int, Any] = {}
        self._name_mac = new_mac(hkdf(content_key, b"workflow-name"))
        self._component_mac = new_mac(hkdf(content_key, b"component-name"))

    def aead(self, key_id: int) -> Any:
        """The AEAD cipher for a key id in an encrypted store; None when not encrypted."""
        if self.cipher is None:
            return None
        cipher = self._aeads.get(key_id)
        if cipher is None:
            self.mac(key_id)  # reloads the keyring for a key id added by another process
            key = hkdf(self.data_keys[key_id], b"enc")
            cipher = AESGCM(key) if self.cipher == "aes-gcm" else ChaCha20Poly1305(key)
            self._aeads[key_id] = cipher
        return cipher

    @property
    def active_aead(self) -> Any:
        return self.aead(self.active)

    def payload_key(self, cid: bytes, rtype: int, name: str) -> bytes:
        """A payload's key: id ‖ type ‖ name, or in an encrypted store id ‖ type ‖ a keyed
        digest of the name (component names can be as telling as the values)."""
        if self.cipher is None:
            return cid + bytes((rtype,)) + name.encode("utf-8")
        h = self._component_mac.copy()
        h.update(name.encode("utf-8"))
        return cid + bytes((rtype,)) + h.digest()

    def wf_key(self, workflow_id: str) -> bytes:
        """The workflow's key prefix: length-prefixed UTF-8, or in an encrypted store a keyed
        digest of the id (same length prefix scheme), so keys leak no names."""
        if self.cipher is None:
            return workflow_key(workflow_id)
        h = self._name_mac.copy()
        h.update(workflow_id.encode("utf-8"))
        return b"\x20" + h.digest()

    #: Called on an unknown key id (another process may have rotated in a new data key): returns
    #: the store's current keyring, or None.
    reload: Callable[[], Keyring | None] | None = None

    def mac(self, key_id: int) -> Mac:
        """The keyed HMAC for a key id (``.copy()`` it); KeyError for an unknown id."""
        try:
            return self._macs[key_id]
        except KeyError:
            fresh = self.reload() if self.reload is not None else None
            if fresh is None or key_id not in fresh._macs:
                raise
            self._macs[key_id] = fresh._macs[key_id]
            self.data_keys[key_id] = fresh.data_keys[key_id]
            return self._macs[key_id]

    @classmethod
    def generate(cls) -> Keyring:
        return cls({1: secrets.token_bytes(32)}, 1, secrets.token_bytes(32))

    # -- wrapping --------------------------------------------------------------------------------

    def wrap(self, kek: bytes, uuid: bytes) -> bytes:
        body = encoding.encode(
            {
                "active": self.active,
                "keys": dict(sorted(self.data_keys.items())),
                "content": self.content_key,
            },
            "keyring",
        )
        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(kek).encrypt(nonce, body, _LABEL + b"keyring" + uuid)

    @classmethod
    def unwrap(cls, kek: bytes, uuid: bytes, blob: bytes) -> Keyring:
        if len(blob) < 12 + 16:
            raise IntegrityError("keyring record is truncated")
        try:
            body = AESGCM(kek).decrypt(blob[:12], blob[12:], _LABEL + b"keyring" + uuid)
        except InvalidTag:
            raise IntegrityError(
                "keyring record fails authentication although the key check passed: "
                "the store header is damaged (restore from a backup)"
            ) from None
        try:
            doc = encoding.decode(body)
        except FormatError as err:
            raise IntegrityError(f"keyring record is malformed: {err}") from None
        data = doc.get("keys") if type(doc) is dict else None
        active = doc.get("active") if type(doc) is dict else None
        content = doc.get("content") if type(doc) is dict else None
        if (
            type(data) is not dict
            or not data
            or any(
                type(k) is not int or type(v) is not bytes or len(v) != 32 for k, v in data.items()
            )
            or type(active) is not int
            or type(content) is not bytes
            or len(content) != 32
        ):
            raise IntegrityError("keyring record is malformed")
        return cls(data, active, content)


def kek_for(master: bytes, uuid: bytes) -> bytes:
    return hkdf(master, b"kek", salt=uuid)


def key_check(kek: bytes, format_record: bytes) -> bytes:
    return hmac.new(kek, _LABEL + b"keycheck" + format_record, hashlib.sha256).digest()
