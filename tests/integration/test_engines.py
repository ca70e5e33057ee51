"""The engine runner on both engines -- Docker and podman (through its Docker-compatible API) --
plus engine choice, podman's own traps, the buildah-made corpus in the gate, and rootless podman.

Real components only: dockerd, Debian's podman 4.3 (a private ``podman system service`` per test
module, rootful; rootless as the provisioned test user), qemu-user via binfmt_misc, the loopback
registries and the corpus (scripts/build-test-images, scripts/build-buildah-images).  Nothing is
skipped when a piece is missing: it fails with what to run.

Handler switching (``serial``) uses ppc64le where it can: other work on these machines emulates
arm64 and s390x.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import pytest
from docker.types import Ulimit
from labelled import labelled
from runner_state import FakeState

from pytest_multiarch.errors import (
    CommandNotFound,
    EmulatorMissing,
    ExecFormatError,
    OutOfMemory,
    RunnerError,
    UlimitRefused,
    UsageError,
)
from pytest_multiarch.host import binfmt
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import LABEL_SESSION, Session
from pytest_multiarch.runners.classify import check_runs
from pytest_multiarch.runners.detect import detect
from pytest_multiarch.runners.docker.engine import EngineRunner, reap_stale
from pytest_multiarch.runners.podman_service import PodmanService, reap_stale_services

if TYPE_CHECKING:  # at run time `conftest` may be another directory's (tests/unit has one)
    from conftest import Testbed

pytestmark = pytest.mark.integration

PROVISION = "run scripts/provision-host (as root): it installs podman, buildah and catatonit"
ENGINES = ["docker", "podman"]
UNAME = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/s390x": "s390x",
         "linux/ppc64le": "ppc64le", "linux/arm/v7": "armv7l"}
AMD64, ARM64, S390X, PPC64LE = (Platform.parse(p) for p in ("amd64", "arm64", "s390x", "ppc64le"))


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (binfmt_misc switches, rootful podman); the test bed runs as root")


# -- engines ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman_service() -> Iterator[PodmanService]:
    service = PodmanService()
    try:
        service.acquire()
    except Exception as exc:
        pytest.fail(f"cannot start podman's API service ({exc}); {PROVISION}")
    yield service
    pid = service.pid
    service.release()
    assert service.pid is None
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists(), "the podman service outlived release()"


def _zombie(pid: int | None) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def engine_url(request: pytest.FixtureRequest, engine: str) -> str | None:
    """None: the Docker engine as DOCKER_HOST says; else the module's podman service."""
    if engine == "docker":
        return None
    service: PodmanService = request.getfixturevalue("podman_service")
    return service.url


def client_for(url: str | None) -> docker.DockerClient:
    return docker.from_env() if url is None else docker.DockerClient(base_url=url)


def leftovers(url: str | None, session: str) -> list[str]:
    """Names of every container, network and volume labelled with *session*."""
    return labelled(f"{LABEL_SESSION}={session}", url, everything=True)


@pytest.fixture(scope="module", params=ENGINES)
def runner(request: pytest.FixtureRequest) -> Iterator[EngineRunner]:
    url = engine_url(request, request.param)
    session = f"engines-{request.param}-{os.getpid()}-{int(time.time())}"
    try:
        engine = EngineRunner(url, session=Session.new(session))
    except Exception as exc:
        pytest.fail(f"the {request.param} engine is not usable ({exc}): {PROVISION}")
    assert engine.is_podman == (request.param == "podman")
    yield engine
    engine.close()
    assert leftovers(url, session) == [], "labelled objects left after close()"


def pinned(testbed: Testbed, name: str, plat: str) -> str:
    return testbed.pinned(name, plat)


# -- the runner suite, on both engines ----------------------------------------------------------


@pytest.mark.parametrize("plat", ["linux/amd64", "linux/arm64", "linux/s390x"])
def test_uname_by_digest(testbed: Testbed, runner: EngineRunner, plat: str) -> None:
    platform = Platform.parse(plat)
    result = runner.run(pinned(testbed, "busybox", plat), platform, ["uname", "-m"])
    assert result.stdout.strip() == UNAME[plat], result
    assert result.ok
    assert result.emulated == (plat != "linux/amd64")
    default = runner.run(pinned(testbed, "busybox", plat), platform)  # CMD uname -m
    assert default.stdout.strip() == testbed.corpus["busybox"]["output"][plat]


@pytest.mark.parametrize("engine", ENGINES)
def test_pull_from_the_tls_registry_with_credentials(
    request: pytest.FixtureRequest, testbed: Testbed, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    # The SDK reads DOCKER_CONFIG when the client is made; the engine checks the CA itself
    # (/etc/docker/certs.d, /etc/containers/certs.d).
    monkeypatch.setenv("DOCKER_CONFIG", testbed.env["AUTH_REGISTRY_DOCKER_CONFIG"])
    digest = testbed.corpus["busybox"]["digests"]["linux/arm64"]
    image = f"{testbed.auth_registry}/corpus/busybox@{digest}"
    url = engine_url(request, engine)
    with EngineRunner(url, session=Session.new(f"auth-{engine}-{os.getpid()}")) as authed:
        with contextlib.suppress(docker.errors.APIError):  # untag: the pull must really happen
            authed.client.images.remove(image)
        assert authed.run(image, ARM64, ["uname", "-m"]).stdout.strip() == "aarch64"


@pytest.mark.serial
def test_handler_off_is_emulator_missing(testbed: Testbed, runner: EngineRunner) -> None:
    require_root()
    image = pinned(testbed, "busybox", "linux/ppc64le")
    runner.ensure_image(image, PPC64LE)
    try:
        with binfmt.handler_disabled(PPC64LE) as names:
            with pytest.raises(EmulatorMissing) as info:
                runner.run(image, PPC64LE, ["uname", "-m"])
    finally:
        assert binfmt.preflight(PPC64LE).ok, "the handler was not switched back on"
    message = str(info.value)
    assert "exec format error" in message.lower()
    assert "uname" in message  # podman's catatonit only says "pid1": the command is named
    assert "pid1'" not in message.split("(")[0]
    assert f"echo 1 > /proc/sys/fs/binfmt_misc/{names[0]}" in message
    assert image in message
    assert runner.run(image, PPC64LE, ["uname", "-m"]).stdout.strip() == "ppc64le"


@pytest.mark.serial
def test_foreign_binary_is_exec_format_error(testbed: Testbed, runner: EngineRunner) -> None:
    # foreign-helper's amd64 variant carries an arm64 busybox: with qemu-aarch64 off the kernel
    # refuses it although amd64 is native -- the image's fault, not the host's.
    require_root()
    image = pinned(testbed, "foreign-helper", "linux/amd64")
    tool = testbed.corpus["foreign-helper"]["foreign_paths"]["linux/amd64"][0]
    runner.ensure_image(image, AMD64)
    with binfmt.handler_disabled(ARM64), pytest.raises(ExecFormatError) as info:
        runner.run(image, AMD64, [tool, "uname", "-m"])
    assert binfmt.preflight(ARM64).ok
    assert tool in str(info.value)
    assert "x86-64" in str(info.value)


def test_out_of_memory(testbed: Testbed, runner: EngineRunner) -> None:
    # tail keeps the whole line of an endless newline-free stream: it grows until killed.
    # podman 4.3 on cgroup v1 does not report OOMKilled: the kernel log tells the runner.
    image = pinned(testbed, "busybox", "linux/arm64")
    with pytest.raises(OutOfMemory) as info:
        runner.run(image, ARM64, ["tail", "/dev/zero"], mem_limit="32m", timeout=120)
    assert "32m" in str(info.value)
    assert "linux/arm64" in str(info.value)


@pytest.mark.parametrize("plat", ["linux/amd64", "linux/s390x"])
def test_command_not_found(testbed: Testbed, runner: EngineRunner, plat: str) -> None:
    platform = Platform.parse(plat)
    image = pinned(testbed, "busybox", plat)
    result = runner.run(image, platform, ["no-such-command", "--version"])
    assert result.exit_code == 127, result
    with pytest.raises(CommandNotFound, match="no-such-command"):
        check_runs(result)

    def start_and_use() -> None:  # raised by start(), or at the latest by the first exec
        runner.start(image, platform, ["/nope"]).exec(["true"])

    with pytest.raises(CommandNotFound):
        start_and_use()


def test_labels_limits_and_cleanup_leave_nothing(testbed: Testbed, runner: EngineRunner) -> None:
    session = f"labels-{os.getpid()}-{int(time.time())}"
    url = runner.url
    own = EngineRunner(url, session=Session.new(session))
    try:
        image = pinned(testbed, "busybox", "linux/arm64")
        net = own.create_network(f"ma-net-{session}")
        vol = own.create_volume(f"ma-vol-{session}")
        box = own.start(image, ARM64, ["sh", "-c", "mkdir -p /www; echo hi > /www/index.html; "
                                       "exec httpd -f -p 8080 -h /www"], ports=[8080])
        attrs = own.client.containers.get(box.id).attrs
        assert attrs["Config"]["Labels"][LABEL_SESSION] == session
        assert attrs["HostConfig"]["Memory"] == 512 * 1024 * 1024
        if own.is_podman:
            ulimits = {u["Name"].removeprefix("RLIMIT_").lower(): u["Hard"]
                       for u in attrs["HostConfig"]["Ulimits"]}
            assert {u.name: u.hard for u in own.ulimits or ()}.items() <= ulimits.items()
        assert box.exec(["uname", "-m"]).stdout.strip() == "aarch64"
        body = b""
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://{box.host}:{box.host_port(8080)}/",
                                              timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        assert body == b"hi\n"
        assert sorted(leftovers(url, session)) == sorted([box.name, net, vol])
        assert own.cleanup() == 3
        assert leftovers(url, session) == []
    finally:
        own.close()


def test_reap_stale_by_label(testbed: Testbed, runner: EngineRunner) -> None:
    image = pinned(testbed, "busybox", "linux/amd64")
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = f"{os.getpid()}-{int(time.time())}"
    ghost = Session(f"ghost-{tag}", dead.pid, socket.gethostname(), time.time() - 10)
    alive = Session(f"alive-{tag}", os.getpid(), socket.gethostname(), time.time())
    runner.ensure_image(image, AMD64)
    client = runner.client
    for owner in (ghost, alive):
        client.containers.create(image, ["true"], platform="linux/amd64", labels=owner.labels())
    client.networks.create(f"ghost-net-{tag}", labels=ghost.labels())
    try:
        removed = reap_stale(client, max_age=3600, sessions=[ghost.id, alive.id])
        assert removed == 2  # the ghost's container and network
        assert leftovers(runner.url, ghost.id) == []
        assert len(leftovers(runner.url, alive.id)) == 1
    finally:
        for owner in (ghost, alive):
            for c in client.containers.list(all=True, ignore_removed=True,
                                            filters={"label": f"{LABEL_SESSION}={owner.id}"}):
                c.remove(force=True)


SIGINT_CHILD = textwrap.dedent("""
    import sys
    from pytest_multiarch.platforms import Platform
    from pytest_multiarch.runners.base import Session
    from pytest_multiarch.runners.docker.engine import EngineRunner

    image, session, url = sys.argv[1], sys.argv[2], sys.argv[3] or None
    runner = EngineRunner(url, session=Session.new(session))
    plat = Platform.parse("arm64")
    runner.start(image, plat, ["sleep", "600"])
    print("READY", flush=True)
    runner.run(image, plat, ["sleep", "600"])  # interrupted here
""")


def test_sigint_leaves_nothing(testbed: Testbed, runner: EngineRunner) -> None:
    session = f"sigint-{os.getpid()}-{int(time.time())}"
    image = pinned(testbed, "busybox", "linux/arm64")
    child = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD, image, session, runner.url or ""],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stderr is not None
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
        deadline = time.monotonic() + 60
        while len(leftovers(runner.url, session)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(leftovers(runner.url, session)) == 2, "the run() container never appeared"
        child.send_signal(signal.SIGINT)
        child.wait(timeout=90)
    finally:
        if child.poll() is None:
            child.kill()
    assert leftovers(runner.url, session) == []
    assert "KeyboardInterrupt" in (child.stderr.read() if child.stderr else "")


# -- the wrong-variant trap: a regression test that passes only because runs are by digest ------

# (engine, variant pulled first by tag, variant asked for next): measured on this test bed.
TRAPS = {"podman": ("linux/ppc64le", "linux/s390x"), "docker": ("linux/arm/v7", "linux/arm64")}


def test_a_tag_runs_the_cached_variant_a_digest_the_right_one(
    testbed: Testbed, runner: EngineRunner
) -> None:
    engine = "podman" if runner.is_podman else "docker"
    cached, wanted = TRAPS[engine]
    # A tag of our own, so no other test's pulls or cache can change what the store holds.
    tag = f"{testbed.registry}/scratch-trap/busybox:{engine}-{os.getpid()}-{int(time.time())}"
    subprocess.run(["skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false",
                    "--dest-tls-verify=false", f"docker://{testbed.ref('busybox')}",
                    f"docker://{tag}"], check=True, capture_output=True)
    client = runner.client
    client.images.pull(tag, platform=cached)
    try:
        extra = {"ulimits": runner.ulimits} if runner.ulimits else {}
        out = client.containers.run(tag, ["uname", "-m"], platform=wanted, remove=True, **extra)
        # The engine's store keys by tag: asked for `wanted`, it ran the cached variant.
        assert out.decode().strip() == UNAME[cached], f"{engine} no longer has the trap"
        # The runner refuses the tag and, by digest, runs what was asked for.
        with pytest.raises(UsageError, match="by digest"):
            runner.run(tag, Platform.parse(wanted), ["uname", "-m"])
        result = runner.run(pinned(testbed, "busybox", wanted), Platform.parse(wanted),
                            ["uname", "-m"])
        assert result.stdout.strip() == UNAME[wanted]
    finally:
        client.images.remove(tag)


# -- podman specifics ---------------------------------------------------------------------------


def test_podman_ulimits_fit_and_a_refusal_names_the_limit(
    testbed: Testbed, podman_service: PodmanService
) -> None:
    assert podman_service.pid is not None
    limits = Path(f"/proc/{podman_service.pid}/limits").read_text()
    hard = {name: int(next(line for line in limits.splitlines() if line.startswith(title))
                      [len(title):].split()[1])
            for name, title in (("nofile", "Max open files"), ("nproc", "Max processes"))}
    image = pinned(testbed, "busybox", "linux/arm64")
    with EngineRunner(podman_service.url, session=Session.new(f"ulimit-{os.getpid()}")) as pm:
        assert {u.name: u.hard for u in pm.ulimits or ()} == {
            "nofile": min(hard["nofile"], 1048576), "nproc": min(hard["nproc"], 4194304)}
        assert pm.run(image, ARM64, ["sh", "-c", "ulimit -n"]).stdout.strip() == str(
            min(hard["nofile"], 1048576))
        fitting = {u.name: u for u in pm.ulimits or ()}
        for name, number in (("nofile", 7), ("nproc", 6)):
            # The other limit stays within bounds: podman would add its default for it.
            pm.ulimits = [Ulimit(name=name, soft=hard[name] + 1, hard=hard[name] + 1),
                          *(u for n, u in fitting.items() if n != name)]
            with pytest.raises(UlimitRefused) as info:
                pm.run(image, ARM64, ["true"])
            message = str(info.value)
            assert f"RLIMIT_{name.upper()} (rlimit type {number}, the {name} ulimit" in message
            assert podman_service.url in message
            assert "Fix:" in message
            with pytest.raises(UlimitRefused):
                pm.start(image, ARM64, ["sleep", "5"])
        assert leftovers(podman_service.url, pm.session.id) == []


def test_podman_private_service_pulls_loopback_over_plain_http(
    podman_service: PodmanService,
) -> None:
    # localhost:5000 is the same plain-HTTP registry, but the system marks only 127.0.0.1:5000
    # insecure; the private service's own registries.conf marks loopback insecure, so the pull
    # reaches the registry over HTTP (the refusal of a socket we did not start, and its
    # message: tests/integration/test_podman_registries.py).  A digest no store has: podman
    # finds a stored image by its digest whatever the repository, and would not pull at all.
    image = f"localhost:5000/corpus/busybox@sha256:{'0' * 64}"
    with EngineRunner(podman_service.url, session=Session.new(f"http-{os.getpid()}")) as pm, \
            pytest.raises(RunnerError) as info:
        pm.run(image, ARM64, ["true"])
    message = str(info.value)
    assert "HTTP response to HTTPS client" not in message
    assert "manifest unknown" in message


def test_registries_conf_marks_the_loopback_registry_insecure() -> None:
    conf = Path("/etc/containers/registries.conf.d/50-pytest-multiarch-testbed.conf")
    assert conf.exists(), PROVISION
    text = conf.read_text()
    assert 'location = "127.0.0.1:5000"' in text
    assert "insecure = true" in text


KILLED_OWNER = textwrap.dedent("""
    import os, signal
    from pytest_multiarch.runners.podman_service import PodmanService
    service = PodmanService()
    print(service.acquire(), service.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_podman_service_lifecycle_and_a_killed_owner() -> None:
    service = PodmanService()
    url = service.acquire()
    assert service.acquire() == url  # shared: started once
    pid = service.pid
    service.release()
    assert service.pid == pid  # one user left
    service.release()
    assert service.pid is None
    assert not Path(url.removeprefix("unix://")).parent.exists()
    # The owner dies by SIGKILL: its service gets SIGTERM from the kernel, the dir is reaped.
    child = subprocess.run([sys.executable, "-c", KILLED_OWNER], capture_output=True, text=True,
                           timeout=120, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    orphan_url, orphan_pid = child.stdout.split()
    deadline = time.monotonic() + 20
    while not _zombie(int(orphan_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _zombie(int(orphan_pid)), "the orphaned podman service is still running"
    workdir = Path(orphan_url.removeprefix("unix://")).parent
    assert workdir.exists()
    assert reap_stale_services() >= 1
    assert not workdir.exists()


def test_engine_podman_starts_one_service_for_the_session_and_stops_it(
    testbed: Testbed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pytest_multiarch.runners.factory import engine_header, make_default_runner

    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no rootless socket
    if detect("podman").url is not None:
        pytest.fail("a podman API service runs at /run/podman/podman.sock; this test needs none")
    state = FakeState("podman")
    assert engine_header(state).startswith(
        "engine=podman (from option; no podman socket answered (")
    runners = [make_default_runner(state, plat) for plat in (ARM64, S390X)]
    urls = {r.url for r in runners}  # type: ignore[attr-defined]
    assert len(urls) == 1, "one service for the session"
    (url,) = urls
    assert url is not None
    try:
        for plat, r in zip(("linux/arm64", "linux/s390x"), runners, strict=True):
            assert r.run(pinned(testbed, "busybox", plat), Platform.parse(plat),
                         ["uname", "-m"]).stdout.strip() == UNAME[plat]
    finally:
        runners[0].close()
        assert Path(url.removeprefix("unix://")).exists(), "stopped while a runner used it"
        runners[1].close()
    assert not Path(url.removeprefix("unix://")).exists()


# -- rootless podman, as the provisioned test user ----------------------------------------------


@pytest.fixture(scope="module")
def rootless(testbed: Testbed) -> Iterator[str]:
    user, uid = testbed.env.get("ROOTLESS_USER"), testbed.env.get("ROOTLESS_UID")
    if not user or not uid:
        pytest.fail(f"no ROOTLESS_USER in testbed.env: {PROVISION}")
    runtime = f"/run/user/{uid}"
    sock = f"{runtime}/podman/podman.sock"
    subprocess.run(["runuser", "-u", user, "--", "mkdir", "-p", f"{runtime}/podman"], check=True)
    env = {"XDG_RUNTIME_DIR": runtime, "HOME": f"/home/{user}", "PATH": os.environ["PATH"]}
    service = subprocess.Popen(
        ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in env.items()),
         "podman", "system", "service", "--time=0", f"unix://{sock}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    from pytest_multiarch.runners.detect import probe

    deadline = time.monotonic() + 60
    while not probe(f"unix://{sock}").answered:
        if service.poll() is not None or time.monotonic() > deadline:
            service.kill()
            err = service.stderr.read().decode() if service.stderr else ""
            pytest.fail(f"rootless podman service as {user} did not come up: {err}; {PROVISION}")
        time.sleep(0.2)
    yield f"unix://{sock}"
    os.killpg(service.pid, signal.SIGTERM)
    service.wait(timeout=30)


def test_rootless_podman(testbed: Testbed, rootless: str, tmp_path: Path) -> None:
    runtime = rootless.removeprefix("unix://").rsplit("/podman/", 1)[0]
    # auto, with no Docker engine: the rootless socket of $XDG_RUNTIME_DIR is found.
    choice = detect("auto", environ={"DOCKER_HOST": f"unix://{tmp_path}/none.sock",
                                     "XDG_RUNTIME_DIR": runtime})
    assert (choice.kind, choice.url) == ("podman", rootless)
    with EngineRunner(rootless, session=Session.new(f"rootless-{os.getpid()}")) as pm:
        assert pm.is_podman
        native = pm.run(pinned(testbed, "busybox", "linux/amd64"), AMD64, ["id", "-u"])
        assert native.stdout.strip() == "0"  # root in the user namespace
        box = pm.start(pinned(testbed, "busybox", "linux/amd64"), AMD64,
                       ["httpd", "-f", "-p", "8080", "-h", "/etc"], ports=[8080])
        body = b""
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://{box.host}:{box.host_port(8080)}/passwd",
                                              timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        assert body.startswith(b"root:"), "published port of a rootless container (slirp4netns)"
        box.stop(timeout=1)
        cgroup_v1 = not Path("/sys/fs/cgroup/cgroup.controllers").exists()
        assert pm.limits_ignored == cgroup_v1
        image = pinned(testbed, "busybox", "linux/arm64")
        if cgroup_v1:
            # Rootless podman on cgroup v1 drops memory limits: no emulated run without one.
            with pytest.raises(RunnerError, match="rootless podman on a cgroup v1 host"):
                pm.run(image, ARM64, ["uname", "-m"])
        else:
            assert pm.run(image, ARM64, ["uname", "-m"]).stdout.strip() == "aarch64"


# -- the plugin: engine choice in the header, the buildah corpus in the gate -------------------


def gate(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--arch-required", *args,
                                         timeout=600)


@pytest.mark.parametrize("engine", ENGINES)
def test_gate_passes_buildah_good_from_registry_and_layout(
    pytester: pytest.Pytester, testbed: Testbed, engine: str, tmp_path: Path
) -> None:
    layout = testbed.corpus["buildah_oci_layout"]
    report = tmp_path / "r.json"
    result = gate(pytester, f"--engine={engine}", "--arch=amd64,arm64,s390x",
                  f"--multiarch-image={testbed.ref('buildah-good')}",
                  f"--multiarch-image={layout['ref']}", f"--multiarch-report={report}")
    result.assert_outcomes(passed=2 * 7 * 3)
    result.stdout.fnmatch_lines([f"multiarch: *; engine={engine}*(from option*"])
    doc = json.loads(report.read_text())
    for plat, digest in testbed.corpus["buildah-good"]["digests"].items():
        assert doc["images"][testbed.ref("buildah-good")][plat.removeprefix("linux/")][
            "digest"] == digest
    for plat, digest in layout["digests"].items():
        assert doc["images"][layout["ref"]][plat.removeprefix("linux/")]["digest"] == digest


@pytest.mark.parametrize("engine", ENGINES)
def test_gate_fails_the_buildah_slip(pytester: pytest.Pytester, testbed: Testbed,
                                     engine: str) -> None:
    ref = testbed.ref("buildah-slip")
    result = gate(pytester, f"--engine={engine}", "--arch=amd64,arm64",
                  f"--multiarch-image={ref}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=11, failed=3)
    result.stdout.fnmatch_lines([
        f"index entry of {ref} for linux/arm64 points at sha256:* whose config says linux/amd64*",
        "*uname (→ /bin/busybox) is x86-64 (EM_X86_64, 64-bit LE); this would fail with exec "
        "format error on arm64*",
        "*host-native-only suspicious*",
        "*buildah-slip:1 binaries *| PASS *| FAIL AuditFailed*",
        "*buildah-slip:1 smoke *| PASS *| FAIL PlatformMismatchError*",
    ])


UNAME_TEST = """
def test_uname(arch, multiarch_run):
    result = multiarch_run({ref!r}, ["uname", "-m"], check=True)
    assert result.stdout.strip() == {{"arm64": "aarch64", "amd64": "x86_64"}}[arch.arch_name]
"""


def test_auto_without_any_engine_runs_on_rootfs_and_says_so(
    pytester: pytest.Pytester, testbed: Testbed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dead = f"unix://{tmp_path}/dead.sock"
    monkeypatch.setenv("DOCKER_HOST", dead)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    if detect("auto").kind != "rootfs":
        pytest.fail("a podman API service runs at /run/podman/podman.sock; this test needs none")
    pytester.makepyfile(test_u=UNAME_TEST.format(ref=testbed.ref("busybox")))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--engine=auto",
                                           "--arch=amd64,arm64", "-v", timeout=600)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        f"multiarch: *; engine=rootfs (from option; no engine answered: docker at {dead} "
        "(no such socket), podman at unix:///run/podman/podman.sock (*), podman at "
        f"unix://{tmp_path}/podman/podman.sock (no such socket); runs unpacked layers under "
        "proot/chroot (no ports); --engine=podman would start podman's API service); *",
    ])


def test_engine_podman_with_a_socket_that_does_not_answer(
    pytester: pytest.Pytester, testbed: Testbed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(bogus))
    listener.close()  # a socket file nobody listens on: what a killed service leaves
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{bogus}")
    pytester.makepyfile(test_u=UNAME_TEST.format(ref=testbed.ref("busybox")))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--engine=podman",
                                           "--arch=arm64", timeout=600)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"multiarch: *; engine=podman (from option; UNAVAILABLE: --engine=podman: "
        f"CONTAINER_HOST=unix://{bogus} does not answer (connection refused*",
        f"*CONTAINER_HOST=unix://{bogus} does not answer (connection refused (nothing listens: a"
        f" stale socket file)). Fix: start podman's API service there (podman system service "
        f"--time=0 unix://{bogus} &*remove the stale socket file {bogus}*",
    ])


def test_engine_podman_without_podman(
    pytester: pytest.Pytester, testbed: Testbed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    pytester.makepyfile(test_u=UNAME_TEST.format(ref=testbed.ref("busybox")))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--engine=podman",
                                           "--arch=arm64", timeout=600)
    assert result.ret != 0
    result.stdout.fnmatch_lines([
        "multiarch: *; engine=podman (from option; UNAVAILABLE: --engine=podman but no podman "
        "API socket answers (*) and there is no podman binary on PATH to start one. Fix: install"
        " podman (apt-get install podman catatonit)*",
    ])
    assert "EngineUnavailable" in result.stdout.str()
