"""Helpers of the merge tests: real pytest runs (each its own process) writing shards, and the
merge console script run the way a CI job runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(sys.executable).with_name("pytest-multiarch")
INI = """[pytest]
addopts = -p no:cacheprovider -p no:randomly --strict-markers
"""


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def project(root: Path, tests: str, ini_extra: str = "") -> Path:
    """A throw-away test project: its own pytest.ini, so the repository's settings stay out."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text(INI + ini_extra)
    (root / "test_shard.py").write_text(tests)
    return root


def run_shard(root: Path, shard: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = 600) -> Run:
    """``pytest --multiarch-report=SHARD ARGS`` in *root*, a separate process like a CI job."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", f"--multiarch-report={shard}", *args],
        cwd=root, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})},
    )
    run = Run(proc.returncode, proc.stdout, proc.stderr)
    assert shard.is_file(), f"no shard written:\n{run.stdout}\n{run.stderr}"
    return run


def merge(*args: str | Path, env: dict[str, str] | None = None, module: bool = False,
          cwd: Path | None = None) -> Run:
    """The console script (or ``python -m pytest_multiarch``) with *args*."""
    command = [sys.executable, "-m", "pytest_multiarch"] if module else [str(SCRIPT)]
    base = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    proc = subprocess.run([*command, "merge", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False, env={**base, **(env or {})}, cwd=cwd)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def assert_one_line_error(run: Run, *fragments: str) -> None:
    """Bad input: exit 2, one line on stderr naming the problem, nothing on stdout, no trace."""
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
