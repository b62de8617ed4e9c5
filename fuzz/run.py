"""Run one fuzz target under atheris (libFuzzer).

    python fuzz/run.py TARGET [--hypothesis] [--ignore-known] [--] [libFuzzer flags ...]
    python fuzz/run.py frame -max_total_time=60
    python fuzz/run.py --list

By default atheris feeds raw bytes to the target (``targets.TARGETS``), starting from the seed
corpus ``fuzz/corpus/TARGET/`` with the dictionary ``fuzz/frame.dict``; new inputs go to
``fuzz/.work/TARGET/`` (the seed folder is only read) and crashes to ``fuzz/crashes/``.
``--hypothesis`` drives the Hypothesis test instead (``HYPOTHESIS_TARGETS[TARGET]``,
``atheris.Setup(argv, test.hypothesis.fuzz_one_input)``): the only mode for ``encode_value``, whose
input is a Python value rather than bytes; the seed corpus and dictionary do not apply there.
``--ignore-known`` swallows the exception classes of already-reported bugs (``targets.KNOWN``).
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Address-space cap, so a huge allocation fails fast as MemoryError instead of paging in memory
#: until libFuzzer's RSS limit (or the machine) gives up. Override with CKDB_FUZZ_AS_LIMIT_MB=0.
AS_LIMIT_MB = int(os.environ.get("CKDB_FUZZ_AS_LIMIT_MB", "3072"))


def main(argv: list[str]) -> None:
    args = argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if args else 2)
    ours = {"--hypothesis", "--ignore-known", "--list"}
    flags = {a for a in args if a in ours}
    rest = [a for a in args if a not in ours and a != "--"]
    if "--ignore-known" in flags:
        os.environ["CKDB_FUZZ_IGNORE_KNOWN"] = "1"

    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install atheris (see fuzz/README.md)")

    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=["ckdb"]):
        import targets

    if "--list" in flags:
        print("\n".join(sorted(targets.HYPOTHESIS_TARGETS)))
        return
    if not rest or rest[0].startswith("-"):
        sys.exit("usage: python fuzz/run.py TARGET [--hypothesis] [--ignore-known] [-- flags]")
    name, libfuzzer = rest[0], rest[1:]
    if name not in targets.HYPOTHESIS_TARGETS:
        sys.exit(
            f"unknown target {name!r}; one of: {', '.join(sorted(targets.HYPOTHESIS_TARGETS))}"
        )

    if AS_LIMIT_MB:
        limit = AS_LIMIT_MB << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    if not any(a.startswith("-artifact_prefix=") for a in libfuzzer):
        libfuzzer.append(f"-artifact_prefix={crashes}/{name}-")
    if not any(a.startswith("-rss_limit_mb=") for a in libfuzzer):
        libfuzzer.append(f"-rss_limit_mb={AS_LIMIT_MB or 2048}")

    if "--hypothesis" in flags:
        fn = targets.HYPOTHESIS_TARGETS[name].hypothesis.fuzz_one_input
    else:
        if name not in targets.TARGETS:
            sys.exit(f"{name} takes a Python value, not bytes: run it with --hypothesis")

        def fn(data: bytes) -> None:
            targets.run(name, data)

        if not any(a.startswith("-dict=") for a in libfuzzer):
            libfuzzer.append(f"-dict={HERE / 'frame.dict'}")
        if not any(not a.startswith("-") for a in libfuzzer):  # no corpus folders given
            work = HERE / ".work" / name
            work.mkdir(parents=True, exist_ok=True)
            libfuzzer += [str(work), str(HERE / "corpus" / name)]

    atheris.Setup([argv[0], *libfuzzer], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
