"""``python -m ckdb``: the command line (the same as the ``ckdb`` script)."""

import sys

from ckdb.cli import main

if __name__ == "__main__":
    sys.exit(main())
