"""The engine runner's pure helpers: TLS from the environment, staleness, URL display."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import docker.tls
import pytest

from pytest_multiarch.runners.base import Session
from pytest_multiarch.runners.docker.cleanup import created_at, is_stale, process_alive
from pytest_multiarch.runners.docker.connection import display_url, tls_from_env


def test_no_tls_without_the_variables() -> None:
    assert tls_from_env({}) is False
    assert tls_from_env({"DOCKER_TLS_VERIFY": ""}) is False


def test_tls_verify_with_cert_path(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    tls = tls_from_env({"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert isinstance(tls, docker.tls.TLSConfig)
    assert tls.verify is True
    assert tls.ca_cert == str(tmp_path / "ca.pem")
    assert tls.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))


def test_tls_without_verify_when_only_cert_path(tmp_path: Path) -> None:
    tls = tls_from_env({"DOCKER_CERT_PATH": str(tmp_path)})
    assert isinstance(tls, docker.tls.TLSConfig)
    assert not tls.verify
    assert tls.cert is None


def test_display_hides_passwords() -> None:
    assert display_url("tcp://user:s3cret@host:2376") == "tcp://user@host:2376"
    assert display_url("ssh://root@127.0.0.1:2222") == "ssh://root@127.0.0.1:2222"


def test_process_alive_checks_start_time() -> None:
    assert process_alive(os.getpid(), time.time())
    # A live pid whose process started after the label was written is a reused pid.
    assert not process_alive(os.getpid(), time.time() - 10 ** 7)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not process_alive(dead.pid, time.time())


def test_staleness() -> None:
    now, host = time.time(), socket.gethostname()
    mine = Session("s", os.getpid(), host, now).labels()
    assert not is_stale(mine, 0, 3600, now, host)
    elsewhere = Session("s", 1, "other", now - 7200).labels()
    assert is_stale(elsewhere, 0, 3600, now, host)
    assert not is_stale(Session("s", 1, "other", now - 60).labels(), 0, 3600, now, host)
    # Labelled by other tooling, without owner: the engine's creation time decides.
    foreign = {"io.pytest-multiarch": "1", "io.pytest-multiarch.session": "x"}
    assert not is_stale(foreign, now - 60, 3600, now, host)
    assert is_stale(foreign, now - 7200, 3600, now, host)
    assert not is_stale(foreign, 0, 3600, now, host)  # unknown age: keep


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [({"Created": "2026-11-28T21:15:03.123456789Z"}, 1795900503.123456),
     ({"CreatedAt": "2026-11-28T21:15:03Z"}, 1795900503.0),
     ({"Created": "2026-11-28T22:15:03.5+01:00"}, 1795900503.5),
     ({"Created": 1795900503}, 1795900503.0),  # a container of a sparse list: epoch seconds
     ({}, 0.0)],
)
def test_created_at(attrs: dict[str, object], expected: float) -> None:
    assert created_at(SimpleNamespace(attrs=attrs)) == pytest.approx(expected)


def test_engine_only_start_options_on_the_rootfs_runner_name_the_option(tmp_path: Path) -> None:
    from pytest_multiarch.errors import RunnerError
    from pytest_multiarch.platforms import Platform
    from pytest_multiarch.runners.rootfs.runner import RootfsRunner

    rootfs = RootfsRunner(cache_dir=tmp_path)
    image = "127.0.0.1:5000/x@sha256:" + "0" * 64
    with pytest.raises(RunnerError) as excinfo:
        rootfs.start(image, Platform.parse("arm64"), network="net", tmpfs={"/t": ""})
    message = str(excinfo.value)
    assert "(network, tmpfs: engine-only options)" in message
    assert "--engine=docker" in message
