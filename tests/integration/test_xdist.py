"""pytest-xdist: one worker per arch, so each arch's session containers start exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import pytest

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed


SUITE = """
import json, os

REF = {ref!r}
LOG = {log!r}


def record(arch, box):
    with open(LOG, "a") as fh:
        fh.write(json.dumps({{"arch": arch.arch_name, "name": box.name,
                             "worker": os.environ.get("PYTEST_XDIST_WORKER")}}) + "\\n")


def test_one(arch, multiarch_shared_container):
    box = multiarch_shared_container(REF, cmd=["sleep", "120"])
    record(arch, box)
    assert box.exec(["uname", "-m"]).stdout.strip() == arch.info.uname


def test_two(arch, multiarch_shared_container):
    box = multiarch_shared_container(REF, cmd=["sleep", "120"])
    record(arch, box)
    assert box.exec(["true"]).exit_code == 0


def test_three(arch, multiarch_shared_container):
    box = multiarch_shared_container(REF, cmd=["sleep", "120"])
    record(arch, box)
"""


def labelled_containers() -> list[str]:
    client = docker.from_env()
    try:
        found = client.containers.list(all=True, filters={"label": "io.pytest-multiarch"},
                                       ignore_removed=True)
        return [c.name for c in found]
    finally:
        client.close()


def test_each_arch_lives_on_one_worker_with_one_container(
    pytester: pytest.Pytester, testbed: Testbed, tmp_path: Path
) -> None:
    log = tmp_path / "containers.jsonl"
    report = tmp_path / "report.json"
    pytester.makepyfile(test_shared=SUITE.format(ref=testbed.ref("busybox"), log=str(log)))
    result = pytester.runpytest_subprocess(
        "-n", "3", "--arch=amd64,arm64,s390x", "--arch-required", "-p", "no:cacheprovider",
        f"--multiarch-report={report}", timeout=600,
    )
    result.assert_outcomes(passed=9)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    by_arch: dict[str, set[tuple[str, str]]] = {}
    for row in rows:
        by_arch.setdefault(row["arch"], set()).add((row["name"], row["worker"]))
    # One container per arch, on one worker each; three different workers.
    assert {arch: len(seen) for arch, seen in by_arch.items()} == {
        "amd64": 1, "arm64": 1, "s390x": 1
    }
    workers = {next(iter(seen))[1] for seen in by_arch.values()}
    assert len(workers) == 3
    # The controller's matrix and report see every worker's results.
    result.stdout.fnmatch_lines(
        ["*multiarch matrix*", "totals *| 3 passed *| 3 passed *| 3 passed*"]
    )
    doc = json.loads(report.read_text())
    assert {a: doc["archs"][a]["totals"] for a in ("amd64", "arm64", "s390x")} == {
        a: {"passed": 3} for a in ("amd64", "arm64", "s390x")
    }
    names = {name for seen in by_arch.values() for name, _ in seen}
    assert not names & set(labelled_containers()), "session containers were left behind"
