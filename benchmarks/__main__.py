"""``python -m benchmarks``: the performance suite (see ``benchmarks/run.py``)."""

from benchmarks.run import main

raise SystemExit(main())
