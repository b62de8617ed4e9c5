"""The LangGraph checkpointer conformance suite against CkdbSaver.

The suite (``langgraph-checkpoint-conformance``) only calls the async methods. It runs here twice
per spec test: against the saver as is (async twins), and through :class:`SyncBacked`, an adapter
whose async methods call the *sync* ones directly, so both halves meet the same expectations.
A whole-suite run checks the report: every capability detected (prune, copy_thread and
delete_for_runs included), none skipped, none failed.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.spec import (
    test_copy_thread,
    test_delete_for_runs,
    test_delete_thread,
    test_get_tuple,
    test_list,
    test_prune,
    test_put,
    test_put_writes,
)

import ckdb
from ckdb.integrations.langgraph import CkdbSaver

SUITES: dict[str, list[Callable[..., Any]]] = {
    "put": test_put.ALL_PUT_TESTS,
    "put_writes": test_put_writes.ALL_PUT_WRITES_TESTS,
    "get_tuple": test_get_tuple.ALL_GET_TUPLE_TESTS,
    "list": test_list.ALL_LIST_TESTS,
    "delete_thread": test_delete_thread.ALL_DELETE_THREAD_TESTS,
    "delete_for_runs": test_delete_for_runs.ALL_DELETE_FOR_RUNS_TESTS,
    "copy_thread": test_copy_thread.ALL_COPY_THREAD_TESTS,
    "prune": test_prune.ALL_PRUNE_TESTS,
}
CASES = [(cap, fn) for cap, fns in SUITES.items() for fn in fns]


class SyncBacked(BaseCheckpointSaver[str]):
    """Async surface over the saver's *sync* methods (no threads): the suite then tests them."""

    def __init__(self, saver: CkdbSaver) -> None:
        super().__init__(serde=saver.serde)
        self.s = saver

    async def aput(self, *a: Any, **k: Any) -> Any:
        return self.s.put(*a, **k)

    async def aput_writes(self, *a: Any, **k: Any) -> None:
        self.s.put_writes(*a, **k)

    async def aget_tuple(self, *a: Any, **k: Any) -> Any:
        return self.s.get_tuple(*a, **k)

    async def alist(self, *a: Any, **k: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        for item in self.s.list(*a, **k):
            yield item

    async def adelete_thread(self, *a: Any, **k: Any) -> None:
        self.s.delete_thread(*a, **k)

    async def adelete_for_runs(self, *a: Any, **k: Any) -> None:
        self.s.delete_for_runs(*a, **k)

    async def acopy_thread(self, *a: Any, **k: Any) -> None:
        self.s.copy_thread(*a, **k)

    async def aprune(self, *a: Any, **k: Any) -> None:
        self.s.prune(*a, **k)


@pytest.fixture(params=["durable", "with_checkpoint"])
def saver(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[CkdbSaver]:
    with ckdb.open(tmp_path / "lg.ckdb", retention=None) as store:
        yield CkdbSaver(store, pending_writes=request.param)


@pytest.mark.parametrize(("cap", "fn"), CASES, ids=[f"{c}-{f.__name__}" for c, f in CASES])
def test_spec_async(saver: CkdbSaver, cap: str, fn: Callable[..., Any]) -> None:
    asyncio.run(fn(saver))


@pytest.mark.parametrize(("cap", "fn"), CASES, ids=[f"{c}-{f.__name__}" for c, f in CASES])
def test_spec_sync(saver: CkdbSaver, cap: str, fn: Callable[..., Any]) -> None:
    asyncio.run(fn(SyncBacked(saver)))


def _full_report(
    wrap: Callable[[CkdbSaver], BaseCheckpointSaver[Any]], pending_writes: str
) -> dict[str, Any]:
    @checkpointer_test(name="CkdbSaver")
    async def factory() -> AsyncGenerator[BaseCheckpointSaver[Any], None]:
        with tempfile.TemporaryDirectory() as d, ckdb.open(Path(d) / "s", retention=None) as st:
            yield wrap(CkdbSaver(st, pending_writes=pending_writes))

    report = asyncio.run(validate(factory))
    report.print_report()
    out: dict[str, Any] = report.to_dict()
    out["level"] = report.conformance_level()
    return out


@pytest.mark.parametrize("pending_writes", ["durable", "with_checkpoint"])
@pytest.mark.parametrize("wrap", [lambda s: s, SyncBacked], ids=["async", "sync"])
def test_full_conformance_report(
    wrap: Callable[[CkdbSaver], BaseCheckpointSaver[Any]], pending_writes: str
) -> None:
    report = _full_report(wrap, pending_writes)
    assert report["level"] == "FULL"
    results = report["results"]
    assert set(results) == {c.value for c in ALL_CAPABILITIES}
    for cap, fns in SUITES.items():
        r = results[cap]
        assert r["detected"], f"{cap} not detected as implemented"
        assert r["passed"] is True, r["failures"]
        assert (r["tests_passed"], r["tests_failed"], r["tests_skipped"]) == (len(fns), 0, 0), cap
