"""CkdbSaver's large channel values: stored as content-addressed pieces (ckdb 0.5), read back
exactly, deduplicated across versions, collected with their blobs, damage an error never data;
values written whole by older ckdb still read."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.base")

from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata

import ckdb
from ckdb import encoding
from ckdb.errors import IntegrityError
from ckdb.integrations.langgraph import CkdbSaver
from ckdb.retention import RetentionPolicy
from ckdb.tables import langgraph_values as values
from ckdb.tables.langgraph_layout import DB_BLOBS, DB_CHUNKS


def _cfg(tid: str, cid: str | None = None, ns: str = "") -> Any:
    conf: dict[str, Any] = {"thread_id": tid, "checkpoint_ns": ns}
    if cid:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def _message(i: int) -> dict[str, str]:
    rng = random.Random(i)
    return {"role": "user", "content": " ".join(str(rng.random()) for _ in range(60))}


class Conversation:
    """A thread whose "messages" channel grows every put (LangGraph's add reducer)."""

    def __init__(self, saver: CkdbSaver, tid: str = "t", ns: str = "") -> None:
        self.saver, self.tid, self.ns = saver, tid, ns
        self.messages: list[dict[str, str]] = []
        self.versions: dict[str, Any] = {}
        self.parent: str | None = None
        self.ids: list[str] = []
        self.states: list[list[dict[str, str]]] = []

    def step(self, add: int = 1, turn: int = 0) -> str:
        self.messages = self.messages + [_message(len(self.messages) + j) for j in range(add)]
        new = {c: self.saver.get_next_version(self.versions.get(c), None) for c in ("messages",)}
        new["turn"] = self.saver.get_next_version(self.versions.get("turn"), None)
        self.versions.update(new)
        cp = generate_checkpoint(
            channel_values={"messages": self.messages, "turn": turn},
            channel_versions=dict(self.versions),
        )
        cfg = self.saver.put(
            _cfg(self.tid, self.parent, self.ns), cp, generate_metadata(step=turn), new
        )
        self.parent = cfg["configurable"]["checkpoint_id"]
        self.ids.append(self.parent)
        self.states.append(self.messages)
        return self.parent

    def check(self) -> None:
        for cid, state in zip(self.ids, self.states, strict=True):
            tup = self.saver.get_tuple(_cfg(self.tid, cid, self.ns))
            assert tup is not None
            assert tup.checkpoint["channel_values"]["messages"] == state


def _rows(store: ckdb.Store, db: bytes) -> dict[bytes, bytes]:
    with store._env.read() as txn:
        return {bytes(k): bytes(v) for k, v in txn.range(db)}


def _referenced(saver: CkdbSaver, store: ckdb.Store) -> set[bytes]:
    """Chunk keys named by the stored blob records (each verified)."""
    out: set[bytes] = set()
    for key, value in _rows(store, DB_BLOBS).items():
        ns_prefix = key[: 4 + key[1]]  # thread part (u16 length) and the root ns part (empty)
        digests = values.parse(saver._unframe(DB_BLOBS, key, value), "test")[4]
        out.update(ns_prefix + digests[i : i + 32] for i in range(0, len(digests), 32))
    return out


@pytest.fixture
def saver(store: ckdb.Store) -> CkdbSaver:
    return CkdbSaver(store)


def test_a_growing_value_is_stored_as_pieces_and_read_back_exactly(
    saver: CkdbSaver, store: ckdb.Store
) -> None:
    conv = Conversation(saver)
    while len(saver.serde.dumps_typed(conv.messages)[1]) < 4 * values.CHUNK_MIN:
        conv.step(add=20)
    assert _rows(store, DB_CHUNKS), "a value over CHUNK_MIN is stored as pieces"
    before = set(_rows(store, DB_CHUNKS))
    conv.step(add=1)
    added = set(_rows(store, DB_CHUNKS)) - before
    # one message appended: the first piece (the list's length) and the tail are new; the
    # pieces in between are shared with the previous version
    assert 1 <= len(added) <= 3, len(added)
    conv.check()
    assert _referenced(saver, store) == set(_rows(store, DB_CHUNKS))


def test_small_values_stay_one_frame(saver: CkdbSaver, store: ckdb.Store) -> None:
    conv = Conversation(saver)
    for _ in range(3):
        conv.step()
    assert not _rows(store, DB_CHUNKS)
    conv.check()


def test_a_damaged_or_missing_piece_is_an_error_never_data(
    saver: CkdbSaver, store: ckdb.Store
) -> None:
    conv = Conversation(saver)
    conv.step(add=200)
    chunks = _rows(store, DB_CHUNKS)
    assert chunks
    key, value = sorted(chunks.items())[len(chunks) // 2]
    bad = bytearray(value)
    bad[len(bad) // 2] ^= 0x04
    store._env.write(lambda txn: txn.put(DB_CHUNKS, key, bytes(bad)))
    with pytest.raises(IntegrityError):
        saver.get_tuple(_cfg("t"))
    store._env.write(lambda txn: txn.delete(DB_CHUNKS, key))
    with pytest.raises(IntegrityError, match="missing"):
        saver.get_tuple(_cfg("t"))
    # a piece stored under another digest's key fails its tag (the key is bound into it)
    other, other_value = next(iter(sorted(chunks.items())))
    assert other != key
    store._env.write(lambda txn: txn.put(DB_CHUNKS, key, other_value))
    with pytest.raises(IntegrityError):
        saver.get_tuple(_cfg("t"))


def test_a_piece_collected_meanwhile_is_written_by_the_put_that_needs_it(
    saver: CkdbSaver, store: ckdb.Store
) -> None:
    """The presence of a piece is decided inside the put's transaction, not when its frames
    were built: a piece deleted in between is framed and written then."""
    conv = Conversation(saver)
    conv.step(add=200)
    real_prepare = values.prepare

    def prepare_then_lose_every_piece(*a: Any, **k: Any) -> values.BlobWrite:
        out = real_prepare(*a, **k)
        store._env.write(lambda txn: txn.delete_range(DB_CHUNKS, b"", None))
        return out

    values.prepare = prepare_then_lose_every_piece  # type: ignore[assignment]
    try:
        conv.step(add=1)
    finally:
        values.prepare = real_prepare  # type: ignore[assignment]
    tup = saver.get_tuple(_cfg("t"))
    assert tup is not None and tup.checkpoint["channel_values"]["messages"] == conv.messages


def test_retention_prune_and_delete_collect_pieces(saver: CkdbSaver, store: ckdb.Store) -> None:
    conv = Conversation(saver)
    for _ in range(6):
        conv.step(add=60)
    many = len(_rows(store, DB_CHUNKS))
    saver.apply_retention("t", RetentionPolicy(max_checkpoints=2))
    left = set(_rows(store, DB_CHUNKS))
    assert 0 < len(left) < many
    assert _referenced(saver, store) == left  # none leaked, none referenced missing
    conv.ids, conv.states = conv.ids[-2:], conv.states[-2:]
    conv.check()
    saver.prune(["t"], strategy="keep_latest")
    assert _referenced(saver, store) == set(_rows(store, DB_CHUNKS))
    conv.ids, conv.states = conv.ids[-1:], conv.states[-1:]
    conv.check()
    saver.delete_thread("t")
    assert not _rows(store, DB_CHUNKS)


def test_copy_thread_copies_pieces(saver: CkdbSaver, store: ckdb.Store) -> None:
    conv = Conversation(saver, "src")
    for _ in range(3):
        conv.step(add=80)
    saver.copy_thread("src", "dst")
    saver.delete_thread("src")
    tup = saver.get_tuple(_cfg("dst"))
    assert tup is not None and tup.checkpoint["channel_values"]["messages"] == conv.messages
    assert _referenced(saver, store) == set(_rows(store, DB_CHUNKS))


def test_a_remaining_blob_that_does_not_verify_keeps_every_piece(
    saver: CkdbSaver, store: ckdb.Store
) -> None:
    conv = Conversation(saver)
    for _ in range(4):
        conv.step(add=60)
    blobs = _rows(store, DB_BLOBS)
    tup = saver.get_tuple(_cfg("t", conv.ids[-1]))
    assert tup is not None
    ver = tup.checkpoint["channel_versions"]["messages"]
    key = next(k for k in blobs if ver.encode() in k)
    good = blobs[key]
    bad = bytearray(good)
    bad[-1] ^= 0x01
    store._env.write(lambda txn: txn.put(DB_BLOBS, key, bytes(bad)))
    before = set(_rows(store, DB_CHUNKS))
    saver.apply_retention("t", RetentionPolicy(max_checkpoints=1))
    assert len(_rows(store, DB_BLOBS)) < len(blobs)  # blobs were collected...
    assert set(_rows(store, DB_CHUNKS)) == before  # ...but what the damaged record needs is unknown
    store._env.write(lambda txn: txn.put(DB_BLOBS, key, good))  # repaired
    conv.ids, conv.states = conv.ids[-1:], conv.states[-1:]
    conv.step(add=1)
    saver.apply_retention("t", RetentionPolicy(max_checkpoints=1))
    left = set(_rows(store, DB_CHUNKS))
    assert before - left and _referenced(saver, store) == left  # now collected
    conv.ids, conv.states = conv.ids[-1:], conv.states[-1:]
    conv.check()


def test_values_written_whole_by_older_ckdb_still_read(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(values, "CHUNK_MIN", 1 << 40)  # as ckdb 0.4 wrote: every value whole
    old = CkdbSaver(store)
    conv = Conversation(old)
    conv.step(add=300)
    assert not _rows(store, DB_CHUNKS)
    monkeypatch.undo()
    conv.saver = CkdbSaver(store)
    conv.step(add=1)  # the new one stores pieces beside the whole value
    assert _rows(store, DB_CHUNKS)
    conv.check()


def test_a_malformed_blob_record_is_an_error() -> None:
    for doc in (
        ["msgpack", 10, 0, b""],  # no piece size
        ["msgpack", 100, 16, b"\x00" * 31],  # digests of the wrong length
        ["msgpack"],
        {"type": "msgpack"},
    ):
        with pytest.raises(IntegrityError, match="malformed"):
            values.parse(ckdb.encoding.encode(doc), "test")


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3 * values.CHUNK_MIN), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_any_sequence_of_values_reads_back_and_leaks_no_piece(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], seed: int
) -> None:
    """Values of any size around the thresholds, edited at random places (appended, changed
    in the middle, shortened): every version reads back exactly, and after a retention that
    keeps one, exactly the pieces still referenced remain."""
    rng = random.Random(seed)
    path: Path = tmp_path_factory.mktemp("v") / "s.ckdb"
    with ckdb.open(path, retention=None) as store:
        saver = CkdbSaver(store)
        parent, versions, written = None, {}, []
        text = ""
        for n in sizes:
            if text and rng.random() < 0.5:
                at = rng.randrange(len(text))
                text = (text[:at] + rng.choice("xyz") + text[at + 1 :])[:n] or "-"
            text = (text + "".join(rng.choice("abc ") for _ in range(max(0, n - len(text)))))[
                : max(n, 1)
            ]
            new = {"doc": saver.get_next_version(versions.get("doc"), None)}
            versions.update(new)
            cp = generate_checkpoint(channel_values={"doc": text}, channel_versions=dict(versions))
            cfg = saver.put(_cfg("t", parent), cp, generate_metadata(step=len(written)), new)
            parent = cfg["configurable"]["checkpoint_id"]
            written.append((parent, text))
        for cid, expected in written:
            tup = saver.get_tuple(_cfg("t", cid))
            assert tup is not None and tup.checkpoint["channel_values"]["doc"] == expected
        saver.apply_retention("t", RetentionPolicy(max_checkpoints=1))
        assert _referenced(saver, store) == set(_rows(store, DB_CHUNKS))
        tup = saver.get_tuple(_cfg("t"))
        assert tup is not None and tup.checkpoint["channel_values"]["doc"] == written[-1][1]


def test_a_read_only_store_without_pieces_opens(tmp_path: Path) -> None:
    """A store whose saver predates pieces (no lg_chunks) still opens read-only for a saver."""
    path = tmp_path / "old.ckdb"
    with ckdb.open(path, retention=None) as store:
        for name in (b"lg_checkpoints", b"lg_blobs", b"lg_writes", b"lg_runs", b"lg_settings"):
            store._env.ensure_db(name)  # what ckdb 0.4's saver created
        assert not store._env.has_db(DB_CHUNKS)
    with ckdb.open(path, readonly=True) as store:
        saver = CkdbSaver(store)
        assert saver.get_tuple(_cfg("t")) is None


def test_scrub_reports_a_damaged_piece_and_rotation_retags_pieces(
    saver: CkdbSaver, store: ckdb.Store
) -> None:
    conv = Conversation(saver)
    conv.step(add=200)
    assert store.scrub().ok
    store.rotate_key(new_data_key=True)  # pieces are frames like any other: re-tagged too
    conv.check()
    key, value = next(iter(sorted(_rows(store, DB_CHUNKS).items())))
    bad = bytearray(value)
    bad[-3] ^= 0x10
    store._env.write(lambda txn: txn.put(DB_CHUNKS, key, bytes(bad)))
    report = store.scrub()
    assert not report.ok
    assert any(f.where.startswith("lg_chunks/") for f in report.findings), report.findings


@pytest.mark.parametrize("encryption", [None, "aes-gcm"])
@pytest.mark.parametrize("ns", ["", "child:task-1"])
def test_scrub_reports_a_missing_piece_and_one_of_the_wrong_size(
    tmp_path: Path, ns: str, encryption: str | None
) -> None:
    """Every frame can verify while a chunked value is still unreadable: a piece gone (a bug
    or a tool deleted it) or a validly tagged piece of another length. scrub finds both, on
    the blob record that needs the piece, in any namespace and in an encrypted store (keys are
    digests there), also read-only; get_tuple raises, never returns data."""
    path = tmp_path / "s.ckdb"
    with ckdb.open(path, retention=None, encryption=encryption) as store:
        saver = CkdbSaver(store)
        Conversation(saver, "other").step(add=200)  # another thread's pieces stay intact
        conv = Conversation(saver, ns=ns)
        conv.step(add=200)
        assert store.scrub().ok
        ours = saver._layout.ns(saver._layout.thread("t"), ns)
        chunks = sorted(k for k in _rows(store, DB_CHUNKS) if k.startswith(ours))
        assert len(chunks) >= 3
        gone, short = chunks[0], chunks[1]
        store._env.write(lambda txn: txn.delete(DB_CHUNKS, gone))
        bad = saver._frame(DB_CHUNKS, short, b"x")
        store._env.write(lambda txn: txn.put(DB_CHUNKS, short, bad))
        report = store.scrub()
        assert not report.ok
        problems = [f.problem for f in report.findings]
        assert all(f.where.startswith("lg_blobs/") for f in report.findings), report.findings
        assert any("missing" in p for p in problems), problems
        assert any("holds 1 bytes" in p for p in problems), problems
        assert len(report.findings) == 2, report.findings  # no tag failed: only this check
        with pytest.raises(IntegrityError):
            saver.get_tuple(_cfg("t", ns=ns))
        assert saver.get_tuple(_cfg("other")) is not None
        # repair does not touch an integration's records: the same findings, nothing deleted
        assert len(store.scrub(repair=True).findings) == 2
        assert short in _rows(store, DB_CHUNKS)
    with ckdb.open(path, readonly=True) as store:
        assert len(store.scrub().findings) == 2


def test_scrub_reports_a_tagged_blob_record_it_cannot_read(
    saver: CkdbSaver, store: ckdb.Store
) -> None:
    """A blob record whose tag verifies but whose body is no record (a bug wrote it) fails
    get_tuple: scrub reports it too, once."""
    conv = Conversation(saver)
    conv.step(add=200)
    key = next(k for k, v in _rows(store, DB_BLOBS).items() if values.parse(
        saver._unframe(DB_BLOBS, k, v), "test")[1] is None)  # fmt: skip
    body = encoding.encode(["x", 10, 3, b"too short"])
    store._env.write(lambda txn: txn.put(DB_BLOBS, key, saver._frame(DB_BLOBS, key, body)))
    report = store.scrub()
    assert [f.where for f in report.findings] == [f"lg_blobs/{key.hex()}"], report.findings
    assert "malformed" in report.findings[0].problem
    with pytest.raises(IntegrityError):
        saver.get_tuple(_cfg("t"))


def test_scrub_checks_the_savers_pieces_without_langgraph(tmp_path: Path) -> None:
    """``ckdb scrub`` on a machine where LangGraph is not installed still checks pieces."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    path = tmp_path / "lg.ckdb"
    with ckdb.open(path) as store:
        conv = Conversation(CkdbSaver(store))
        conv.step(add=200)
        key = sorted(_rows(store, DB_CHUNKS))[0]
        store._env.write(lambda txn: txn.delete(DB_CHUNKS, key))
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'langgraph':\n"
        "            raise ImportError('langgraph is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import ckdb\n"
        f"with ckdb.open({str(path)!r}) as s:\n"
        "    r = s.scrub()\n"
        "print([f.problem for f in r.findings])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert len(out) == 1, out
    assert "missing" in out[0], out


def test_the_frame_memo_answers_only_for_the_exact_bytes(saver: CkdbSaver) -> None:
    """A frame this saver tagged reads back by comparison; other bytes at the same address
    (an older valid frame, damage) are verified in full and give their own body or an error."""
    key = b"\x00\x01t\x00\x00k"
    first = saver._frame(DB_BLOBS, key, b"first body")
    second = saver._frame(DB_BLOBS, key, b"second body")  # the memo now holds this one
    assert saver._unframe(DB_BLOBS, key, second) == b"second body"
    assert saver._unframe(DB_BLOBS, key, first) == b"first body"
    bad = bytearray(second)
    bad[-1] ^= 0x01
    with pytest.raises(IntegrityError):
        saver._unframe(DB_BLOBS, key, bytes(bad))
    with pytest.raises(IntegrityError):  # a frame tagged for another key
        saver._unframe(DB_BLOBS, key + b"x", second)


def test_the_frame_memo_is_bounded() -> None:
    memo = values.FrameMemo()
    body = b"b" * 1000
    memo.put(DB_BLOBS, b"first", b"f" * 1000, body)
    assert memo.get(DB_BLOBS, b"first", b"f" * 1000) == body  # a hit
    for i in range(2 * memo.MAX_BYTES // 2100):
        memo.put(DB_BLOBS, i.to_bytes(8, "big"), b"f" * 1000, body)
        assert memo._bytes <= memo.MAX_BYTES
    assert memo.get(DB_BLOBS, b"first", b"f" * 1000) is None  # dropped when it filled up
    memo.put(DB_BLOBS, b"big", b"f" * memo.MAX_VALUE, body)  # too large: never kept
    assert memo.get(DB_BLOBS, b"big", b"f" * memo.MAX_VALUE) is None


def test_the_first_piece_sets_a_flag_older_ckdb_refuses(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckdb import _open
    from ckdb.errors import UnsupportedVersion
    from ckdb.layout import FORMAT, INCOMPAT_KNOWN, INCOMPAT_LG_PIECES

    def flags(store: ckdb.Store) -> int:
        with store._env.read() as txn:
            return int(FORMAT.unpack(txn.get(b"info", b"format"))[2])

    with ckdb.open(store_path, retention=None) as store:
        conv = Conversation(CkdbSaver(store))
        conv.step(add=5)
        assert not flags(store) & INCOMPAT_LG_PIECES  # small values: no pieces, no flag
        conv.step(add=300)
        assert flags(store) & INCOMPAT_LG_PIECES
    monkeypatch.setattr(_open, "INCOMPAT_KNOWN", INCOMPAT_KNOWN & ~INCOMPAT_LG_PIECES)
    with pytest.raises(UnsupportedVersion):  # as ckdb 0.4 would
        ckdb.open(store_path)
    monkeypatch.undo()
    with ckdb.open(store_path, retention=None) as store:  # the key check still verifies
        conv.saver = CkdbSaver(store)
        conv.check()


def test_a_read_only_saver_sees_pieces_written_after_it_opened(tmp_path: Path) -> None:
    """lg_chunks created by another process after a read-only saver opened is opened on read."""
    import subprocess
    import sys

    path = tmp_path / "s.ckdb"
    with ckdb.open(path, retention=None) as store:
        for name in (b"lg_checkpoints", b"lg_blobs", b"lg_writes", b"lg_runs", b"lg_settings"):
            store._env.ensure_db(name)
    with ckdb.open(path, readonly=True) as ro:
        reader = CkdbSaver(ro)
        assert not ro._env.is_open(DB_CHUNKS)
        writer = (
            "import sys; sys.path[:0] = sys.argv[2:]; import ckdb;"
            "from tests.test_langgraph_values import Conversation;"
            "from ckdb.integrations.langgraph import CkdbSaver;"
            "s = ckdb.open(sys.argv[1], retention=None); c = Conversation(CkdbSaver(s));"
            "c.step(add=300); s.close()"
        )
        root = str(Path(__file__).resolve().parent.parent)
        subprocess.run([sys.executable, "-c", writer, str(path), root], check=True, timeout=120)
        tup = reader.get_tuple(_cfg("t"))
        assert tup is not None
        assert tup.checkpoint["channel_values"]["messages"] == [_message(i) for i in range(300)]


def test_pieces_in_an_encrypted_store_and_with_held_writes(tmp_path: Path) -> None:
    with ckdb.open(tmp_path / "e.ckdb", retention=None, encryption="aes-gcm") as store:
        saver = CkdbSaver(store, pending_writes="with_checkpoint")
        conv = Conversation(saver)
        for _ in range(3):
            conv.step(add=120)
            saver.put_writes(_cfg("t", conv.parent), [("messages", conv.messages)], "task-1")
        assert _rows(store, DB_CHUNKS)
        for key in _rows(store, DB_CHUNKS):
            assert key[:2] == b"\x00\x20"  # the thread part is a 32-byte keyed digest here
        conv.check()
        tup = saver.get_tuple(_cfg("t"))
        assert tup is not None and tup.pending_writes[0][2] == conv.messages
        saver.copy_thread("t", "u")  # over nothing; then over itself again: replaced
        saver.copy_thread("t", "u")
        tup = saver.get_tuple(_cfg("u"))
        assert tup is not None and tup.checkpoint["channel_values"]["messages"] == conv.messages


def test_delete_for_runs_collects_pieces(saver: CkdbSaver, store: ckdb.Store) -> None:
    conv = Conversation(saver)
    for run in ("r1", "r2", "r3"):
        conv.messages = conv.messages + [_message(len(conv.messages) + j) for j in range(80)]
        new = {"messages": saver.get_next_version(conv.versions.get("messages"), None)}
        conv.versions.update(new)
        cp = generate_checkpoint(
            channel_values={"messages": conv.messages}, channel_versions=dict(conv.versions)
        )
        md = generate_metadata(step=len(conv.ids), run_id=run)
        cfg = saver.put(_cfg("t", conv.parent), cp, md, new)
        conv.parent = cfg["configurable"]["checkpoint_id"]
        conv.ids.append(conv.parent)
        conv.states.append(conv.messages)
    before = set(_rows(store, DB_CHUNKS))
    saver.delete_for_runs(["r3"])
    left = set(_rows(store, DB_CHUNKS))
    assert left < before and _referenced(saver, store) == left
    conv.ids, conv.states = conv.ids[:2], conv.states[:2]
    conv.check()
