"""Retention: the pure planner against reference implementations, and the store's prune,
automatic retention, per-workflow policies and chunk reclamation.

Planner properties (Hypothesis, on ``ckdb.retention.plan``):
- the newest valid checkpoint and every pinned one are kept; keep + delete is the input, disjoint;
- every kept checkpoint has a reason; planning the kept set again deletes nothing more;
- without keep_* rules the plan equals a brute-force reading of the seed rule (written here, not
  copied from the planner); with monotonic clocks it equals a reference of the keep_* rules too;
- keep_* rules only ever keep more.

Store tests: presets and typos (a typo deletes nothing), automatic retention (after automatic
creates only, bounded by AUTO_MAX, off per workflow or per store), prune (dry run, several
workflows, ``now``, marks, pins, bounded transactions, skipped victims) and chunk reclamation
(survivors restore and validate; every chunk is referenced exactly by the surviving manifests).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ckdb
import ckdb._create
import ckdb.store
from ckdb import pruning
from ckdb.layout import (
    DB_CHUNKS,
    DB_PAYLOADS,
    DB_REFS,
    DB_REGISTRY,
    RecordType,
    id_from_text,
    payload_key,
    workflow_key,
)
from ckdb.retention import (
    PRESETS,
    Entry,
    RetentionPolicy,
    RetentionResult,
    plan,
    resolve_policy,
    simple_doomed,
    simple_plan,
)
from ckdb.tables.chunks import decode_refs

BASE = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

# --- strategies ----------------------------------------------------------------------------------


@st.composite
def entry_lists(draw: st.DrawFn, *, monotonic: bool = False) -> list[Entry]:
    """Registry entries of one workflow: sequences 1..n (gaps allowed), times in minutes around
    BASE with many equal timestamps, random pins and marks. Returned in a random order."""
    n = draw(st.integers(0, 30))
    # A small range of minutes makes equal timestamps common; a wide one spans hours/days/weeks.
    scale = draw(st.sampled_from([1, 17, 60 * 24]))
    offsets = draw(st.lists(st.integers(-40, 40), min_size=n, max_size=n))
    if monotonic:
        offsets.sort()
    seqs = sorted(draw(st.sets(st.integers(1, 10_000), min_size=n, max_size=n)))
    entries = [
        Entry(
            seq=seq,
            id=f"c{seq:05d}",
            created_at=BASE + timedelta(minutes=off * scale),
            pinned=draw(st.integers(0, 3)) == 0,
            marked=draw(st.integers(0, 4)) == 0,
        )
        for seq, off in zip(seqs, offsets, strict=True)
    ]
    return draw(st.permutations(entries))


ages = st.one_of(
    st.none(),
    st.integers(0, 60 * 24 * 60).map(lambda m: timedelta(minutes=m)),
)


@st.composite
def policies(draw: st.DrawFn, *, keep_rules: bool = True) -> RetentionPolicy:
    return RetentionPolicy(
        max_checkpoints=draw(st.one_of(st.none(), st.integers(0, 12))),
        max_age=draw(ages),
        keep_within=draw(ages) if keep_rules else None,
        keep_hourly=draw(st.integers(0, 4)) if keep_rules else 0,
        keep_daily=draw(st.integers(0, 4)) if keep_rules else 0,
        keep_weekly=draw(st.integers(0, 3)) if keep_rules else 0,
    )


nows = st.integers(-60 * 24 * 90, 60 * 24 * 90).map(lambda m: BASE + timedelta(minutes=m))


def without_keep_rules(p: RetentionPolicy) -> RetentionPolicy:
    return RetentionPolicy(max_checkpoints=p.max_checkpoints, max_age=p.max_age, name=p.name)


# --- reference implementations (independent of the planner) --------------------------------------


def reference_seed_delete(entries: list[Entry], policy: RetentionPolicy, now: datetime) -> set[str]:
    """The seed rule read literally: the union of "beyond the newest max_checkpoints" (pinned ones
    not counted) and "older than max_age", minus pinned ones and minus the newest unmarked one."""
    by_seq = sorted(entries, key=lambda e: -e.seq)
    unpinned = [e for e in by_seq if not e.pinned]
    beyond = (
        set()
        if policy.max_checkpoints is None
        else {e.id for e in unpinned[policy.max_checkpoints :]}
    )
    too_old = (
        set()
        if policy.max_age is None
        else {e.id for e in unpinned if now - e.created_at > policy.max_age}
    )
    protected = {e.id for e in entries if e.pinned}
    valid = [e for e in by_seq if not e.marked]
    if valid:
        protected.add(valid[0].id)
    return (beyond | too_old) - protected


def reference_keep_rules(entries: list[Entry], policy: RetentionPolicy) -> set[str]:
    """keep_within / keep_hourly / keep_daily / keep_weekly for entries whose clock never went
    backwards: the newest checkpoint (highest sequence) of each of the N most recent time buckets
    that hold one, and every checkpoint within keep_within of the newest."""
    out: set[str] = set()
    if not entries:
        return out
    if policy.keep_within is not None:
        newest = max(e.created_at for e in entries)
        out |= {e.id for e in entries if newest - e.created_at <= policy.keep_within}

    def buckets(key: Any, n: int) -> set[str]:
        best: dict[Any, Entry] = {}
        for e in entries:
            k = key(e.created_at.astimezone(UTC))
            if k not in best or e.seq > best[k].seq:
                best[k] = e
        return {best[k].id for k in sorted(best, reverse=True)[:n]}

    out |= buckets(lambda d: (d.year, d.month, d.day, d.hour), policy.keep_hourly)
    out |= buckets(lambda d: (d.year, d.month, d.day), policy.keep_daily)
    out |= buckets(lambda d: tuple(d.isocalendar())[:2], policy.keep_weekly)
    return out


# --- planner properties --------------------------------------------------------------------------


def check_shape(entries: list[Entry], result: Any) -> None:
    kept = [k.id for k in result.keep]
    ids = [e.id for e in entries]
    assert len(kept) == len(set(kept))
    assert len(result.delete) == len(set(result.delete))
    assert not set(kept) & set(result.delete)
    assert set(kept) | set(result.delete) == set(ids)
    for k in result.keep:
        assert k.reasons, f"{k.id} kept without a reason"
        assert all(isinstance(r, str) and r for r in k.reasons)


@settings(max_examples=400)  # pure and fast; the rare cases (the keeper beyond the count) need it
@given(
    entries=entry_lists(),
    policy=st.one_of(policies(), policies(keep_rules=False)),
    now=nows,
    keeper_at=st.one_of(st.integers(0, 2), st.integers(0, 40)),
)
def test_the_fast_path_of_automatic_retention_agrees_with_the_planner(
    entries: list[Entry], policy: RetentionPolicy, now: datetime, keeper_at: int
) -> None:
    """``simple_doomed`` (run at every create) deletes what ``plan`` deletes, and
    ``simple_plan`` (a prune) plans what ``plan`` plans, for every policy
    it accepts, whichever unmarked entry is the newest valid one (those newer than it failed
    their metadata, so ``registry_entries`` hands them to the planner as marked)."""
    ordered = sorted(entries, key=lambda e: -e.seq)
    unmarked = [e for e in ordered if not e.marked]
    keeper = unmarked[keeper_at] if keeper_at < len(unmarked) else None
    given_plan = ordered
    if keeper is not None:
        given_plan = [
            e if e.seq <= keeper.seq or e.marked else e._replace(marked=True) for e in ordered
        ]
    whole = plan(given_plan, policy, now, workflow_id="wf")
    expected = whole.delete  # oldest first
    rows = [
        (e.id.encode(), round(e.created_at.timestamp() * 1_000_000), e.pinned, e.marked)
        for e in ordered
    ]
    keeper_cid = None if keeper is None else keeper.id.encode()
    got = simple_doomed(rows, policy, now, keeper_cid)
    # A prune's fast path: the whole plan, reasons and order included, and the same rows.
    prune_plan = simple_plan(rows, policy, now, keeper_cid, bytes.decode, workflow_id="wf")
    if got is None:
        assert prune_plan is None
    else:
        assert prune_plan is not None
        assert prune_plan[0] == whole
        assert prune_plan[1] == got
    if (
        policy.keep_within is not None
        or policy.keep_hourly
        or policy.keep_daily
        or (policy.keep_weekly)
    ):
        assert got is None
        return
    assert got is not None
    assert [ordered[i].id for i in reversed(got)] == list(expected)


@given(entries=entry_lists(), policy=policies(), now=nows)
def test_plan_invariants(entries: list[Entry], policy: RetentionPolicy, now: datetime) -> None:
    result = plan(entries, policy, now, workflow_id="wf")
    check_shape(entries, result)
    kept = {k.id for k in result.keep}
    valid = sorted((e for e in entries if not e.marked), key=lambda e: e.seq)
    if valid:
        assert valid[-1].id in kept, "the newest valid checkpoint was planned for deletion"
        reasons = next(k.reasons for k in result.keep if k.id == valid[-1].id)
        assert any("newest valid" in r for r in reasons)
    for e in entries:
        if e.pinned:
            assert e.id in kept, "a pinned checkpoint was planned for deletion"
    assert result.workflow_id == "wf"


@given(entries=entry_lists(), policy=policies(), now=nows)
def test_plan_is_idempotent(entries: list[Entry], policy: RetentionPolicy, now: datetime) -> None:
    first = plan(entries, policy, now)
    kept = {k.id for k in first.keep}
    survivors = [e for e in entries if e.id in kept]
    again = plan(survivors, policy, now)
    assert again.delete == (), "re-planning the kept set deleted more"
    assert {k.id for k in again.keep} == kept


@given(entries=entry_lists(), policy=policies(keep_rules=False), now=nows)
def test_plan_matches_seed_reference(
    entries: list[Entry], policy: RetentionPolicy, now: datetime
) -> None:
    result = plan(entries, policy, now)
    assert set(result.delete) == reference_seed_delete(entries, policy, now)


@given(entries=entry_lists(monotonic=True), policy=policies(), now=nows)
def test_plan_matches_full_reference_with_monotonic_clock(
    entries: list[Entry], policy: RetentionPolicy, now: datetime
) -> None:
    result = plan(entries, policy, now)
    expected = reference_seed_delete(entries, policy, now) - reference_keep_rules(entries, policy)
    assert set(result.delete) == expected


@given(entries=entry_lists(), policy=policies(), now=nows)
def test_keep_rules_only_keep_more(
    entries: list[Entry], policy: RetentionPolicy, now: datetime
) -> None:
    with_rules = set(plan(entries, policy, now).delete)
    seed_only = set(plan(entries, without_keep_rules(policy), now).delete)
    assert with_rules <= seed_only


@given(entries=entry_lists(), policy=policies(), now=nows)
def test_plan_ignores_input_order(
    entries: list[Entry], policy: RetentionPolicy, now: datetime
) -> None:
    a = plan(entries, policy, now)
    b = plan(list(reversed(entries)), policy, now)
    assert set(a.delete) == set(b.delete)
    assert {k.id: k.reasons for k in a.keep} == {k.id: k.reasons for k in b.keep}


@given(n=st.integers(1, 40), limit=st.integers(0, 12))
def test_same_millisecond_checkpoints_are_counted_not_bucketed(n: int, limit: int) -> None:
    entries = [Entry(seq=i, id=f"c{i:03d}", created_at=BASE) for i in range(1, n + 1)]
    result = plan(entries, RetentionPolicy(max_checkpoints=limit), BASE)
    keep_n = max(limit, 1)  # the newest valid one survives max_checkpoints=0
    assert {k.id for k in result.keep} == {
        f"c{i:03d}" for i in range(max(1, n - keep_n + 1), n + 1)
    }


def test_plan_age_boundaries_are_inclusive() -> None:
    """Exactly max_age old is not "older than max_age"; exactly keep_within of the newest is
    within it."""
    hour = timedelta(hours=1)
    entries = [
        Entry(seq=1, id="a", created_at=BASE),
        Entry(seq=2, id="b", created_at=BASE + hour),
        Entry(seq=3, id="c", created_at=BASE + 2 * hour),
    ]
    now = BASE + 2 * hour
    assert plan(entries, RetentionPolicy(max_age=hour), now).delete == ("a",)
    kept = plan(entries, RetentionPolicy(max_checkpoints=0, keep_within=hour), now)
    assert kept.delete == ("a",)


def test_plan_rejects_naive_now() -> None:
    with pytest.raises(ckdb.InvalidInput):
        plan([], RetentionPolicy(), datetime(2024, 1, 1))


def test_plan_reasons_are_specific() -> None:
    entries = [Entry(seq=i, id=f"c{i}", created_at=BASE + timedelta(hours=i)) for i in range(1, 6)]
    entries[1] = Entry(seq=2, id="c2", created_at=entries[1].created_at, pinned=True)
    result = plan(
        entries, RetentionPolicy(max_checkpoints=2, keep_hourly=0), BASE + timedelta(hours=6)
    )
    reasons = {k.id: k.reasons for k in result.keep}
    assert set(reasons) == {"c5", "c4", "c2"}
    assert any("newest valid" in r for r in reasons["c5"])
    assert reasons["c2"] == ("pinned",)
    assert any("newest 2" in r for r in reasons["c4"])
    assert set(result.delete) == {"c1", "c3"}


# --- policies ------------------------------------------------------------------------------------


def test_presets() -> None:
    assert PRESETS["minimal"].max_checkpoints == 3
    assert PRESETS["minimal"].max_age == timedelta(days=7)
    assert PRESETS["standard"].max_checkpoints == 10
    assert PRESETS["standard"].max_age == timedelta(days=30)
    assert PRESETS["extended"].max_checkpoints == 50
    assert PRESETS["extended"].max_age == timedelta(days=90)
    assert resolve_policy("default") == PRESETS["standard"]
    for name in ("minimal", "standard", "extended"):
        assert resolve_policy(name) == PRESETS[name]
        assert resolve_policy(name).name == name
    custom = RetentionPolicy(max_checkpoints=4)
    assert resolve_policy(custom) is custom


def test_policy_ages_in_days_or_timedelta() -> None:
    assert RetentionPolicy(max_age=7).max_age == timedelta(days=7)
    assert RetentionPolicy(max_age=0.5).max_age == timedelta(hours=12)
    assert RetentionPolicy(max_age=timedelta(hours=3)).max_age == timedelta(hours=3)
    assert RetentionPolicy(keep_within=2).keep_within == timedelta(days=2)
    assert RetentionPolicy().max_age is None and RetentionPolicy().max_checkpoints is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_checkpoints": -1},
        {"max_checkpoints": 1.5},
        {"max_checkpoints": True},
        {"max_checkpoints": "3"},
        {"max_age": -1},
        {"max_age": timedelta(seconds=-1)},
        {"max_age": "7"},
        {"max_age": True},
        {"keep_within": -2},
        {"keep_hourly": -1},
        {"keep_daily": 1.0},
        {"keep_weekly": None},
    ],
)
def test_bad_policy_values_are_invalid_input(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ckdb.InvalidInput):
        RetentionPolicy(**kwargs)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300])
def test_non_finite_ages_are_invalid_input(value: float) -> None:
    with pytest.raises(ckdb.InvalidInput):
        RetentionPolicy(max_age=value)


@pytest.mark.parametrize("bad", ["typo", "Standard", "", 42, 3.0, ["minimal"]])
def test_resolve_policy_rejects_unknown(bad: Any) -> None:
    with pytest.raises(ckdb.InvalidInput):
        resolve_policy(bad)


@given(policy=policies())
def test_policy_doc_round_trip(policy: RetentionPolicy) -> None:
    assert RetentionPolicy.from_doc(policy.to_doc()) == policy


# --- store helpers -------------------------------------------------------------------------------


def fill(store: ckdb.Store, wf: str, n: int, **kwargs: Any) -> list[str]:
    """n checkpoints of workflow wf, oldest first; returns their ids."""
    return [store.create(wf, "p", state={"task": {"i": i}}, **kwargs).id for i in range(n)]


def ids_of(store: ckdb.Store, wf: str | None = None) -> list[str]:
    """Listed ids, oldest first."""
    return [c.id for c in reversed(store.list(wf))]


@pytest.fixture
def fast_store(store_path: Path) -> Iterator[ckdb.Store]:
    """A store without fsync (for tests that need hundreds of checkpoints; no power loss here)."""
    with ckdb.open(store_path, retention=None, _unsafe_nosync=True) as s:
        yield s


# --- typos delete nothing ------------------------------------------------------------------------


def test_unknown_policy_changes_nothing(store_path: Path) -> None:
    with ckdb.open(store_path, retention=None) as s:
        fill(s, "wf", 15)
        fill(s, "other", 4)
        s.set_retention("other", "minimal")
        before = s.list()
        for bad in ("typo", "Minimal", 7):
            with pytest.raises(ckdb.InvalidInput):
                s.prune(policy=bad)  # type: ignore[arg-type]
            with pytest.raises(ckdb.InvalidInput):
                s.prune("wf", policy=bad)  # type: ignore[arg-type]
            with pytest.raises(ckdb.InvalidInput):
                s.set_retention("wf", bad)  # type: ignore[arg-type]
            with pytest.raises(ckdb.InvalidInput):
                s.set_retention("other", bad)  # type: ignore[arg-type]
        assert s.list() == before
        assert s.get_retention("wf") is None
        assert s.get_retention("other") == PRESETS["minimal"]
    with pytest.raises(ckdb.InvalidInput):
        ckdb.open(store_path, retention="typo")
    with ckdb.open(store_path, retention=None) as s:
        assert s.list() == before
        assert s.get_retention("other") == PRESETS["minimal"]
        # The env of the failed open was not left behind: automatic creates still work here.
        s.create("wf", "p")


def test_open_with_unknown_policy_on_new_path_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "never.ckdb"
    with pytest.raises(ckdb.InvalidInput):
        ckdb.open(path, retention="typo")
    assert not path.exists()


# --- automatic retention -------------------------------------------------------------------------


def test_default_policy_is_standard(store_path: Path) -> None:
    with ckdb.open(store_path) as s:
        assert s.get_retention("wf") == PRESETS["standard"]
    with ckdb.open(store_path, retention="default") as s:
        assert s.get_retention("wf") == PRESETS["standard"]
    with ckdb.open(store_path, retention="minimal") as s:
        assert s.get_retention("wf") == PRESETS["minimal"]
    with ckdb.open(store_path, retention=None) as s:
        assert s.get_retention("wf") is None


def test_automatic_retention_keeps_newest_ten(store_path: Path) -> None:
    with ckdb.open(store_path) as s:
        created = fill(s, "wf", 15)
        assert ids_of(s, "wf") == created[-10:]
        assert s.stats()["checkpoints"] == 10
        assert s.stats()["payload_frames"] == 10


def test_manual_checkpoints_do_not_trigger_but_count(store_path: Path) -> None:
    with ckdb.open(store_path) as s:
        manual = [
            s.create("wf", "p", kind="manual", name=f"m{i}", state={"i": {"v": i}}).id
            for i in range(12)
        ]
        assert ids_of(s, "wf") == manual, "a manual checkpoint applied retention"
        auto = s.create("wf", "p").id
        assert ids_of(s, "wf") == [*manual[-9:], auto], "manual checkpoints were not considered"


def test_pinned_survive_automatic_retention_and_do_not_count(store_path: Path) -> None:
    with ckdb.open(store_path) as s:
        pinned = [s.create("wf", "p", pinned=True).id]
        created = fill(s, "wf", 3)
        s.pin(created[1])
        pinned.append(created[1])
        created += fill(s, "wf", 15)
        left = ids_of(s, "wf")
        unpinned = [c for c in created if c not in pinned]
        assert set(left) == set(pinned) | set(unpinned[-10:])
        assert len(left) == 12
        # Unpinning makes them ordinary again: the next automatic create drops them.
        s.unpin(pinned[0])
        s.unpin(pinned[1])
        newest = s.create("wf", "p").id
        assert ids_of(s, "wf") == [*unpinned[-9:], newest]


def test_same_millisecond_automatic_checkpoints_are_counted(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = int(BASE.timestamp() * 1_000_000)
    monkeypatch.setattr(ckdb._create, "now_us", lambda: frozen)  # create takes its clock there
    with ckdb.open(store_path) as s:
        created = fill(s, "wf", 15)
        assert {c.created_at for c in s.list("wf")} == {BASE}
        assert ids_of(s, "wf") == created[-10:]


def test_automatic_retention_uses_workflow_policy(store_path: Path) -> None:
    with ckdb.open(store_path) as s:
        s.set_retention("small", "minimal")
        s.set_retention("off", None)
        s.set_retention("custom", RetentionPolicy(max_checkpoints=5))
        made = {wf: fill(s, wf, 14) for wf in ("small", "off", "custom", "default")}
        assert ids_of(s, "small") == made["small"][-3:]
        assert ids_of(s, "off") == made["off"]
        assert ids_of(s, "custom") == made["custom"][-5:]
        assert ids_of(s, "default") == made["default"][-10:]


def test_store_without_default_retention(store_path: Path) -> None:
    with ckdb.open(store_path, retention=None) as s:
        s.set_retention("on", "minimal")
        kept_all = fill(s, "plain", 14)
        on = fill(s, "on", 6)
        assert ids_of(s, "plain") == kept_all
        assert ids_of(s, "on") == on[-3:]


def test_set_and_get_retention_persist(store_path: Path) -> None:
    custom = RetentionPolicy(
        max_checkpoints=7,
        max_age=timedelta(days=2, hours=3),
        keep_within=timedelta(hours=5),
        keep_hourly=2,
        keep_daily=3,
        keep_weekly=4,
        name="mine",
    )
    with ckdb.open(store_path) as s:
        s.set_retention("a", "extended")
        s.set_retention("b", None)
        s.set_retention("c", custom)
        s.set_retention("d", "default")
    for default in ("standard", None, "minimal"):
        with ckdb.open(store_path, retention=default) as s:
            assert s.get_retention("a") == PRESETS["extended"]
            assert s.get_retention("b") is None  # its own "none" beats the store default
            assert s.get_retention("c") == custom
            assert s.get_retention("d") == PRESETS["standard"]
            expected = None if default is None else PRESETS[default]
            assert s.get_retention("e") == expected
    with ckdb.open(store_path) as s:
        s.set_retention("c", "minimal")  # replaced, not merged
    with ckdb.open(store_path) as s:
        assert s.get_retention("c") == PRESETS["minimal"]


def test_automatic_retention_is_bounded_per_create(store_path: Path) -> None:
    with ckdb.open(store_path, retention=None, _unsafe_nosync=True) as s:
        created = fill(s, "wf", 40)
        s.set_retention("wf", RetentionPolicy(max_checkpoints=1))
        created.append(s.create("wf", "p").id)
        left = ids_of(s, "wf")
        assert len(left) == 41 - pruning.AUTO_MAX
        assert left == created[pruning.AUTO_MAX :], "automatic retention must drop the oldest"
        while len(left) > 1:
            created.append(s.create("wf", "p").id)
            left = ids_of(s, "wf")
        assert left == created[-1:]


# --- prune ---------------------------------------------------------------------------------------


def test_prune_result_and_reasons(store: ckdb.Store) -> None:
    created = fill(store, "wf", 15)
    store.pin(created[0])
    result = store.prune("wf", "standard")
    assert isinstance(result, RetentionResult)
    assert not result.dry_run
    [p] = result.plans
    assert p.workflow_id == "wf" and p.policy == "standard"
    assert set(result.deleted) == set(created[1:5]) == set(result.planned) == set(p.delete)
    assert result.skipped == ()
    kept = {k.id: k.reasons for k in result.kept}
    assert set(kept) == {created[0], *created[5:]}
    assert kept[created[0]] == ("pinned",)
    assert any("newest valid" in r for r in kept[created[-1]])
    assert ids_of(store, "wf") == [created[0], *created[5:]]
    again = store.prune("wf", "standard")
    assert again.deleted == () and again.planned == ()


def test_dry_run_deletes_nothing(store: ckdb.Store) -> None:
    fill(store, "wf", 14)
    fill(store, "other", 5)
    before = store.list()
    stats = store.stats()
    dry = store.prune(policy="minimal", dry_run=True)
    assert dry.dry_run and dry.deleted == ()
    assert len(dry.planned) == 11 + 2
    assert store.list() == before and store.stats()["checkpoints"] == stats["checkpoints"]
    real = store.prune(policy="minimal")
    assert sorted(real.deleted) == sorted(dry.planned)
    assert {k.id for k in real.kept} == {k.id for k in dry.kept}


def test_prune_every_workflow_with_own_policies(store: ckdb.Store) -> None:
    made = {wf: fill(store, wf, 13) for wf in ("std", "min", "none", "ext")}
    store.set_retention("std", "standard")
    store.set_retention("min", "minimal")
    store.set_retention("ext", "extended")
    # "none" has no policy of its own and the store has none (retention=None): untouched.
    result = store.prune()
    assert sorted(p.workflow_id for p in result.plans) == ["ext", "min", "std"]
    assert {p.workflow_id: p.policy for p in result.plans} == {
        "ext": "extended",
        "min": "minimal",
        "std": "standard",
    }
    assert ids_of(store, "std") == made["std"][-10:]
    assert ids_of(store, "min") == made["min"][-3:]
    assert ids_of(store, "none") == made["none"]
    assert ids_of(store, "ext") == made["ext"]
    assert len(result.deleted) == 3 + 10
    # An explicit policy overrides every workflow's own, "none" included.
    result = store.prune(policy=RetentionPolicy(max_checkpoints=2))
    for wf in made:
        assert ids_of(store, wf) == made[wf][-2:]
    assert len(result.plans) == 4


def test_prune_one_workflow_leaves_others(store: ckdb.Store) -> None:
    a = fill(store, "a", 6)
    b = fill(store, "b", 6)
    store.prune("a", RetentionPolicy(max_checkpoints=1))
    assert ids_of(store, "a") == a[-1:]
    assert ids_of(store, "b") == b


def test_prune_unknown_workflow_is_empty(store: ckdb.Store) -> None:
    fill(store, "a", 3)
    result = store.prune("nobody", "minimal")
    assert result.deleted == () and result.planned == ()


def test_prune_now_in_future_with_max_age(store: ckdb.Store) -> None:
    created = fill(store, "wf", 5)
    later = datetime.now(UTC) + timedelta(days=31)
    dry = store.prune("wf", "standard", now=later, dry_run=True)
    assert set(dry.planned) == set(created[:-1])
    result = store.prune(
        "wf", RetentionPolicy(max_age=1), now=datetime.now(UTC) + timedelta(days=2)
    )
    assert set(result.deleted) == set(created[:-1])
    assert ids_of(store, "wf") == created[-1:]
    assert store.latest("wf").id == created[-1]  # type: ignore[union-attr]
    # In the past: nothing is old yet.
    more = fill(store, "wf", 3)
    assert store.prune("wf", RetentionPolicy(max_age=0), now=BASE).deleted == ()
    assert ids_of(store, "wf") == [created[-1], *more]


def test_prune_now_accepts_other_timezones(store: ckdb.Store) -> None:
    from datetime import timezone

    created = fill(store, "wf", 3)
    tz = timezone(timedelta(hours=-7))
    result = store.prune("wf", RetentionPolicy(max_age=1), now=datetime.now(tz) + timedelta(days=2))
    assert set(result.deleted) == set(created[:-1])


@pytest.mark.parametrize("bad", [datetime(2030, 1, 1), "2030-01-01", 1893456000])
def test_prune_rejects_naive_or_non_datetime_now(store: ckdb.Store, bad: Any) -> None:
    fill(store, "wf", 12)
    before = store.list()
    with pytest.raises(ckdb.InvalidInput):
        store.prune("wf", "minimal", now=bad)
    with pytest.raises(ckdb.InvalidInput):
        store.prune(policy="minimal", now=bad)
    assert store.list() == before


def test_marked_newest_keeps_newest_unmarked(store: ckdb.Store) -> None:
    created = fill(store, "wf", 6)
    store.mark(created[-1], "test: damaged")
    store.mark(created[-2], "test: damaged")
    result = store.prune(
        "wf",
        RetentionPolicy(max_checkpoints=0, max_age=0),
        now=datetime.now(UTC) + timedelta(days=1),
    )
    assert set(result.deleted) == {*created[:3], *created[-2:]}
    assert ids_of(store, "wf") == [created[3]]
    assert store.latest("wf").id == created[3]  # type: ignore[union-attr]


def test_marked_newest_counts_toward_max(store: ckdb.Store) -> None:
    created = fill(store, "wf", 6)
    store.mark(created[-1], "test: damaged")
    result = store.prune("wf", RetentionPolicy(max_checkpoints=1))
    kept = {k.id: k.reasons for k in result.kept}
    assert set(kept) == {created[-1], created[-2]}
    assert any("newest valid" in r for r in kept[created[-2]])
    statuses = {c.id: c.status for c in store.list("wf")}
    assert statuses[created[-1]] == "corrupted"


def test_all_marked_may_all_go(store: ckdb.Store) -> None:
    created = fill(store, "wf", 3)
    for c in created:
        store.mark(c, "test")
    store.prune("wf", RetentionPolicy(max_checkpoints=0))
    assert ids_of(store, "wf") == []


def test_prune_pinned_not_counted(store: ckdb.Store) -> None:
    created = fill(store, "wf", 20)
    pinned = created[::4]
    for c in pinned:
        store.pin(c)
    store.prune("wf", RetentionPolicy(max_checkpoints=3, max_age=0), now=datetime.now(UTC))
    unpinned = [c for c in created if c not in pinned]
    assert set(ids_of(store, "wf")) == set(pinned) | {unpinned[-1]}
    store.prune("wf", RetentionPolicy(max_checkpoints=3))
    assert set(ids_of(store, "wf")) == set(pinned) | {unpinned[-1]}


def test_prune_runs_in_bounded_transactions(
    fast_store: ckdb.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pruning, "BATCH_PLAIN", 64)  # checkpoints without files per transaction
    n = 2 * pruning.BATCH_PLAIN + 50
    created = fill(fast_store, "wf", n)
    calls: list[int] = []
    real_delete = pruning.delete_victims

    def counting(store: Any, txn: Any, wf_key: bytes, victims: Any, now_us: int) -> Any:
        victims = list(victims)
        calls.append(len(victims))
        return real_delete(store, txn, wf_key, victims, now_us)

    monkeypatch.setattr(pruning, "delete_victims", counting)
    writes = 0
    real_write = fast_store._env.write

    def counting_write(*args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        writes += 1
        return real_write(*args, **kwargs)

    monkeypatch.setattr(fast_store._env, "write", counting_write)
    result = fast_store.prune("wf", RetentionPolicy(max_checkpoints=10))
    assert len(result.deleted) == n - 10
    assert max(calls) <= pruning.BATCH_PLAIN
    assert len(calls) == -(-(n - 10) // pruning.BATCH_PLAIN)
    assert writes >= len(calls)
    monkeypatch.undo()
    assert ids_of(fast_store, "wf") == created[-10:]
    st_ = fast_store.stats()
    assert st_["checkpoints"] == 10 == st_["payload_frames"]


# Both planners run in a prune: counts and ages take the fast path (``simple_plan``), windows
# and calendars the full one (``plan``). A window of zero keeps nothing more than the newest,
# so both policies below plan the same victims.
PLANNERS = {
    "fast": lambda n: RetentionPolicy(max_checkpoints=n),
    "full": lambda n: RetentionPolicy(max_checkpoints=n, keep_within=timedelta(0)),
}


PLANNER_OF = {"fast": "simple_plan", "full": "plan_retention"}


def after_planning(monkeypatch: pytest.MonkeyPatch, hook: Callable[[], None]) -> list[str]:
    """Run ``hook`` between a prune's planning and its deletions, whichever planner plans.
    Returns the names of the planners that planned, as they plan (a test asserts the one it
    meant to exercise did)."""
    ran: list[str] = []
    for name in ("plan_retention", "simple_plan"):
        real = getattr(pruning, name)

        def planned_then(*args: Any, real: Any = real, name: str = name, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            if out is not None:  # None: simple_plan handed the policy to the full planner
                ran.append(name)
                hook()
            return out

        monkeypatch.setattr(pruning, name, planned_then)
    return ran


@pytest.mark.parametrize("planner", sorted(PLANNERS))
def test_victim_pinned_after_planning_is_skipped(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch, planner: str
) -> None:
    created = fill(store, "wf", 8)
    # another thread pins a victim between planning and deleting
    ran = after_planning(monkeypatch, lambda: store.pin(created[0]))
    result = store.prune("wf", PLANNERS[planner](2))
    assert ran == [PLANNER_OF[planner]]
    assert created[0] in result.planned
    assert created[0] in result.skipped and created[0] not in result.deleted
    assert set(ids_of(store, "wf")) == {created[0], *created[-2:]}


@pytest.mark.parametrize("planner", sorted(PLANNERS))
def test_victim_damaged_after_planning_is_skipped(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch, planner: str
) -> None:
    """A prune trusts a victim's registry entry without verifying it again only while it holds
    exactly the bytes that verified while planning: an entry damaged meanwhile (a bit of its
    time flipped, so its tag fails) is verified, fails, and is not deleted."""
    created = fill(store, "wf", 6)
    victim_key = workflow_key("wf") + (1).to_bytes(8, "big")

    def flip(txn: Any) -> None:
        value = bytearray(txn.get(DB_REGISTRY, victim_key))
        value[20] ^= 0x01  # a byte of created_at: the tag no longer matches
        txn.put(DB_REGISTRY, victim_key, bytes(value))

    ran = after_planning(monkeypatch, lambda: store._env.write(flip))
    result = store.prune("wf", PLANNERS[planner](2))
    assert ran == [PLANNER_OF[planner]]
    assert created[0] in result.planned and created[0] in result.skipped
    assert created[0] not in result.deleted
    assert set(result.deleted) == set(created[1:4])


def test_a_malformed_registry_key_does_not_stop_a_prune(store_path: Path) -> None:
    """A damaged registry key (a byte too many) names no sequence: planning leaves it out
    (scrub reports it) and prunes the rest."""
    with ckdb.open(store_path, retention=None) as s:
        created = fill(s, "wf", 5)
    key = workflow_key("wf") + (5).to_bytes(8, "big")
    env = lmdb.open(str(store_path), max_dbs=32)
    with env.begin(write=True) as txn:
        db = env.open_db(DB_REGISTRY, txn=txn, create=False)
        txn.put(key + b"\x00", txn.get(key, db=db), db=db)
    env.close()
    with ckdb.open(store_path, retention=None) as s:
        result = s.prune("wf", RetentionPolicy(max_checkpoints=2))
        assert set(result.deleted) == set(created[:3])
        assert [i.id for i in s.list("wf") if i.status == "valid"] == created[:2:-1]


@pytest.mark.parametrize("planner", sorted(PLANNERS))
def test_victim_deleted_after_planning_is_skipped(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch, planner: str
) -> None:
    created = fill(store, "wf", 5)
    ran = after_planning(monkeypatch, lambda: store.delete(created[0]))
    result = store.prune("wf", PLANNERS[planner](2))
    assert ran == [PLANNER_OF[planner]]
    assert created[0] in result.skipped
    assert ids_of(store, "wf") == created[-2:]


@pytest.mark.parametrize("planner", sorted(PLANNERS))
def test_newest_marked_after_planning_is_not_deleted(
    store: ckdb.Store, monkeypatch: pytest.MonkeyPatch, planner: str
) -> None:
    """Planned with the newest valid, then the newest is marked: the one that is now the newest
    valid checkpoint must survive even though the plan had it as a victim."""
    created = fill(store, "wf", 4)
    ran = after_planning(monkeypatch, lambda: store.mark(created[-1], "test: damaged meanwhile"))
    result = store.prune("wf", PLANNERS[planner](1))
    assert ran == [PLANNER_OF[planner]]
    assert created[-2] in result.skipped
    assert ids_of(store, "wf") == created[-2:]
    assert store.latest("wf").id == created[-2]  # type: ignore[union-attr]


# --- chunks: shared contents are reclaimed exactly -----------------------------------------------


def write_tree(root: Path, version: int) -> dict[str, bytes]:
    """A tree where most files stay the same and a few change (or appear/disappear) per version.
    Returns the expected contents by relative path."""
    files: dict[str, bytes] = {
        "README.md": b"# project\n" * 50,
        "src/common.py": b"print('shared')\n" * 200,
        "src/big.bin": bytes(range(256)) * 5000,  # ~1.2 MiB: two chunks, shared
        "empty.txt": b"",
        f"notes/v{version % 3}.txt": f"note {version}\n".encode() * 30,
        "src/changing.py": f"VERSION = {version}\n".encode() * 40,
        "data/tail.bin": bytes(range(256)) * 4100 + version.to_bytes(4, "big"),  # 2nd chunk varies
    }
    if version % 2:
        files["odd.txt"] = f"odd {version}".encode()
    # Replace the tree wholesale.
    if root.exists():
        for dirpath, _dirs, names in os.walk(root, topdown=False):
            for name in names:
                os.unlink(os.path.join(dirpath, name))
            if dirpath != str(root):
                os.rmdir(dirpath)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = Path(dirpath) / name
            out[str(full.relative_to(root))] = full.read_bytes()
    return out


def chunk_accounting(store_path: Path, manifests: dict[str, list[Any]]) -> None:
    """Raw LMDB check (store closed): every chunk has a refs entry, each refs count equals the
    number of surviving manifests naming the chunk, and no chunk or refs entry is left over."""
    from ckdb.capture import E_CHUNKS

    expected: dict[bytes, int] = {}
    for entries in manifests.values():
        named = {bytes(c) for e in entries if e[E_CHUNKS] for c in e[E_CHUNKS]}
        for c in named:
            expected[c] = expected.get(c, 0) + 1
    with ckdb.open(store_path, retention=None) as s:
        keys = s._keys
    env = lmdb.open(str(store_path), readonly=True, lock=False, max_dbs=32, subdir=True)
    try:
        chunks_db = env.open_db(DB_CHUNKS, create=False)
        refs_db = env.open_db(DB_REFS, create=False)
        with env.begin() as txn:
            chunk_keys = {bytes(k) for k, _ in txn.cursor(chunks_db)}
            refs = {bytes(k): decode_refs(keys, bytes(k), bytes(v)) for k, v in txn.cursor(refs_db)}
    finally:
        env.close()
    assert chunk_keys == set(expected), "unreferenced or missing chunks"
    assert refs == expected, "reference counts disagree with the surviving manifests"


def manifests_of(store: ckdb.Store) -> dict[str, list[Any]]:
    out = {}
    for info in store.list():
        _ck, manifest = ckdb.reading.load(store.tables, id_from_text(info.id))
        out[info.id] = list(manifest["entries"]) if manifest else []
    return out


def test_prune_reclaims_shared_chunks_exactly(store_path: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    expected: dict[str, dict[str, bytes]] = {}
    with ckdb.open(store_path, retention=None, _unsafe_nosync=True) as s:
        for v in range(12):
            files = write_tree(work, v)
            info = s.create("wf", "p", files=work, state={"task": {"v": v}})
            expected[info.id] = files
        other = write_tree(tmp_path / "other", 100)
        oinfo = s.create("other", "p", files=tmp_path / "other")
        expected[oinfo.id] = other
        chunks_before = s.stats()["chunks"]
        chunk_accounting_live = manifests_of(s)
    chunk_accounting(store_path, chunk_accounting_live)

    with ckdb.open(store_path, retention=None) as s:
        order = ids_of(s, "wf")
        s.pin(order[2])
        result = s.prune("wf", RetentionPolicy(max_checkpoints=3))
        assert len(result.deleted) == 8
        survivors = ids_of(s, "wf")
        assert survivors == [order[2], *order[-3:]]
        assert s.stats()["chunks"] < chunks_before
        for cid in [*survivors, oinfo.id]:
            target = tmp_path / f"restore-{cid}"
            report = s.restore(cid, target_dir=target)
            assert report.ok, report.mismatches
            assert read_tree(target) == expected[cid]
            assert s.validate(cid, "comprehensive").ok
        live = manifests_of(s)
    chunk_accounting(store_path, live)

    # Down to one per workflow: still exact, and the other workflow's chunks are untouched.
    with ckdb.open(store_path, retention=None) as s:
        s.unpin(order[2])
        s.prune(policy=RetentionPolicy(max_checkpoints=1))
        assert set(ids_of(s)) == {order[-1], oinfo.id}
        for cid in (order[-1], oinfo.id):
            assert s.validate(cid, "comprehensive").ok
            target = tmp_path / f"final-{cid}"
            assert s.restore(cid, target_dir=target).ok
            assert read_tree(target) == expected[cid]
        live = manifests_of(s)
    chunk_accounting(store_path, live)


def test_automatic_retention_reclaims_chunks(store_path: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    expected: dict[str, dict[str, bytes]] = {}
    with ckdb.open(store_path, retention="minimal", _unsafe_nosync=True) as s:
        for v in range(8):
            files = write_tree(work, v)
            expected[s.create("wf", "p", files=work).id] = files
        survivors = ids_of(s, "wf")
        assert survivors == list(expected)[-3:]
        for cid in survivors:
            assert s.validate(cid, "comprehensive").ok
            target = tmp_path / f"r-{cid}"
            assert s.restore(cid, target_dir=target).ok
            assert read_tree(target) == expected[cid]
        live = manifests_of(s)
    chunk_accounting(store_path, live)


def corrupt_manifest(store_path: Path, checkpoint_id: str) -> None:
    """Flip a byte inside a checkpoint's manifest frame (through the layer below)."""
    key = payload_key(id_from_text(checkpoint_id), RecordType.MANIFEST, "files")
    env = lmdb.open(str(store_path), max_dbs=32, subdir=True)
    try:
        db = env.open_db(DB_PAYLOADS, create=False)
        with env.begin(write=True, db=db) as txn:
            raw = txn.get(key)
            assert raw is not None
            value = bytearray(raw)
            value[len(value) // 2] ^= 0x40
            txn.put(key, bytes(value))
    finally:
        env.close()


def test_victim_with_unreadable_manifest_is_marked_not_half_deleted(
    store_path: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    with ckdb.open(store_path, retention=None) as s:
        created = []
        for v in range(5):
            write_tree(work, v)
            created.append(s.create("wf", "p", files=work).id)
        victim_manifest = manifests_of(s)[created[1]]
        stats_before = s.stats()
    corrupt_manifest(store_path, created[1])
    with ckdb.open(store_path, retention=None) as s:
        result = s.prune("wf", RetentionPolicy(max_checkpoints=2))
        assert created[1] in result.skipped
        assert created[1] not in result.deleted
        assert set(result.deleted) == {created[0], created[2]}
        listed = {c.id: c for c in s.list("wf")}
        assert set(listed) == {created[1], *created[-2:]}
        assert listed[created[1]].status == "corrupted"
        # Whole: its metadata and every payload frame are still there.
        assert s.stats()["checkpoints"] == 3
        assert s.stats()["payload_frames"] == stats_before["payload_frames"] - 2
        # A second prune skips it again and changes nothing.
        again = s.prune("wf", RetentionPolicy(max_checkpoints=2))
        assert again.deleted == () and created[1] in again.skipped
        survivors = {c: manifests_of_one(s, c) for c in created[-2:]}
    # Its chunks were not released: counts include the unreadable manifest's references.
    chunk_accounting(store_path, {**survivors, created[1]: victim_manifest})


def manifests_of_one(store: ckdb.Store, cid: str) -> list[Any]:
    _ck, manifest = ckdb.reading.load(store.tables, id_from_text(cid))
    assert manifest is not None
    return list(manifest["entries"])


def test_prune_is_consistent_with_delete_of_marks(store: ckdb.Store) -> None:
    """A pruned marked checkpoint leaves no mark record behind."""
    created = fill(store, "wf", 4)
    store.mark(created[0], "test")
    store.prune("wf", RetentionPolicy(max_checkpoints=1))
    env_marks = store._env
    from ckdb.layout import DB_MARKS

    with env_marks.read() as txn:
        assert txn.count(DB_MARKS) == 0


def test_prune_batches_bound_transactions_by_cost() -> None:
    """Checkpoints with files (which release chunk references) count BATCH_PLAIN // BATCH each:
    a transaction holds at most BATCH of them, or BATCH_PLAIN plain ones, in plan order."""
    work = [(b"w", i, f"c{i}", b"", i % 3 == 0 or 2000 < i < 2600) for i in range(6000)]
    batches = list(pruning.prune_batches(work))
    assert [item for b in batches for item in b] == work
    for b in batches:
        with_files = sum(1 for item in b if item[4])
        assert with_files <= pruning.BATCH
        assert len(b) <= pruning.BATCH_PLAIN
        weight = with_files * (pruning.BATCH_PLAIN // pruning.BATCH) + len(b) - with_files
        assert weight < pruning.BATCH_PLAIN + pruning.BATCH_PLAIN // pruning.BATCH
    assert len(batches) < len(work) // pruning.BATCH  # plain runs share transactions


@pytest.mark.parametrize(
    "policy",
    [
        RetentionPolicy(max_checkpoints=2),  # the fast path
        RetentionPolicy(max_checkpoints=2, keep_hourly=1),  # the full planner (same victims)
    ],
)
def test_automatic_retention_deletes_the_oldest_first_at_most_auto_max(
    tmp_path: Path, policy: RetentionPolicy
) -> None:
    with ckdb.open(tmp_path / "s.ckdb", retention=None) as store:
        for i in range(20):
            store.create("wf", f"p{i}", state={"i": i})
        store.pin(store.list("wf")[-1].id)  # the oldest: never deleted, not counted
        store.set_retention("wf", policy)
        store.create("wf", "p20", state={"i": 20})
        # 20 unpinned of 21, 2 kept: 18 doomed, the oldest 16 (AUTO_MAX) deleted this time
        assert pruning.AUTO_MAX == 16
        seqs = sorted(i.sequence for i in store.list("wf"))
        assert seqs == [1, 18, 19, 20, 21]
        store.create("wf", "p21", state={"i": 21})  # the rest now
        assert sorted(i.sequence for i in store.list("wf")) == [1, 21, 22]


@given(
    now_us=st.integers(1_600_000_000_000_000, 1_900_000_000_000_000)
    | st.integers(4_400_000_000_000_000, 4_600_000_000_000_000)  # around 2**52 µs
    | st.integers(10**17, 2 * 10**17),
    age_us=st.integers(0, 10**12),
    deltas=st.lists(st.integers(-5, 5) | st.integers(-(10**9), 10**9), min_size=1, max_size=12),
)
def test_the_fast_path_ages_match_the_planner_to_the_microsecond(
    now_us: int, age_us: int, deltas: list[int]
) -> None:
    """Real created_at values are arbitrary microseconds, which the planner's entries take
    through a float (``registry_entries``): the fast path agrees at the age boundary too."""
    now = datetime.fromtimestamp(now_us / 1_000_000, tz=UTC)  # as a create computes it
    policy = RetentionPolicy(max_age=timedelta(microseconds=age_us))
    created = sorted((now_us - age_us + d for d in deltas), reverse=True)
    entries = [
        Entry(
            seq=len(created) - i,
            id=f"c{i:03d}",
            created_at=datetime.fromtimestamp(c / 1_000_000, tz=UTC),
            marked=i == 0,  # the newest one marked: the next is the newest valid
        )
        for i, c in enumerate(created)
    ]
    rows = [(e.id.encode(), c, False, e.marked) for e, c in zip(entries, created, strict=True)]
    got = simple_doomed(rows, policy, now, None)
    assert got is not None
    assert [entries[i].id for i in reversed(got)] == list(plan(entries, policy, now).delete)
