"""``multiarch_testcontainer``: real testcontainers containers, started through the fixture on
amd64 (native), arm64 and s390x (qemu-user), against the loopback registry's corpus and the
example MariaDB base image."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from examples import build_example

from pytest_multiarch.oci.registry import RegistryClient
from pytest_multiarch.oci.resolve import open_source, resolve
from pytest_multiarch.platforms import Platform

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed

pytestmark = pytest.mark.integration

DB_IMAGE = "127.0.0.1:5000/example/base-mariadb:bookworm"

USER_TESTS = '''
import json
import os

import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from pytest_multiarch.errors import (
    MultiarchWarning, NotATestcontainer, PlatformNotInIndex, TestcontainerAlreadyStarted,
)

GOOD = {good!r}
PARTIAL = {partial!r}
RECORD = {record!r}


def record(**facts):
    with open(RECORD, "a") as out:
        out.write(json.dumps(facts) + "\\n")


def test_docker_container_runs_the_arch_variant(arch, multiarch_testcontainer):
    wait = LogMessageWaitStrategy("serving").with_startup_timeout(30)
    app = multiarch_testcontainer(
        DockerContainer(GOOD)
        .with_command(["sh", "-c", "uname -m; echo serving; exec httpd -f -p 8080 -h /etc"])
        .with_exposed_ports(8080)
        .waiting_for(wait)
    )
    scaled = wait._startup_timeout
    assert multiarch_testcontainer(app) is app  # handed over twice: bound (and scaled) once
    assert wait._startup_timeout == scaled
    with app:
        import urllib.request

        port = app.get_exposed_port(8080)
        host = app.get_container_host_ip()
        body = urllib.request.urlopen(f"http://{{host}}:{{port}}/passwd", timeout=30).read()
        attrs = app.get_wrapped_container().attrs
        record(
            arch=arch.arch_name, uname=app.get_logs()[0].decode().split()[0],
            exec_uname=app.exec(["uname", "-m"]).output.decode().strip(),
            image=attrs["Config"]["Image"], labels=attrs["Config"]["Labels"],
            memory=attrs["HostConfig"]["Memory"], init=attrs["HostConfig"].get("Init"),
            timeout=wait._startup_timeout, served=b"root:" in body, id=attrs["Id"],
        )


@pytest.mark.archs("arm64")
def test_what_cannot_be_honoured_is_said(multiarch_testcontainer):
    box = DockerContainer(GOOD).with_command(["uname", "-m"])
    box.with_kwargs(platform="linux/amd64", init=False, mem_limit=0)
    with pytest.warns(MultiarchWarning) as seen:
        multiarch_testcontainer(box)
    said = " ".join(str(w.message) for w in seen)
    assert "asks for platform linux/amd64" in said
    assert "init=False" in said
    assert "no memory limit" in said
    with box:
        box.get_wrapped_container().wait(timeout=60)
        assert box.get_logs()[0].decode().strip() == "aarch64"


def test_a_string_is_refused(multiarch_testcontainer):
    with pytest.raises(NotATestcontainer, match="wrap it"):
        multiarch_testcontainer(GOOD)


@pytest.mark.archs("amd64")
def test_a_started_container_is_refused(multiarch_testcontainer, monkeypatch):
    from testcontainers.core.config import testcontainers_config

    # Started by testcontainers alone, which would pull Ryuk (not reachable here).
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    with DockerContainer(GOOD).with_command(["sleep", "30"]) as running:
        with pytest.raises(TestcontainerAlreadyStarted, match="already started"):
            multiarch_testcontainer(running)


@pytest.mark.archs("s390x")
def test_no_variant_is_platform_not_in_index(multiarch_testcontainer):
    with pytest.raises(PlatformNotInIndex, match="linux/arm64"):
        multiarch_testcontainer(DockerContainer(PARTIAL))


@pytest.mark.archs("arm64")
def test_left_running_is_removed_by_the_fixture(multiarch_testcontainer):
    box = multiarch_testcontainer(DockerContainer(GOOD).with_command(["sleep", "300"]))
    box.start()  # never stopped by the test: the fixture's teardown removes it
    record(arch="left", id=box.get_wrapped_container().id)
'''


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_docker_container_per_arch(
    pytester: pytest.Pytester, testbed: Testbed, corpus: dict[str, Any], tmp_path: Path
) -> None:
    import docker

    record = tmp_path / "record.jsonl"
    pytester.makepyfile(test_user=USER_TESTS.format(
        good=testbed.ref("busybox"), partial=testbed.ref("partial"), record=str(record)))
    # Ryuk's image cannot be pulled here: the fixture leaves it out and says so once.
    result = pytester.runpytest_subprocess(
        "--arch=amd64,arm64,s390x", "--arch-required", "-p", "no:cacheprovider", timeout=900,
    )
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["*Ryuk (testcontainers/ryuk*) is not on the engine*"])
    facts = {r["arch"]: r for r in _records(record)}
    digests = corpus["busybox"]["digests"]
    repository = testbed.ref("busybox").rsplit(":", 1)[0]
    for arch, uname, emulated in (("amd64", "x86_64", False), ("arm64", "aarch64", True),
                                  ("s390x", "s390x", True)):
        seen = facts[arch]
        assert seen["uname"] == uname, seen
        assert seen["exec_uname"] == uname, seen
        # By digest: the variant's own manifest, as the registry client resolved it.
        assert seen["image"] == f"{repository}@{digests[f'linux/{arch}']}", seen
        assert seen["labels"]["io.pytest-multiarch"] == "1"
        assert seen["labels"]["io.pytest-multiarch.session"]
        assert seen["memory"] == 512 * 1024 * 1024
        assert bool(seen["init"]) is emulated
        assert seen["served"] is True
        # The user's 30 s wait, scaled by the measured emulation factor under qemu.
        assert (seen["timeout"] > 30.0) is emulated, seen
    client = docker.from_env()
    try:
        for facts_of in facts.values():
            with pytest.raises(docker.errors.NotFound):
                client.containers.get(facts_of["id"])
    finally:
        client.close()


MYSQL_TESTS = '''
import pymysql
from testcontainers.mysql import MySqlContainer

DB = {db!r}
# The example's base is Debian's MariaDB, not the official image: start the server ourselves
# (the .cnf the base ships caps the buffer pool for qemu) and create the user an init file.
START = (
    "mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld /var/lib/mysql && "
    "printf '%s\\\\n' \\"CREATE USER IF NOT EXISTS 'test'@'%' IDENTIFIED BY 'test';\\" "
    "\\"CREATE DATABASE IF NOT EXISTS test;\\" \\"GRANT ALL ON test.* TO 'test'@'%';\\" "
    "> /tmp/init.sql && "
    "(test -d /var/lib/mysql/mysql || mariadb-install-db --user=mysql --datadir=/var/lib/mysql "
    "--skip-test-db >/dev/null) && exec mariadbd --user=mysql --bind-address=0.0.0.0 "
    "--skip-name-resolve --init-file=/tmp/init.sql"
)


def test_mysql_module(arch, multiarch_testcontainer):
    db = MySqlContainer(DB, username="test", password="test", dbname="test",
                        wait_strategy_check_string=r"ready for connections")
    db.with_command(["sh", "-c", START]).with_kwargs(mem_limit="768m")
    with multiarch_testcontainer(db) as running:
        conn = pymysql.connect(host=running.get_container_host_ip(),
                               port=int(running.get_exposed_port(3306)), user="test",
                               password="test", database="test", connect_timeout=30)
        with conn.cursor() as cur:
            cur.execute("SELECT @@version_compile_machine")
            (machine,) = cur.fetchone()
        conn.close()
        image = running.get_wrapped_container().attrs["Config"]["Image"]
        print(f"MACHINE {{arch.arch_name}} {{machine}} {{image}}")
'''


def test_mysql_module_per_arch(pytester: pytest.Pytester, testbed: Testbed) -> None:
    build_example("images/build-base-images", "--base", "mariadb")
    pytester.makepyfile(test_db=MYSQL_TESTS.format(db=DB_IMAGE))
    result = pytester.runpytest_subprocess(
        "--arch=amd64,arm64,s390x", "--arch-required", "-p", "no:cacheprovider", "-s",
        "-W", "ignore::DeprecationWarning", timeout=1200,
    )
    result.assert_outcomes(passed=3)
    seen = {}
    for line in result.stdout.lines:
        found = re.search(r"MACHINE (\w+) (\S+) (\S+)", line)
        if found:
            seen[found.group(1)] = (found.group(2), found.group(3))
    # MariaDB's own idea of its machine; s390x builds say "s390x-64bit".
    assert {a: m.split("-")[0] for a, (m, _) in seen.items()} == {
        "amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x"}, seen
    repository = DB_IMAGE.rsplit(":", 1)[0]
    client = RegistryClient(insecure_registries=[testbed.registry])
    source, ref = open_source(DB_IMAGE, client=client)
    for arch, (_, image) in seen.items():
        assert image == f"{repository}@{resolve(source, ref, Platform.parse(arch)).digest}"


REMOTE_TESTS = '''
import urllib.request

from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy


def test_on_the_arch_host(multiarch_testcontainer):
    app = multiarch_testcontainer(
        DockerContainer({good!r})
        .with_command(["sh", "-c", "echo serving; exec httpd -f -p 8080 -h /etc"])
        .with_exposed_ports(8080)
        .waiting_for(LogMessageWaitStrategy("serving"))
    )
    with app:
        # created through the --arch-host engine's client, reached at that host's address
        assert app.get_docker_client().client.api.base_url == "http://127.0.0.1:2375"
        url = f"http://{{app.get_container_host_ip()}}:{{app.get_exposed_port(8080)}}/passwd"
        assert b"root:" in urllib.request.urlopen(url, timeout=30).read()
'''


def test_runs_on_the_arch_host_engine(pytester: pytest.Pytester, testbed: Testbed) -> None:
    """``--arch-host``: the container is created on that engine, not testcontainers' default."""
    pytester.makepyfile(test_remote=REMOTE_TESTS.format(good=testbed.ref("busybox")))
    result = pytester.runpytest_subprocess(
        "--arch=amd64", "--arch-host=amd64=tcp://127.0.0.1:2375", "--arch-required",
        "-p", "no:cacheprovider", timeout=300,
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["amd64: native on 127.0.0.1*"])


def test_bind_gives_the_cpu_model_and_says_when_it_replaces_one(
    testbed: Testbed, engine: Any, session_id: str
) -> None:
    """The core binding, driven from a script (no plugin): the session's CPU model reaches the
    container as QEMU_CPU, and a container's own differing QEMU_CPU is said to be replaced."""
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer

    from pytest_multiarch.checks.testcontainers import Binding, bind, remove
    from pytest_multiarch.errors import MultiarchWarning
    from pytest_multiarch.runners.base import Session
    from pytest_multiarch.runners.docker.engine import EngineRunner

    image = testbed.pinned("busybox", "linux/arm64")
    runner = EngineRunner(client=engine, session=Session.new(session_id), mem_limit="256m",
                          cpu_models={"arm64": "cortex-a53"}, cpu_source="option")
    try:
        binding = Binding(image=image, digest=image.rsplit("@", 1)[1],
                          platform=Platform.parse("arm64"), runner=runner)
        box = DockerContainer(testbed.ref("busybox")).with_command(["uname", "-m"])
        box.with_env("QEMU_CPU", "max")
        with pytest.warns(MultiarchWarning,
                          match="QEMU_CPU=max; the session's CPU model cortex-a53"):
            bind(box, binding)
        saved = testcontainers_config.ryuk_disabled
        testcontainers_config.ryuk_disabled = True  # Ryuk's image cannot be pulled here
        try:
            with box:
                created = box.get_wrapped_container()
                assert created.wait(timeout=120)["StatusCode"] == 0
                assert box.get_logs()[0].decode().strip() == "aarch64"
                assert "QEMU_CPU=cortex-a53" in created.attrs["Config"]["Env"]
                assert created.attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024
                # The runner's own labels: its session, owner pid and host (what its reaper reads).
                labels = created.attrs["Config"]["Labels"]
                assert runner.session.labels().items() <= labels.items(), labels
        finally:
            testcontainers_config.ryuk_disabled = saved
            remove(box)  # through the runner (the `with` removed it already, normally)
    finally:
        runner.release()


def test_bind_hands_the_engine_the_runners_platform_name(engine: Any, session_id: str) -> None:
    """A level variant (arm64/v8.2) runs by digest with no platform, as the runner's own
    containers do (Docker 20.10 refuses ``linux/arm64`` for an image stored as v8.2); a plain
    one gets the engine's ``os/arch``, whatever the container asked for."""
    from testcontainers.core.container import DockerContainer

    from pytest_multiarch.checks.engine import engine_runner
    from pytest_multiarch.checks.testcontainers import Binding, bind
    from pytest_multiarch.errors import MultiarchWarning

    pinned = "127.0.0.1:5000/none@sha256:" + "a" * 64  # bind reads no image
    with engine_runner(engine, session_id) as runner:
        for arch, platform in (("arm64/v8.2", None), ("s390x", "linux/s390x")):
            box = DockerContainer("example/app:1").with_kwargs(platform="linux/amd64")
            binding = Binding(image=pinned, digest=pinned.rsplit("@", 1)[1],
                              platform=Platform.parse(arch), runner=runner)
            with pytest.warns(MultiarchWarning, match="asks for platform linux/amd64"):
                bind(box, binding)
            assert box._kwargs.get("platform") == platform, arch
            assert box._kwargs["init"] is True
            assert runner.session.labels().items() <= box._kwargs["labels"].items()
