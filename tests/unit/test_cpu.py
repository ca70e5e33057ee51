"""qemu CPU models, IllegalInstruction classification and static CPU-level evidence.

Model lists come from the installed qemu-user (``-cpu help``); ELF evidence from real binaries
(Debian's busybox packages, and one the host's gcc builds for x86-64-v3).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pytest_multiarch import IllegalInstruction
from pytest_multiarch.audit import cpulevel
from pytest_multiarch.audit.elf import ElfHeader, parse_elf
from pytest_multiarch.errors import CommandFailed, EmulatorCrash, UsageError
from pytest_multiarch.host import cpu
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import RunResult
from pytest_multiarch.runners.classify import check_runs, classify, under_max, with_max_verdict

P = Platform.parse


@pytest.mark.parametrize(
    ("name", "expected"),
    [("arm64", {"cortex-a72", "neoverse-n1", "max", "cortex-a53"}),
     ("arm/v6", {"arm1176", "cortex-a7", "cortex-a8", "max"}),
     ("ppc64le", {"power8", "power9", "power10"}),
     ("s390x", {"qemu", "max", "z13", "z14"})],
)
def test_models_come_from_the_installed_qemu(name: str, expected: set[str]) -> None:
    models = cpu.list_models(P(name))
    assert expected <= set(models)
    assert len(models) == len(set(models))
    assert cpu.list_models(P(name)) is models  # cached per process


def test_parse_models_of_every_help_format() -> None:
    assert cpu.parse_models("Available CPUs:\n  a64fx\n  max\n") == ("a64fx", "max")
    assert cpu.parse_models("PowerPC power8_v2.0  PVR 004d0200\n"
                            "PowerPC power8  (alias for power8_v2.0)\n") == ("power8_v2.0",
                                                                            "power8")
    assert cpu.parse_models("s390 z13  IBM z13 GA1  (migration-safe)\n") == ("z13",)
    assert cpu.parse_models("Available CPUs:\nx86 486\n\nRecognized CPUID flags:\n  avx\n") == (
        "486",)


@pytest.mark.parametrize(
    ("plat", "model", "noted"),
    [("arm64", "cortex-a72", False), ("arm64/v8.1", "neoverse-n1", True),
     ("arm64/v8.2", "neoverse-n1", False), ("arm64/v8.4", "max", True),
     ("arm64/v9.0", "max", True), ("arm/v5", "arm926", False), ("arm/v6", "arm1176", False),
     ("arm/v7", "cortex-a8", False), ("ppc64le", "power8", False), ("s390x", "max", True),
     ("riscv64", "", False)],
)
def test_default_is_the_oldest_model_of_the_level(plat: str, model: str, noted: bool) -> None:
    choice = cpu.choose(P(plat))
    assert (choice.model, choice.source, bool(choice.note)) == (model, "default", noted)
    # Every default is a model the installed qemu has (or qemu's own default).
    assert not model or model in cpu.list_models(P(plat))


def test_overrides_exact_key_first_and_max_without_max() -> None:
    table = cpu.parse_overrides(["arm=cortex-a7", "arm/v6=arm1136, ppc64le=MAX"])
    assert table == {"arm": "cortex-a7", "arm/v6": "arm1136", "ppc64le": ""}
    assert cpu.choose(P("arm/v6"), table).model == "arm1136"
    assert cpu.choose(P("arm/v7"), table).model == "cortex-a7"
    ppc = cpu.choose(P("ppc64le"), table, "option")
    assert (ppc.env, ppc.shown) == ({}, "qemu default")
    assert cpu.choose(P("arm64"), {"arm64": "cortex-a76"}).env == {"QEMU_CPU": "cortex-a76"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [("arm64=pentium", "qemu-aarch64-static has no CPU model 'pentium'; it has: a64fx, "),
     ("bogus=max", "names an unknown architecture 'bogus'"),
     ("=max", "is not ARCH=MODEL"), ("arm64=", "is not ARCH=MODEL")],
)
def test_bad_overrides(entry: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        cpu.parse_overrides([entry])


def sigill(**kw: object) -> RunResult:
    fields: dict[str, object] = {
        "exit_code": 132, "stdout": "", "duration": 0.4, "image": "r/app@sha256:" + "a" * 64,
        "platform": P("arm64"), "cmd": ("/app",), "emulated": True, "cpu_model": "cortex-a72",
        "stderr": "qemu: uncaught target signal 4 (Illegal instruction) - core dumped\n",
    }
    fields.update(kw)
    return RunResult(**fields)  # type: ignore[arg-type]


def test_sigill_is_an_illegal_instruction_with_what_to_do() -> None:
    error = classify(sigill())
    assert isinstance(error, IllegalInstruction)
    assert not isinstance(error, EmulatorCrash)
    assert (error.arch, error.cpu_model, error.level, error.digest) == (
        "arm64", "cortex-a72", "linux/arm64", "sha256:" + "a" * 64)
    text = str(error)
    assert "on CPU model cortex-a72: the program is built for a newer CPU than linux/arm64 " \
           "promises. Build it with -march=armv8-a, or publish it as linux/arm64/v8.2" in text
    level = classify(sigill(platform=P("arm64/v8.2"), cpu_model="neoverse-n1"))
    assert "Build it with -march=armv8.2-a" in str(level)
    # A shell's "Illegal instruction" (exit 132 through sh) counts as well.
    shell = classify(sigill(stderr="sh: line 1: 7 Illegal instruction  /app\n"))
    assert isinstance(shell, IllegalInstruction)


def test_exit_132_natively_without_a_message_is_the_application() -> None:
    with pytest.raises(CommandFailed):
        check_runs(sigill(stderr="", emulated=False, cpu_model=""))


def test_the_max_verdict_says_whether_the_level_is_the_cause() -> None:
    error = classify(sigill())
    assert isinstance(error, IllegalInstruction)
    passed = with_max_verdict(error, RunResult(0, "", "", 0.1, cpu_model="max"))
    assert isinstance(passed, IllegalInstruction)
    assert passed.passes_under_max is True
    assert str(passed).endswith("exits 0 under qemu's newest CPU model (max): the CPU level is "
                                "the cause.")
    assert passed.cpu_model == "cortex-a72"
    failed = with_max_verdict(error, RunResult(132, "", "", 0.1, cpu_model="max"))
    assert isinstance(failed, IllegalInstruction)
    assert failed.passes_under_max is False
    assert "fails under qemu's newest CPU model (max) too (exit 132)" in str(failed)


def test_the_max_rerun_happens_only_for_an_emulated_run_not_yet_on_max() -> None:
    error = classify(sigill())
    assert isinstance(error, IllegalInstruction)
    reruns: list[str] = []

    def again(model: str) -> RunResult:
        reruns.append(model)
        return RunResult(0, "", "", 0.1, cpu_model=model)

    platform = P("arm64")
    verdict = under_max(error, platform, emulated=True, asked=None, ran_on="cortex-a72",
                        again=again)
    assert reruns == ["max"]
    assert getattr(verdict, "passes_under_max", None) is True
    # Natively, on the newest already, or as the re-run itself: no second run.
    for emulated, asked, ran_on in ((False, None, ""), (True, None, "max"),
                                    (True, "max", "cortex-a72")):
        assert under_max(error, platform, emulated=emulated, asked=asked, ran_on=ran_on,
                         again=again) is error
    assert reruns == ["max"]
    # Emulated on qemu's default model (amd64 has no named default): that is not the newest.
    amd64 = under_max(error, P("amd64/v3"), emulated=True, asked=None, ran_on="", again=again)
    assert reruns == ["max", "max"]
    assert getattr(amd64, "passes_under_max", None) is True


def test_armhf_busybox_records_armv7(debian_binaries: dict[tuple[str, str], Path]) -> None:
    data = debian_binaries[("busybox-static", "armhf")].read_bytes()
    window = cpulevel.arm_window(data[:52], len(data))
    assert window is not None
    level, name = cpulevel.arm_cpu_level(data[window[0]:window[1]], window[0], data[:52])
    assert (level, name) == ("v7", "v7")
    armel = debian_binaries[("busybox-static", "armel")].read_bytes()
    span = cpulevel.arm_window(armel[:52], len(armel))
    assert span is not None
    assert cpulevel.arm_cpu_level(armel[span[0]:span[1]], span[0], armel[:52])[0] == "v5"
    assert cpulevel.exceeds(P("arm/v6"), "v7")
    assert not cpulevel.exceeds(P("arm/v6"), "v5")
    assert not cpulevel.exceeds(P("arm/v7"), "v7")


def test_x86_isa_needed_from_the_header_bytes(tmp_path: Path) -> None:
    src = tmp_path / "avx2.c"
    src.write_text("#include <immintrin.h>\nint main(int c, char **v) { __m256i a = "
                   "_mm256_set1_epi32(c); a = _mm256_add_epi32(a, a); "
                   "return _mm256_extract_epi32(a, 0) == 99; }\n")
    out = tmp_path / "avx2"
    subprocess.run(["gcc", "-O2", "-march=x86-64-v3", "-mneeded", "-o", str(out), str(src)],
                   check=True)
    header = parse_elf(out.read_bytes()[:4096])
    assert isinstance(header, ElfHeader)
    assert header.cpu_level == "v3"
    baseline = parse_elf(Path("/bin/ls").read_bytes()[:4096])
    assert isinstance(baseline, ElfHeader)
    assert baseline.cpu_level == ""
    assert cpulevel.exceeds(P("amd64"), "v3")
    assert not cpulevel.exceeds(P("amd64/v3"), "v3")


def test_this_hosts_cpuinfo_gives_its_x86_level() -> None:
    text = Path("/proc/cpuinfo").read_text()
    found = cpu.describe_cpuinfo(text, P("amd64"))
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split())
    assert found.platform.level >= (2 if {"avx2", "bmi2", "fma"} <= flags else 0)
    assert found.newer_than(P("amd64")) == (found.platform.level > 0)
    assert found.name == next(line.split(":", 1)[1].strip() for line in text.splitlines()
                              if line.startswith("model name"))


# The first lines of a Raspberry Pi 4's /proc/cpuinfo (Cortex-A72), as the kernel prints them:
# no native arm64 host exists here, so this text stands in for one.
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
"""


def test_arm64_cpuinfo_names_the_core_and_its_level() -> None:
    pi4 = cpu.describe_cpuinfo(PI4_CPUINFO, P("arm64"))
    assert (pi4.name, str(pi4.platform), pi4.newer_than(P("arm64"))) == (
        "Cortex-A72", "linux/arm64", False)
    n1 = cpu.describe_cpuinfo(PI4_CPUINFO.replace("crc32 cpuid", "crc32 atomics dcpop cpuid")
                              .replace("0xd08", "0xd0c"), P("arm64"))
    assert (n1.name, str(n1.platform), n1.newer_than(P("arm64"))) == (
        "Neoverse-N1", "linux/arm64/v8.2", True)
    assert not n1.newer_than(P("arm64/v8.2"))
