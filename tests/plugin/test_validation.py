"""Bad input is one usage error up front, and a cache that cannot be used is said once."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
from plugin_types import ExpectUsageError


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--multiarch-image=not a ref"],
         "ERROR: pytest-multiarch: --multiarch-image='not a ref': *"),
        (["--multiarch-image=Registry.local/App:1"],
         "ERROR: pytest-multiarch: --multiarch-image=*"),
        (["--multiarch-image=oci:/nonexistent/layout:1"],
         "ERROR: pytest-multiarch: --multiarch-image='oci:/nonexistent/layout:1': "
         "/nonexistent/layout is not an OCI layout (no index.json there)*"),
        (["--arch-host=arm64=http://127.0.0.1:1"],
         "*--arch-host 'arm64=http://127.0.0.1:1': URL must start with ssh://, tcp:// or unix://*"),
        (["--arch-host=arm64=https://graviton"], "*URL must start with ssh://, tcp:// or unix://*"),
        (["--arch-host=arm64=tcp://graviton"], "*'tcp://graviton' names no port*"),
        (["--arch-host=arm64=ssh://"], "*'ssh://' names no host*"),
        (["--arch-host=arm64=unix://"], "*unix:// needs a socket path*"),
        (["--multiarch-mem-limit=0"], "*--multiarch-mem-limit='0': expected a size such as 512m*"),
        (["--multiarch-mem-limit=12x"], "*--multiarch-mem-limit='12x': expected a size*"),
        (["--multiarch-smoke-timeout=soon"],
         "*--multiarch-smoke-timeout='soon': expected a number of seconds > 0*"),
        (["--multiarch-smoke-timeout=-3"], "*--multiarch-smoke-timeout='-3'*"),
        (["--multiarch-gate-only"], "*--multiarch-gate-only needs --multiarch-image=REF*"),
    ],
)
def test_bad_value_is_one_usage_error(
    usage_error: ExpectUsageError, args: list[str], message: str
) -> None:
    result = usage_error(*args)
    result.stderr.fnmatch_lines([message])
    assert result.stderr.str().count("ERROR") == 1  # one error, not one per generated check


@pytest.mark.parametrize("size", ["512m", "512mb", "1G", "1.5g", "268435456"])
def test_sizes_the_engine_takes_are_accepted(project: pytest.Pytester, size: str) -> None:
    result = project.runpytest(f"--multiarch-mem-limit={size}", "--arch=native")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"multiarch: archs=* mem_limit={size}; *"])


def test_valid_remote_hosts_are_accepted(project: pytest.Pytester) -> None:
    result = project.runpytest("--arch=amd64", "--arch-host=amd64=tcp://127.0.0.1:2375",
                               "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*amd64 native on 127.0.0.1:2375*"])


def test_unwritable_cache_dir_is_said_once(project: pytest.Pytester, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = project.runpytest("--arch=native", f"--multiarch-cache-dir={blocker}/cache")
    assert result.ret == pytest.ExitCode.OK
    lines = [line for line in result.stdout.lines if "cache off" in line]
    assert lines == [
        f"multiarch: cache off: --multiarch-cache-dir {blocker}/cache is not writable (Not a "
        "directory); this run fetches and scans everything again. Point it at a writable "
        "directory"
    ]


def test_writable_cache_dir_says_nothing(project: pytest.Pytester, tmp_path: Path) -> None:
    result = project.runpytest("--arch=native", f"--multiarch-cache-dir={tmp_path}/c")
    assert result.ret == pytest.ExitCode.OK
    assert "cache off" not in result.stdout.str()


def test_ssh_remote_hosts_need_no_extra_install() -> None:
    """``ssh://`` needs paramiko (the Docker SDK's ssh extra): a plain install must bring it."""
    requires = importlib.metadata.requires("pytest-multiarch") or []
    main = [r for r in requires if "extra ==" not in r]
    assert any(re.match(r"docker\[ssh\]", r) for r in main), main
    import paramiko  # what docker.transport.SSHHTTPAdapter imports for ssh://

    assert paramiko.__version__


def test_every_failure_class_is_importable_from_the_package() -> None:
    import pytest_multiarch
    from pytest_multiarch import errors

    classes = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, errors.MultiarchError)}
    assert {"AuditFailed", "CommandFailed", "RunnerError", "RunTimeout", "DigestMismatchError",
            "LoaderMissing"} <= classes
    for name in classes:
        assert getattr(pytest_multiarch, name) is getattr(errors, name), name
        assert name in pytest_multiarch.__all__
    from pytest_multiarch.session.images import AuditFailed  # its old home keeps working

    assert AuditFailed is pytest_multiarch.AuditFailed


def test_fixture_keywords_are_explicit(pytester: pytest.Pytester) -> None:
    """``command=`` (not ``cmd=``) names itself at once, before any image is touched."""
    pytester.makepyfile(test_kw="""
        import pytest

        def test_container(arch, multiarch_container):
            with pytest.raises(TypeError, match="unexpected keyword argument 'command'"):
                multiarch_container("registry.local:5000/app:1.4", command=["sh"])

        def test_run(arch, multiarch_run):
            with pytest.raises(TypeError, match="unexpected keyword argument 'stdin'"):
                multiarch_run("registry.local:5000/app:1.4", ["true"], stdin="x")
    """)
    pytester.runpytest("--arch=native").assert_outcomes(passed=2)


def test_entry_point_hooks_and_options_keep_their_names(project: pytest.Pytester) -> None:
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="pytest11")
                if ep.name == "multiarch"]
    assert entry.value == "pytest_multiarch.plugin"
    from pytest_multiarch.plugin import hookspecs

    assert {n for n in vars(hookspecs) if n.startswith("pytest_multiarch_")} == {
        "pytest_multiarch_make_runner", "pytest_multiarch_select_archs", "pytest_multiarch_report"}
    project.makeconftest("""
        seen = []
        def pytest_multiarch_report(config, report):
            seen.append(report["session"])
        def pytest_unconfigure(config):
            print("REPORT HOOK", len(seen))
    """)
    result = project.runpytest_subprocess("--arch=native", "-s", "--multiarch-report=r.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["REPORT HOOK 1"])
