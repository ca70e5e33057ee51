"""--arch-cpu and platform levels through the plugin: precedence, header, usage errors."""

from __future__ import annotations

import pytest
from plugin_types import ExpectUsageError

from pytest_multiarch.host import cpu
from pytest_multiarch.platforms import Platform


def test_header_names_each_emulated_arch_model_and_its_caveat(project: pytest.Pytester) -> None:
    result = project.runpytest("--arch=amd64,arm64,arm/v6,ppc64le,s390x,arm64/v8.4",
                               "--collect-only")
    result.stdout.fnmatch_lines([
        "multiarch: cpu: arm64=cortex-a72 (default), arm/v6=arm1176 (default), ppc64le=power8 "
        "(default), s390x=max (default; qemu 7.2 cannot emulate z13*), arm64/v8.4=max (default; "
        "qemu 7.2 has no ARMv8.4 model: nearest not below it is max)",
    ])
    assert "amd64=" not in result.stdout.str()  # native: no model


def test_level_arch_ids(project: pytest.Pytester) -> None:
    result = project.runpytest("--arch=arm64/v8.2,arm64/v8,amd64/v1", "--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "test_a.py::test_uname[[]arm64/v8.2[]]",
        "test_a.py::test_uname[[]arm64[]]",
        "test_a.py::test_uname[[]amd64[]]",
    ])


@pytest.mark.parametrize(
    ("cli", "env", "ini", "expected"),
    [
        ("arm64=cortex-a53", "arm64=cortex-a76", "arm64=neoverse-n1", "cortex-a53 (option)"),
        (None, "arm64=cortex-a76", "arm64=neoverse-n1",
         "cortex-a76 (env PYTEST_MULTIARCH_ARCH_CPUS)"),
        (None, None, "arm64=neoverse-n1", "neoverse-n1 (ini multiarch_arch_cpus)"),
        (None, None, None, "cortex-a72 (default)"),
    ],
)
def test_precedence_option_env_ini(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
    cli: str | None, env: str | None, ini: str | None, expected: str,
) -> None:
    if ini:
        project.makeini(f"[pytest]\nmultiarch_arch_cpus =\n    {ini}\n")
    if env is None:
        monkeypatch.delenv("PYTEST_MULTIARCH_ARCH_CPUS", raising=False)
    else:
        monkeypatch.setenv("PYTEST_MULTIARCH_ARCH_CPUS", env)
    args = ["--arch=arm64", "--collect-only"] + ([f"--arch-cpu={cli}"] if cli else [])
    result = project.runpytest(*args)
    result.stdout.fnmatch_lines([f"multiarch: cpu: arm64={expected}"])


def test_max_restores_qemu_default_and_arm_key_covers_every_arm_variant(
    project: pytest.Pytester,
) -> None:
    result = project.runpytest("--arch=arm64,arm/v6,arm/v7,ppc64le", "--arch-cpu=arm64=max",
                               "--arch-cpu=arm=cortex-a15,ppc64le=max", "--collect-only")
    result.stdout.fnmatch_lines([
        "multiarch: cpu: arm64=max (option), arm/v6=cortex-a15 (option), arm/v7=cortex-a15 "
        "(option), ppc64le=qemu default (option)",
    ])


def test_exact_arch_variant_key_beats_the_arch_key(project: pytest.Pytester) -> None:
    result = project.runpytest("--arch=arm/v6,arm/v7", "--arch-cpu=arm=cortex-a7",
                               "--arch-cpu=arm/v6=arm1136", "--collect-only")
    result.stdout.fnmatch_lines(
        ["multiarch: cpu: arm/v6=arm1136 (option), arm/v7=cortex-a7 (option)"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch-cpu=arm64=pentium"],
         "*--arch-cpu (option) arm64=pentium: qemu-aarch64-static has no CPU model 'pentium'; "
         "it has: a64fx, cortex-a35, cortex-a53, cortex-a57, cortex-a72, cortex-a76, max, "
         "neoverse-n1"),
        (["--arch-cpu=bogus=max"],
         "*--arch-cpu (option) entry 'bogus=max' names an unknown architecture 'bogus'; valid: "
         "amd64, arm64, arm/v7*"),
        (["--arch-cpu=arm64"], "*entry 'arm64' is not ARCH=MODEL, e.g. arm64=cortex-a72*"),
        (["--arch-cpu=s390x=z16"], "*qemu-s390x-static has no CPU model 'z16'; it has: qemu, "
                                   "max, z900-base*"),
        (["--arch=arm64/v8.99"], "*unknown arm64 variant 'v8.99'; valid levels: v8 (= v8.0 = "
                                 "none), v8.1, *, v9.5"),
        (["--arch=arm64/v10"], "*unknown arm64 variant 'v10'; valid levels: *"),
        (["--arch=amd64/v5"], "*unknown amd64 variant 'v5'; valid levels: v1 (= none), v2, v3, "
                              "v4"),
    ],
)
def test_bad_cpu_input_is_one_clear_usage_error(
    usage_error: ExpectUsageError, args: list[str], message: str
) -> None:
    usage_error(*args).stderr.fnmatch_lines([message])


def test_env_value_error_names_its_source(
    usage_error: ExpectUsageError, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_MULTIARCH_ARCH_CPUS", "arm64=cortex-a72,ppc64le=power4000")
    usage_error("--arch=arm64").stderr.fnmatch_lines([
        "*--arch-cpu (env PYTEST_MULTIARCH_ARCH_CPUS) ppc64le=power4000: qemu-ppc64le-static "
        "has no CPU model 'power4000'*"
    ])


def test_a_model_the_installed_qemu_lacks(usage_error: ExpectUsageError) -> None:
    # cortex-a710 is a real ARMv9 core, and qemu 8 models it; qemu 7.2 does not.
    assert "cortex-a710" not in cpu.list_models(Platform.parse("arm64"))
    result = usage_error("--arch=arm64", "--arch-cpu=arm64=cortex-a710")
    result.stderr.fnmatch_lines(["*has no CPU model 'cortex-a710'; it has: a64fx,*"])
