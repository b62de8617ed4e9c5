"""Regenerate the seed corpus in ``fuzz/corpus/<target>/`` deterministically.

    python fuzz/make_corpus.py            # rewrite every seed (crash-* files are kept)

Seeds for tag-checked targets are tagged with the fixed test keys in ``fuzz/targets.py``, so they
are valid inputs for those targets on every run. Files named ``crash-*`` (reproducers added by
hand, see ``fuzz/README.md``) are never touched.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cramjam  # noqa: E402
import targets as t  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from ckdb import codec, encoding, layout  # noqa: E402
from ckdb.layout import Codec, RecordType  # noqa: E402

CORPUS = HERE / "corpus"


def _payload(n: int) -> bytes:
    """A compressible, deterministic msgpack document of about ``n`` bytes."""
    doc = {
        "task": "summarise",
        "items": [{"i": i, "text": "lorem ipsum " * 3} for i in range(n // 60)],
    }
    return encoding.encode(doc)


def _meta_doc(**over: object) -> dict[str, object]:
    raw = _payload(400)
    digest = hashlib.sha256(raw).digest()
    components = [[int(RecordType.COMPONENT), "task", len(raw), 180, digest]]
    doc: dict[str, object] = {
        "v": 1,
        "id": t.CID,
        "workflow_id": "wf-42",
        "phase": "planning",
        "kind": "automatic",
        "name": None,
        "created_at": 1_700_000_000_000_000,
        "created_by": "agent@host",
        "seq": 7,
        "parent": bytes(16),
        "components": components,
        "integrity": hashlib.sha256(b"integrity").digest(),
    }
    doc.update(over)
    return doc


def _keyring_doc(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "active": 1,
        "keys": {1: b"k" * 32, 2: b"K" * 32},
        "content": b"c" * 32,
    }
    doc.update(over)
    return doc


def frames() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for rtype in RecordType:
        for wanted in (c for c in Codec if c is not Codec.AUTO):  # AUTO is a request, not stored
            raw = _payload(600) if wanted is not Codec.NONE else _payload(120)
            value = codec.encode_frame(
                t.RING.active_mac, t.RING.active, rtype, t.FRAME_DB, t.FRAME_KEY, raw, wanted
            )
            used = Codec(value[5])
            assert used is wanted, (rtype, wanted, used)
            out[f"{rtype.name.lower()}-{wanted.name.lower()}"] = value
    out["empty-body"] = codec.encode_frame(
        t.RING.active_mac, 1, RecordType.COMPONENT, t.FRAME_DB, t.FRAME_KEY, b"", Codec.NONE
    )
    out["key-id-2"] = codec.encode_frame(
        t.RING.mac(2), 2, RecordType.COMPONENT, t.FRAME_DB, t.FRAME_KEY, _payload(600)
    )
    out["other-address"] = codec.encode_frame(
        t.RING.active_mac, 1, RecordType.COMPONENT, t.FRAME_DB, t.FRAME_KEY + b"2", b"x"
    )
    good = out["component-zstd"]
    out["bad-magic"] = b"CKG" + good[3:]
    out["truncated"] = good[:40]
    out["header-only"] = good[: layout.FRAME_HEADER.size]
    return out


def _header(rtype: int, codec_id: int, key_id: int, raw_len: int) -> bytes:
    return layout.FRAME_HEADER.pack(
        layout.FRAME_MAGIC, layout.FRAME_VERSION, rtype, codec_id, key_id, raw_len
    )


def frames_untagged() -> dict[str, bytes]:
    out = {
        name: value[: -layout.TAG_SIZE]
        for name, value in frames().items()
        if name not in ("truncated", "header-only")
    }
    raw = _payload(600)
    zstd = bytes(cramjam.zstd.compress(raw, level=3))
    lz4 = bytes(cramjam.lz4.compress_block(raw, store_size=False))
    out["zstd-short-raw-len"] = _header(2, Codec.ZSTD, 1, len(raw) - 1) + zstd
    out["zstd-long-raw-len"] = _header(2, Codec.ZSTD, 1, len(raw) + 1) + zstd
    out["lz4-short-raw-len"] = _header(2, Codec.LZ4, 1, len(raw) - 1) + lz4
    out["lz4-garbage"] = _header(2, Codec.LZ4, 1, 1000) + b"\xff" * 40
    out["zstd-garbage"] = _header(2, Codec.ZSTD, 1, 1000) + b"\x28\xb5\x2f\xfd" + b"\x00" * 20
    out["none-wrong-len"] = _header(2, Codec.NONE, 1, 3) + b"abcd"
    out["unknown-codec"] = _header(2, 9, 1, 4) + b"abcd"
    out["unknown-key-id"] = _header(2, Codec.NONE, t.UNKNOWN_KEY_ID, 4) + b"abcd"
    out["bad-version"] = layout.FRAME_HEADER.pack(layout.FRAME_MAGIC, 2, 2, 0, 1, 4) + b"abcd"
    out["raw-len-max"] = _header(2, Codec.NONE, 1, codec.MAX_RAW_LEN + 1)
    return out


def registry_entries() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for flags in (0, layout.FLAG_PINNED, layout.FLAG_MARKED, layout.FLAGS_KNOWN, 0xFF):
        out[f"flags-{flags:02x}"] = codec.encode_registry(
            t.RING.active_mac, 1, t.REGISTRY_KEY, t.CID, 1_700_000_000_000_000, flags
        )
    out["key-id-2"] = codec.encode_registry(t.RING.mac(2), 2, t.REGISTRY_KEY, t.CID, 0, 0)
    out["unknown-key-id"] = layout.REGISTRY_VALUE.pack(t.CID, 0, 0, t.UNKNOWN_KEY_ID, bytes(16))
    return out


def registry_keys() -> dict[str, bytes]:
    return {
        "wf-42-7": t.REGISTRY_KEY,
        "unicode": layout.registry_key(layout.workflow_key("wörk/flow ✓"), 2**64 - 1),
        "longest": layout.registry_key(layout.workflow_key("w" * layout.MAX_NAME_BYTES), 1),
        "empty-wf": layout.registry_key(b"\x00", 0),
        "length-too-long": b"\x05ab" + bytes(8),
    }


def checkpoint_ids() -> dict[str, bytes]:
    text = layout.id_to_text(t.CID)
    return {
        "canonical": text.encode(),
        "lowercase": text.lower().encode(),
        "raw-16": t.CID,
        "max": layout.id_to_text(b"\xff" * 16).encode(),
        "out-of-range": b"8" + b"0" * 25,
        "excluded-letters": b"ILOU" + b"0" * 22,
        "short": text[:25].encode(),
        "non-ascii": ("é" + text[1:]).encode(),
    }


def msgpack_docs() -> dict[str, bytes]:
    values: dict[str, object] = {
        "metadata": _meta_doc(),
        "keyring": _keyring_doc(),
        "scalars": [None, True, False, 0, -1, 2**63, -(2**63) - 1, 2**200, -(2**200), 1.5, -0.0],
        "floats": [math.nan, math.inf, -math.inf, 5e-324],
        "strings": {"": "", "ä": "snow ☃", "b": b"\x00\xff"},
        "int-keys": {1: "a", b"k": 2, None: 3, 2.5: 4},
        "nested": [[[[{"a": [[]]}]]]],
        "payload": encoding.decode(_payload(600)),
    }
    out = {name: encoding.encode(v) for name, v in values.items()}
    out["ext-unknown"] = b"\xd4\x07\x00"
    out["ext-bigint-empty"] = b"\xc7\x00\x01"
    out["float32"] = b"\xca\x7f\xc0\x00\x00"
    out["bad-utf8"] = b"\xa2\xff\xfe"
    out["list-key"] = b"\x81\x91\x01\x02"
    out["trailing"] = b"\x01\x02"
    out["array32-huge"] = b"\xdd\xff\xff\xff\xff"
    out["deep"] = b"\x91" * 2000 + b"\xc0"
    return out


def format_records() -> dict[str, bytes]:
    def rec(
        magic: bytes = layout.STORE_MAGIC, version: int = 1, incompat: int = 0, compat: int = 0
    ) -> bytes:
        return layout.FORMAT.pack(magic, version, incompat, compat, t.UUID, 1_700_000_000_000_000)

    return {
        "v1": rec(),
        "compat-flags": rec(compat=0xFFFFFFFF),
        "incompat-flags": rec(incompat=1),
        "v2": rec(version=2),
        "v0": rec(version=0),
        "bad-magic": rec(magic=b"CKDBSTOX"),
        "short": rec()[:-1],
    }


def metadata_docs() -> dict[str, bytes]:
    docs = {
        "valid": _meta_doc(),
        "manual": _meta_doc(kind="manual", name="before-refactor", parent=None),
        "no-components": _meta_doc(components=[]),
        "other-cid": _meta_doc(id=bytes(16)),
        "missing-field": {k: v for k, v in _meta_doc().items() if k != "seq"},
        "bug-unknown-rtype": _meta_doc(components=[[99, "x", 1, 1, b"d"]]),
        "bug-short-component": _meta_doc(components=[[2]]),
        "float-created": _meta_doc(created_at=1.5),
        # Known bugs (see fuzz/README.md): these raise OverflowError / MemoryError today.
        "bug-created-inf": _meta_doc(created_at=math.inf),
        "seq-nan": _meta_doc(seq=math.nan),
        "bug-id-huge-int": _meta_doc(id=2**40),
    }
    out = {name: encoding.encode(d) for name, d in docs.items()}
    out["not-a-map"] = encoding.encode([1, 2, 3])
    return out


def keyring_records() -> dict[str, bytes]:
    plain = keyring_plaintexts()
    return {name: t.seal_keyring(body) for name, body in plain.items()} | {
        "wrong-aad": t.KEYRING_NONCE + AESGCM(t.KEK).encrypt(t.KEYRING_NONCE, plain["valid"], b"x"),
        "short": b"\x00" * 27,
    }


def keyring_plaintexts() -> dict[str, bytes]:
    docs = {
        "valid": _keyring_doc(),
        "one-key": _keyring_doc(keys={7: b"z" * 32}, active=7),
        "active-missing": _keyring_doc(active=3),
        "str-key-id": _keyring_doc(keys={"1": b"k" * 32}),
        "no-content": {k: v for k, v in _keyring_doc().items() if k != "content"},
        # Known bugs (see fuzz/README.md): these raise AttributeError / OverflowError today.
        "bug-keys-list": _keyring_doc(keys=[b"k" * 32]),
        "bug-active-inf": _keyring_doc(active=math.inf),
        "bug-content-huge-int": _keyring_doc(content=2**40),
    }
    out = {name: encoding.encode(d) for name, d in docs.items()}
    out["garbage"] = b"\xc1"
    return out


def _ck() -> object:
    from ckdb.remote.format import Ck

    meta_raw = encoding.encode(_meta_doc())
    frames = ((int(RecordType.COMPONENT), "task", 0, 400, b"x" * 180),
              (int(RecordType.MANIFEST), "files", -1, 300_000, b"b" * 32))  # fmt: skip
    return Ck(meta_raw, 1, frames, ((b"l" * 32, b"r" * 32),), t.CID, 7)


def remote_segments() -> dict[str, bytes]:
    from ckdb.remote.format import Segment, encode_segment

    ck = _ck()
    base = ("wf-42", 3, 2, b"o" * 16, "host-a", b"n" * 16, b"p" * 32, 1_700_000_000_000_000)
    ops = (("put", ck), ("flags", t.CID, 1), ("del", (t.CID,)))
    out = {
        "log": encode_segment(Segment("log", *base, ops)),  # type: ignore[arg-type]
        "fence": encode_segment(Segment("fence", *base, ())),  # type: ignore[arg-type]
    }
    out["garbage"] = b"\x80"
    return out


def remote_claims() -> dict[str, bytes]:
    from ckdb.remote.format import Claim, encode_claim

    return {"claim": encode_claim(Claim("wf-42", 2, b"o" * 16, "host-b", 1_700_000_000_000_000)),
            "garbage": b"\x81\xa1v\x02"}  # fmt: skip


def remote_snapshots() -> dict[str, bytes]:
    from ckdb.remote.format import Snapshot, encode_snapshot

    snap = Snapshot("wf-42", 9, 2, b"o" * 16, b"p" * 32, 1_700_000_000_000_000, (_ck(),))  # type: ignore[arg-type]
    return {"snapshot": encode_snapshot(snap), "empty": encode_snapshot(
        Snapshot("wf-42", 1, 1, b"o" * 16, b"p" * 32, 0, ()))}  # fmt: skip


SEEDS = {
    "frame": frames,
    "frame_retag": frames_untagged,
    "registry": registry_entries,
    "registry_key": registry_keys,
    "checkpoint_id": checkpoint_ids,
    "encoding_decode": msgpack_docs,
    "format_record": format_records,
    "metadata": metadata_docs,
    "keyring_unwrap": keyring_records,
    "keyring_body": keyring_plaintexts,
    "remote_segment": remote_segments,
    "remote_claim": remote_claims,
    "remote_snapshot": remote_snapshots,
}
assert set(SEEDS) == set(t.TARGETS)


def main() -> None:
    for target, make in SEEDS.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for name, data in make().items():
            (folder / f"seed-{name}").write_bytes(data)
        print(f"{target}: {len(list(folder.iterdir()))} files")


if __name__ == "__main__":
    main()
