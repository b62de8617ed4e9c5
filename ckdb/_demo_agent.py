"""A simulated long-running agent for the demo (and for crash-resume harnesses).

The agent works through phases of steps on a small working directory. After every step it takes
an automatic checkpoint (state components + the working directory); before the risky phase it
takes a pinned manual checkpoint. On start it resumes from ``restore_latest`` (which skips
corrupt checkpoints and rolls the working directory back to the checkpoint, stray files
removed), so it can be killed at any instant and simply started again.

Everything is deterministic: :func:`expected_files` gives the exact working directory after ``n``
completed steps, so a harness can check that a killed-and-resumed run ends where an uninterrupted
one does. Run it as a process with ``python -m ckdb._demo_agent --store S --workdir W``.

This module uses only the public ``ckdb`` API.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

import ckdb

WORKFLOW = "demo-agent"
PHASES: tuple[str, ...] = ("plan", "gather", "refactor", "write")
STEPS_PER_PHASE = 2
RISKY_PHASE = "refactor"
MANUAL_NAME = "before-refactor"
HOLD_MARKER = "@@hold"  # printed at the hold point; the demo kills the process when it sees it

_FACTS = (
    "LMDB commits are atomic",
    "every value carries a tag bound to its address",
    "retention never deletes the newest valid checkpoint",
    "file contents are deduplicated",
    "a corrupt record is an error, never data",
    "restore_latest skips what fails validation",
)


class AgentError(Exception):
    """The agent found its working directory inconsistent with its restored state."""


@frozen
class AgentResult:
    """What one run of the agent did."""

    completed: int  # steps completed when the run ended
    total: int
    resumed_from: str | None  # checkpoint id restored at start, None for a fresh start
    resumed_at: int  # steps already completed at start
    checkpoints: tuple[str, ...]  # ids created by this run
    skipped: tuple[tuple[str, str], ...] = ()  # checkpoints restore_latest skipped: (id, why)

    @property
    def done(self) -> bool:
        return self.completed == self.total


def plan_steps(
    phases: Sequence[str] = PHASES, steps_per_phase: int = STEPS_PER_PHASE
) -> list[tuple[str, int]]:
    """Every step in order: (phase, step number within the phase, from 1)."""
    return [(p, s) for p in phases for s in range(1, steps_per_phase + 1)]


def _seed() -> dict[str, bytes]:
    return {"README.txt": b"demo task: write a short report on checkpointing\n"}


def _notes_dir(files: dict[str, bytes]) -> str:
    return "sections" if any(p.startswith("sections/") for p in files) else "notes"


def apply_step(files: dict[str, bytes], index: int, phase: str, step: int) -> None:
    """Step ``index`` (0-based, overall) as a change to a {relative path: bytes} mapping."""
    if phase == RISKY_PHASE and step == 1:
        # The risky move: every note file moves from notes/ to sections/.
        for path in sorted(p for p in files if p.startswith("notes/")):
            files["sections/" + path[len("notes/") :]] = files.pop(path)
    note = f"{_notes_dir(files)}/{phase}.md"
    line = f"- {phase} {step}: {_FACTS[index % len(_FACTS)]}\n"
    files[note] = files.get(note, f"# {phase}\n".encode()) + line.encode()
    lines = [f"step {i + 1} done\n" for i in range(index + 1)]
    files["report.md"] = ("# Report\n" + "".join(lines)).encode()


def expected_files(
    completed: int, phases: Sequence[str] = PHASES, steps_per_phase: int = STEPS_PER_PHASE
) -> dict[str, bytes]:
    """The exact working directory after ``completed`` steps."""
    files = _seed()
    for index, (phase, step) in enumerate(plan_steps(phases, steps_per_phase)[:completed]):
        apply_step(files, index, phase, step)
    return files


def read_tree(root: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every regular file under ``root`` as {relative posix path: bytes}."""
    base = Path(root)
    out: dict[str, bytes] = {}
    if not base.is_dir():
        return out
    for path in sorted(base.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(base).as_posix()] = path.read_bytes()
    return out


def _write_tree(root: Path, old: dict[str, bytes], new: dict[str, bytes]) -> None:
    for path in sorted(set(old) - set(new)):
        (root / path).unlink()
    for path, data in sorted(new.items()):
        if old.get(path) != data:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()


def _clear(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def run_agent(
    store_path: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    *,
    workflow_id: str = WORKFLOW,
    phases: Sequence[str] = PHASES,
    steps_per_phase: int = STEPS_PER_PHASE,
    hold_at: tuple[str, int] | None = None,
    on_hold: Callable[[], None] | None = None,
    step_delay: float = 0.0,
    out: Callable[[str], None] | None = None,
    open_kwargs: dict[str, Any] | None = None,
    store: ckdb.Store | None = None,
    sync_remote: bool = False,
) -> AgentResult:
    """Run the agent to completion, resuming from the newest valid checkpoint if there is one.

    ``hold_at=(phase, step)``: when that step is half done (report.md half written, a scratch
    file created, uncheckpointed), call ``on_hold()`` — the demo's process blocks there to be
    killed. ``step_delay`` seconds of "thinking" per step give a harness windows to kill in.
    ``store``: use this open store (a harness's) instead of opening ``store_path``; it is left
    open. ``sync_remote``: after each checkpoint, wait until it is in the store's remote (an
    agent that would rather wait than lose a step if its host dies). Raises :class:`AgentError`
    if a restored working directory does not match its state.
    """
    say = out or (lambda _msg: None)
    steps = plan_steps(phases, steps_per_phase)
    total = len(steps)
    root = Path(workdir).absolute()
    created: list[str] = []
    opened = ckdb.open(store_path, **(open_kwargs or {})) if store is None else None
    with contextlib.ExitStack() as stack:
        if opened is not None:
            store = stack.enter_context(opened)
        assert store is not None
        resumed_from: str | None = None
        skipped: tuple[tuple[str, str], ...] = ()
        try:
            root.mkdir(parents=True, exist_ok=True)
            report = store.restore_latest(workflow_id, target_dir=root, delete_extra=True)
        except ckdb.WorkflowNotFound:
            completed = 0
            _clear(root)
            _write_tree(root, {}, _seed())
            say(f"fresh start: {total} steps in phases {', '.join(phases)}")
        else:
            state = report.checkpoint.state
            completed = int(state["progress"]["completed"])
            resumed_from = report.checkpoint.id
            skipped = report.skipped_checkpoints
            for cid, why in skipped:
                say(f"skipped checkpoint {cid}: {why}")
            if read_tree(root) != expected_files(completed, phases, steps_per_phase):
                raise AgentError(
                    f"restored working directory does not match checkpoint {resumed_from} "
                    f"({completed} steps)"
                )
            info = report.checkpoint.info
            label = f"'{info.name}'" if info.name else f"#{info.sequence}"
            if completed < total:
                nxt = "{}/{}".format(*steps[completed])
                say(
                    f"restored {label} ({state['progress']['last']}): {report.files_written} "
                    f"files written, {report.deleted} stray removed; resuming at {nxt}"
                )
            else:
                say(f"restored {label}: already complete")
        resumed_at = completed
        config = {"phases": list(phases), "steps_per_phase": steps_per_phase}
        while completed < total:
            phase, step = steps[completed]
            files = read_tree(root)
            if phase == RISKY_PHASE and step == 1:
                info = store.create(
                    workflow_id,
                    phase,
                    state=_state(phase, phases, completed, total, config, "before " + phase),
                    files=root,
                    kind="manual",
                    name=MANUAL_NAME,
                    pinned=True,
                )
                created.append(info.id)
                say(f"manual checkpoint '{MANUAL_NAME}' before the risky step (pinned)")
            if step_delay:
                time.sleep(step_delay)
            new = dict(files)
            apply_step(new, completed, phase, step)
            if hold_at == (phase, step):
                # Half of the step: report.md half written, a scratch file, nothing checkpointed.
                (root / "report.md").write_bytes(new["report.md"][: len(new["report.md"]) // 2])
                (root / "scratch.tmp").write_bytes(b"half-finished thoughts\n")
                say(f"{phase} {step}/{steps_per_phase}: working (report.md half written)...")
                if on_hold is not None:
                    on_hold()
            _write_tree(root, read_tree(root), new)
            completed += 1
            state = _state(phase, phases, completed, total, config, f"{phase}/{step}")
            info = store.create(workflow_id, phase, state=state, files=root)
            created.append(info.id)
            shipped = ""
            if sync_remote:
                store.sync_remote(timeout=60)
                shipped = ", shipped"
            say(
                f"{phase} {step}/{steps_per_phase}: checkpoint #{info.sequence} {info.id} "
                f"({len(new)} files{shipped})"
            )
        return AgentResult(
            completed=completed,
            total=total,
            resumed_from=resumed_from,
            resumed_at=resumed_at,
            checkpoints=tuple(created),
            skipped=skipped,
        )


def _state(
    phase: str,
    phases: Sequence[str],
    completed: int,
    total: int,
    config: dict[str, Any],
    last: str,
) -> dict[str, Any]:
    return {
        "phase": {"name": phase, "index": list(phases).index(phase)},
        "task": {"goal": "write a short report on checkpointing", "steps_total": total},
        "agent": {"pid": os.getpid(), "model": "demo"},
        "progress": {"completed": completed, "last": last, "fraction": completed / total},
        "configuration": config,
    }


def _hold_forever() -> None:
    print(HOLD_MARKER, flush=True)
    # Block until killed (or until the parent goes away and closes our stdin).
    sys.stdin.read()
    os._exit(3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckdb._demo_agent")
    parser.add_argument("--store", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--workflow", default=WORKFLOW)
    parser.add_argument("--hold-at", help="PHASE:STEP: stop half way through that step")
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--remote", help="ship to this remote, and sync after every checkpoint")
    parser.add_argument("--remote-key-file", help="the fleet's master key")
    args = parser.parse_args(argv)
    open_kwargs: dict[str, Any] = {}
    if args.remote:
        open_kwargs["remote"] = ckdb.Remote(args.remote, key_file=args.remote_key_file)
    hold = None
    if args.hold_at:
        phase, _, step = args.hold_at.partition(":")
        hold = (phase, int(step))
    result = run_agent(
        args.store,
        args.workdir,
        workflow_id=args.workflow,
        hold_at=hold,
        on_hold=_hold_forever,
        step_delay=args.step_delay,
        out=lambda msg: print(msg, flush=True),
        open_kwargs=open_kwargs,
        sync_remote=bool(args.remote),
    )
    ok = read_tree(args.workdir) == expected_files(result.completed)
    print(
        f"done: {result.completed}/{result.total} steps; working directory "
        + ("matches the expected result" if ok else "DIFFERS from the expected result"),
        flush=True,
    )
    return 0 if ok and result.done else 1


if __name__ == "__main__":
    sys.exit(main())
