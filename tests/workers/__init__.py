"""Helper scripts that tests run in subprocesses (writers to kill, concurrent creators)."""
