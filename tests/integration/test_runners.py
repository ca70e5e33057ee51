"""The runners against the real test bed: Docker engine (unix, tcp, ssh), qemu-user through
binfmt_misc, the loopback registry and the corpus (scripts/build-test-images).

Nothing here is skipped when the test bed is missing: a missing piece fails with what to run.
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
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labelled import labelled
from runner_state import FakeState

from pytest_multiarch.errors import (
    CommandFailed,
    CommandNotFound,
    EmulatorCrash,
    EmulatorMissing,
    ExecFormatError,
    NoDefaultCommand,
    OutOfMemory,
    PlatformMismatchError,
    RemoteHostArchMismatch,
    RemoteHostUnavailable,
    RunTimeout,
)
from pytest_multiarch.host import binfmt
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners import emulation
from pytest_multiarch.runners.base import LABEL_SESSION, Session
from pytest_multiarch.runners.classify import check_runs
from pytest_multiarch.runners.docker.engine import EngineRunner, SSHOptions, reap_stale
from pytest_multiarch.runners.rootfs.runner import RootfsRunner

pytestmark = pytest.mark.integration

STATE = Path(os.environ.get("PYTEST_MULTIARCH_TESTBED", "/var/lib/pytest-multiarch-testbed"))
PROVISION = "run scripts/provision-host (as root) to start the engine, registry, sshd and corpus"
GOOD = ["linux/amd64", "linux/arm64", "linux/s390x", "linux/ppc64le", "linux/arm/v7"]
UNAME = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/s390x": "s390x",
         "linux/ppc64le": "ppc64le", "linux/arm/v7": "armv7l"}
AMD64, ARM64, S390X = (Platform.parse(p) for p in ("amd64", "arm64", "s390x"))
ROOT_ONLY = "needs root (binfmt_misc switches, chroot, cgroups); the test bed runs as root"


# -- test bed ---------------------------------------------------------------------------------


def pinned(corpus: dict[str, Any], name: str, platform: str) -> str:
    entry = corpus[name]
    return f"{corpus['registry']['address']}/{entry['repository']}@{entry['digests'][platform]}"


@pytest.fixture(scope="module")
def session_id() -> str:
    return f"it-{os.getpid()}-{int(time.time())}"


def leftovers(label_value: str) -> list[str]:
    return labelled(f"{LABEL_SESSION}={label_value}")


@pytest.fixture(scope="module")
def local(session_id: str) -> Iterator[EngineRunner]:
    try:
        runner = EngineRunner(session=Session.new(session_id))
    except Exception as exc:
        pytest.fail(f"the local Docker engine is not usable ({exc}): {PROVISION}")
    yield runner
    runner.close()
    assert leftovers(session_id) == [], "labelled containers left after close()"


def ssh_paramiko(session_id: str, named: Platform = AMD64) -> EngineRunner:
    return EngineRunner(
        "ssh://root@127.0.0.1:2222", named_arch=named, session=Session.new(session_id),
        ssh=SSHOptions(identity_file=STATE / "ssh" / "id_ed25519",
                       known_hosts=STATE / "ssh" / "known_hosts"),
    )


@pytest.fixture(scope="module")
def remotes(session_id: str) -> Iterator[dict[str, EngineRunner]]:
    for needed in ("ssh/id_ed25519", "ssh/known_hosts", "ssh/config"):
        if not (STATE / needed).exists():
            pytest.fail(f"missing {STATE / needed}: {PROVISION}")
    runners = {
        "ssh-paramiko": ssh_paramiko(session_id),
        "ssh-client": EngineRunner(
            "ssh://testbed-ssh", named_arch=AMD64, session=Session.new(session_id),
            ssh=SSHOptions(use_ssh_client=True, config_file=STATE / "ssh" / "config"),
        ),
        "ssh-paramiko-config": EngineRunner(
            "ssh://testbed-ssh", named_arch=AMD64, session=Session.new(session_id),
            ssh=SSHOptions(config_file=STATE / "ssh" / "config"),
        ),
        "tcp": EngineRunner("tcp://127.0.0.1:2375", named_arch=AMD64,
                            session=Session.new(session_id)),
        "unix": EngineRunner("unix:///var/run/docker.sock", named_arch=AMD64,
                             session=Session.new(session_id)),
    }
    yield runners
    for runner in runners.values():
        runner.close()


@pytest.fixture(scope="module")
def rootfs_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rootfs-cache")


def rootfs_runner(cache: Path, mode: str, session_id: str) -> RootfsRunner:
    from pytest_multiarch.oci.registry import RegistryClient

    return RootfsRunner(registry=RegistryClient(cache=False), cache_dir=cache, mode=mode,
                        session=Session.new(session_id))


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(ROOT_ONLY)


# -- every good variant, everywhere -----------------------------------------------------------


@pytest.mark.parametrize("plat", GOOD)
def test_uname_local_engine(corpus: dict[str, Any], local: EngineRunner, plat: str) -> None:
    platform = Platform.parse(plat)
    result = local.run(pinned(corpus, "busybox", plat), platform, ["uname", "-m"])
    assert result.stdout.strip() == UNAME[plat], result
    assert result.ok
    # Emulated runs say which qemu CPU model they ran on (the level's default here).
    choice = local.cpu_choice(platform)
    suffix = f", cpu {choice.model}" if choice is not None else ""
    assert result.where == local.describe(platform) + suffix
    assert result.cpu_model == (choice.model if choice is not None else "")
    assert result.emulated == (plat != "linux/amd64")
    default = local.run(pinned(corpus, "busybox", plat), platform)  # CMD uname -m
    assert default.stdout.strip() == corpus["busybox"]["output"][plat]


@pytest.mark.parametrize("plat", GOOD)
@pytest.mark.parametrize("remote", ["ssh-paramiko", "ssh-paramiko-config", "ssh-client", "tcp",
                                    "unix"])
def test_uname_remote_engines(corpus: dict[str, Any], remotes: dict[str, EngineRunner],
                              remote: str, plat: str) -> None:
    runner = remotes[remote]
    platform = Platform.parse(plat)
    result = runner.run(pinned(corpus, "busybox", plat), platform, ["uname", "-m"])
    assert result.stdout.strip() == UNAME[plat], result
    assert runner.engine_arch == AMD64


@pytest.mark.parametrize("plat", GOOD)
@pytest.mark.parametrize("mode", ["chroot", "proot"])
def test_uname_rootfs(corpus: dict[str, Any], rootfs_cache: Path, session_id: str, mode: str,
                      plat: str) -> None:
    if mode == "chroot":
        require_root()
    runner = rootfs_runner(rootfs_cache, mode, session_id)
    platform = Platform.parse(plat)
    result = runner.run(pinned(corpus, "busybox", plat), platform, ["uname", "-m"])
    assert result.stdout.strip() == UNAME[plat], result
    assert result.ok
    assert mode in result.where
    assert runner.run(pinned(corpus, "busybox", plat), platform).stdout.strip() == UNAME[plat]


def test_rootfs_chroot_keeps_the_cache_pristine(corpus: dict[str, Any], rootfs_cache: Path,
                                                 session_id: str) -> None:
    require_root()
    runner = rootfs_runner(rootfs_cache, "chroot", session_id)
    image = pinned(corpus, "busybox", "linux/arm64")
    runner.run(image, ARM64, ["sh", "-c", "echo x > /written && rm /bin/cat"])
    tree = runner.prepare(image, ARM64)
    assert not (tree.path / "written").exists()
    assert os.path.lexists(tree.path / "bin" / "cat")


def test_describe(local: EngineRunner, remotes: dict[str, EngineRunner]) -> None:
    assert local.describe(ARM64) == "emulated"
    assert local.describe(AMD64).startswith("native on ")
    assert remotes["tcp"].describe() == "native on 127.0.0.1"
    assert remotes["ssh-paramiko"].describe(AMD64) == "native on 127.0.0.1"


# -- remote hosts that must not be used --------------------------------------------------------


def test_remote_host_of_the_wrong_arch(session_id: str) -> None:
    with pytest.raises(RemoteHostArchMismatch) as info:
        EngineRunner("tcp://127.0.0.1:2375", named_arch=ARM64, session=Session.new(session_id))
    message = str(info.value)
    assert "linux/arm64" in message
    assert "x86_64" in message
    assert "tcp://127.0.0.1:2375" in message
    with pytest.raises(RemoteHostArchMismatch, match="named for linux/arm64"):
        ssh_paramiko(session_id, named=ARM64)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("scheme", ["tcp", "ssh"])
def test_unreachable_remote_host(session_id: str, scheme: str) -> None:
    port = closed_port()
    url = f"tcp://127.0.0.1:{port}" if scheme == "tcp" else f"ssh://root@127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(RemoteHostUnavailable) as info:
        EngineRunner(url, named_arch=ARM64, session=Session.new(session_id),
                     ssh=SSHOptions(identity_file=STATE / "ssh" / "id_ed25519",
                                    known_hosts=STATE / "ssh" / "known_hosts"))
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert url in message
    assert "Hint:" in message
    assert "did not answer after" in message


@pytest.mark.parametrize("scheme", ["tcp", "ssh"])
def test_silent_remote_host_times_out_in_bounded_time(session_id: str, scheme: str) -> None:
    # A listener that accepts and never says a word: the worst case for a client.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept_and_stay_silent() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    url = f"tcp://127.0.0.1:{port}" if scheme == "tcp" else f"ssh://root@127.0.0.1:{port}"
    started = time.monotonic()
    try:
        with pytest.raises(RemoteHostUnavailable, match=r"after \d+\.\ds"):
            EngineRunner(url, named_arch=ARM64, session=Session.new(session_id),
                         connect_timeout=3)
        assert time.monotonic() - started < 8
    finally:
        server.close()
        for conn in accepted:
            conn.close()


# -- each failure class, for real --------------------------------------------------------------


@pytest.mark.serial
def test_handler_off_is_emulator_missing(corpus: dict[str, Any], local: EngineRunner) -> None:
    require_root()
    image = pinned(corpus, "busybox", "linux/s390x")
    local.ensure_image(image, S390X)
    try:
        with binfmt.handler_disabled(S390X) as names:
            assert binfmt.preflight(S390X).state is binfmt.BinfmtState.DISABLED
            with pytest.raises(EmulatorMissing) as info:
                local.run(image, S390X, ["uname", "-m"])
    finally:
        assert binfmt.preflight(S390X).ok, "the handler was not switched back on"
    message = str(info.value)
    assert "exec format error" in message.lower()
    assert "exec uname failed" in message
    assert f"echo 1 > /proc/sys/fs/binfmt_misc/{names[0]}" in message
    assert image in message
    assert "linux/s390x" in message
    assert local.run(image, S390X, ["uname", "-m"]).stdout.strip() == "s390x"


@pytest.mark.serial
def test_foreign_binary_is_exec_format_error(corpus: dict[str, Any],
                                             local: EngineRunner) -> None:
    # foreign-helper's amd64 variant carries an arm64 busybox: with qemu-aarch64 off, the
    # kernel refuses it although amd64 itself is native -- the image's fault, not the host's.
    require_root()
    image = pinned(corpus, "foreign-helper", "linux/amd64")
    tool = corpus["foreign-helper"]["foreign_paths"]["linux/amd64"][0]
    local.ensure_image(image, AMD64)
    with binfmt.handler_disabled(ARM64), pytest.raises(ExecFormatError) as info:
        local.run(image, AMD64, [tool, "uname", "-m"])
    assert binfmt.preflight(ARM64).ok
    assert tool in str(info.value)
    assert "x86-64" in str(info.value)


@pytest.mark.serial
def test_rootfs_chroot_handler_off(corpus: dict[str, Any], rootfs_cache: Path,
                                   session_id: str) -> None:
    require_root()
    chroot = rootfs_runner(rootfs_cache, "chroot", session_id)
    proot = rootfs_runner(rootfs_cache, "proot", session_id)
    image = pinned(corpus, "busybox", "linux/ppc64le")
    plat = Platform.parse("ppc64le")
    chroot.prepare(image, plat)
    with binfmt.handler_disabled(plat):
        with pytest.raises(EmulatorMissing, match="exec format error"):
            chroot.run(image, plat, ["uname", "-m"])
        # proot calls qemu itself: it needs no binfmt_misc handler at all.
        assert proot.run(image, plat, ["uname", "-m"]).stdout.strip() == "ppc64le"
    assert binfmt.preflight(plat).ok


@pytest.mark.parametrize("runner_kind", ["engine", "rootfs-chroot"])
def test_out_of_memory(corpus: dict[str, Any], local: EngineRunner, rootfs_cache: Path,
                       session_id: str, runner_kind: str) -> None:
    require_root()
    runner: Any = local if runner_kind == "engine" else rootfs_runner(rootfs_cache, "chroot",
                                                                      session_id)
    image = pinned(corpus, "busybox", "linux/arm64")
    # tail keeps the whole line of an endless newline-free stream: it grows until killed.
    with pytest.raises(OutOfMemory) as info:
        runner.run(image, ARM64, ["tail", "/dev/zero"], mem_limit="32m", timeout=120)
    assert "32m" in str(info.value)
    assert "linux/arm64" in str(info.value)


def test_emulator_crash(corpus: dict[str, Any], local: EngineRunner, rootfs_cache: Path,
                        session_id: str) -> None:
    image = pinned(corpus, "busybox", "linux/arm64")
    with pytest.raises(EmulatorCrash, match="uncaught target signal 11") as info:
        local.run(image, ARM64, ["sh", "-c", "kill -SEGV $$"])
    assert "qemu-user" in str(info.value)
    assert image in str(info.value)
    with pytest.raises(EmulatorCrash, match="uncaught target signal 11"):
        rootfs_runner(rootfs_cache, "proot", session_id).run(
            image, ARM64, ["sh", "-c", "kill -SEGV $$"])


def test_command_not_found(corpus: dict[str, Any], local: EngineRunner, rootfs_cache: Path,
                           session_id: str) -> None:
    image = pinned(corpus, "busybox", "linux/s390x")
    for runner in (local, rootfs_runner(rootfs_cache, "proot", session_id)):
        result = runner.run(image, S390X, ["no-such-command", "--version"])
        assert result.exit_code == 127
        with pytest.raises(CommandNotFound, match="no-such-command"):
            check_runs(result)

    def start_and_use() -> None:  # raised by start(), or at the latest by the first exec
        local.start(image, S390X, ["/nope"]).exec(["true"])

    with pytest.raises(CommandNotFound):
        start_and_use()


def test_application_failure_is_a_result(corpus: dict[str, Any], local: EngineRunner) -> None:
    image = pinned(corpus, "busybox", "linux/arm64")
    result = local.run(image, ARM64, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert "out" in result.logs
    assert "err" in result.logs
    with pytest.raises(CommandFailed, match="exited 3") as info:
        check_runs(result)
    assert "err" in info.value.logs


def test_no_default_command(corpus: dict[str, Any], local: EngineRunner) -> None:
    # Build a variant without Entrypoint/Cmd and push it, so it can be run by digest.
    base = pinned(corpus, "busybox", "linux/arm64")
    repo = f"{corpus['registry']['address']}/scratch-runner-tests/no-cmd"
    client = local.client
    client.images.pull(base, platform="linux/arm64")
    dockerfile = f"FROM {base}\nCMD []\n".encode()
    import io

    _image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), tag=f"{repo}:1",
                                   platform="linux/arm64", rm=True)
    client.images.push(repo, tag="1")
    digest = client.images.get_registry_data(f"{repo}:1").id
    with pytest.raises(NoDefaultCommand, match="no default command"):
        local.run(f"{repo}@{digest}", ARM64)


def test_tag_and_wrong_platform_are_refused(corpus: dict[str, Any], local: EngineRunner) -> None:
    from pytest_multiarch.errors import UsageError

    with pytest.raises(UsageError, match="by digest"):
        local.run(corpus["busybox"]["ref"], ARM64, ["true"])
    with pytest.raises(PlatformMismatchError, match="linux/arm64"):
        local.run(pinned(corpus, "busybox", "linux/arm64"), Platform.parse("arm/v7"), ["true"])


def test_run_timeout_kills_and_removes(corpus: dict[str, Any], local: EngineRunner) -> None:
    started = time.monotonic()
    with pytest.raises(RunTimeout, match="within 2s"):
        local.run(pinned(corpus, "busybox", "linux/arm64"), ARM64, ["sleep", "60"], timeout=2)
    assert time.monotonic() - started < 15
    assert leftovers(local.session.id) == []


# -- started containers ------------------------------------------------------------------------


def test_started_container(corpus: dict[str, Any], local: EngineRunner) -> None:
    image = pinned(corpus, "busybox", "linux/arm64")
    with local.start(image, ARM64, ["sh", "-c", "echo started; mkdir -p /www; "
                                    "echo hello > /www/index.html; exec httpd -f -p 8080 -h /www"],
                     ports=[8080]) as box:
        attrs = local.client.containers.get(box.id).attrs
        assert attrs["HostConfig"]["Memory"] == 512 * 1024 * 1024
        assert attrs["HostConfig"]["MemorySwap"] == 512 * 1024 * 1024
        assert attrs["Config"]["Labels"][LABEL_SESSION] == local.session.id
        assert box.exec(["uname", "-m"]).stdout.strip() == "aarch64"
        port = box.host_port(8080)
        body = b""
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://{box.host}:{port}/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        assert body == b"hello\n"
        assert box.exec(["no-such-command"]).exit_code == 127
        with pytest.raises(RunTimeout):
            box.exec(["sleep", "30"], timeout=1)
    assert "started" in box.logs()  # kept after stop()
    assert leftovers(local.session.id) == []


# -- cleanup -------------------------------------------------------------------------------------


SIGINT_CHILD = textwrap.dedent("""
    import sys
    from pytest_multiarch.platforms import Platform
    from pytest_multiarch.runners.base import Session
    from pytest_multiarch.runners.docker.engine import EngineRunner

    image, session = sys.argv[1], sys.argv[2]
    runner = EngineRunner(session=Session.new(session))
    plat = Platform.parse("arm64")
    runner.start(image, plat, ["sleep", "600"])
    print("READY", flush=True)
    runner.run(image, plat, ["sleep", "600"])  # interrupted here
""")


def test_sigint_leaves_no_container(corpus: dict[str, Any], tmp_path: Path) -> None:
    session = f"sigint-{os.getpid()}-{int(time.time())}"
    image = pinned(corpus, "busybox", "linux/arm64")
    child = subprocess.Popen([sys.executable, "-c", SIGINT_CHILD, image, session],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stderr is not None
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
        deadline = time.monotonic() + 30
        while len(leftovers(session)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(leftovers(session)) == 2, "the run() container never appeared"
        child.send_signal(signal.SIGINT)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert leftovers(session) == []
    assert "KeyboardInterrupt" in (child.stderr.read() if child.stderr else "")


def test_reap_stale(corpus: dict[str, Any], local: EngineRunner) -> None:
    image = pinned(corpus, "busybox", "linux/amd64")
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    tag = f"{os.getpid()}-{int(time.time())}"
    ghost = Session(f"ghost-{tag}", dead.pid, host, time.time() - 10)
    alive = Session(f"alive-{tag}", os.getpid(), host, time.time())
    young_elsewhere = Session(f"young-{tag}", 1, "another-host", time.time() - 10)
    old_elsewhere = Session(f"old-{tag}", 1, "another-host", time.time() - 7200)
    owners = (ghost, alive, young_elsewhere, old_elsewhere)
    client = local.client
    local.ensure_image(image, AMD64)
    for owner in owners:
        client.containers.create(image, ["true"], platform="linux/amd64", labels=owner.labels())
    network = client.networks.create(f"ghost-net-{tag}", labels=ghost.labels())
    try:
        # Other sessions share this engine (other test runs): reap only ours.
        removed = reap_stale(client, max_age=3600, sessions=[o.id for o in owners])
        assert leftovers(ghost.id) == []
        assert leftovers(old_elsewhere.id) == []
        assert len(leftovers(alive.id)) == 1  # its owner (this process) lives
        assert len(leftovers(young_elsewhere.id)) == 1  # cannot check its owner; too young
        assert removed == 3  # two containers and the network
        assert network.id not in [n.id for n in client.networks.list()]
    finally:
        for owner in owners:
            for name in leftovers(owner.id):
                client.containers.get(name).remove(force=True)


# -- emulation factor ------------------------------------------------------------------------


def test_emulation_factor_measured_then_cached(corpus: dict[str, Any], local: EngineRunner,
                                               tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {
        "emulated_image": pinned(corpus, "busybox", "linux/arm64"),
        "native_image": pinned(corpus, "busybox", "linux/amd64"),
        "cache_dir": tmp_path, "iterations": 20_000,
    }
    first = emulation.measure(local, ARM64, **kwargs)
    assert first.source == "measured", first.reason
    assert first.factor > 1.5, first
    again = emulation.measure(local, ARM64, **kwargs)
    assert (again.source, again.factor) == ("cache", first.factor)
    assert emulation.measure(local, AMD64, **kwargs).factor == 1.0
    assert first.scale(10) == pytest.approx(10 * first.factor)


# -- the default runner the plugin asks for --------------------------------------------------


def test_make_default_runner(corpus: dict[str, Any], tmp_path: Path) -> None:
    from pytest_multiarch.runners.base import Runner
    from pytest_multiarch.runners.factory import make_default_runner

    image = pinned(corpus, "busybox", "linux/s390x")
    for engine, kind in (("auto", EngineRunner), ("docker", EngineRunner),
                         ("rootfs", RootfsRunner)):
        runner = make_default_runner(FakeState(engine, {}, tmp_path), S390X)
        try:
            assert isinstance(runner, kind)
            assert isinstance(runner, Runner)
            assert runner.describe() == "emulated"
            assert runner.run(image, S390X, ["uname", "-m"]).stdout.strip() == "s390x"
        finally:
            runner.close()
    remote = make_default_runner(FakeState("auto", {AMD64: "tcp://127.0.0.1:2375"}, tmp_path),
                                 AMD64)
    try:
        assert remote.describe() == "native on 127.0.0.1"
    finally:
        remote.close()
    with pytest.raises(RemoteHostArchMismatch):
        make_default_runner(FakeState("auto", {S390X: "tcp://127.0.0.1:2375"}, tmp_path), S390X)


# -- deadlines, memory-limit truth, no environment in argv ------------------------------------


@pytest.mark.parametrize("runner_kind", ["engine", "rootfs-chroot", "rootfs-proot"])
def test_every_run_has_a_default_deadline_scaled_by_emulation(
    corpus: dict[str, Any], rootfs_cache: Path, session_id: str, runner_kind: str
) -> None:
    require_root()
    runner: Any
    if runner_kind == "engine":
        runner = EngineRunner(session=Session.new(session_id), run_timeout=1.5)
    else:
        runner = rootfs_runner(rootfs_cache, runner_kind.split("-")[1], session_id)
        runner.run_timeout = 1.5
    runner.set_emulation_factor(ARM64, 2.0)
    try:
        for plat, bound in (("linux/amd64", 1.5), ("linux/arm64", 3.0)):
            image = pinned(corpus, "busybox", plat)
            if runner_kind != "engine":
                runner.prepare(image, Platform.parse(plat))
            started = time.monotonic()
            with pytest.raises(RunTimeout, match=rf"within {bound:.0f}s") as excinfo:
                runner.run(image, Platform.parse(plat), ["sleep", "30"])
            elapsed = time.monotonic() - started
            assert bound - 0.2 < elapsed < bound + 8, (plat, elapsed)
            assert "--multiarch-run-timeout" in str(excinfo.value)
        # A per-call timeout overrides the default.
        assert runner.run(pinned(corpus, "busybox", "linux/amd64"), AMD64, ["sleep", "2"],
                          timeout=20).ok
    finally:
        runner.close()
    assert leftovers(session_id) == []


def test_rootfs_chroot_keeps_the_environment_out_of_argv(
    corpus: dict[str, Any], rootfs_cache: Path, session_id: str
) -> None:
    require_root()
    runner = rootfs_runner(rootfs_cache, "chroot", session_id)
    secret = f"pw-{os.getpid()}-{time.time_ns()}"
    box: dict[str, Any] = {}
    image = pinned(corpus, "busybox", "linux/amd64")
    runner.prepare(image, AMD64)
    worker = threading.Thread(target=lambda: box.setdefault("result", runner.run(
        image, AMD64, ["sh", "-c", 'sleep 2; echo "got $SECRET"'], env={"SECRET": secret})))
    worker.start()
    seen: list[str] = []
    while worker.is_alive():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                if secret.encode() in cmdline.read_bytes():
                    seen.append(str(cmdline))
        time.sleep(0.05)
    worker.join()
    assert box["result"].stdout.strip() == f"got {secret}", "the command still gets its env"
    assert not seen, f"the environment is readable in {seen}"


NO_CGROUP_RUN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from pytest_multiarch.errors import RunnerError
    from pytest_multiarch.platforms import Platform
    from pytest_multiarch.runners.rootfs.runner import RootfsRunner
    cache, native, emulated = sys.argv[1:4]
    found = {}
    for mode in ("chroot", "proot"):
        runner = RootfsRunner(cache_dir=Path(cache), mode=mode)
        found[mode] = runner.run(native, Platform.parse("amd64"), ["true"]).mem_limit
        try:
            runner.run(emulated, Platform.parse("arm64"), ["true"])
            found[mode + "-emulated"] = "ran"
        except RunnerError as exc:
            found[mode + "-emulated"] = str(exc)
    print(json.dumps(found))
""")


def test_rootfs_without_a_memory_cgroup_says_so_and_refuses_emulation(
    corpus: dict[str, Any], rootfs_cache: Path, session_id: str
) -> None:
    """The memory controller read-only (in a private mount namespace): no cgroup can be made,
    as for a user who is not root.  The result must not claim a limit; emulation is refused."""
    require_root()
    controller = next((p for p in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup")
                       if Path(p, "memory.limit_in_bytes").exists()
                       or Path(p, "cgroup.controllers").exists()), None)
    assert controller is not None, "no memory cgroup controller on this host"
    native = pinned(corpus, "busybox", "linux/amd64")
    emulated = pinned(corpus, "busybox", "linux/arm64")
    runner = rootfs_runner(rootfs_cache, "proot", session_id)
    runner.prepare(native, AMD64)
    runner.prepare(emulated, ARM64)
    script = (f"mount --bind {controller} {controller} && "
              f"mount -o remount,bind,ro {controller} && exec \"$@\"")
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         sys.executable, "-c", NO_CGROUP_RUN, str(rootfs_cache), native, emulated],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for mode in ("chroot", "proot"):
        assert found[mode] == "none", f"{mode}: the result claims a limit it does not have"
        assert "cannot limit the memory" in found[mode + "-emulated"], found
        assert "no memory cgroup could be made" in found[mode + "-emulated"]
    # With the controller back (outside that namespace), the same run gets its limit.
    assert runner.run(emulated, ARM64, ["true"]).mem_limit == runner.mem_limit
