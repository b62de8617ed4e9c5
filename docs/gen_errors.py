"""Generate docs/errors.md from the error hierarchy (borg scripts/errorlist.py).

Run: python docs/gen_errors.py > docs/errors.md   (tests/test_docs.py checks it is current)
"""

from __future__ import annotations

import inspect

from ckdb.errors import all_errors


def main() -> None:
    print("# Errors and exit codes\n")
    print("Every error ckdb raises on purpose derives from `CkdbError`. The CLI exits with the")
    print("class's code; 0 is success and 1 means a check ran and found problems.\n")
    print("| error | exit code | base classes | meaning |")
    print("|---|---|---|---|")
    for cls in all_errors():
        bases = ", ".join(f"`{b.__name__}`" for b in cls.__bases__)
        doc = " ".join((inspect.getdoc(cls) or "").split())
        print(f"| `{cls.__name__}` | {cls.exit_code} | {bases} | {doc} |")


if __name__ == "__main__":
    main()
