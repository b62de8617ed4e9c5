"""``python -m ckdb``: the command line."""

import sys

from ckdb.cli import main

sys.exit(main())
