"""Two ckdb source trees side by side: CPU per operation (no fsync), alternating rounds.

    git worktree add /tmp/ckdb-old <commit>
    python -m benchmarks.versions /tmp/ckdb-old .
    python -m benchmarks.versions /tmp/ckdb-old . --only create --retention standard

Each measurement runs in a fresh process (300 checkpoints of the 8 KiB agent state, then the
operation); the two trees alternate, 5 rounds, medians. "caches emptied" clears the verified-bytes
memo (0.2), the parsed-metadata cache and the id text cache before each call. Markdown to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CODE = r"""
import sys, tempfile, time, json
sys.path.insert(0, SRC)
import ckdb
from ckdb import meta, layout
sys.path.insert(0, HERE)  # the workloads module (the same for both trees)
from benchmarks import workloads
what = WHAT
d = tempfile.mkdtemp()
st = ckdb.open(d + "/s", retention=RETENTION, _unsafe_nosync=True)
state = workloads.agent_state(8 << 10)
for i in range(300):
    st.create("wf", "step", state=workloads.vary(state, i))
def forget():
    if hasattr(st, "_verified"): st._verified.clear()
    meta._parse_cached.cache_clear()
    getattr(layout.id_to_text, 'cache_clear', lambda: None)()
N = 1500
t = time.perf_counter()
if what == "create":
    for i in range(N): st.create("wf", "step", state=workloads.vary(state, i))
    n = N
elif what == "load":
    for i in range(N):
        info = st.latest("wf"); st.load(info.id)
    n = N
elif what == "coldload":
    tot = 0
    for i in range(N // 3):
        forget(); a = time.perf_counter(); info = st.latest("wf"); st.load(info.id); tot += time.perf_counter() - a
    print(json.dumps(tot / (N // 3) * 1e6)); raise SystemExit
elif what == "list":
    for i in range(N // 20): st.list("wf", limit=100)
    n = N // 20
elif what == "coldlist":
    tot = 0
    for i in range(30):
        forget(); a = time.perf_counter(); st.list("wf", limit=100); tot += time.perf_counter() - a
    print(json.dumps(tot / 30 * 1e6)); raise SystemExit
print(json.dumps((time.perf_counter() - t) / n * 1e6))
"""


LABELS = {
    "create": "create 8 KiB (µs)",
    "load": "latest + load 8 KiB, repeated (µs)",
    "coldload": "latest + load 8 KiB, caches emptied (µs)",
    "list": "list 100, repeated (µs)",
    "coldlist": "list 100, caches emptied (µs)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="source tree of the older ckdb")
    parser.add_argument("new", help="source tree of the newer ckdb")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--retention",
        default=None,
        help="a preset name (e.g. standard, ckdb.open's default): creates apply it; default none",
    )
    parser.add_argument(
        "--only", default=",".join(LABELS), help=f"comma-separated, of: {', '.join(LABELS)}"
    )
    args = parser.parse_args(argv)
    only = [w for w in args.only.split(",") if w]
    if not only or set(only) - set(LABELS):
        parser.error(f"--only takes some of {', '.join(LABELS)}")
    here = str(Path(__file__).resolve().parent.parent)
    trees = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve())}
    res: dict[str, dict[str, list[float]]] = {k: {} for k in trees}
    for what in only:
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
            for name, src in order:
                code = f"SRC={src!r}\nWHAT={what!r}\nHERE={here!r}\nRETENTION={args.retention!r}\n"
                code += CODE
                out = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                )
                res[name].setdefault(what, []).append(json.loads(out.stdout.splitlines()[-1]))
    kept = "no retention" if args.retention is None else f"retention {args.retention!r}"
    print(f"| operation (CPU, no fsync, {kept}) | {args.old} | {args.new} | new / old | paired |")
    print("|---|---:|---:|---:|---:|")
    for what in only:
        a = statistics.median(res["old"][what])
        b = statistics.median(res["new"][what])
        # Each round's two runs were back to back: the median of their ratios is less
        # exposed to the machine's slow minutes than the ratio of the medians.
        pairs = zip(res["old"][what], res["new"][what], strict=True)
        paired = statistics.median(n / o for o, n in pairs)
        print(f"| {LABELS[what]} | {a:,.1f} | {b:,.1f} | {b / a:.2f} | {paired:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
