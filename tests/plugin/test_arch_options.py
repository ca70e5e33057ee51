"""The plugin tests itself with pytester: options, precedence, ids, markers, usage errors."""

from __future__ import annotations

import pytest
from plugin_types import ExpectUsageError


def test_one_param_per_arch_with_canonical_ids(project: pytest.Pytester) -> None:
    result = project.runpytest("--arch=aarch64,amd64,armhf", "--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "test_a.py::test_uname[[]arm64[]]",
        "test_a.py::test_uname[[]amd64[]]",
        "test_a.py::test_uname[[]arm/v7[]]",
    ])
    assert result.ret == 0


def test_duplicate_aliases_collapse_to_one_arch(project: pytest.Pytester) -> None:
    result = project.runpytest("--arch=aarch64,arm64,arm64/v8", "--collect-only", "-q")
    assert [line for line in result.outlines if line.startswith("test_a.py::")] == [
        "test_a.py::test_uname[arm64]"
    ]


def test_native_means_this_host(project: pytest.Pytester) -> None:
    import platform

    from pytest_multiarch.platforms import Platform

    host = Platform.parse(platform.machine()).arch_name
    result = project.runpytest("--arch=native", "--collect-only", "-q")
    result.stdout.fnmatch_lines([f"test_a.py::test_uname[[]{host}[]]"])


def test_default_is_native(project: pytest.Pytester) -> None:
    result = project.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_a.py::test_uname[[]amd64[]]"])


@pytest.mark.parametrize(
    ("cli", "env", "ini", "expected", "source"),
    [
        ("arm64", "s390x", "ppc64le", "arm64", "option"),
        (None, "s390x", "ppc64le", "s390x", "env PYTEST_MULTIARCH_ARCHS"),
        (None, None, "ppc64le", "ppc64le", "ini multiarch_archs"),
        (None, "  ", "ppc64el", "ppc64le", "ini multiarch_archs"),
    ],
)
def test_precedence_option_env_ini(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
    cli: str | None, env: str | None, ini: str, expected: str, source: str,
) -> None:
    project.makeini(f"[pytest]\nmultiarch_archs = {ini}\n")
    if env is None:
        monkeypatch.delenv("PYTEST_MULTIARCH_ARCHS", raising=False)
    else:
        monkeypatch.setenv("PYTEST_MULTIARCH_ARCHS", env)
    args = ["--collect-only", "-q"] + ([f"--arch={cli}"] if cli else [])
    result = project.runpytest(*args)
    result.stdout.fnmatch_lines([f"test_a.py::test_uname[[]{expected}[]]"])
    header = project.runpytest(*[a for a in args if a != "-q"])
    header.stdout.fnmatch_lines([f"multiarch: archs={expected} (from {source});*"])


def test_header_shows_binfmt_status(project: pytest.Pytester) -> None:
    result = project.runpytest("--arch=amd64,arm64", "--collect-only")
    result.stdout.fnmatch_lines(["multiarch: binfmt: amd64 native, arm64 *"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sparc", "*unknown architecture 'sparc'; valid names: amd64, arm64, arm/v7, arm/v6, 386,"
                  " ppc64le, s390x, riscv64, mips64le, loong64*"),
        ("", "*no architecture given; valid names: native, amd64*"),
        (",,", "*no architecture given*"),
        ("linux/arm64/v8/extra", "*platform 'linux/arm64/v8/extra' has too many parts*"),
    ],
)
def test_bad_arch_is_a_usage_error(usage_error: ExpectUsageError, value: str, message: str) -> None:
    result = usage_error(f"--arch={value}")
    result.stderr.fnmatch_lines(["ERROR: pytest-multiarch: --arch (option): " + message[1:]])


def test_bad_env_value_names_its_source(
    usage_error: ExpectUsageError, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_MULTIARCH_ARCHS", "arm64,vax")
    usage_error().stderr.fnmatch_lines(
        ["*--arch (env PYTEST_MULTIARCH_ARCHS): unknown architecture 'vax'*"]
    )


def test_archs_marker_restricts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.archs("s390x", "aarch64")
        def test_only(arch):
            pass

        def test_all(arch):
            pass

        @pytest.mark.archs("ppc64le")
        def test_none(arch):
            pass
    """)
    result = pytester.runpytest("--arch=amd64,arm64,s390x", "--collect-only", "-q")
    lines = [line for line in result.outlines if line.startswith("test_m.py::")]
    # Session-scoped arch params group tests by arch; compare as sets.
    assert sorted(lines) == sorted([
        "test_m.py::test_only[arm64]",
        "test_m.py::test_only[s390x]",
        "test_m.py::test_all[amd64]",
        "test_m.py::test_all[arm64]",
        "test_m.py::test_all[s390x]",
        "test_m.py::test_none[no-arch]",
    ])
    run = pytester.runpytest("--arch=amd64", "-rs", "-k", "test_none")
    run.stdout.fnmatch_lines(["*@archs(ppc64le) names none of the requested archs (amd64)*"])


def test_bad_marker_argument_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.archs("pdp11")
        def test_only(arch):
            pass
    """)
    result = pytester.runpytest("--arch=amd64")
    assert result.ret == pytest.ExitCode.USAGE_ERROR or result.ret == pytest.ExitCode.INTERRUPTED
    assert "unknown architecture 'pdp11'" in result.stdout.str() + result.stderr.str()


def test_xfail_arch_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
        import pytest

        @pytest.mark.xfail_arch("amd64", reason="known bug #12 on x86")
        def test_known(arch):
            assert arch.architecture != "amd64"
    """)
    result = pytester.runpytest("--arch=amd64", "-rx")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["*known bug #12 on x86*"])


def test_tests_without_arch_are_left_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest("--arch=amd64,arm64", "-q")
    result.assert_outcomes(passed=1)


def test_registered_markers_work_with_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_s="""
        import pytest

        @pytest.mark.archs("amd64")
        @pytest.mark.xfail_arch("s390x", reason="r")
        @pytest.mark.multiarch_allow("/opt/*")
        def test_s(arch):
            pass
    """)
    result = pytester.runpytest("--strict-markers", "--arch=amd64")
    result.assert_outcomes(passed=1)
    help_text = pytester.runpytest("--markers").stdout.str()
    assert "@pytest.mark.archs(*names)" in help_text


def test_help_lists_the_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "cross-architecture container image checks:",
        "*--arch=LIST*",
        "*--arch-required*",
        "*--arch-host=ARCH=URL*",
        "*--multiarch-image=REF*",
        "  --multiarch-gate-only",
        "*Run only the generated gate of --multiarch-image:",
        "*--multiarch-smoke-timeout=SECONDS*",
        "*--arch-cpu=ARCH=MODEL*",
    ])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch-host=arm64"], "*--arch-host 'arm64': expected ARCH=URL*"),
        (["--arch-host=arm64=ftp://x"], "*URL must start with ssh://, tcp:// or unix://*"),
        (["--arch-host=foo=ssh://x"], "*unknown architecture 'foo'*"),
        (["--engine=lxc"], "*--engine='lxc' (option); valid: auto, docker, podman, rootfs*"),
        (["--multiarch-mem-limit=lots"], "*expected a size such as 512m*"),
        (["--multiarch-changed-only"], "*--multiarch-changed-only needs --multiarch-baseline*"),
    ],
)
def test_other_bad_options(usage_error: ExpectUsageError, args: list[str], message: str) -> None:
    usage_error(*args).stderr.fnmatch_lines([message])
