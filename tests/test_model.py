"""The Store against an in-memory model (hypothesis' test_database_agreement, with a reopen rule:
persistence is the point). The store starts with a tiny map so growth happens along the way."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

import ckdb
from ckdb.encoding import same
from tests import strategies

WORKFLOWS = st.sampled_from(["alpha", "beta", "γάμμα", "a" * 200])
PHASES = st.sampled_from(["planning", "execution", "review"])
BLOBS = st.binary(min_size=0, max_size=40_000)


class StoreModel(RuleBasedStateMachine):
    checkpoints = Bundle("checkpoints")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ckdb-model-"))
        self.path = self.dir / "s"
        self.store = ckdb.open(self.path, map_size=1 << 16, retention=None)
        # model: workflow -> list of (id, phase, kind, state) in creation order
        self.model: dict[str, list[tuple[str, str, str, dict[str, Any]]]] = {}
        self.deleted: set[str] = set()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _find(self, cid: str) -> tuple[str, int] | None:
        for wf, items in self.model.items():
            for i, item in enumerate(items):
                if item[0] == cid:
                    return wf, i
        return None

    @rule(
        target=checkpoints,
        wf=WORKFLOWS,
        phase=PHASES,
        state=strategies.state,
        blob=BLOBS,
        manual=st.booleans(),
    )
    def create(self, wf: str, phase: str, state: dict[str, Any], blob: bytes, manual: bool) -> str:
        state = dict(state)
        state["blob"] = blob
        kind = "manual" if manual else "automatic"
        info = self.store.create(wf, phase, state=state, kind=kind, name="m" if manual else None)
        items = self.model.setdefault(wf, [])
        assert info.parent_id == (items[-1][0] if items else None)
        items.append((info.id, phase, kind, state))
        return info.id

    @rule(cid=checkpoints)
    def load(self, cid: str) -> None:
        found = self._find(cid)
        if found is None:
            with pytest.raises(ckdb.CheckpointNotFound):
                self.store.load(cid)
            return
        wf, i = found
        ck = self.store.load(cid)
        _id, phase, kind, state = self.model[wf][i]
        assert ck.info.workflow_id == wf and ck.info.phase == phase and ck.info.kind == kind
        assert same(ck.state, state)

    @rule(cid=consumes(checkpoints))
    def delete(self, cid: str) -> None:
        found = self._find(cid)
        if found is None:
            with pytest.raises(ckdb.CheckpointNotFound):
                self.store.delete(cid)
            return
        self.store.delete(cid)
        wf, i = found
        del self.model[wf][i]
        self.deleted.add(cid)

    @rule(wf=WORKFLOWS)
    def delete_workflow(self, wf: str) -> None:
        if wf not in self.model:
            with pytest.raises(ckdb.WorkflowNotFound):
                self.store.delete_workflow(wf)
            return
        assert self.store.delete_workflow(wf) == len(self.model[wf])
        self.deleted.update(item[0] for item in self.model.pop(wf))

    @rule(wf=WORKFLOWS)
    def latest(self, wf: str) -> None:
        info = self.store.latest(wf)
        items = self.model.get(wf, [])
        assert (info.id if info else None) == (items[-1][0] if items else None)

    @rule(wf=st.one_of(st.none(), WORKFLOWS), limit=st.one_of(st.none(), st.integers(0, 5)))
    def list(self, wf: str | None, limit: int | None) -> None:
        got = [i.id for i in self.store.list(wf, limit=limit)]
        if wf is not None:
            want = [item[0] for item in reversed(self.model.get(wf, []))]
            if limit is not None:
                want = want[:limit]
            assert got == want
        else:
            every = {item[0] for items in self.model.values() for item in items}
            assert set(got) <= every
            assert len(got) == (len(every) if limit is None else min(limit, len(every)))
            # newest first across workflows (ids are time-sortable and monotonic in a process)
            assert got == sorted(got, reverse=True)

    @rule(wf=WORKFLOWS, phase=PHASES)
    def list_phase(self, wf: str, phase: str) -> None:
        got = [i.id for i in self.store.list(wf, phase=phase)]
        want = [item[0] for item in reversed(self.model.get(wf, [])) if item[1] == phase]
        assert got == want

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = ckdb.open(self.path, map_size=1 << 16, retention=None)

    @invariant()
    def workflows_agree(self) -> None:
        # A workflow stays registered when its checkpoints are deleted one by one; it goes away
        # only with delete_workflow (the model keeps an empty list for it meanwhile).
        assert self.store.workflows() == sorted(self.model)


TestStoreModel = StoreModel.TestCase
