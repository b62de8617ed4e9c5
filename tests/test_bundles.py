"""Bundles: the small state components of a checkpoint share one payload frame
(docs/format.md, "Bundles"). Layout, order, the metadata rules and damage."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

import ckdb
from ckdb import encoding
from ckdb._env import Txn
from ckdb.errors import IntegrityError
from ckdb.layout import BUNDLE_MAX, DB_PAYLOADS, Codec, RecordType, id_from_text
from ckdb.meta import METADATA_VERSION, Meta, integrity_digest


@pytest.fixture
def store(tmp_path: Path) -> ckdb.Store:
    return ckdb.open(tmp_path / "s", retention=None)


def _layout(info: ckdb.CheckpointInfo) -> list[tuple[str, str, bool]]:
    """(type, name, has a frame of its own) per metadata entry, in order."""
    return [(c.type, c.name, c.stored_size > 0) for c in info.components]


def test_small_components_share_a_frame_in_the_callers_order(store: ckdb.Store) -> None:
    big = {"lines": ["x" * 100] * (BUNDLE_MAX // 100)}  # over BUNDLE_MAX encoded
    state = {"z": 1, "big": big, "a": {"k": [1.5, None]}, "m": "text"}
    info = store.create("wf", "p", state=state, resources={"cpu": 1}, dependencies=["x"])
    assert _layout(info) == [
        ("bundle", "", True),
        ("component", "z", False),
        ("component", "big", True),
        ("component", "a", False),
        ("component", "m", False),
        ("resources", "resources", True),
        ("dependencies", "dependencies", True),
    ]
    back = store.load(info.id)
    assert back.state == state and list(back.state) == ["z", "big", "a", "m"]
    assert back.resources == {"cpu": 1} and back.dependencies == ["x"]
    assert info.raw_size == sum(c.raw_size for c in info.components if c.type != "bundle")
    assert info.stored_size == sum(c.stored_size for c in info.components)
    assert store.stats()["payload_frames"] == 4  # bundle, big, resources, dependencies
    assert store.validate(info.id, "comprehensive").ok


def test_a_single_small_component_keeps_its_own_frame(store: ckdb.Store) -> None:
    info = store.create("wf", "p", state={"only": 1})
    assert _layout(info) == [("component", "only", True)]
    assert store.load(info.id).state == {"only": 1}


def test_damaged_bundle_fails_every_component_it_holds(store: ckdb.Store) -> None:
    good = store.create("wf", "p", state={"a": 1, "b": 2}).id
    bad = store.create("wf", "p", state={"a": 3, "b": 4}).id
    key = store._payload_address(bad, RecordType.COMPONENT, "b")

    def flip(txn: Txn) -> None:
        value = bytearray(txn.get(DB_PAYLOADS, key) or b"")
        value[len(value) // 2] ^= 1
        txn.put(DB_PAYLOADS, key, bytes(value))

    store._env.write(flip)
    with pytest.raises(IntegrityError, match="integrity tag mismatch"):
        store.load(bad)
    report = store.validate(bad, "basic")
    assert not report.ok and report.workflow_state_valid is False
    assert store.load(good).state == {"a": 1, "b": 2}


def test_a_validly_tagged_bundle_that_disagrees_with_the_digests_is_rejected(
    store: ckdb.Store,
) -> None:
    """Components swapped inside a bundle (same sizes, a correct tag: as a writer bug would
    leave them) fail the per-component digests on load and the bundle digest on validate."""
    cid = store.create("wf", "p", state={"a": 1, "b": 2}).id
    key = store._payload_address(cid, RecordType.COMPONENT, "a")
    swapped = encoding.encode(2) + encoding.encode(1)
    frame = store.tables.frames.frame(RecordType.BUNDLE, DB_PAYLOADS, key, swapped, Codec.NONE)
    store._env.write(lambda txn: txn.put(DB_PAYLOADS, key, frame))
    with pytest.raises(IntegrityError, match="digest mismatch"):
        store.load(cid)
    report = store.validate(cid, "basic")
    assert not report.ok
    assert any("bundle" in f for f in report.findings)


def _doc(components: list[list[Any]]) -> bytes:
    cid = id_from_text("01JD0000000000000000000000")
    return encoding.encode(
        {
            "v": METADATA_VERSION,
            "id": cid,
            "workflow_id": "wf",
            "phase": "p",
            "kind": "automatic",
            "name": None,
            "created_at": 1,
            "created_by": "t",
            "seq": 1,
            "parent": None,
            "components": components,
            "integrity": integrity_digest(cid, components),
        }
    )


D = hashlib.sha256(b"x").digest()
C, B, R = int(RecordType.COMPONENT), int(RecordType.BUNDLE), int(RecordType.RESOURCES)


@pytest.mark.parametrize(
    "components",
    [
        pytest.param([[C, "a", 1, 0, D]], id="bundled-without-a-bundle"),
        pytest.param([[C, "a", 1, 0, D], [B, "", 1, 60, D]], id="bundled-before-the-bundle"),
        pytest.param([[B, "", 2, 60, D], [C, "a", 1, 0, D]], id="sizes-disagree"),
        pytest.param([[B, "", 0, 60, D]], id="empty-bundle"),
        pytest.param([[B, "x", 1, 60, D], [C, "a", 1, 0, D]], id="named-bundle"),
        pytest.param([[B, "", 1, 0, D], [C, "a", 1, 0, D]], id="bundle-without-a-frame"),
        pytest.param([[B, "", 1, 60, D], [C, "a", 1, 0, D], [B, "", 1, 60, D]], id="two-bundles"),
        pytest.param([[B, "", 1, 60, D], [R, "resources", 1, 0, D]], id="bundled-resources"),
    ],
)
def test_metadata_with_a_malformed_bundle_is_an_integrity_error(
    components: list[list[Any]],
) -> None:
    with pytest.raises(IntegrityError):
        Meta.parse(id_from_text("01JD0000000000000000000000"), _doc(components))


def test_a_well_formed_bundle_parses() -> None:
    comps = [[B, "", 3, 60, D], [C, "a", 1, 0, D], [C, "big", 9, 70, D], [C, "b", 2, 0, D]]
    meta = Meta.parse(id_from_text("01JD0000000000000000000000"), _doc(comps))
    assert meta.components == comps


def test_a_bundle_holds_at_most_bundle_total_max(store: ckdb.Store) -> None:
    from ckdb.layout import BUNDLE_TOTAL_MAX  # noqa: PLC0415

    chunk = "y" * (BUNDLE_MAX - 100)  # each just under BUNDLE_MAX encoded
    state = {f"c{i}": chunk for i in range(BUNDLE_TOTAL_MAX // BUNDLE_MAX + 2)}
    info = store.create("wf", "p", state=state)
    bundle = next(c for c in info.components if c.type == "bundle")
    inside = [c.name for c in info.components if c.type == "component" and c.stored_size == 0]
    assert bundle.raw_size <= BUNDLE_TOTAL_MAX
    assert inside == [f"c{i}" for i in range(len(inside))] and 2 <= len(inside) < len(state)
    assert store.load(info.id).state == state


def test_a_missing_bundle_is_one_finding_per_component_it_holds(store: ckdb.Store) -> None:
    cid = store.create("wf", "p", state={"a": 1, "b": 2, "c": 3}).id
    key = store._payload_address(cid, RecordType.COMPONENT, "a")
    store._env.write(lambda txn: txn.delete(DB_PAYLOADS, key))
    report = store.validate(cid, "basic")
    assert report.workflow_state_valid is False
    assert report.findings == (
        "the bundle is missing",
        "component 'a': the bundle is missing",
        "component 'b': the bundle is missing",
        "component 'c': the bundle is missing",
    )
