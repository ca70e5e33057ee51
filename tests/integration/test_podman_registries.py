"""podman like Docker for plain-HTTP loopback registries: the private ``podman system service``
the plugin starts gets its own registries.conf (the system's plus loopback and
``--multiarch-insecure-registry`` hosts marked insecure); a podman socket it did not start keeps
the system's rules and today's message.

The registry is the test bed's 127.0.0.1:5000, reached as ``localhost:5000``: the system's
registries.conf.d marks only ``127.0.0.1:5000`` insecure, so for podman that name is a plain-HTTP
registry nobody configured, while Docker pulls from it by itself.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_multiarch.errors import RunnerError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Session
from pytest_multiarch.runners.detect import probe
from pytest_multiarch.runners.docker.engine import EngineRunner
from pytest_multiarch.runners.podman_service import PodmanService

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed

pytestmark = pytest.mark.integration

ARM64 = Platform.parse("arm64")
EXTRA = "127.0.0.9:5999"  # an insecure registry named on the command line


@pytest.fixture
def fresh_ref(testbed: Testbed) -> Iterator[str]:
    """``localhost:5000/scratch-users/podman-ID@sha256:…``: an arm64 image whose digest no engine
    store has yet (podman finds a stored image by its digest under any name), pushed for this
    test to the loopback registry."""
    import docker

    tag = f"{testbed.registry}/scratch-users/podman-{uuid.uuid4().hex[:10]}:1"
    base = testbed.pinned("busybox", "linux/arm64")
    client = docker.from_env()
    try:
        context = io.BytesIO()
        dockerfile = f"FROM {base}\nLABEL io.pytest-multiarch.test={tag}\n".encode()
        with tarfile.open(fileobj=context, mode="w") as tar:
            entry = tarfile.TarInfo("Dockerfile")
            entry.size = len(dockerfile)
            tar.addfile(entry, io.BytesIO(dockerfile))
        context.seek(0)
        client.images.build(fileobj=context, custom_context=True, tag=tag,
                            platform="linux/arm64", rm=True)
        pushed = client.images.push(tag)
        digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed)
        assert digest is not None, pushed
        client.images.remove(tag, force=True)
    finally:
        client.close()
    repository = tag.rsplit(":", 1)[0].replace("127.0.0.1:", "localhost:", 1)
    ref = f"{repository}@{digest.group(1)}"
    yield ref
    subprocess.run(["podman", "rmi", "--force", ref], capture_output=True, timeout=120,
                   check=False)


@pytest.fixture
def unmanaged_podman() -> Iterator[str]:
    """A podman service started by hand, as a user would: the system's registries.conf only."""
    if shutil.which("podman") is None:
        pytest.fail("no podman on PATH: run scripts/provision-host")
    workdir = Path(tempfile.mkdtemp(prefix="users-podman-"))
    url = f"unix://{workdir / 'podman.sock'}"
    env = {k: v for k, v in os.environ.items() if k != "CONTAINERS_REGISTRIES_CONF"}
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", url], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not probe(url, timeout=2).answered:
            assert proc.poll() is None, "podman system service exited"
            assert time.monotonic() < deadline, "podman system service did not answer in 60 s"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_podman_socket_we_did_not_start_keeps_todays_message(
    fresh_ref: str, unmanaged_podman: str
) -> None:
    ref = fresh_ref
    with EngineRunner(unmanaged_podman, session=Session.new(f"users-pm-{os.getpid()}")) as pm:
        with pytest.raises(RunnerError) as info:
            pm.run(ref, ARM64, ["uname", "-m"])
    message = str(info.value)
    assert "podman needs every plain-HTTP registry, loopback too, marked insecure" in message
    assert 'location="localhost:5000"' in message


def test_the_private_service_pulls_from_loopback_like_docker(fresh_ref: str) -> None:
    ref = fresh_ref
    service = PodmanService(insecure_registries=[EXTRA])
    url = service.acquire()
    try:
        assert service.pid is not None
        environ = Path(f"/proc/{service.pid}/environ").read_bytes().split(b"\0")
        conf_path = next(e for e in environ if e.startswith(b"CONTAINERS_REGISTRIES_CONF="))
        conf = Path(conf_path.split(b"=", 1)[1].decode()).read_text()
        assert 'location = "localhost"' in conf
        assert f'location = "{EXTRA}"' in conf
        info = subprocess.run(
            ["podman", "info", "--format", "{{range $k, $v := .Registries}}{{$k}}={{$v.Insecure}} "
             "{{end}}"], capture_output=True, text=True, timeout=120, check=True,
            env={**os.environ, "CONTAINERS_REGISTRIES_CONF": conf_path.split(b"=", 1)[1].decode()},
        ).stdout.split()
        # podman reads the file as we wrote it, the system's drop-in (127.0.0.1:5000) still on.
        assert {"localhost=true", f"{EXTRA}=true", "127.0.0.1:5000=true"} <= set(info), info
        with EngineRunner(url, session=Session.new(f"users-pm-{os.getpid()}")) as pm:
            result = pm.run(ref, ARM64, ["uname", "-m"])
        assert result.stdout.strip() == "aarch64"
    finally:
        service.release()
    assert service.pid is None
