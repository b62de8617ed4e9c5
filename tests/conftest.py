"""Shared fixtures. Hypothesis profiles are picked by HYPOTHESIS_PROFILE (default: "dev").

- ``ci``: fewer examples, for .ci/run on a shared 2-core machine.
- ``dev``: Hypothesis' defaults.
- ``deep``: many examples, for ``tox -e deep`` or a long local run.
No profile has a deadline: this machine is shared and noisy, timing is not what we test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import ckdb

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "deep", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.ckdb"


@pytest.fixture
def store(store_path: Path) -> Iterator[ckdb.Store]:
    """An open store with automatic retention off: tests that count checkpoints keep their
    subject (retention has its own tests)."""
    with ckdb.open(store_path, retention=None) as s:
        yield s


# --- remotes (tests/remote_helpers.py) -------------------------------------------------------

REMOTE_BACKENDS = ["memory", "file", "moto"] + (
    [pytest.param("ceph", marks=pytest.mark.ceph)] if os.environ.get("CKDB_CEPH_ENDPOINT") else []
)


@pytest.fixture(params=REMOTE_BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A remote backend (memory, file, moto; ceph when CKDB_CEPH_ENDPOINT is set)."""
    from tests.remote_helpers import Backends

    made = Backends(request.param, tmp_path)
    yield made
    made.close()


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[object]:
    """The in-memory twin only (protocol unit tests)."""
    from tests.remote_helpers import Backends

    made = Backends("memory", tmp_path)
    yield made
    made.close()


@pytest.fixture
def fleet_key() -> bytes:
    import secrets

    return secrets.token_bytes(32)
