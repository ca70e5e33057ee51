"""The application checks' failure classes are public like every other: in ``pytest_multiarch``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_multiarch
from pytest_multiarch import MultiarchError
from pytest_multiarch.checks import errors as check_errors

CHECK_ERRORS = [
    "CheckError", "NotReady", "ServiceUnavailable", "ResponsesDiffer", "ReplicationError",
    "ReplicationRefused", "ReplicationBroken", "ReplicationLag", "ReplicationMismatch",
]


@pytest.mark.parametrize("name", CHECK_ERRORS)
def test_check_error_is_exported(name: str) -> None:
    cls = getattr(pytest_multiarch, name)
    assert name in pytest_multiarch.__all__
    assert isinstance(cls, type)
    assert issubclass(cls, MultiarchError)
    assert issubclass(cls, pytest_multiarch.CheckError)
    assert getattr(check_errors, name) is cls  # the README's older import path: the same class


def test_check_errors_carry_logs() -> None:
    exc = pytest_multiarch.ReplicationLag("replica on linux/s390x is behind", {"replica": "log"})
    assert exc.logs == {"replica": "log"}
    assert str(exc) == "replica on linux/s390x is behind"
    assert pytest_multiarch.ServiceUnavailable("x").logs == {}


def test_the_package_stays_light() -> None:
    """Exporting them loads no check module, no engine SDK and no database driver."""
    code = ("import sys, pytest_multiarch; "
            "bad = sorted(m for m in ('pytest_multiarch.checks', 'docker', 'pymysql', 'requests') "
            "if m in sys.modules); sys.exit(', '.join(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def _readme_failure_classes() -> list[str]:
    """The class names in the first column of the README's "Failure classes" table."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Failure classes", 1)[1].split("\n#", 1)[0]
    names = []
    for row in section.splitlines():
        cells = row.split("|")
        if len(cells) < 3 or "not a class" in cells[2] or set(cells[1].strip()) <= {"-", " "}:
            continue
        names += re.findall(r"`([A-Z][A-Za-z]+)`", cells[1])
    return names


def test_every_failure_class_the_readme_lists_is_exported() -> None:
    names = _readme_failure_classes()
    assert len(names) > 40, "the README's failure-class table was not found"
    missing = [n for n in names if n not in pytest_multiarch.__all__]
    assert not missing, f"listed in README but not exported from pytest_multiarch: {missing}"
    for name in names:
        assert issubclass(getattr(pytest_multiarch, name), MultiarchError), name
