"""Fixtures shared by the integration tier: a Docker API client and labelled check sessions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_multiarch.runners.docker.cleanup import remove_session

SESSION_LABEL = "io.pytest-multiarch.session"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """A Docker SDK client of the provisioned engine; fails (never skips) when none answers."""
    import docker

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/provision-host")
    yield client
    client.close()


@pytest.fixture
def session_id(request: pytest.FixtureRequest, engine: Any) -> Iterator[str]:
    """A fresh session id for a check; asserts nothing labelled with it is left afterwards."""
    sid = f"itest-{request.node.name[:20]}-{uuid.uuid4().hex[:8]}"
    yield sid
    left = engine.containers.list(all=True, filters={"label": [f"{SESSION_LABEL}={sid}"]},
                                  ignore_removed=True)
    remove_session(engine, sid)
    assert not left, f"containers left behind: {[c.name for c in left]}"
