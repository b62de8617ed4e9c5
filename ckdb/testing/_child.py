"""The workflow's process: ``python -m ckdb.testing._child --once REQUEST.json`` runs one attempt;
``--server WORKFLOW`` is a fork server that imports the workflow once and forks one child per
attempt (each attempt then costs a fork, not an interpreter start).

The fork server never opens a store and starts no threads, so forking it is safe (ckdb's rule:
an LMDB environment must not cross ``fork()``; here each attempt opens its own after the fork).

Request (JSON): workflow, store, workdir, effects_dir, store_options, kill_at ([hook, n] or
null), random_delay (seconds or null), trace, result, log, timeout (seconds).
Exit status: 0 with the result file written, 1 when the workflow raised (traceback in the log),
-SIGKILL when killed at a point, -SIGALRM when it ran past ``timeout``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ckdb
from ckdb.testing import _hooks

SYS_PATH_ENV = "CKDB_TESTING_SYS_PATH"


def resolve(spec: str) -> Callable[..., Any]:
    """``"package.module:function"`` (or ``module:Class.method``) -> the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"workflow must be 'package.module:function', not {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj  # type: ignore[no-any-return]


def run_attempt(request: dict[str, Any], func: Callable[..., Any] | None = None) -> int:
    """Run the workflow once under the request's hooks; returns the exit code (0 or 1)."""
    if request.get("timeout"):
        signal.alarm(int(request["timeout"]))  # default action: terminate (a hang, reported)
    with open(request["trace"], "a", encoding="utf-8") as trace:
        kill_at = request.get("kill_at")
        hooks = _hooks.Hooks(trace, None if kill_at is None else (kill_at[0], int(kill_at[1])))
        delay = request.get("random_delay")
        if delay is not None:
            timer = threading.Timer(float(delay), hooks.kill_now, args=(f"after {delay:.4f}s",))
            timer.daemon = True
            timer.start()
        try:
            workflow = func if func is not None else resolve(request["workflow"])
            workdir = Path(request["workdir"])
            effects = _hooks.Effects(request["effects_dir"], hooks)
            workdir.mkdir(parents=True, exist_ok=True)
            effects.directory.mkdir(parents=True, exist_ok=True)
            _hooks.activate(effects)
            with ckdb.open(request["store"], **request.get("store_options", {})) as store:
                result = workflow(_hooks.HookedStore(store, hooks), workdir, effects)
            encoded = json.dumps({"result": result}, allow_nan=True)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            return 1
        finally:
            _hooks.activate(None)
    tmp = request["result"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(encoded)
    os.replace(tmp, request["result"])
    return 0


def _redirect(log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _status(raw: int) -> dict[str, int]:
    if os.WIFSIGNALED(raw):
        return {"signal": os.WTERMSIG(raw)}
    return {"exit": os.WEXITSTATUS(raw)}


def serve(spec: str) -> int:
    """Fork server loop: one JSON request per stdin line, one JSON status per stdout line."""
    out = sys.stdout
    try:
        func = resolve(spec)
    except BaseException:
        out.write(json.dumps({"error": traceback.format_exc()}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the attempt: never return into the server loop
            code = 1
            try:
                _redirect(request["log"])
                code = run_attempt(request, func)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, raw = os.waitpid(pid, 0)
        out.write(json.dumps(_status(raw)) + "\n")
        out.flush()
    return 0


def main(argv: list[str]) -> int:
    extra = os.environ.get(SYS_PATH_ENV)
    if extra:
        for entry in reversed(json.loads(extra)):
            if entry not in sys.path:
                sys.path.insert(0, entry)
    if len(argv) == 2 and argv[0] == "--server":
        return serve(argv[1])
    if len(argv) == 2 and argv[0] == "--once":
        request = json.loads(Path(argv[1]).read_text("utf-8"))
        return run_attempt(request)
    sys.stderr.write("usage: python -m ckdb.testing._child (--server WORKFLOW | --once REQUEST)\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
