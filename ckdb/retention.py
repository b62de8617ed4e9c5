"""Retention: policies and a pure planner (borg's prune: a reason for every checkpoint kept).

Seed semantics: delete the union of "beyond the newest ``max_checkpoints``" and "older than
``max_age``". On top, invariants no policy can break:

- the newest *valid* (not marked corrupted) checkpoint of a workflow is never deleted;
- pinned checkpoints are never deleted and do not count toward ``max_checkpoints``;
- order is the per-workflow sequence (checkpoints of the same millisecond are counted, not
  bucketed).

Optional restic-style rules keep more (never less): ``keep_within`` (relative to the newest
checkpoint) and ``keep_hourly`` / ``keep_daily`` / ``keep_weekly`` (the newest checkpoint of each
of the last N hours / days / ISO weeks that have checkpoints).

The planner takes registry entries only (sequence, id, created_at, pinned, marked): it never
decodes payloads. Applying a plan is a separate step (``Store.prune``), so a dry run prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from attrs import field, frozen

from ckdb.errors import InvalidInput

DEFAULT_POLICY = "standard"


def _age(value: object) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        td = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            td = timedelta(days=value)
        except (ValueError, OverflowError):  # NaN, inf, or beyond timedelta's range
            raise InvalidInput(f"an age must be a finite number of days, not {value!r}") from None
    else:
        raise InvalidInput(f"an age must be days (a number) or a timedelta, not {value!r}")
    if td < timedelta(0):
        raise InvalidInput(f"an age must not be negative: {value!r}")
    return td


def _count(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative int, not {value!r}")
    return value


@frozen
class RetentionPolicy:
    """How many and how old checkpoints a workflow keeps (None: no limit of that kind)."""

    max_checkpoints: int | None = field(default=None)
    max_age: timedelta | None = field(default=None, converter=_age)
    keep_within: timedelta | None = field(default=None, converter=_age)
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    name: str = "custom"

    def __attrs_post_init__(self) -> None:
        if self.max_checkpoints is not None:
            _count(self.max_checkpoints, "max_checkpoints")
        for attr in ("keep_hourly", "keep_daily", "keep_weekly"):
            _count(getattr(self, attr), attr)

    def to_doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_checkpoints": self.max_checkpoints,
            "max_age_s": None if self.max_age is None else self.max_age.total_seconds(),
            "keep_within_s": None if self.keep_within is None else self.keep_within.total_seconds(),
            "keep_hourly": self.keep_hourly,
            "keep_daily": self.keep_daily,
            "keep_weekly": self.keep_weekly,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RetentionPolicy:
        def secs(v: Any) -> timedelta | None:
            return None if v is None else timedelta(seconds=float(v))

        return cls(
            max_checkpoints=doc.get("max_checkpoints"),
            max_age=secs(doc.get("max_age_s")),
            keep_within=secs(doc.get("keep_within_s")),
            keep_hourly=int(doc.get("keep_hourly", 0)),
            keep_daily=int(doc.get("keep_daily", 0)),
            keep_weekly=int(doc.get("keep_weekly", 0)),
            name=str(doc.get("name", "custom")),
        )


PRESETS: dict[str, RetentionPolicy] = {
    "minimal": RetentionPolicy(3, timedelta(days=7), name="minimal"),
    "standard": RetentionPolicy(10, timedelta(days=30), name="standard"),
    "extended": RetentionPolicy(50, timedelta(days=90), name="extended"),
}


def resolve_policy(policy: object) -> RetentionPolicy:
    """A policy from a preset name (``"default"`` → standard, as in the seed) or a policy.

    An unknown name is an InvalidInput: a typo must never delete anything.
    """
    if isinstance(policy, RetentionPolicy):
        return policy
    if isinstance(policy, str):
        name = DEFAULT_POLICY if policy == "default" else policy
        try:
            return PRESETS[name]
        except KeyError:
            raise InvalidInput(
                f"unknown retention policy {policy!r}; use one of "
                f"{', '.join([*PRESETS, 'default'])} or a RetentionPolicy"
            ) from None
    raise InvalidInput(f"a retention policy must be a name or a RetentionPolicy, not {policy!r}")


class Entry(NamedTuple):
    """What the planner knows about a checkpoint: its registry entry. (A named tuple: a prune
    builds one per checkpoint of a workflow, and a frozen attrs class took 5x as long.)"""

    seq: int
    id: str
    created_at: datetime
    pinned: bool = False
    marked: bool = False
    files: bool = False  # holds a working-directory capture (deleting it releases chunks)
    cid: bytes = b""  # the 16-byte id, when the caller has it (saves parsing ``id`` again)
    value: bytes = b""  # the registry value that verified (a prune's delete compares it)


@frozen
class Keep:
    id: str
    reasons: tuple[str, ...]


@frozen
class RetentionPlan:
    """For one workflow: every checkpoint kept (with why) and every one to delete."""

    workflow_id: str
    policy: str
    keep: tuple[Keep, ...]
    delete: tuple[str, ...]


@frozen
class RetentionResult:
    """What ``Store.prune`` planned and (unless ``dry_run``) deleted."""

    dry_run: bool
    plans: tuple[RetentionPlan, ...]
    deleted: tuple[str, ...]  # actually deleted (empty on a dry run)
    skipped: tuple[str, ...] = ()  # planned but not deleted: pinned/changed meanwhile, or marked

    @property
    def kept(self) -> tuple[Keep, ...]:
        return tuple(k for p in self.plans for k in p.keep)

    @property
    def planned(self) -> tuple[str, ...]:
        return tuple(d for p in self.plans for d in p.delete)


def _bucket(dt: datetime, unit: str) -> tuple[int, ...]:
    dt = dt.astimezone(UTC)
    if unit == "hourly":
        return (dt.year, dt.month, dt.day, dt.hour)
    if unit == "daily":
        return (dt.year, dt.month, dt.day)
    iso = dt.isocalendar()
    return (iso.year, iso.week)


def plan(
    entries: Iterable[Entry],
    policy: RetentionPolicy,
    now: datetime,
    *,
    workflow_id: str = "",
) -> RetentionPlan:
    """Pure: decide what to keep (with reasons) and what to delete."""
    if now.tzinfo is None:
        raise InvalidInput("now must be a timezone-aware datetime")
    ordered = sorted(entries, key=lambda e: e.seq, reverse=True)  # newest first
    reasons: dict[str, list[str]] = {e.id: [] for e in ordered}
    doomed: set[str] = set()

    newest_valid = next((e for e in ordered if not e.marked), None)
    if newest_valid is not None:
        reasons[newest_valid.id].append("newest valid checkpoint")
    counted = 0
    for e in ordered:
        if e.pinned:
            reasons[e.id].append("pinned")
            continue
        counted += 1
        beyond = policy.max_checkpoints is not None and counted > policy.max_checkpoints
        too_old = policy.max_age is not None and now - e.created_at > policy.max_age
        if beyond or too_old:
            doomed.add(e.id)
        else:
            why = []
            if policy.max_checkpoints is not None:
                why.append(f"among the newest {policy.max_checkpoints}")
            if policy.max_age is not None:
                why.append(f"younger than {_fmt(policy.max_age)}")
            reasons[e.id].append(" and ".join(why) if why else "no limit in policy")

    if policy.keep_within is not None and ordered:
        newest_time = max(e.created_at for e in ordered)
        for e in ordered:
            if newest_time - e.created_at <= policy.keep_within:
                reasons[e.id].append(f"within {_fmt(policy.keep_within)} of the newest")
    for unit, n in (
        ("hourly", policy.keep_hourly),
        ("daily", policy.keep_daily),
        ("weekly", policy.keep_weekly),
    ):
        seen: set[tuple[int, ...]] = set()
        for e in ordered:  # newest first: the first of each bucket is its newest
            if len(seen) >= n:
                break
            b = _bucket(e.created_at, unit)
            if b not in seen:
                seen.add(b)
                reasons[e.id].append(f"{unit} #{len(seen)}")

    keep: list[Keep] = []
    delete: list[str] = []
    for e in ordered:
        protective = [
            r for r in reasons[e.id] if e.id not in doomed or not r.startswith(("among", "younger"))
        ]
        if e.id in doomed and not protective:
            delete.append(e.id)
        else:
            keep.append(Keep(e.id, tuple(protective)))
    return RetentionPlan(workflow_id, policy.name, tuple(keep), tuple(reversed(delete)))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EXACT_US = 1 << 52


def simple_doomed(
    rows: Sequence[tuple[bytes, int, bool, bool]],
    policy: RetentionPolicy,
    now: datetime,
    keeper: bytes | None,
) -> list[int] | None:
    """What :func:`plan` deletes, for a policy of counts and ages only (every preset): the
    indexes of the doomed ``rows`` (checkpoint id, created_at µs, pinned, marked), which come
    newest first. ``keeper``: the id of the newest valid checkpoint, None if there is none (then
    the newest unmarked row is kept, as the planner does). None: the policy keeps by window or
    calendar, which only :func:`plan` decides. Automatic retention runs this at every create:
    no reasons, ids or times are built for the rows it keeps (a property test holds it to
    :func:`plan`)."""
    if not simple_policy(policy):
        return None
    protect = _protected(rows, keeper)
    return [
        i for i, doomed in enumerate(_beyond(rows, policy, now)) if doomed and rows[i][0] != protect
    ]


def simple_plan(
    rows: Sequence[tuple[bytes, int, bool, bool]],
    policy: RetentionPolicy,
    now: datetime,
    keeper: bytes | None,
    text: Callable[[bytes], str],
    *,
    workflow_id: str = "",
) -> tuple[RetentionPlan, list[int]] | None:
    """:func:`plan` for the policies :func:`simple_doomed` accepts, from the same ``rows``
    (newest first), and the indexes of the doomed rows (oldest last, as the rows come). Reasons
    and id texts (``text``) are built for what the plan reports, never an :class:`Entry` or a
    datetime per row: a prune of 10,000 entries plans in a fraction of the time. None: a
    window or calendar policy (a property test holds it to :func:`plan`).

    ``keeper`` must be an unmarked row's id, or None (as :func:`ckdb.pruning.plan_simple`
    passes it: the newest valid checkpoint, read in the same transaction as the rows); it is
    kept whatever the rows say, as :func:`plan` keeps the entries ``registry_entries`` leaves
    unmarked below it."""
    if not simple_policy(policy):
        return None
    protect = _protected(rows, keeper)
    why = []
    if policy.max_checkpoints is not None:
        why.append(f"among the newest {policy.max_checkpoints}")
    if policy.max_age is not None:
        why.append(f"younger than {_fmt(policy.max_age)}")
    within = (" and ".join(why) if why else "no limit in policy",)
    keep: list[Keep] = []
    doomed_at: list[int] = []
    for i, doomed in enumerate(_beyond(rows, policy, now)):
        cid, _created, pinned, _marked = rows[i]
        if cid == protect:
            reasons: tuple[str, ...] = ("newest valid checkpoint",)
            if pinned:
                reasons += ("pinned",)
            elif not doomed:
                reasons += within
        elif pinned:
            reasons = ("pinned",)
        elif doomed:
            doomed_at.append(i)
            continue
        else:
            reasons = within
        keep.append(Keep(text(cid), reasons))
    delete = tuple(text(rows[i][0]) for i in reversed(doomed_at))
    return RetentionPlan(workflow_id, policy.name, tuple(keep), delete), doomed_at


def simple_policy(policy: RetentionPolicy) -> bool:
    """Does the policy keep by counts and ages only (no window, no calendar buckets)?"""
    return not (
        policy.keep_within is not None
        or policy.keep_hourly
        or policy.keep_daily
        or policy.keep_weekly
    )


def _protected(rows: Sequence[tuple[bytes, int, bool, bool]], keeper: bytes | None) -> bytes | None:
    """The row the plan keeps as the newest valid checkpoint: ``keeper``, else the newest
    unmarked row (as :func:`plan` decides without one)."""
    if keeper is not None:
        return keeper
    return next((r[0] for r in rows if not r[3]), None)


def _beyond(
    rows: Sequence[tuple[bytes, int, bool, bool]], policy: RetentionPolicy, now: datetime
) -> Iterator[bool]:
    """Per row (newest first): is it beyond the policy's count or age? Pinned rows are never
    beyond, nor counted. The rule of both fast paths (property tests hold them to
    :func:`plan`, which decides the same in its own loop)."""
    limit, age = policy.max_checkpoints, policy.max_age
    if age is not None:
        now_us = (now - _EPOCH) // _US
        age_us = age // _US
    counted = 0
    for _cid, created_us, pinned, _marked in rows:
        if pinned:
            yield False
            continue
        counted += 1
        if limit is not None and counted > limit:
            yield True
        elif age is not None:
            # In integer microseconds: the planner's entries take created_at through a float,
            # which holds microseconds exactly below 2**52 µs (year 2112; the property test
            # checks the boundary to the microsecond); beyond, the planner's own comparison
            if created_us < _EXACT_US and now_us < _EXACT_US:
                yield now_us - created_us > age_us
            else:
                yield now - datetime.fromtimestamp(created_us / 1_000_000, tz=UTC) > age
        else:
            yield False


def _fmt(td: timedelta) -> str:
    if td.seconds == 0 and td.microseconds == 0:
        return f"{td.days} days"
    return str(td)
