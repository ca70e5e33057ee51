"""A cancelled CI job leaves nothing behind: real ``pytest`` processes, real emulated containers.

SIGTERM (what CI systems send on cancel) is handled like Ctrl-C: fixtures and runners clean up,
pytest exits non-zero.  SIGKILL cannot be handled: the next run on the engine reaps what the
killed one left, by its owner-pid label.  Plus ``--multiarch-run-timeout`` bounding a run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from labelled import labelled

from pytest_multiarch.runners.base import LABEL_PID

pytestmark = pytest.mark.integration

TEST_FILE = textwrap.dedent("""
    IMAGE = {image!r}

    def test_long_emulated_run(multiarch_run):
        multiarch_run(IMAGE, ["sleep", "600"])

    def test_long_emulated_container(multiarch_container):
        box = multiarch_container(IMAGE, cmd=["sleep", "600"])
        box.exec(["sleep", "600"])
""")
QUICK_FILE = textwrap.dedent("""
    IMAGE = {image!r}

    def test_quick(multiarch_run):
        assert multiarch_run(IMAGE, ["true"]).ok
""")


def index_ref(corpus: dict[str, Any]) -> str:
    return f"{corpus['registry']['address']}/{corpus['busybox']['repository']}:" \
           f"{corpus['busybox']['tag']}"


def owned_by(pid: int) -> list[str]:
    return labelled(f"{LABEL_PID}={pid}")


def start_pytest(tmp_path: Path, body: str, *args: str) -> subprocess.Popen[str]:
    (tmp_path / "test_job.py").write_text(body)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this repository's ini
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", *args,
         str(tmp_path / "test_job.py")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for_containers(child: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if len(owned_by(child.pid)) >= count:
            return
        time.sleep(0.3)
    out = child.stdout.read() if child.stdout and child.poll() is not None else ""
    pytest.fail(f"the job's emulated containers never appeared: {out[-2000:]}")


def test_sigterm_cleans_up_and_exits_non_zero(corpus: dict[str, Any], tmp_path: Path) -> None:
    child = start_pytest(tmp_path, TEST_FILE.format(image=index_ref(corpus)), "--arch=arm64",
                         "-k", "container")
    try:
        wait_for_containers(child, 1)
        time.sleep(1)  # inside exec now
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode not in (0, -signal.SIGTERM), out[-2000:]
    assert owned_by(child.pid) == [], f"SIGTERM left containers behind:\n{out[-2000:]}"


def test_sigterm_during_run_removes_its_container(corpus: dict[str, Any], tmp_path: Path) -> None:
    child = start_pytest(tmp_path, TEST_FILE.format(image=index_ref(corpus)), "--arch=arm64",
                         "-k", "run")
    try:
        wait_for_containers(child, 1)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0, out[-2000:]
    assert "KeyboardInterrupt" in out or "Interrupted" in out, out[-2000:]
    assert owned_by(child.pid) == [], f"SIGTERM left containers behind:\n{out[-2000:]}"


def test_sigkill_leftovers_are_reaped_by_the_next_run(corpus: dict[str, Any],
                                                      tmp_path: Path) -> None:
    killed = start_pytest(tmp_path, TEST_FILE.format(image=index_ref(corpus)), "--arch=arm64",
                          "-k", "container")
    try:
        wait_for_containers(killed, 1)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
    left = owned_by(killed.pid)
    assert left, "SIGKILL cannot clean up: its containers must still be there"
    nxt = start_pytest(tmp_path, QUICK_FILE.format(image=index_ref(corpus)), "--arch=amd64")
    out, _ = nxt.communicate(timeout=300)
    assert nxt.returncode == 0, out[-2000:]
    assert owned_by(killed.pid) == [], f"the next run did not reap {left}"


def test_run_timeout_option_bounds_a_run(corpus: dict[str, Any], tmp_path: Path) -> None:
    started = time.monotonic()
    child = start_pytest(tmp_path, TEST_FILE.format(image=index_ref(corpus)), "--arch=amd64",
                         "-k", "run", "--multiarch-run-timeout=2")
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 1, out[-2000:]
    assert "RunTimeout" in out, out[-2000:]
    assert "within 2s" in out, out[-2000:]
    assert time.monotonic() - started < 120
    assert owned_by(child.pid) == []
    bad = start_pytest(tmp_path, QUICK_FILE.format(image=index_ref(corpus)),
                       "--multiarch-run-timeout=soon")
    out, _ = bad.communicate(timeout=120)
    assert bad.returncode == 4, out  # a usage error, not a traceback
    assert "--multiarch-run-timeout='soon'" in out
    assert "seconds above 0" in out
    assert "Traceback" not in out
