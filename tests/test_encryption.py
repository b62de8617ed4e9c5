"""Encrypted stores (AES-GCM, ChaCha20-Poly1305): no known plaintext on disk, tampering is an
IntegrityError for load and a finding for scrub, the cipher is fixed at creation, and files,
retention, backup and rotation work as in a plain store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ckdb
from ckdb.layout import DB_CHECKPOINTS, DB_CHUNKS, DB_PAYLOADS, DB_REGISTRY
from tests.test_scrub import dump, inject

CIPHERS = ("aes-gcm", "chacha20-poly1305")

SECRETS = {
    "state": b"SECRET-STATE-VALUE-7f3a",
    "workflow": b"SECRET-WORKFLOW-ID-91c2",
    "phase": b"SECRET-PHASE-5d0e",
    "file name": b"SECRET-FILE-NAME-e4b1",
    "file content": b"SECRET-FILE-CONTENT-2a9c",
    "created_by": b"SECRET-USER-b8d6",
    "name": b"SECRET-CHECKPOINT-NAME-33aa",
    "resources": b"SECRET-RESOURCE-0c1d",
}


def populate(path: Path, work: Path, encryption: str | None) -> list[str]:
    work.mkdir(exist_ok=True)
    (work / (SECRETS["file name"].decode() + ".txt")).write_bytes(SECRETS["file content"] * 3)
    (work / "big.txt").write_bytes(SECRETS["file content"] * 5000)  # compressible
    wf = SECRETS["workflow"].decode()
    ids = []
    with ckdb.open(
        path, encryption=encryption, created_by=SECRETS["created_by"].decode(), retention=None
    ) as store:
        ids.append(
            store.create(
                wf,
                SECRETS["phase"].decode(),
                state={"task": {"v": SECRETS["state"].decode()}, "agent": {"b": SECRETS["state"]}},
                files=work,
                resources={"r": SECRETS["resources"].decode()},
            ).id
        )
        ids.append(
            store.create(
                wf,
                SECRETS["phase"].decode(),
                kind="manual",
                name=SECRETS["name"].decode(),
                state={"progress": {"big": [SECRETS["state"].decode()] * 500}},
            ).id
        )
        store.set_retention(wf, "extended")
        store.mark(ids[1], SECRETS["state"].decode())  # a mark's reason is stored too
    return ids


@pytest.mark.parametrize("encryption", CIPHERS)
def test_no_known_plaintext_on_disk(tmp_path: Path, encryption: str) -> None:
    populate(tmp_path / "s.ckdb", tmp_path / "w", encryption)
    data = (tmp_path / "s.ckdb" / "data.mdb").read_bytes()
    leaked = [what for what, secret in SECRETS.items() if secret in data]
    assert leaked == []


def test_plaintext_control(tmp_path: Path) -> None:
    """The same grep on an unencrypted store finds them: the test above can fail."""
    populate(tmp_path / "s.ckdb", tmp_path / "w", None)
    data = (tmp_path / "s.ckdb" / "data.mdb").read_bytes()
    found = {what for what, secret in SECRETS.items() if secret in data}
    assert {"state", "workflow", "phase", "file name", "created_by", "file content"} <= found


@pytest.mark.parametrize("encryption", CIPHERS)
@pytest.mark.parametrize(
    "target", ["metadata", "state", "manifest", "chunk", "registry", "header-byte"]
)
def test_tampering_is_detected(tmp_path: Path, encryption: str, target: str) -> None:
    path = tmp_path / "s.ckdb"
    ids = populate(path, tmp_path / "w", encryption)
    raw = dump(path)
    victim = ids[0]
    from ckdb.layout import id_from_text  # noqa: PLC0415

    vid = id_from_text(victim)
    if target == "metadata":
        db, key = DB_CHECKPOINTS, vid
    elif target in ("state", "manifest", "header-byte"):
        db = DB_PAYLOADS
        # manifest, else the bundle of the state components (or a component's own frame)
        prefixes = [vid + b"\x05"] if target == "manifest" else [vid + b"\x0b", vid + b"\x02"]
        key = next(k for p in prefixes for k in raw[DB_PAYLOADS] if k.startswith(p))
    elif target == "chunk":
        db, key = DB_CHUNKS, next(iter(raw[DB_CHUNKS]))
    else:
        db, key = DB_REGISTRY, next(k for k, v in raw[DB_REGISTRY].items() if v[:16] == vid)
    if target == "header-byte":  # the key id / raw length in the (authenticated) header
        from tests.test_scrub import raw_env  # noqa: PLC0415

        with raw_env(path) as (txn, dbh):
            value = bytearray(raw[db][key])
            value[12] ^= 0x01
            txn.put(key, bytes(value), db=dbh(db))
    else:
        inject(path, db, key, "flip")
    with ckdb.open(path, retention=None) as store:
        with pytest.raises(ckdb.IntegrityError):  # noqa: PT012 - one of two calls
            if target == "chunk":  # load reads no file contents; restore and validate do
                assert not store.validate(victim, level="comprehensive").ok
                store.restore(victim, target_dir=tmp_path / "out")
            else:
                store.load(victim)
        report = store.scrub()
        assert not report.ok
        assert any(f.checkpoint_id == victim or key.hex() in f.where for f in report.findings)


@pytest.mark.parametrize("encryption", CIPHERS)
def test_encryption_is_fixed_at_creation(tmp_path: Path, encryption: str) -> None:
    path = tmp_path / "s.ckdb"
    ckdb.open(path, encryption=encryption).close()
    other = next(c for c in CIPHERS if c != encryption)
    with pytest.raises(ckdb.InvalidInput):
        ckdb.open(path, encryption=other)
    with ckdb.open(path) as store:  # None: whatever the store has
        assert store._keys.cipher == encryption
    with ckdb.open(path, encryption=encryption):
        pass
    plain = tmp_path / "plain.ckdb"
    ckdb.open(plain).close()
    with pytest.raises(ckdb.InvalidInput):
        ckdb.open(plain, encryption=encryption)
    with pytest.raises(ckdb.InvalidInput):
        ckdb.open(tmp_path / "x.ckdb", encryption="rot13")
    assert not (tmp_path / "x.ckdb").exists()


@pytest.mark.parametrize("encryption", CIPHERS)
def test_files_retention_backup_rotation(tmp_path: Path, encryption: str) -> None:
    path = tmp_path / "s.ckdb"
    work = tmp_path / "w"
    work.mkdir()
    master = os.urandom(32)
    with ckdb.open(path, key=master, encryption=encryption, retention="minimal") as store:
        ids = []
        for i in range(6):
            (work / "f.bin").write_bytes(os.urandom(4000) + bytes([i]))
            ids.append(store.create("wf", "p", state={"task": {"i": i}}, files=work).id)
        kept = [i.id for i in store.list("wf")]
        assert len(kept) == 3 and set(kept) == set(ids[-3:])  # retention applied
        out = tmp_path / "restored"
        store.restore(ids[-1], target_dir=out)
        assert (out / "f.bin").read_bytes() == (work / "f.bin").read_bytes()
        store.backup(tmp_path / "b.ckdb")
        new = os.urandom(32)
        report = store.rotate_key(new, new_data_key=True)
        assert report.complete
        assert store.scrub().findings == ()
        assert store.load(ids[-1]).state == {"task": {"i": 5}}
        with store._env.read() as txn:
            chunks = [bytes(k) for k, _v in txn.range(DB_CHUNKS)]
    with pytest.raises(ckdb.WrongKey):
        ckdb.open(path, key=master)
    inject(path, DB_CHUNKS, chunks[0], "flip")
    with ckdb.open(path, key=new, retention=None) as store:
        with pytest.raises(ckdb.IntegrityError):  # noqa: PT012 - some restore fails
            for cid in ids[-3:]:
                store.restore(cid, target_dir=tmp_path / f"r-{cid}")
        repaired = store.scrub(repair=True, backup=tmp_path / "b.ckdb")
        assert repaired.ok and repaired.repaired >= 1
        assert store.scrub().findings == ()
        for cid in ids[-3:]:
            store.restore(cid, target_dir=tmp_path / f"ok-{cid}")
    with ckdb.open(tmp_path / "b.ckdb", key=master, retention=None) as b:
        assert b._keys.cipher == encryption
        assert b.scrub().findings == ()
        assert [i.id for i in b.list("wf")] == kept
