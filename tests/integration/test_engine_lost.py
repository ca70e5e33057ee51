"""An engine that dies or freezes mid-run ends in EngineUnavailable naming it, in bounded time.

Against a private dockerd this module starts itself (its own socket, data root and exec root
under /tmp/core-dockerd, a bridge of its own, no iptables), never the shared one: SIGKILL it while a
container runs, or SIGSTOP it so it answers nothing.  Teardown starts it again on the same
directories, removes what it holds and stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from pytest_multiarch.errors import EngineUnavailable
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import LABEL_SESSION, Session
from pytest_multiarch.runners.docker.engine import EngineRunner

pytestmark = pytest.mark.integration

ROOT = Path("/tmp/core-dockerd")
#: The private daemon's own bridge. Not ``--bridge=none``: a dockerd with the bridge disabled
#: deletes the host's ``docker0`` at start-up, and with it the shared engine's default network.
BRIDGE = "mtlost0"
URL = f"unix://{ROOT}/sock"
AMD64 = Platform.parse("amd64")


class PrivateDockerd:
    """One dockerd of our own; :meth:`signal` hits only its pid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not Path(f"/sys/class/net/{BRIDGE}").exists():
            subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
        sock = self.root / "sock"
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        log = (self.root / "log").open("ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--host", URL, "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "pid"),
             f"--bridge={BRIDGE}", "--iptables=false", "--ip-masq=false"],
            stdout=log, stderr=log, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                client = docker.DockerClient(base_url=URL, timeout=5)
                client.ping()
                client.close()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"private dockerd did not start: {(self.root / 'log').read_text()[-2000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)

    @staticmethod
    def _kill_pidfile(path: Path) -> None:
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        path.unlink(missing_ok=True)

    def stop(self) -> None:
        """Restart if killed, remove every container, then stop it (and its containerd)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
        else:
            # Its containerd dies of the broken log pipe, or lingers: either way a new dockerd
            # must not wait for the old one's socket ("containerd is still running").
            self._kill_pidfile(self.root / "exec" / "containerd" / "containerd.pid")
            with contextlib.suppress(FileNotFoundError):
                (self.root / "pid").unlink()
            self.start()
        client = docker.DockerClient(base_url=URL, timeout=60)
        try:
            for container in client.containers.list(all=True, ignore_removed=True):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
        finally:
            client.close()
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=60)
        # A killed dockerd leaves its data root's private bind mount behind: ours to undo.
        subprocess.run(["umount", str(self.root / "data")], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


@pytest.fixture
def dockerd() -> Iterator[PrivateDockerd]:
    if shutil.which("dockerd") is None:
        pytest.fail("no dockerd on PATH: run scripts/provision-host")
    daemon = PrivateDockerd(ROOT)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def busybox(corpus: dict[str, Any]) -> str:
    entry = corpus["busybox"]
    return (f"{corpus['registry']['address']}/{entry['repository']}@"
            f"{entry['digests']['linux/amd64']}")


def run_in_thread(runner: EngineRunner, image: str) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        started = time.monotonic()
        try:
            box["result"] = runner.run(image, AMD64, ["sleep", "60"])
        except BaseException as exc:  # examined by the test
            box["error"] = exc
        box["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def wait_running(session: str) -> None:
    client = docker.DockerClient(base_url=URL, timeout=10)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = client.containers.list(filters={"label": f"{LABEL_SESSION}={session}"},
                                           ignore_removed=True)
            if found:
                return
            time.sleep(0.1)
    finally:
        client.close()
    pytest.fail("the run's container never started on the private engine")


def test_engine_killed_mid_run_is_engine_unavailable(
    dockerd: PrivateDockerd, corpus: dict[str, Any]
) -> None:
    session = Session.new(f"lost-{os.getpid()}")
    runner = EngineRunner(URL, session=session)
    image = busybox(corpus)
    runner.ensure_image(image, AMD64)
    thread, box = run_in_thread(runner, image)
    wait_running(session.id)
    dockerd.signal(signal.SIGKILL)
    thread.join(30)
    assert not thread.is_alive(), "the run hung after its engine died"
    error = box.get("error")
    assert isinstance(error, EngineUnavailable), repr(error)
    assert URL in str(error), "the message names the engine"
    assert "stopped answering while running 'sleep 60'" in str(error)
    runner.close()  # cleanup against a dead engine is quiet, and does not raise


def test_frozen_engine_mid_run_ends_in_bounded_time(
    dockerd: PrivateDockerd, corpus: dict[str, Any]
) -> None:
    session = Session.new(f"frozen-{os.getpid()}")
    runner = EngineRunner(URL, session=session, run_timeout=2)
    runner.kill_grace = 3  # the stream's socket times out 2 + 3 s after the start
    image = busybox(corpus)
    runner.ensure_image(image, AMD64)
    thread, box = run_in_thread(runner, image)
    wait_running(session.id)
    dockerd.signal(signal.SIGSTOP)
    try:
        thread.join(30)
        assert not thread.is_alive(), "the run hung on a frozen engine"
    finally:
        dockerd.signal(signal.SIGCONT)
    error = box.get("error")
    assert isinstance(error, EngineUnavailable), repr(error)
    assert URL in str(error)
    assert box["seconds"] < 15, box["seconds"]
    runner.close()


def test_private_engine_leaves_the_shared_bridge_alone(dockerd: PrivateDockerd) -> None:
    """Regression: the private daemon once started with ``--bridge=none`` and deleted docker0,
    which broke every container on the shared engine's default network."""
    assert Path("/sys/class/net/docker0").exists(), "the private dockerd removed docker0"
    assert Path(f"/sys/class/net/{BRIDGE}").exists()
