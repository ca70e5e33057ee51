"""Fixtures shared by the unit tests: real foreign-architecture binaries from Debian packages."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

#: (package, dpkg arch) -> the file we want from it.  All static but hello (dynamic, arm64).
DEBIAN_BINARIES = {
    ("busybox-static", "arm64"): "bin/busybox",
    ("busybox-static", "s390x"): "bin/busybox",
    ("busybox-static", "ppc64el"): "bin/busybox",
    ("busybox-static", "armhf"): "bin/busybox",
    ("busybox-static", "armel"): "bin/busybox",
    ("hello", "arm64"): "usr/bin/hello",
}
FOREIGN_ARCHES = "arm64 s390x ppc64el armhf armel"
T = TypeVar("T")


def fetch_debian_binaries(directory: Path) -> dict[tuple[str, str], Path]:
    """``apt-get download`` the packages of :data:`DEBIAN_BINARIES` and unpack them with
    ``dpkg -x``.

    Needs the foreign architectures enabled (``dpkg --add-architecture arm64 s390x ppc64el armhf
    armel && apt-get update``, done by scripts/provision-host); fails with that hint otherwise:
    a suite that skipped its real-binary tests would pass without testing them.
    """
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.fail(
            "needs Debian's apt-get and dpkg to fetch foreign-architecture binaries",
            pytrace=False,
        )
    names = [f"{package}:{arch}" for package, arch in DEBIAN_BINARIES]
    result = subprocess.run(
        ["apt-get", "download", "-q", *names], cwd=directory, capture_output=True, text=True,
        timeout=300, check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"apt-get download {' '.join(names)} failed ({result.stderr.strip()[-300:]}); run "
            f"`dpkg --add-architecture {FOREIGN_ARCHES} && apt-get update` "
            "(scripts/provision-host does)",
            pytrace=False,
        )
    found: dict[tuple[str, str], Path] = {}
    for (package, arch), member in DEBIAN_BINARIES.items():
        (deb,) = directory.glob(f"{package}_*_{arch}.deb")
        root = directory / f"{package}-{arch}"
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
        found[package, arch] = root / member
    return found


@pytest.fixture(scope="session")
def debian_binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """The files of :data:`DEBIAN_BINARIES`, by ``(package, dpkg arch)``; downloaded once per
    session (per xdist worker)."""
    return fetch_debian_binaries(tmp_path_factory.mktemp("debs"))


def run_bounded(func: Callable[[], T], seconds: float = 5.0) -> T:
    """*func()* in a thread; fail the test (instead of hanging the suite) if it has not returned
    within *seconds*.  Hypothesis' deadline only measures examples that end; this catches a loop.
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(func())
        except BaseException as exc:  # handed over to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True, name="fuzz-bounded")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"did not end within {seconds:g} s (a loop or a hang)", pytrace=False)
    if errors:
        raise errors[0]
    return results[0]


@pytest.fixture(scope="session")
def bounded() -> Callable[..., object]:
    """:func:`run_bounded`, for the fuzz tests (session scope: Hypothesis reuses it per example)."""
    return run_bounded
