"""The example project's images, built for the tests that run them (cached after a first build)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 60 * 60  # a bare machine builds the base images first (minutes per arch)


def build_example(script: str, *args: str) -> None:
    """Run ``example_project/<script> <args>`` (a no-op when the registry has the images from the
    same sources); fail the calling test with the end of its stderr if it fails."""
    done = subprocess.run(
        [str(ROOT / "example_project" / script), *args],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"example_project/{script} failed:\n{done.stderr[-3000:]}")
