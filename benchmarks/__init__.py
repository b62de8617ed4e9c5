"""ckdb's benchmarks: ``python -m benchmarks [--quick]`` runs the whole suite (``run.py``);
``prune.py``, ``capture_restore.py`` and ``encoding_choice.py`` also run on their own."""
