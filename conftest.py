"""Shared fixtures of the suite: the provisioned test bed and its image corpus.

The test bed (engine, registries, sshd, qemu handlers, corpus) is made by scripts/provision-host.
When it is missing, tests that need it FAIL with the command that provisions it: an integration
tier that silently skipped would let CI pass without testing anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PROVISION_HINT = "run scripts/provision-host (as root) to provision the test bed"


@dataclass(frozen=True)
class Testbed:
    """Where the provisioned services and files are."""

    __test__ = False  # not a test class, despite its name

    state: Path
    env: dict[str, str]
    corpus: dict[str, Any]

    @property
    def registry(self) -> str:
        return self.env["REGISTRY"]

    @property
    def auth_registry(self) -> str:
        return self.env["AUTH_REGISTRY"]

    @property
    def auth_user(self) -> str:
        return Path(self.env["AUTH_REGISTRY_USER_FILE"]).read_text().strip()

    @property
    def auth_password(self) -> str:
        return Path(self.env["AUTH_REGISTRY_PASSWORD_FILE"]).read_text().strip()

    def ref(self, name: str) -> str:
        """The tag reference of corpus image *name* (e.g. ``busybox``)."""
        return str(self.corpus[name]["ref"])

    def pinned(self, name: str, platform: str) -> str:
        """``repo@sha256:…`` of *name*'s variant for *platform* (``linux/arm64``)."""
        entry = self.corpus[name]
        return f"{self.registry}/{entry['repository']}@{entry['digests'][platform]}"


def testbed_state() -> Path:
    return Path(os.environ.get("PYTEST_MULTIARCH_TESTBED", "/var/lib/pytest-multiarch-testbed"))


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    """The provisioned test bed; fails (never skips) when it is not there."""
    state = testbed_state()
    env_file, corpus_file = state / "testbed.env", state / "corpus.json"
    try:
        env = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        corpus = json.loads(corpus_file.read_text())
    except (OSError, ValueError) as exc:
        pytest.fail(f"test bed missing or incomplete ({exc}); {PROVISION_HINT}", pytrace=False)
    return Testbed(state, env, corpus)


@pytest.fixture(scope="session")
def corpus(testbed: Testbed) -> dict[str, Any]:
    """The corpus description written by scripts/build-test-images."""
    return testbed.corpus


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
