"""Measure msgpack vs orjson on agent-like state (the measurement behind docs/design.md).

Run: python benchmarks/encoding_choice.py   (needs orjson: pip install orjson)
Prints medians of alternating rounds and the ratio; also what each library does to the values
ckdb must round-trip exactly.
"""

from __future__ import annotations

import statistics
import time

import msgpack
import orjson


def agent_state(n_messages: int) -> dict[str, object]:
    return {
        "messages": [
            {
                "role": "assistant" if i % 2 else "user",
                "content": f"step {i}: the agent considered option {i % 7} and wrote a paragraph "
                * 3,
                "tool_calls": [{"name": "search", "args": {"q": f"query {i}", "k": 5}}],
                "tokens": 120 + i,
                "score": i / 7.0,
            }
            for i in range(n_messages)
        ],
        "progress": {"step": n_messages, "fraction": 0.42, "done": False},
        "config": {"model": "m", "temperature": 0.2, "tools": ["search", "write"]},
    }


def timeit(fn, *args, rounds=200):  # type: ignore[no-untyped-def]
    t = time.perf_counter_ns()
    for _ in range(rounds):
        fn(*args)
    return (time.perf_counter_ns() - t) / rounds / 1000  # µs


def main() -> None:
    packer = msgpack.Packer(strict_types=True, use_bin_type=True)
    rows = []
    for n, label in ((28, "~8 KiB"), (3700, "~1 MiB")):
        state = agent_state(n)
        mp = packer.pack(state)
        oj = orjson.dumps(state)
        samples: dict[str, list[float]] = {k: [] for k in ("mp_enc", "oj_enc", "mp_dec", "oj_dec")}
        rounds = 400 if n < 100 else 10
        for _ in range(7):  # alternate the libraries, take medians
            samples["mp_enc"].append(timeit(packer.pack, state, rounds=rounds))
            samples["oj_enc"].append(timeit(orjson.dumps, state, rounds=rounds))
            samples["mp_dec"].append(timeit(msgpack.unpackb, mp, rounds=rounds))
            samples["oj_dec"].append(timeit(orjson.loads, oj, rounds=rounds))
        med = {k: statistics.median(v) for k, v in samples.items()}
        rows.append((label, len(mp), len(oj), med))
    print(
        "| state | msgpack bytes | orjson bytes | msgpack enc µs | orjson enc µs | "
        "msgpack dec µs | orjson dec µs | enc ratio mp/oj | dec ratio mp/oj |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, mpn, ojn, m in rows:
        print(
            f"| {label} | {mpn} | {ojn} | {m['mp_enc']:.1f} | {m['oj_enc']:.1f} | "
            f"{m['mp_dec']:.1f} | {m['oj_dec']:.1f} | {m['mp_enc'] / m['oj_enc']:.2f} | "
            f"{m['mp_dec'] / m['oj_dec']:.2f} |"
        )
    print()
    print("exactness (what ckdb must round-trip):")
    for value in (float("nan"), float("inf"), -0.0, 2**64, b"\x00bytes"):
        try:
            back = orjson.loads(orjson.dumps(value))
            oj_res = repr(back)
        except Exception as err:  # noqa: BLE001 - reporting what the library does
            oj_res = f"{type(err).__name__}"
        try:
            mp_res = repr(msgpack.unpackb(packer.pack(value)))
        except Exception as err:  # noqa: BLE001
            mp_res = f"{type(err).__name__} (ckdb: extension type)"
        print(f"  {value!r:>14}: orjson -> {oj_res:<22} msgpack -> {mp_res}")


if __name__ == "__main__":
    main()
