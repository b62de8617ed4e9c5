"""The crash-resume runner: kill a workflow at chosen points, restart it until it completes, and
check that it ends exactly where an uninterrupted run ends.

1. Reference: one uninterrupted run records the result, the final state and every hook point
   that fired (``before-checkpoint#1``, ``after-effect#2``, ...).
2. Sweep: one trial per reference point; a trial kills the first attempt at that point, then
   restarts the workflow (same store, same directories) until an attempt completes.
3. Search: Hypothesis generates schedules of several kills (entry k kills attempt k) and, on a
   failure, shrinks it to the smallest failing schedule.
4. Random: optional kills at random times (a timer in the child), for what no hook reaches.

The final state compared with the reference is the workflow's return value, the working
directory, the effects directory (the "outside world" side effects land in) and, by default, the
state of each workflow's newest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from attrs import field, frozen

import ckdb
from ckdb.testing._child import SYS_PATH_ENV
from ckdb.testing.trees import snapshot

__all__ = [
    "CrashResume",
    "CrashResumeFailure",
    "CrashResumeReport",
    "HookEvent",
    "Kill",
    "KillPoint",
    "Trial",
    "check_crash_resume",
]

_SERVER_GRACE = 60.0  # seconds past the per-attempt timeout before the parent gives up


@frozen(order=True)
class KillPoint:
    """The ``n``-th occurrence (1-based, counted per attempt) of ``hook`` in one attempt."""

    hook: str
    n: int

    def __str__(self) -> str:
        return f"{self.hook}#{self.n}"

    @classmethod
    def of(cls, value: KillPoint | tuple[str, int] | str) -> KillPoint:
        if isinstance(value, KillPoint):
            return value
        if isinstance(value, str):
            hook, sep, digits = value.rpartition("#")
            if not sep or not digits.isdigit():
                raise ValueError(f"a kill point is 'hook#n', not {value!r}")
            return cls(hook, int(digits))
        hook, n = value
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"kill point occurrence must be an int >= 1, not {n!r}")
        return cls(str(hook), n)


@frozen
class HookEvent:
    """A hook point that fired: the point and what it was about (phase or effect name)."""

    point: KillPoint
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.point} ({self.detail})" if self.detail else str(self.point)


@frozen
class Kill:
    """A kill that was delivered: in which attempt (1-based), at which point, or at random."""

    attempt: int
    point: KillPoint | None
    detail: str = ""
    random: str | None = None

    def __str__(self) -> str:
        if self.point is None:
            return f"attempt {self.attempt}: random kill {self.random}"
        about = f" ({self.detail})" if self.detail else ""
        return f"attempt {self.attempt}: kill at {self.point}{about}"


@frozen
class Trial:
    """One run to completion under a kill schedule."""

    schedule: tuple[KillPoint, ...]
    kills: tuple[Kill, ...]
    attempts: int
    problem: str | None = None  # None: same result and final state as the reference
    final: Any = field(default=None, repr=False, eq=False)
    result: Any = field(default=None, repr=False, eq=False)
    random_delay: float | None = None
    directory: str | None = None  # kept for failing trials, for inspection

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def effective_schedule(self) -> tuple[KillPoint, ...]:
        """The scheduled points that actually fired (a point an attempt never reached does not)."""
        return tuple(k.point for k in self.kills if k.point is not None)

    def describe(self) -> str:
        lines = [f"  {i}. {k}" for i, k in enumerate(self.kills, 1)] or ["  (no kill fired)"]
        return "\n".join(lines)


class CrashResumeFailure(AssertionError):
    """The workflow did not end where an uninterrupted run ends under some kill schedule."""

    def __init__(self, report: CrashResumeReport) -> None:
        super().__init__(report.summary())
        self.report = report


@frozen
class CrashResumeReport:
    workflow: str
    reference_result: Any
    reference_points: tuple[HookEvent, ...]
    trials: tuple[Trial, ...]
    minimal: Trial | None  # the smallest failing schedule, replayed from scratch
    seed: int
    search_ran: bool = False

    @property
    def ok(self) -> bool:
        """Every trial matched the reference, and at least one kill was delivered: a run that
        never killed anything proves nothing (e.g. a workflow that checkpoints only through
        an integration's saver, which has no hook points). Found in review."""
        return bool(self.kills) and all(t.ok for t in self.trials)

    @property
    def failures(self) -> tuple[Trial, ...]:
        return tuple(t for t in self.trials if not t.ok)

    @property
    def kills(self) -> tuple[Kill, ...]:
        """Every kill delivered, in every trial (hook kills and random ones)."""
        return tuple(k for t in self.trials for k in t.kills)

    @property
    def kill_points(self) -> frozenset[tuple[int, KillPoint]]:
        """Distinct (attempt, point) pairs that a kill was delivered at."""
        return frozenset((k.attempt, k.point) for k in self.kills if k.point is not None)

    @property
    def minimal_schedule(self) -> tuple[KillPoint, ...] | None:
        return None if self.minimal is None else self.minimal.effective_schedule

    def summary(self) -> str:
        random_kills = sum(1 for k in self.kills if k.point is None)
        head = "passed" if self.ok else "FAILED"
        if not self.kills:
            return (
                f"crash-resume FAILED: {self.workflow}\n"
                f"  no kill was delivered ({len(self.reference_points)} hook points in the "
                "reference run): the workflow never called store.create, effects.side_effect or "
                "kill_point. Add hook points, or set random_kills, so that crashes are tested."
            )
        lines = [
            f"crash-resume {head}: {self.workflow}",
            f"  reference: {len(self.reference_points)} hook points, "
            f"result {_short(self.reference_result)}",
            f"  {len(self.trials)} trials, {len(self.kills)} kills "
            f"({len(self.kill_points)} distinct hook points, {random_kills} random), "
            f"seed {self.seed}",
            "  points: "
            + ", ".join(str(e.point) for e in self.reference_points[:60])
            + (" ..." if len(self.reference_points) > 60 else ""),
        ]
        if self.ok:
            return "\n".join(lines)
        lines.append(f"  {len(self.failures)} failing trials")
        if self.minimal is not None:
            sched = [[p.hook, p.n] for p in self.minimal.effective_schedule]
            lines += [
                "minimal kill schedule (entry k kills attempt k):",
                self.minimal.describe(),
                f"replay: runner.replay({json.dumps(sched)})",
                "what differs from the uninterrupted run:",
                _indent(
                    self.minimal.problem or "(the replay passed: the failure is not deterministic)"
                ),
            ]
        else:
            first = self.failures[0]
            lines += [
                "first failure (random kill, not shrinkable):",
                first.describe(),
                _indent(first.problem or ""),
            ]
        if self.minimal is not None and self.minimal.directory:
            lines.append(f"  files of the replay: {self.minimal.directory}")
        return "\n".join(lines)

    def raise_for_failure(self) -> CrashResumeReport:
        if not self.ok:
            raise CrashResumeFailure(self)
        return self


# --- comparing final states ------------------------------------------------------------------


def same_result(a: Any, b: Any) -> bool:
    """Exact equality for ckdb values: NaN equals NaN, -0.0 differs from 0.0, bool is not int."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_result(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_result(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def diff(reference: Any, got: Any, path: str = "", limit: int = 12) -> list[str]:
    """Human-readable differences between two final states (at most ``limit`` lines)."""
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(out) >= limit or same_result(a, b):
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(a.keys() | b.keys(), key=repr):
                sub = f"{where}[{k!r}]"
                if k not in b:
                    out.append(f"{sub}: missing (reference: {_short(a[k])})")
                elif k not in a:
                    out.append(f"{sub}: unexpected {_short(b[k])}")
                else:
                    walk(a[k], b[k], sub)
            return
        if isinstance(a, bytes) and isinstance(b, bytes):
            la, lb = a.splitlines(), b.splitlines()
            if len(la) > 1 or len(lb) > 1:
                out.append(f"{where}: {len(la)} lines in the reference, {len(lb)} here")
                extra = [ln for ln in lb if lb.count(ln) > la.count(ln)]
                missing = [ln for ln in la if la.count(ln) > lb.count(ln)]
                if extra:
                    out.append(f"    extra (or repeated) lines: {_short(sorted(set(extra)))}")
                if missing:
                    out.append(f"    missing lines: {_short(sorted(set(missing)))}")
                return
        out.append(f"{where}: reference {_short(a)}, got {_short(b)}")

    walk(reference, got, path or "final")
    return out


def default_final_state(
    result: Any,
    store_path: Path,
    workdir: Path,
    effects_dir: Path,
    store_options: Mapping[str, Any],
    checkpoints: bool,
) -> dict[str, Any]:
    """The final state a trial is compared on (see the module docstring)."""
    final: dict[str, Any] = {
        "result": result,
        "workdir": snapshot(workdir),
        "effects": snapshot(effects_dir),
    }
    if checkpoints:
        latest: dict[str, Any] = {}
        opts = {k: v for k, v in store_options.items() if k not in ("retention", "durability")}
        with ckdb.open(store_path, create=False, retention=None, **opts) as store:
            for wf in store.workflows():
                info = store.latest(wf)
                latest[wf] = None if info is None else dict(store.load(info.id).state)
        final["checkpoints"] = latest
    return final


# --- running attempts --------------------------------------------------------------------------


@frozen
class _Attempt:
    status: str  # completed | killed | error | timeout
    events: tuple[HookEvent, ...]
    kill: Kill | None = None
    result: Any = None
    log: str = ""


class _ForkServer:
    """``python -m ckdb.testing._child --server WORKFLOW``: imports once, forks per attempt."""

    def __init__(self, workflow: str, env: dict[str, str], log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ckdb.testing._child", "--server", workflow],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=os.getcwd(),
            text=True,
        )
        hello = self._read(_SERVER_GRACE)
        if "error" in hello:
            self.close()
            raise ImportError(f"cannot import workflow {workflow!r}:\n{hello['error']}")

    def _read(self, timeout: float) -> dict[str, Any]:
        out = self.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError("the ckdb.testing fork server died or hung; see its log")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def run(self, request: dict[str, Any], timeout: float) -> dict[str, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout + _SERVER_GRACE)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
                self.proc.wait(_SERVER_GRACE)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stdin):
            if stream is not None and not stream.closed:
                stream.close()
        self._log.close()


def _read_trace(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text("utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a half-written last line: the kill came mid-write
    return records


class CrashResume:
    """Run a workflow under kill schedules. ``workflow`` is ``"package.module:function"``, called
    as ``function(store, workdir, effects)`` and returning a JSON-able result; it must resume
    from the store (``store.restore_latest``) when its workflow has checkpoints.

    ``directory`` holds one sub-directory per trial (removed when the trial passes). Use as a
    context manager, or call :meth:`close` (it stops the fork server)."""

    def __init__(
        self,
        workflow: str,
        directory: str | os.PathLike[str] | None = None,
        *,
        store_options: Mapping[str, Any] | None = None,
        compare_checkpoints: bool = True,
        normalize: Callable[[dict[str, Any]], Any] | None = None,
        timeout: float = 120.0,
        max_attempts: int = 50,
        start_method: str | None = None,
        keep_passing: bool = False,
    ) -> None:
        if start_method is None:
            start_method = "fork" if hasattr(os, "fork") else "spawn"
        if start_method not in ("fork", "spawn"):
            raise ValueError(f"start_method must be 'fork' or 'spawn', not {start_method!r}")
        self.workflow = workflow
        self._own_dir = directory is None
        self.directory = Path(
            tempfile.mkdtemp(prefix="ckdb-crash-") if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store_options = dict(store_options or {})
        self.compare_checkpoints = compare_checkpoints
        self.normalize = normalize
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.start_method = start_method
        self.keep_passing = keep_passing
        self._server: _ForkServer | None = None
        self._count = 0
        self._reference: Trial | None = None
        self._reference_events: tuple[HookEvent, ...] = ()
        self._reference_seconds = 0.0
        self._last_attempt_seconds = 0.0
        self._env = dict(os.environ)
        self._env[SYS_PATH_ENV] = json.dumps([p for p in sys.path if p])

    # -- lifecycle --

    def __enter__(self) -> CrashResume:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._own_dir and self.directory.exists() and not self.keep_passing:
            failing = any(p.name.startswith("trial-") for p in self.directory.iterdir())
            if not failing:
                shutil.rmtree(self.directory, ignore_errors=True)

    # -- one attempt --

    def _attempt(
        self, tdir: Path, k: int, kill_at: KillPoint | None, random_delay: float | None
    ) -> _Attempt:
        logs = tdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        request: dict[str, Any] = {
            "workflow": self.workflow,
            "store": str(tdir / "store.ckdb"),
            "workdir": str(tdir / "workdir"),
            "effects_dir": str(tdir / "effects"),
            "store_options": self.store_options,
            "kill_at": None if kill_at is None else [kill_at.hook, kill_at.n],
            "random_delay": random_delay,
            "trace": str(logs / f"attempt-{k}.trace"),
            "result": str(logs / f"attempt-{k}.result.json"),
            "log": str(logs / f"attempt-{k}.log"),
            "timeout": max(1, math.ceil(self.timeout)),
        }
        if self.start_method == "fork" and self._server is None:
            self._server = _ForkServer(self.workflow, self._env, self.directory / "server.log")
        start = time.monotonic()
        if self._server is not None:
            status = self._server.run(request, self.timeout)
        else:
            status = self._spawn(request, logs / f"attempt-{k}.request.json")
        self._last_attempt_seconds = time.monotonic() - start
        records = _read_trace(Path(request["trace"]))
        events = tuple(
            HookEvent(KillPoint(r["hook"], int(r["n"])), r.get("detail", ""))
            for r in records
            if "hook" in r
        )
        log_path = Path(request["log"])
        log = log_path.read_text("utf-8", "replace") if log_path.exists() else ""
        if status.get("signal") == signal.SIGKILL:
            last = records[-1] if records else {}
            if last.get("kill"):
                kill = Kill(k, events[-1].point, events[-1].detail)
            elif "random" in last:
                kill = Kill(k, None, random=str(last["random"]))
            else:
                return _Attempt("error", events, log=log + "\n(killed by SIGKILL from outside)")
            return _Attempt("killed", events, kill=kill, log=log)
        if status.get("signal") == signal.SIGALRM:
            return _Attempt("timeout", events, log=log)
        if status.get("exit") == 0:
            raw = json.loads(Path(request["result"]).read_text("utf-8"))
            return _Attempt("completed", events, result=raw["result"], log=log)
        return _Attempt("error", events, log=log or f"(exit status {status})")

    def _spawn(self, request: dict[str, Any], request_path: Path) -> dict[str, int]:
        request_path.write_text(json.dumps(request), "utf-8")
        with open(request["log"], "ab") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "ckdb.testing._child", "--once", str(request_path)],
                stdout=log,
                stderr=log,
                env=self._env,
                cwd=os.getcwd(),
                check=False,
                timeout=self.timeout + _SERVER_GRACE,
            )
        if proc.returncode < 0:
            return {"signal": -proc.returncode}
        return {"exit": proc.returncode}

    # -- one trial --

    def _final(self, tdir: Path, result: Any) -> Any:
        final = default_final_state(
            result,
            tdir / "store.ckdb",
            tdir / "workdir",
            tdir / "effects",
            self.store_options,
            self.compare_checkpoints,
        )
        return final if self.normalize is None else self.normalize(final)

    def _trial(
        self, schedule: Sequence[KillPoint], random_delay: float | None = None
    ) -> tuple[Trial, tuple[HookEvent, ...]]:
        self._count += 1
        tdir = self.directory / f"trial-{self._count:05d}"
        if tdir.exists():
            shutil.rmtree(tdir)
        kills: list[Kill] = []
        first_events: tuple[HookEvent, ...] = ()
        problem: str | None = None
        final: Any = None
        result: Any = None
        attempts = 0
        for k in range(1, self.max_attempts + 1):
            attempts = k
            kill_at = schedule[k - 1] if k <= len(schedule) else None
            outcome = self._attempt(tdir, k, kill_at, random_delay if k == 1 else None)
            if k == 1:
                first_events = outcome.events
            if outcome.status == "killed":
                assert outcome.kill is not None
                kills.append(outcome.kill)
                continue
            if outcome.status == "completed":
                result = outcome.result
                final = self._final(tdir, result)
                break
            what = "raised" if outcome.status == "error" else f"ran past {self.timeout}s"
            problem = f"attempt {k} {what}:\n{outcome.log.strip()[-4000:]}"
            break
        else:
            problem = f"no attempt completed in {self.max_attempts}"
        if problem is None and self._reference is not None:
            lines = diff(self._reference.final, final)
            if lines:
                problem = "\n".join(lines)
        keep = problem is not None or self.keep_passing
        if not keep:
            shutil.rmtree(tdir, ignore_errors=True)
        trial = Trial(
            schedule=tuple(schedule),
            kills=tuple(kills),
            attempts=attempts,
            problem=problem,
            final=final,
            result=result,
            random_delay=random_delay,
            directory=str(tdir) if keep else None,
        )
        return trial, first_events

    def reference(self) -> Trial:
        """The uninterrupted run (cached): its final state and the hook points it passed."""
        if self._reference is None:
            trial, events = self._trial(())
            # Random kills land within the span of one uninterrupted attempt.
            self._reference_seconds = self._last_attempt_seconds
            if not trial.ok:
                raise RuntimeError(
                    f"the uninterrupted run of {self.workflow} failed:\n{trial.problem}"
                )
            self._reference = trial
            self._reference_events = events
        return self._reference

    @property
    def reference_points(self) -> tuple[HookEvent, ...]:
        self.reference()
        return self._reference_events

    def replay(self, schedule: Iterable[KillPoint | tuple[str, int] | str]) -> Trial:
        """Run one schedule from scratch (entry k kills attempt k) and compare with the
        reference. Deterministic for a deterministic workflow."""
        self.reference()
        return self._trial([KillPoint.of(p) for p in schedule])[0]

    # -- the whole run --

    def run(
        self,
        *,
        schedules: Iterable[Iterable[KillPoint | tuple[str, int] | str]] = (),
        sweep: bool = True,
        max_examples: int = 25,
        max_kills: int = 3,
        random_kills: int = 0,
        seed: int | None = None,
    ) -> CrashResumeReport:
        """Reference run, explicit ``schedules``, the single-kill ``sweep`` over every reference
        point, then (while nothing failed) ``max_examples`` Hypothesis schedules of up to
        ``max_kills`` kills, then ``random_kills`` random-time kills. On a failure the report's
        ``minimal`` is the smallest failing schedule, replayed from scratch."""
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
        rng = random.Random(seed)
        self.reference()
        points = [e.point for e in self._reference_events]
        trials: list[Trial] = [self.replay(sched) for sched in schedules]
        if sweep:
            trials.extend(self._trial([point])[0] for point in dict.fromkeys(points))
        search_ran = False
        candidate: tuple[KillPoint, ...] | None = _smallest(trials, points)
        if candidate is None and max_examples > 0 and points:
            search_ran = True
            candidate = self._search(points, trials, max_examples, max_kills, rng)
        for _ in range(random_kills):
            delay = rng.uniform(0.0, max(self._reference_seconds, 0.01))
            trials.append(self._trial((), random_delay=delay)[0])
        minimal = None
        if candidate is not None:
            minimal = self.replay(candidate)
            trials.append(minimal)
        return CrashResumeReport(
            workflow=self.workflow,
            reference_result=self.reference().result,
            reference_points=self._reference_events,
            trials=tuple(trials),
            minimal=minimal,
            seed=seed,
            search_ran=search_ran,
        )

    def _search(
        self,
        points: list[KillPoint],
        trials: list[Trial],
        max_examples: int,
        max_kills: int,
        rng: random.Random,
    ) -> tuple[KillPoint, ...] | None:
        try:
            from hypothesis import HealthCheck, Phase, Verbosity, find, settings  # noqa: PLC0415
            from hypothesis import strategies as st  # noqa: PLC0415
            from hypothesis.errors import NoSuchExample  # noqa: PLC0415
        except ImportError as err:
            raise ImportError(
                "the schedule search of ckdb.testing needs Hypothesis: "
                "pip install 'ckdb[testing]', or pass max_examples=0"
            ) from err
        cache: dict[tuple[KillPoint, ...], Trial] = {}

        def fails(schedule: list[KillPoint]) -> bool:
            key = tuple(schedule)
            if key not in cache:
                cache[key] = self._trial(key)[0]
                trials.append(cache[key])
            return not cache[key].ok

        # An index into the reference points: shrinking moves toward earlier points.
        point = st.integers(0, len(points) - 1).map(points.__getitem__)
        strategy = st.lists(point, min_size=1, max_size=max(1, max_kills))
        config = settings(
            max_examples=max_examples,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=(Phase.generate, Phase.shrink),
            verbosity=Verbosity.quiet,
        )
        try:
            found = find(strategy, fails, settings=config, random=rng)
        except NoSuchExample:
            return None
        # What fired is the schedule: a point an attempt never reached changes nothing.
        return cache[tuple(found)].effective_schedule or tuple(found)


def _smallest(trials: Sequence[Trial], points: Sequence[KillPoint]) -> tuple[KillPoint, ...] | None:
    """The smallest failing deterministic schedule among ``trials``: fewest kills, then earliest
    points (the order Hypothesis shrinks toward)."""
    order = {p: i for i, p in reversed(list(enumerate(points)))}
    failing = [t.effective_schedule for t in trials if not t.ok and t.random_delay is None]
    if not failing:
        return None
    return min(failing, key=lambda s: (len(s), [order.get(p, len(order)) for p in s]))


def check_crash_resume(
    workflow: str,
    directory: str | os.PathLike[str] | None = None,
    *,
    out: IO[str] | None = None,
    store_options: Mapping[str, Any] | None = None,
    compare_checkpoints: bool = True,
    normalize: Callable[[dict[str, Any]], Any] | None = None,
    timeout: float = 120.0,
    start_method: str | None = None,
    **run_options: Any,
) -> CrashResumeReport:
    """Run :meth:`CrashResume.run` and raise :class:`CrashResumeFailure` (an AssertionError
    whose message is the report, minimal schedule included) unless every trial passed. The
    summary is written to ``out`` (e.g. ``sys.stdout``) when given."""
    with CrashResume(
        workflow,
        directory,
        store_options=store_options,
        compare_checkpoints=compare_checkpoints,
        normalize=normalize,
        timeout=timeout,
        start_method=start_method,
    ) as runner:
        report = runner.run(**run_options)
    if out is not None:
        out.write(report.summary() + "\n")
    return report.raise_for_failure()
