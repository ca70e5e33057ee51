"""Engine choice (pytest_multiarch.runners.detect) and the podman helpers, against fake API sockets.

The fakes are real unix sockets answering ``GET /_ping`` the way Docker and podman do (podman adds
``Libpod-Api-Version``), so probing runs its real code; no engine is needed here.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_multiarch.errors import EngineUnavailable, UlimitRefused
from pytest_multiarch.runners.detect import EngineChoice, detect, podman_sockets, probe
from pytest_multiarch.runners.docker.podman import (
    init_exit_code,
    podman_ulimits,
    socket_peer_pid,
    ulimit_refused,
)

DOCKER_PING = b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nServer: Docker/20.10.24 (linux)\r\n\r\nOK"
PODMAN_PING = (b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nLibpod-Api-Version: 4.3.1\r\n"
               b"Server: Libpod/4.3.1 (linux)\r\n\r\nOK")


class FakeEngine:
    """A unix socket answering every connection with *answer*."""

    def __init__(self, path: Path, answer: bytes) -> None:
        self.path = path
        self.url = f"unix://{path}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(8)
        threading.Thread(target=self._serve, args=(answer,), daemon=True).start()

    def _serve(self, answer: bytes) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # peer_pid() hangs up without asking
                conn.recv(4096)
                conn.sendall(answer)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[dict[str, FakeEngine]]:
    engines = {"docker": FakeEngine(tmp_path / "docker.sock", DOCKER_PING),
               "podman": FakeEngine(tmp_path / "podman.sock", PODMAN_PING)}
    yield engines
    for engine in engines.values():
        engine.close()


def stale_socket(path: Path) -> str:
    """A socket file nobody listens on (what a killed service leaves): connect is refused."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    return f"unix://{path}"


def test_probe_tells_docker_from_podman(sockets: dict[str, FakeEngine], tmp_path: Path) -> None:
    docker, podman = probe(sockets["docker"].url), probe(sockets["podman"].url)
    assert (docker.answered, docker.podman) == (True, False)
    assert (podman.answered, podman.podman) == (True, True)
    assert probe(f"unix://{tmp_path}/none.sock").reason == "no such socket"
    assert "connection refused" in probe(stale_socket(tmp_path / "dead.sock")).reason


def test_probe_of_a_silent_listener_is_bounded(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen(1)
    try:
        started = time.monotonic()
        found = probe(f"unix://{tmp_path}/silent.sock", timeout=0.5)
        assert time.monotonic() - started < 3
        assert not found.answered
        assert "no answer within" in found.reason
    finally:
        silent.close()


def test_auto_prefers_a_docker_that_answers(sockets: dict[str, FakeEngine]) -> None:
    choice = detect("auto", environ={"DOCKER_HOST": sockets["docker"].url},
                    sockets=[sockets["podman"].url])
    assert choice == EngineChoice("docker", sockets["docker"].url, "auto: DOCKER_HOST answered",
                                  from_env=True)


def test_auto_recognises_podman_behind_docker_host(sockets: dict[str, FakeEngine]) -> None:
    choice = detect("auto", environ={"DOCKER_HOST": sockets["podman"].url}, sockets=[])
    assert (choice.kind, choice.url, choice.from_env) == ("podman", sockets["podman"].url, True)


def test_auto_falls_back_to_a_podman_socket(sockets: dict[str, FakeEngine],
                                            tmp_path: Path) -> None:
    dead = f"unix://{tmp_path}/no-docker.sock"
    choice = detect("auto", environ={"DOCKER_HOST": dead},
                    sockets=[f"unix://{tmp_path}/missing.sock", sockets["podman"].url])
    assert (choice.kind, choice.url, choice.start_service) == ("podman", sockets["podman"].url,
                                                                False)
    assert choice.why == f"docker did not answer at {dead}: no such socket"
    assert choice.describe("option") == (
        f"podman {sockets['podman'].url} (from option; docker did not answer at {dead}: "
        "no such socket)")


def test_auto_without_any_engine_is_rootfs_and_says_why(tmp_path: Path) -> None:
    dead = f"unix://{tmp_path}/no-docker.sock"
    stale = stale_socket(tmp_path / "podman.sock")
    choice = detect("auto", environ={"DOCKER_HOST": dead}, sockets=[stale],
                    which=lambda name: "/usr/bin/podman")
    assert (choice.kind, choice.url) == ("rootfs", None)
    assert f"docker at {dead} (no such socket)" in choice.why
    assert f"podman at {stale} (connection refused" in choice.why
    assert "--engine=podman would start podman's API service" in choice.why
    assert choice.describe("env PYTEST_MULTIARCH_ENGINE").startswith(
        "rootfs (from env PYTEST_MULTIARCH_ENGINE; no engine answered: ")
    assert "would start" not in detect("auto", environ={"DOCKER_HOST": dead}, sockets=[],
                                       which=lambda name: None).why


def test_docker_and_rootfs_are_not_probed(tmp_path: Path) -> None:
    dead = f"unix://{tmp_path}/nothing.sock"
    assert detect("docker", environ={"DOCKER_HOST": dead}) == EngineChoice(
        "docker", dead, "DOCKER_HOST", from_env=True)
    assert detect("docker", environ={}).url == "unix:///var/run/docker.sock"
    assert detect("rootfs", environ={}) == EngineChoice("rootfs", None, "")


def test_podman_takes_the_first_socket_that_answers(sockets: dict[str, FakeEngine],
                                                    tmp_path: Path) -> None:
    choice = detect("podman", environ={},
                    sockets=[f"unix://{tmp_path}/missing.sock", sockets["podman"].url])
    assert (choice.kind, choice.url, choice.why) == ("podman", sockets["podman"].url,
                                                     "its API socket answered")


def test_podman_starts_a_service_when_no_socket_answers(tmp_path: Path) -> None:
    choice = detect("podman", environ={}, sockets=[f"unix://{tmp_path}/missing.sock"],
                    which=lambda name: "/usr/bin/podman")
    assert (choice.kind, choice.url, choice.start_service) == ("podman", None, True)
    assert "starting podman system service --time=0 on a private socket" in choice.why
    assert f"unix://{tmp_path}/missing.sock (no such socket)" in choice.why


def test_podman_with_a_container_host_that_does_not_answer(tmp_path: Path) -> None:
    bogus = stale_socket(tmp_path / "bogus.sock")
    with pytest.raises(EngineUnavailable) as info:
        detect("podman", environ={"CONTAINER_HOST": bogus, "XDG_RUNTIME_DIR": str(tmp_path)},
               which=lambda name: "/usr/bin/podman")
    message = str(info.value)
    assert f"CONTAINER_HOST={bogus} does not answer (connection refused" in message
    assert f"podman system service --time=0 {bogus}" in message
    assert f"remove the stale socket file {tmp_path}/bogus.sock" in message


def test_podman_without_podman_names_sockets_and_fix(tmp_path: Path) -> None:
    stale = stale_socket(tmp_path / "podman.sock")
    with pytest.raises(EngineUnavailable) as info:
        detect("podman", environ={}, sockets=[stale, f"unix://{tmp_path}/missing.sock"],
               which=lambda name: None)
    message = str(info.value)
    assert f"{stale} (connection refused" in message
    assert f"unix://{tmp_path}/missing.sock (no such socket)" in message
    assert "no podman binary on PATH" in message
    assert "apt-get install podman" in message
    assert "socket that refuses connections is stale" in message


def test_podman_socket_candidates() -> None:
    assert podman_sockets({"XDG_RUNTIME_DIR": "/run/user/1000"}) == [
        "unix:///run/podman/podman.sock", "unix:///run/user/1000/podman/podman.sock"]
    assert podman_sockets({"CONTAINER_HOST": "unix:///x.sock"})[0] == "unix:///x.sock"
    assert podman_sockets({})[1] == f"unix:///run/user/{os.getuid()}/podman/podman.sock"


# -- podman specifics of the engine runner ------------------------------------------------------


def test_ulimits_fit_the_hard_limits() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for limits in (podman_ulimits(), podman_ulimits(os.getpid())):
        by_name = {u.name: u for u in limits}
        assert set(by_name) == {"nofile", "nproc"}
        for name, rlimit in (("nofile", resource.RLIMIT_NOFILE),
                             ("nproc", resource.RLIMIT_NPROC)):
            hard = resource.getrlimit(rlimit)[1]
            assert by_name[name].soft == by_name[name].hard
            assert hard == resource.RLIM_INFINITY or by_name[name].hard <= hard
        assert by_name["nproc"].hard <= pid_max
        assert by_name["nofile"].hard <= 1048576


def test_ulimits_read_another_process(tmp_path: Path) -> None:
    child = subprocess.Popen(["bash", "-c", "ulimit -n 777 && exec sleep 30"])
    try:
        deadline = time.monotonic() + 5
        while "777" not in Path(f"/proc/{child.pid}/limits").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert {u.name: u.hard for u in podman_ulimits(child.pid)}["nofile"] == 777
    finally:
        child.kill()
        child.wait()


def test_socket_peer_pid(sockets: dict[str, FakeEngine], tmp_path: Path) -> None:
    assert socket_peer_pid(str(sockets["podman"].path)) == os.getpid()
    assert socket_peer_pid(str(tmp_path / "missing.sock")) is None


@pytest.mark.parametrize(("number", "name"), [(7, "nofile"), (6, "nproc")])
def test_rlimit_refusal_names_the_limit_and_the_fix(number: int, name: str) -> None:
    text = ("runc: runc create failed: unable to start container process: error during container "
            "init: error setting rlimits for ready process: error setting rlimit type "
            f"{number}: operation not permitted: OCI permission denied")
    error = ulimit_refused(text, "unix:///run/podman/podman.sock", "127.0.0.1:5000/a@sha256:1",
                           "linux/arm64", podman_ulimits())
    assert isinstance(error, UlimitRefused)
    message = str(error)
    assert f"RLIMIT_{name.upper()} (rlimit type {number}, the {name} ulimit; asked {name}=" in (
        message)
    assert "unix:///run/podman/podman.sock" in message
    assert "127.0.0.1:5000/a@sha256:1 for linux/arm64" in message
    assert f"ulimit -H{'n' if name == 'nofile' else 'u'}" in message
    assert ulimit_refused("exec format error", "t", "i", "p", None) is None


def test_catatonit_missing_command_is_exit_127() -> None:
    enoent = "ERROR (catatonit:6): failed to exec pid1: No such file or directory\n"
    assert init_exit_code(1, enoent) == 127
    assert init_exit_code(1, "something else\n") == 1
    assert init_exit_code(0, "") == 0
