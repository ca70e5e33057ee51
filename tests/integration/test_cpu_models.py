"""CPU models for real: binaries from the Debian cross compilers that need a newer CPU than their
platform promises, run under real qemu-user through the engine runner, the rootfs runner (proot
and chroot) and the gate.  Each passes on a model with the feature and fails on one without.

The images come from scripts/build-cpu-images (idempotent, cached by recipe; the fixture runs it,
so the tier works on a freshly provisioned machine too).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_multiarch import IllegalInstruction
from pytest_multiarch.oci.registry import RegistryClient
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Session
from pytest_multiarch.runners.docker.engine import EngineRunner
from pytest_multiarch.runners.podman_service import PodmanService
from pytest_multiarch.runners.rootfs.runner import RootfsRunner

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATE = Path("/var/lib/pytest-multiarch-testbed")

#: (corpus image, platform, the default model it fails on, an override it passes on, output)
CASES = [
    ("lse", "linux/arm64", "cortex-a72", {"arm64": "neoverse-n1"}, ""),
    ("power9", "linux/ppc64le", "power8", {"ppc64le": "power9"}, ""),
    ("armv7-in-v6", "linux/arm/v6", "arm1176", {"arm": "cortex-a7"}, "armv7l\n"),
]
IDS = [c[0] for c in CASES]


@pytest.fixture(scope="module")
def cpu_corpus() -> dict[str, Any]:
    """scripts/build-cpu-images' description of the CPU corpus (built now if missing)."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build-cpu-images")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    images: dict[str, Any] = json.loads((STATE / "corpus-cpu.json").read_text())["images"]
    return images


def pinned(corpus: dict[str, Any], name: str, plat: str) -> str:
    repo = corpus[name]["ref"].rsplit(":", 1)[0]
    return f"{repo}@{corpus[name]['digests'][plat]}"


@pytest.fixture
def engine_runner(engine: Any) -> Iterator[EngineRunner]:
    runner = EngineRunner(session=Session.new())
    yield runner
    runner.close()
    left = engine.containers.list(
        all=True, ignore_removed=True,
        filters={"label": [f"io.pytest-multiarch.session={runner.session.id}"]})
    assert not left, [c.name for c in left]


@pytest.mark.parametrize(("name", "plat", "model", "override", "output"), CASES, ids=IDS)
def test_engine_runner_fails_without_the_feature_and_passes_with_it(
    cpu_corpus: dict[str, Any], engine_runner: EngineRunner, name: str,
    plat: str, model: str, override: dict[str, str], output: str,
) -> None:
    image, platform = pinned(cpu_corpus, name, plat), Platform.parse(plat)
    started = time.monotonic()
    with pytest.raises(IllegalInstruction) as info:
        engine_runner.run(image, platform, timeout=120)
    # Classified from the exit status and qemu's message, not from a timeout.
    assert time.monotonic() - started < 60
    error = info.value
    assert (error.cpu_model, error.level, error.arch) == (model, plat, platform.arch_name)
    assert error.digest == cpu_corpus[name]["digests"][plat]
    assert f"on CPU model {model}: the program is built for a newer CPU than {plat}" in str(error)
    assert error.passes_under_max is True
    assert "exits 0 under qemu's newest CPU model" in str(error)

    with_feature = EngineRunner(session=engine_runner.session, cpu_models=override)
    try:
        result = with_feature.run(image, platform, timeout=120)
    finally:
        with_feature.close()
    assert result.exit_code == 0
    assert result.stdout == output
    assert result.cpu_model == next(iter(override.values()))
    assert f"cpu {result.cpu_model}" in result.where


def test_the_same_binary_published_as_arm64_v8_2_runs_on_neoverse_n1(
    cpu_corpus: dict[str, Any], engine_runner: EngineRunner
) -> None:
    # Docker 20.10 refuses linux/arm64/v8.2 as a platform: the runner hands it linux/arm64.
    result = engine_runner.run(pinned(cpu_corpus, "lse-v82", "linux/arm64/v8.2"),
                               Platform.parse("arm64/v8.2"), timeout=120)
    assert (result.exit_code, result.cpu_model) == (0, "neoverse-n1")


@pytest.mark.parametrize("mode", ["proot", "chroot"])
@pytest.mark.parametrize(("name", "plat", "model", "override", "output"), CASES, ids=IDS)
def test_rootfs_runner_fails_without_the_feature_and_passes_with_it(
    cpu_corpus: dict[str, Any], tmp_path: Path, mode: str, name: str,
    plat: str, model: str, override: dict[str, str], output: str,
) -> None:
    registry = RegistryClient(cache_dir=tmp_path / "blobs")
    image, platform = pinned(cpu_corpus, name, plat), Platform.parse(plat)
    plain = RootfsRunner(registry=registry, cache_dir=tmp_path / "rootfs", mode=mode)
    started = time.monotonic()
    with pytest.raises(IllegalInstruction) as info:
        plain.run(image, platform, timeout=120)
    assert time.monotonic() - started < 60  # a SIGILL under chroot must not hang (init as PID 1)
    assert info.value.cpu_model == model
    assert info.value.passes_under_max is True
    assert f"(rootfs, {'proot -q' if mode == 'proot' else 'chroot'}" in str(info.value)

    fixed = RootfsRunner(registry=registry, cache_dir=tmp_path / "rootfs", mode=mode,
                         cpu_models=override)
    result = fixed.run(image, platform, timeout=120)
    assert (result.exit_code, result.stdout) == (0, output)
    assert result.cpu_model == next(iter(override.values()))


def gate(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--arch-required", *args,
                                         timeout=600)


def test_gate_fails_plain_arm64_needing_v8_1_naming_cortex_a72(
    cpu_corpus: dict[str, Any], pytester: pytest.Pytester, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    ref = cpu_corpus["lse"]["ref"]
    result = gate(pytester, f"--multiarch-image={ref}", "--arch=arm64",
                  f"--multiarch-report={report}")
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines([
        "multiarch: cpu: arm64=cortex-a72 (default)",
        "*died of an illegal instruction*on CPU model cortex-a72: the program is built for a "
        "newer CPU than linux/arm64 promises. Build it with -march=armv8-a, or publish it as "
        "linux/arm64/v8.2*exits 0 under qemu's newest CPU model (max)*",
        "*smoke * FAIL IllegalInstruction*",
        "arm64: emulated on cpu cortex-a72*",
    ])
    doc = json.loads(report.read_text())
    assert doc["archs"]["arm64"]["run"]["cpu_model"] == "cortex-a72"


def test_gate_passes_the_same_binary_published_as_arm64_v8_2(
    cpu_corpus: dict[str, Any], pytester: pytest.Pytester
) -> None:
    ref = cpu_corpus["lse-v82"]["ref"]
    result = gate(pytester, f"--multiarch-image={ref}", "--arch=arm64/v8.2")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["multiarch: cpu: arm64/v8.2=neoverse-n1 (default)"])


def test_gate_fails_armv7_code_in_arm_v6_statically_and_at_run_time(
    cpu_corpus: dict[str, Any], pytester: pytest.Pytester
) -> None:
    ref = cpu_corpus["armv7-in-v6"]["ref"]
    result = gate(pytester, f"--multiarch-image={ref}", "--arch=arm/v6")
    result.assert_outcomes(passed=5, failed=2)
    result.stdout.fnmatch_lines([
        "*FAIL cpu-level-above-platform:*/bin/busybox records that it needs arm/v7 "
        "(Tag_CPU_arch), more than linux/arm/v6 promises*",
        "*binaries * FAIL AuditFailed*",
        "*smoke * FAIL IllegalInstruction*",
    ])


def test_gate_with_arch_cpu_override_passes_on_the_model_with_the_feature(
    cpu_corpus: dict[str, Any], pytester: pytest.Pytester
) -> None:
    ref = cpu_corpus["lse"]["ref"]
    result = gate(pytester, f"--multiarch-image={ref}", "--arch=arm64",
                  "--arch-cpu=arm64=cortex-a76")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["multiarch: cpu: arm64=cortex-a76 (option)"])


def test_native_host_cpu_is_read_once_and_a_newer_one_is_said(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    # The engine on tcp://127.0.0.1:2375 is a real native amd64 host (this x86-64-v3+ machine).
    corpus = json.loads((STATE / "corpus.json").read_text())
    report = tmp_path / "r.json"
    result = gate(pytester, f"--multiarch-image={corpus['busybox']['ref']}", "--arch=amd64",
                  "--arch-host=amd64=tcp://127.0.0.1:2375", f"--multiarch-report={report}")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines([
        "multiarch: amd64 ran natively on *, which implements linux/amd64/v*: newer than "
        "linux/amd64 promises, so a pass there does not cover the older machines*",
    ])
    assert "multiarch: cpu:" not in result.stdout.str()  # nothing emulated
    model = json.loads(report.read_text())["archs"]["amd64"]["run"]["cpu"]
    host_name = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    assert model.startswith(f"{host_name} (amd64/v")


def test_podman_engine_runs_on_the_model_too(cpu_corpus: dict[str, Any]) -> None:
    service = PodmanService()
    url = service.acquire()  # a private `podman system service` for this test
    try:
        image, plat = pinned(cpu_corpus, "lse", "linux/arm64"), Platform.parse("arm64")
        runner = EngineRunner(url, session=Session.new())
        try:
            assert runner.is_podman
            with pytest.raises(IllegalInstruction) as info:
                runner.run(image, plat, timeout=120)
            assert info.value.cpu_model == "cortex-a72"
            assert info.value.passes_under_max is True
        finally:
            runner.close()
        fixed = EngineRunner(url, session=Session.new(), cpu_models={"arm64": "cortex-a76"})
        try:
            assert fixed.run(image, plat, timeout=120).exit_code == 0
        finally:
            fixed.close()
    finally:
        service.release()
