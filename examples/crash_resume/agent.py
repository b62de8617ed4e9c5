"""An agent that resumes correctly after a crash: the example of docs/testing.md.

It summarises a list of documents. Per document it checkpoints BEFORE the side effect (posting the
summary to a channel), posts idempotently, writes the summary into its working directory and
checkpoints again. Killed anywhere, restarted, it ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

from pathlib import Path

import ckdb
from ckdb.testing import Effects

WORKFLOW = "summariser"
DOCUMENTS = ["alpha", "beta", "gamma", "delta"]


def summarise(doc: str) -> str:
    return f"{doc}: {len(doc)} letters"  # stands in for a model call


def run(store: ckdb.Store, workdir: Path, effects: Effects) -> dict[str, object]:
    done = 0
    if store.latest(WORKFLOW) is not None:  # resume: state and working directory
        report = store.restore_latest(WORKFLOW, target_dir=workdir)
        done = report.checkpoint.state["progress"]["done"]
    for i in range(done, len(DOCUMENTS)):
        doc = DOCUMENTS[i]
        # 1. Record the intent before acting on the world.
        store.create(WORKFLOW, "posting", state={"progress": {"done": i, "posting": doc}})
        # 2. The side effect, idempotent: a repeat after a crash is a no-op.
        effects.append("channel.log", summarise(doc), once=True)
        # 3. Local work, then the checkpoint that makes it durable.
        (workdir / f"{doc}.txt").write_text(summarise(doc) + "\n")
        store.create(WORKFLOW, "posted", state={"progress": {"done": i + 1}}, files=workdir)
    return {"summaries": len(DOCUMENTS)}


def main() -> None:
    """Run it for real: ``python examples/crash_resume/agent.py`` (resumes if interrupted)."""
    base = Path("summariser-run")
    (base / "work").mkdir(parents=True, exist_ok=True)
    with ckdb.open(base / "agent.ckdb") as store:
        print(run(store, base / "work", Effects(base / "world")))


if __name__ == "__main__":
    main()
