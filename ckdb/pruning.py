"""Retention: planning (``retention.plan``) and applying plans as bounded transactions of
whole-checkpoint deletions; the per-workflow policy setting.

Deleting one checkpoint is never split across transactions. A prune runs as a series of bounded
transactions (``BATCH`` checkpoints each), each leaving a valid store; automatic retention inside
``create`` removes at most ``AUTO_MAX`` per create. Each transaction re-checks its victims against
the registry as it is *now*: one pinned, marked newest-valid, or already gone since planning is
skipped. Registry entries are removed with one cursor pass over the victims' key range.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from ckdb._env import Txn
from ckdb.capture import manifest_chunks
from ckdb.codec import RegistryVerifier
from ckdb.errors import IntegrityError, InvalidInput
from ckdb.layout import (
    DB_REGISTRY,
    FLAG_FILES,
    FLAG_MARKED,
    FLAG_PINNED,
    REGISTRY_VALUE,
    SEQ,
    check_name,
    id_from_text,
    id_to_text,
    is_registry_key,
    registry_key,
    split_registry_key,
)
from ckdb.meta import now_us
from ckdb.reading import workflows
from ckdb.retention import (
    Entry,
    RetentionPlan,
    RetentionPolicy,
    RetentionResult,
    resolve_policy,
    simple_doomed,
    simple_plan,
    simple_policy,
)
from ckdb.retention import plan as plan_retention
from ckdb.tables import Tables

BATCH = 256  # checkpoints with a working-directory capture per transaction (they release refs)
BATCH_PLAIN = 2048  # checkpoints without one: a few small deletes each
AUTO_MAX = 16


#: A verified registry entry: (key, value, checkpoint id, created_at µs, flags)
VerifiedEntry = tuple[bytes, bytes, bytes, int, int]


def verified_entries(t: Tables, txn: Txn, wf_key: bytes, *, memo: bool) -> list[VerifiedEntry]:
    """A workflow's registry entries that verify, newest first: what every planner reads.
    Malformed keys (damage) name no sequence and entries whose tag fails are left out: a
    damaged entry's pinned flag cannot be trusted, so it is never planned for deletion.

    ``memo``: verify through the memo (automatic retention, which plans the same few entries at
    every create). A prune plans every entry once and passes each verified value to its delete,
    which compares bytes instead (``memo=False``: the batch verifier, nothing memoised)."""
    verify = None if memo else RegistryVerifier(t.keys.mac)
    entry = t.registry.entry
    out: list[VerifiedEntry] = []
    append = out.append
    for key, value in txn.prefix(DB_REGISTRY, wf_key, reverse=True):
        if not is_registry_key(key):
            continue
        if verify is None:
            try:
                cid, created_us, flags = entry(key, value)
            except IntegrityError:
                continue
        else:
            got = verify(key, value)
            if got is None:
                continue
            cid, created_us, flags = got
        append((key, value, cid, created_us, flags))
    return out


def _rows(found: list[VerifiedEntry]) -> list[tuple[bytes, int, bool, bool]]:
    """The fast planners' rows (id, created_at µs, pinned, marked) of verified entries."""
    return [(c, u, bool(f & FLAG_PINNED), bool(f & FLAG_MARKED)) for _k, _v, c, u, f in found]


def registry_entries(t: Tables, txn: Txn, wf_key: bytes, *, memo: bool = True) -> list[Entry]:
    """Planner input for one workflow, oldest first, from :func:`verified_entries` (plus the
    metadata of the few newest, to find the newest valid checkpoint the way ``latest`` does).
    Unmarked entries newer than the newest valid one failed verification: they are passed as
    marked, so the planner keeps the real resume point. ``memo``: as for
    :func:`verified_entries` (automatic retention with window or calendar rules memoises;
    counts and ages take ``auto_victims``)."""
    keeper = _newest_valid(t, txn, wf_key)
    out: list[Entry] = []
    append = out.append
    keeper_seq: int | None = None
    seq_at = wf_key[0] + 1
    utc = UTC
    stamp = datetime.fromtimestamp
    for key, value, cid, created_us, flags in reversed(verified_entries(t, txn, wf_key, memo=memo)):
        seq = SEQ.unpack_from(key, seq_at)[0]
        if cid == keeper:
            keeper_seq = seq
        append(
            Entry(
                seq,
                id_to_text(cid),
                stamp(created_us / 1_000_000, tz=utc),
                bool(flags & FLAG_PINNED),
                bool(flags & FLAG_MARKED),
                bool(flags & FLAG_FILES),
                cid,
                value,
            )
        )
    if keeper_seq is not None:
        out = [e if e.seq <= keeper_seq or e.marked else e._replace(marked=True) for e in out]
    return out


def auto_victims(
    t: Tables,
    txn: Txn,
    wf_key: bytes,
    policy: RetentionPolicy,
    now: datetime,
    limit: int,
    keeper: bytes,
) -> list[tuple[int, str, bytes, bytes]] | None:
    """Automatic retention's victims, oldest first, at most ``limit``: ``(seq, id, id bytes,
    verified registry value)`` for :func:`delete_victims`; None if the policy needs the full
    planner (:func:`ckdb.retention.simple_doomed`). The same entries as
    :func:`registry_entries` gives the planner, without building them. ``keeper``: the newest
    valid checkpoint, which here is the one the create is writing (its entry is above every
    well-formed key, unmarked, and its metadata was built in this transaction; a failed
    read-back aborts the transaction, deletions included), so no metadata is read to find it."""
    if not simple_policy(policy):
        return None  # before reading anything: the full planner reads it all again
    found = verified_entries(t, txn, wf_key, memo=True)
    doomed = simple_doomed(_rows(found), policy, now, keeper)
    if doomed is None:
        return None
    seq_at = wf_key[0] + 1
    out = []
    for i in reversed(doomed[-limit:] if limit else []):
        key, value, cid = found[i][:3]
        out.append((SEQ.unpack_from(key, seq_at)[0], id_to_text(cid), cid, value))
    return out


def plan_simple(
    t: Tables, txn: Txn, wf_key: bytes, policy: RetentionPolicy, now: datetime, name: str
) -> tuple[RetentionPlan, list[Work]] | None:
    """A prune's plan of one workflow for a policy of counts and ages
    (:func:`ckdb.retention.simple_plan`) and its work, oldest first; None for a window or
    calendar policy (:func:`registry_entries` and the full planner). The same entries as
    :func:`registry_entries` hands the planner, verified by the batch verifier, with no
    planner entry, datetime or id text built for a row the plan does not name."""
    if not simple_policy(policy):
        return None  # before reading anything: the full planner reads it all again
    found = verified_entries(t, txn, wf_key, memo=False)
    keeper = _newest_valid(t, txn, wf_key)
    got = simple_plan(_rows(found), policy, now, keeper, id_to_text, workflow_id=name)
    if got is None:
        return None
    planned, doomed = got
    seq_at = wf_key[0] + 1
    work: list[Work] = []
    for i, text_id in zip(reversed(doomed), planned.delete, strict=True):
        key, value, cid, _created, flags = found[i]
        seq = SEQ.unpack_from(key, seq_at)[0]
        work.append((wf_key, seq, text_id, cid, bool(flags & FLAG_FILES), value))
    return planned, work


def _newest_valid(t: Tables, txn: Txn, wf_key: bytes) -> bytes | None:
    found = t.newest_valid(txn, wf_key)
    return None if found is None else found[0].cid


def delete_victims(
    t: Tables,
    txn: Txn,
    wf_key: bytes,
    victims: Iterable[tuple[int, str] | tuple[int, str, bytes] | tuple[int, str, bytes, bytes]],
    now_us: int,
    keep: bytes | None = None,
) -> tuple[list[str], list[str]]:
    """Delete whole checkpoints ``(seq, id[, id as bytes[, registry value]])`` of one workflow
    inside ``txn``. A registry value given is one that verified while planning: an entry still
    holding exactly those bytes is not verified again. ``keep``: the workflow's newest valid
    checkpoint when the caller knows it (a create: the one it writes); None: found here.

    Returns (deleted ids, skipped ids). A victim whose manifest cannot be read is marked, not
    half-deleted (its chunk references could not be released).
    """
    keep_cid = _newest_valid(t, txn, wf_key) if keep is None else keep
    doomed: dict[bytes, bytes] = {}  # registry key -> checkpoint id
    marked: set[bytes] = set()
    skipped: list[str] = []
    # Victims planned from verified bytes, unpinned and with no files to release: their
    # entries go in one cursor pass that deletes each still holding exactly those bytes (the
    # flags that verified then are the flags now). Any other victim is judged one by one below.
    quick: dict[bytes, bytes] = {}
    order = [v if len(v) > 2 else (v[0], v[1], id_from_text(v[1])) for v in victims]
    keys = [registry_key(wf_key, v[0]) for v in order]
    for reg_key, victim in zip(keys, order, strict=True):
        if (
            len(victim) > 3
            and not victim[3][24] & (FLAG_FILES | FLAG_PINNED)
            and victim[2] != keep_cid
        ):
            quick[reg_key] = victim[3]
    gone_keys = set(t.registry.delete_unchanged(txn, quick))
    gone: list[bytes] = []
    for reg_key, victim in zip(keys, order, strict=True):
        if reg_key in gone_keys:
            gone.append(victim[2])
            if quick[reg_key][24] & FLAG_MARKED:
                marked.add(victim[2])
    # The rest, in plan order (changed since planning, pinned, with files): judged in full.
    rest = [(k, v) for k, v in zip(keys, order, strict=True) if k not in gone_keys]
    for reg_key, victim in rest:
        text_id, cid = victim[1], victim[2]
        value = txn.get(DB_REGISTRY, reg_key)
        if value is None or bytes(value[:16]) != cid or cid == keep_cid:
            skipped.append(text_id)
            continue
        if len(victim) > 3 and value == victim[3]:  # the bytes that verified while planning
            _c, created_us, flags, _k, _t = REGISTRY_VALUE.unpack(value)
        else:
            try:
                _c, created_us, flags = t.registry.entry(reg_key, value)
            except IntegrityError:
                skipped.append(text_id)
                continue
        if flags & FLAG_PINNED:
            skipped.append(text_id)
            continue
        if flags & FLAG_FILES:
            try:
                manifest = t.payloads.read_manifest(txn, cid)
            except IntegrityError:
                manifest = None
            if manifest is None:
                if not flags & FLAG_MARKED:
                    t.registry.put(txn, reg_key, cid, created_us, flags | FLAG_MARKED)
                skipped.append(text_id)
                continue
            t.chunks.release_refs(txn, manifest_chunks(manifest), now_us)
        doomed[reg_key] = cid
        if flags & FLAG_MARKED:
            marked.add(cid)
    if not doomed and not gone:
        return [], skipped
    if doomed:  # registry: one cursor pass from the first to the last victim, victims only
        t.registry.delete_many(txn, sorted(doomed))
    cids = sorted([*gone, *doomed.values()])
    t.checkpoints.delete_many(txn, cids)
    t.payloads.delete_many(txn, cids)  # one cursor, in key order
    if marked:  # only marked checkpoints have marks records (mark() sets the flag)
        t.marks.delete_many(txn, sorted(marked))
    t.note_change(txn, wf_key, deleted=cids)
    gone_keys.update(doomed)  # by registry key: an id at two sequences is named once per slot
    return [v[1] for k, v in zip(keys, order, strict=True) if k in gone_keys], skipped


Work = tuple[bytes, int, str, bytes, bool, bytes]  # (workflow key, seq, id, cid, files, value)


def prune_batches(work: list[Work]) -> Iterator[list[Work]]:
    """Split prune work into transactions: at most BATCH checkpoints with files (each releases
    its chunk references) or BATCH_PLAIN without (a few deletes each): bounded dirty pages."""
    batch: list[Work] = []
    cost = 0
    for item in work:
        batch.append(item)
        cost += BATCH_PLAIN // BATCH if item[4] else 1
        if cost >= BATCH_PLAIN:
            yield batch
            batch, cost = [], 0
    if batch:
        yield batch


def victims_by_seq(txn: Txn, wf_key: bytes, ids: Sequence[str]) -> list[tuple[int, str]]:
    """``(seq, id)`` of the registry entries of one workflow whose ids are in ``ids``."""
    wanted = {id_from_text(i): i for i in ids}
    out = []
    for key, value in txn.prefix(DB_REGISTRY, wf_key):
        text = wanted.get(bytes(value[:16]))
        if text is not None:
            out.append((split_registry_key(key)[1], text))
    return out


def prune(
    t: Tables,
    workflow_id: str | None = None,
    policy: str | RetentionPolicy | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RetentionResult:
    """Apply retention. ``workflow_id=None``: every workflow; ``policy=None``: each
    workflow's own. Runs as bounded transactions, each leaving a valid store."""
    if workflow_id is not None:
        check_name(workflow_id, "workflow_id")
    override = None if policy is None else resolve_policy(policy)
    if now is None:
        now = datetime.now(UTC)
    elif not isinstance(now, datetime) or now.tzinfo is None:
        raise InvalidInput(f"now must be a timezone-aware datetime, not {now!r}")
    names = [workflow_id] if workflow_id is not None else workflows(t)
    plans: list[RetentionPlan] = []
    deleted: list[str] = []
    skipped: list[str] = []
    # Plan every workflow first (from one snapshot each), then delete in transactions of at
    # most BATCH checkpoints that may span workflows: 1,000 small workflows cost a few
    # commits, not 1,000. Leases use the real clock, never the caller's ``now``.
    work: list[Work] = []
    for name in names:
        wf_key = t.keys.wf_key(name)
        with t.env.read() as txn:
            wf_policy = override or t.policy(txn, wf_key)
            if wf_policy is None:
                continue
            fast = plan_simple(t, txn, wf_key, wf_policy, now, name)
            if fast is None:
                entries = registry_entries(t, txn, wf_key, memo=False)
        if fast is not None:
            planned, doomed = fast
            work.extend(doomed)
        else:
            planned = plan_retention(entries, wf_policy, now, workflow_id=name)
            by_id = {e.id: e for e in entries}
            work.extend(
                (wf_key, by_id[i].seq, i, by_id[i].cid, by_id[i].files, by_id[i].value)
                for i in planned.delete
            )
        plans.append(planned)
    if not dry_run:
        for batch in prune_batches(work):

            def apply(txn: Txn, batch: list[Work] = batch) -> Any:
                done: list[str] = []
                passed: list[str] = []
                groups: dict[bytes, list[tuple[int, str, bytes, bytes]]] = {}
                for wf_key, seq, text_id, cid, _files, value in batch:
                    groups.setdefault(wf_key, []).append((seq, text_id, cid, value))
                for wf_key, victims in groups.items():
                    d, p = delete_victims(t, txn, wf_key, victims, now_us())
                    done.extend(d)
                    passed.extend(p)
                return done, passed

            done, passed = t.env.write(apply)
            deleted.extend(done)
            skipped.extend(passed)
    return RetentionResult(
        dry_run=dry_run, plans=tuple(plans), deleted=tuple(deleted), skipped=tuple(skipped)
    )


def set_retention(t: Tables, workflow_id: str, policy: str | RetentionPolicy | None) -> None:
    """Set a workflow's own retention policy, kept in the store; None: no automatic
    retention for it. An unknown policy name is an InvalidInput and changes nothing."""
    check_name(workflow_id, "workflow_id")
    resolved = None if policy is None else resolve_policy(policy)
    key, frame = t.settings.policy_frame(t.keys.wf_key(workflow_id), resolved)
    t.env.write(lambda txn: t.settings.put_raw(txn, key, frame))


def get_retention(t: Tables, workflow_id: str) -> RetentionPolicy | None:
    """The policy that applies to a workflow (its own, else the store's default)."""
    check_name(workflow_id, "workflow_id")
    with t.env.read() as txn:
        return t.policy(txn, t.keys.wf_key(workflow_id))
