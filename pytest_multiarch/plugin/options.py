"""Options, ini keys and environment variables, resolved once per session.

Precedence is pytest-django's: command-line option, then environment variable, then ini key, then
the default.  Every resolved value remembers where it came from so the report header can say so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.oci.attestations import KINDS as ATTESTATION_KINDS
from pytest_multiarch.platforms import Platform, parse_arch_list, valid_names
from pytest_multiarch.session.settings import (
    DEFAULT_MEM_LIMIT,
    DEFAULT_RUN_TIMEOUT,
    DEFAULT_SMOKE_TIMEOUT,
    ENGINES,
    MultiarchConfig,
    Sourced,
)

if TYPE_CHECKING:
    from pytest_multiarch.session.state import State

HOST_SCHEMES = ("ssh", "tcp", "unix")


def addoption(parser: pytest.Parser) -> None:
    """Register the ``multiarch`` option group and its ini keys.

    Long on purpose: one flat table of declarations, in the order ``--help`` shows them.
    """
    group = parser.getgroup("multiarch", "cross-architecture container image checks")
    group.addoption(
        "--arch", dest="multiarch_archs", metavar="LIST", default=None,
        help="Comma-separated architectures to run each arch-aware test on, e.g. arm64,s390x "
             "(aliases such as aarch64 and ppc64el work; 'native' is this host). "
             f"Valid: native, {', '.join(valid_names())}",
    )
    group.addoption(
        "--arch-required", dest="multiarch_arch_required", action="store_true", default=None,
        help="Fail, instead of skip, tests whose architecture cannot run on this host "
             "(use this in CI gates)",
    )
    group.addoption(
        "--arch-host", dest="multiarch_arch_hosts", metavar="ARCH=URL", action="append",
        default=None,
        help="Run ARCH on a remote native engine: ssh://user@host[:port], tcp://host:port "
             "or unix://path (repeatable)",
    )
    group.addoption(
        "--multiarch-image", dest="multiarch_images", metavar="REF", action="append",
        default=None,
        help="Generate the gate checks for this image (registry reference or oci:DIR[:TAG]); "
             "repeatable; test files of the current directory are collected too unless "
             "--multiarch-gate-only is given",
    )
    group.addoption(
        "--multiarch-gate-only", dest="multiarch_gate_only", action="store_true", default=False,
        help="Run only the generated gate of --multiarch-image: collect no test files",
    )
    group.addoption(
        "--engine", dest="multiarch_engine", metavar="NAME", default=None,
        help=f"Container engine: {', '.join(ENGINES)} (default auto)",
    )
    group.addoption(
        "--multiarch-mem-limit", dest="multiarch_mem_limit", metavar="SIZE", default=None,
        help=f"Memory limit of every container the plugin starts (default {DEFAULT_MEM_LIMIT})",
    )
    group.addoption(
        "--multiarch-allow", dest="multiarch_allow", metavar="GLOB", action="append",
        default=None,
        help="Path pattern of a foreign-architecture ELF file the audit accepts (repeatable)",
    )
    group.addoption(
        "--multiarch-smoke-cmd", dest="multiarch_smoke_cmd", metavar="CMD", default=None,
        help="Command the gate's smoke check runs in each variant (default: the image's own)",
    )
    group.addoption(
        "--multiarch-smoke-timeout", dest="multiarch_smoke_timeout", metavar="SECONDS",
        default=None,
        help="Native seconds the smoke command may run, times the emulation factor; a command "
             f"still running then is a service that stays up and passes (default "
             f"{DEFAULT_SMOKE_TIMEOUT:g})",
    )
    group.addoption(
        "--multiarch-run-timeout", dest="multiarch_run_timeout", metavar="SECONDS",
        default=None,
        help=f"Native seconds a command may run before it fails as RunTimeout, scaled by the "
             f"arch's emulation factor (default {DEFAULT_RUN_TIMEOUT:g})",
    )
    group.addoption(
        "--multiarch-report", dest="multiarch_report", metavar="PATH", default=None,
        help="Write the arch matrix as JSON to PATH",
    )
    group.addoption(
        "--multiarch-baseline", dest="multiarch_baseline", metavar="PATH", default=None,
        help="Compare with the digests and outcomes recorded in PATH, then update it",
    )
    group.addoption(
        "--multiarch-changed-only", dest="multiarch_changed_only", action="store_true",
        default=False,
        help="With --multiarch-baseline: run only the variants whose digest changed",
    )
    group.addoption(
        "--multiarch-insecure-registry", dest="multiarch_insecure", metavar="HOST",
        action="append", default=None,
        help="Registry host reached over plain HTTP besides loopback ones (repeatable)",
    )
    group.addoption(
        "--multiarch-cache-dir", dest="multiarch_cache_dir", metavar="DIR", default=None,
        help="Cache of manifests, blobs and audit verdicts (default ~/.cache/pytest-multiarch)",
    )
    group.addoption(
        "--multiarch-reference-arch", dest="multiarch_reference_arch", metavar="ARCH",
        default=None,
        help="Arch whose answers the others are compared with (default: the first of --arch)",
    )
    group.addoption(
        "--arch-cpu", dest="multiarch_arch_cpus", metavar="ARCH=MODEL", action="append",
        default=None,
        help="qemu CPU model to emulate ARCH on, e.g. arm64=cortex-a76 or arm/v6=arm1176; 'max' "
             "is qemu's newest (default: the oldest model of the level the platform promises; "
             "repeatable)",
    )
    group.addoption(
        "--multiarch-unpack-max-bytes", dest="multiarch_unpack_max_bytes", metavar="SIZE",
        default=None,
        help="Largest root filesystem the rootfs runner unpacks, e.g. 64g (default 64g)",
    )
    group.addoption(
        "--multiarch-unpack-max-files", dest="multiarch_unpack_max_files", metavar="N",
        default=None,
        help="Most entries (files, directories, links) the rootfs runner unpacks (default 2000000)",
    )
    parser.addini("multiarch_unpack_max_bytes", "Largest rootfs the rootfs runner unpacks",
                  default="")
    parser.addini("multiarch_unpack_max_files", "Most entries the rootfs runner unpacks",
                  default="")
    _add_variant_options(group, parser)
    parser.addini("multiarch_archs", "Architectures to run arch-aware tests on", default="")
    parser.addini("multiarch_arch_cpus", "ARCH=MODEL qemu CPU models", type="linelist",
                  default=[])
    parser.addini("multiarch_arch_required", "Fail instead of skip unrunnable archs",
                  type="bool", default=False)
    parser.addini("multiarch_arch_hosts", "ARCH=URL remote native engines", type="linelist",
                  default=[])
    parser.addini("multiarch_images", "Images to generate gate checks for", type="linelist",
                  default=[])
    parser.addini("multiarch_engine", "Container engine: auto, docker, podman, rootfs",
                  default="")
    parser.addini("multiarch_mem_limit", "Memory limit of every container", default="")
    parser.addini("multiarch_run_timeout", "Native seconds a command may run (scaled)",
                  default="")
    parser.addini("multiarch_allow_foreign", "Foreign ELF path patterns the audit accepts",
                  type="linelist", default=[])
    parser.addini("multiarch_insecure_registries", "Plain-HTTP registry hosts",
                  type="linelist", default=[])
    parser.addini("multiarch_service_image", "Image of the REST service under test", default="")
    parser.addini("multiarch_db_image", "MariaDB image for REST and replication checks",
                  default="")


def _add_variant_options(group: pytest.OptionGroup, parser: pytest.Parser) -> None:
    """The options of the index, attestations and packages checks (issue #15)."""
    group.addoption(
        "--multiarch-expect-platforms", dest="multiarch_expect_platforms", metavar="LIST",
        default=None,
        help="Platforms every --multiarch-image index must list, exactly, e.g. "
             "linux/amd64,linux/arm64 (an extra or a missing one fails the index check)",
    )
    group.addoption(
        "--multiarch-require-attestations", dest="multiarch_require_attestations",
        metavar="LIST", default=None,
        help=f"Attachments every variant must carry: {', '.join(ATTESTATION_KINDS)}",
    )
    group.addoption(
        "--multiarch-allow-package", dest="multiarch_allow_packages", metavar="GLOB",
        action="append", default=None,
        help="Package name whose version may differ across archs (glob, repeatable)",
    )
    parser.addini("multiarch_expect_platforms", "Platforms every index must list exactly",
                  default="")
    parser.addini("multiarch_require_attestations",
                  f"Attachments every variant must carry ({', '.join(ATTESTATION_KINDS)})",
                  default="")
    parser.addini("multiarch_allow_packages", "Package names whose version may differ across "
                  "archs", type="linelist", default=[])


def _variant_settings(config: pytest.Config) -> dict[str, Any]:
    expect = _pick(config, "multiarch_expect_platforms", "PYTEST_MULTIARCH_EXPECT_PLATFORMS",
                   "multiarch_expect_platforms")
    expect_from = None
    if expect is not None:
        try:
            plats = tuple(Platform.parse(p.strip()) for p in expect.value.split(",") if p.strip())
        except MultiarchError as exc:
            raise _fail(f"--multiarch-expect-platforms ({expect.source}): {exc}") from None
        if not plats:
            raise _fail(f"--multiarch-expect-platforms ({expect.source}) is empty; give e.g. "
                        "linux/amd64,linux/arm64")
        expect_from = Sourced(plats, expect.source)
    require = _pick(config, "multiarch_require_attestations",
                    "PYTEST_MULTIARCH_REQUIRE_ATTESTATIONS", "multiarch_require_attestations")
    require_from = None
    if require is not None:
        kinds = tuple(k.strip() for k in require.value.split(",") if k.strip())
        bad = [k for k in kinds if k not in ATTESTATION_KINDS]
        if bad or not kinds:
            raise _fail(f"--multiarch-require-attestations={require.value!r} ({require.source}):"
                        f" {', '.join(bad) or 'empty'} is not valid; valid: "
                        f"{', '.join(ATTESTATION_KINDS)}")
        require_from = Sourced(kinds, require.source)
    allow = tuple(config.getoption("multiarch_allow_packages")
                  or config.getini("multiarch_allow_packages"))
    return {"expect_platforms_from": expect_from, "require_attestations_from": require_from,
            "allow_packages": allow}


def _fail(message: str) -> pytest.UsageError:
    return pytest.UsageError(f"pytest-multiarch: {message}")


def _pick(config: pytest.Config, dest: str, env: str, ini: str) -> Sourced[str] | None:
    """Option beats environment beats ini; empty values do not count, except an empty option."""
    opt = config.getoption(dest)
    if opt is not None:
        return Sourced(str(opt), "option")
    env_value = os.environ.get(env)
    if env_value is not None and env_value.strip():
        return Sourced(env_value, f"env {env}")
    ini_value = config.getini(ini)
    if isinstance(ini_value, str) and ini_value.strip():
        return Sourced(ini_value, f"ini {ini}")
    return None


def _parse_archs(raw: Sourced[str] | None) -> Sourced[tuple[Platform, ...]]:
    if raw is None:
        return Sourced((Platform.host(),), "default: native")
    try:
        return Sourced(tuple(parse_arch_list(raw.value)), raw.source)
    except MultiarchError as exc:
        raise _fail(f"--arch ({raw.source}): {exc}") from None


def _parse_hosts(entries: list[str]) -> dict[Platform, str]:
    hosts: dict[Platform, str] = {}
    for entry in entries:
        arch, sep, url = entry.partition("=")
        url = url.strip()
        if not sep or not url:
            raise _fail(f"--arch-host {entry!r}: expected ARCH=URL, e.g. arm64=ssh://ci@graviton")
        problem = _host_url_problem(url)
        if problem:
            raise _fail(f"--arch-host {entry!r}: {problem}")
        try:
            plat = Platform.parse(arch)
        except MultiarchError as exc:
            raise _fail(f"--arch-host {entry!r}: {exc}") from None
        hosts[plat] = url
    return hosts


def _parse_cpus(config: pytest.Config) -> Sourced[dict[str, str]]:
    """``--arch-cpu`` beats ``PYTEST_MULTIARCH_ARCH_CPUS`` (comma-separated) beats the ini."""
    from pytest_multiarch.host import cpu

    env = "PYTEST_MULTIARCH_ARCH_CPUS"
    entries: list[str] = list(config.getoption("multiarch_arch_cpus") or [])
    source = "option"
    if not entries and os.environ.get(env, "").strip():
        entries, source = [os.environ[env]], f"env {env}"
    if not entries:
        entries, source = list(config.getini("multiarch_arch_cpus")), "ini multiarch_arch_cpus"
    if not entries:
        return Sourced({}, "default")
    try:
        return Sourced(cpu.parse_overrides(entries, what=f"--arch-cpu ({source})"), source)
    except MultiarchError as exc:
        raise _fail(str(exc)) from None


def _host_url_problem(url: str) -> str:
    """Why *url* cannot name a Docker API engine, or ""."""
    from urllib.parse import urlsplit

    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in HOST_SCHEMES:
        return (f"URL must start with ssh://, tcp:// or unix:// (got {url!r}): the engine's API, "
                "e.g. ssh://ci@graviton or tcp://10.0.0.5:2375")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if scheme == "unix":
        return "" if parts.path else "unix:// needs a socket path, e.g. unix:///var/run/docker.sock"
    if not parts.hostname:
        return f"{url!r} names no host, e.g. {scheme}://host{':2375' if scheme == 'tcp' else ''}"
    if scheme == "tcp" and port is None:
        return f"{url!r} names no port, e.g. tcp://{parts.hostname}:2375"
    return ""


def _bool(config: pytest.Config, dest: str, env: str, ini: str) -> bool:
    if config.getoption(dest):
        return True
    env_value = os.environ.get(env, "").strip().lower()
    if env_value:
        if env_value in ("1", "true", "yes", "on"):
            return True
        if env_value in ("0", "false", "no", "off"):
            return False
        raise _fail(f"{env}={env_value!r}: expected 1/0, true/false, yes/no")
    return bool(config.getini(ini))


def load(config: pytest.Config) -> MultiarchConfig:
    """Resolve and validate every multiarch setting; bad values raise ``pytest.UsageError``."""
    archs = _parse_archs(
        _pick(config, "multiarch_archs", "PYTEST_MULTIARCH_ARCHS", "multiarch_archs")
    )
    host_entries = config.getoption("multiarch_arch_hosts") or list(
        config.getini("multiarch_arch_hosts")
    )
    engine = _pick(config, "multiarch_engine", "PYTEST_MULTIARCH_ENGINE", "multiarch_engine")
    engine = engine or Sourced("auto", "default")
    if engine.value not in ENGINES:
        raise _fail(f"--engine={engine.value!r} ({engine.source}); valid: {', '.join(ENGINES)}")
    mem = _pick(config, "multiarch_mem_limit", "PYTEST_MULTIARCH_MEM_LIMIT",
                "multiarch_mem_limit")
    mem_limit = mem.value.strip() if mem else DEFAULT_MEM_LIMIT
    _validate_size(mem_limit)
    run_timeout = _run_timeout(_pick(config, "multiarch_run_timeout",
                                     "PYTEST_MULTIARCH_RUN_TIMEOUT", "multiarch_run_timeout"))
    images = tuple(config.getoption("multiarch_images") or config.getini("multiarch_images"))
    for image in images:
        _validate_image(image)
    gate_only = bool(config.getoption("multiarch_gate_only"))
    if gate_only and not images:
        raise _fail("--multiarch-gate-only needs --multiarch-image=REF (the image to gate)")
    smoke = config.getoption("multiarch_smoke_cmd")
    report = config.getoption("multiarch_report")
    baseline = config.getoption("multiarch_baseline")
    changed_only = bool(config.getoption("multiarch_changed_only"))
    if changed_only and not baseline:
        raise _fail("--multiarch-changed-only needs --multiarch-baseline=PATH")
    cache = config.getoption("multiarch_cache_dir") or os.environ.get("PYTEST_MULTIARCH_CACHE")
    cache_dir = Path(cache).expanduser() if cache else None
    ref_arch_text = config.getoption("multiarch_reference_arch")
    reference_arch = None
    if ref_arch_text:
        try:
            reference_arch = Platform.parse(ref_arch_text)
        except MultiarchError as exc:
            raise _fail(f"--multiarch-reference-arch: {exc}") from None
    return MultiarchConfig(
        arch_cpus=_parse_cpus(config),
        archs=archs,
        arch_required=_bool(config, "multiarch_arch_required", "PYTEST_MULTIARCH_ARCH_REQUIRED",
                            "multiarch_arch_required"),
        images=tuple(i.strip() for i in images),
        arch_hosts=_parse_hosts(list(host_entries)),
        engine=engine,
        mem_limit=mem_limit,
        run_timeout=run_timeout,
        allow_foreign=tuple(config.getoption("multiarch_allow")
                            or config.getini("multiarch_allow_foreign")),
        smoke_cmd=tuple(_split_cmd(smoke)) if smoke else None,
        report_path=Path(report) if report else None,
        baseline_path=Path(baseline) if baseline else None,
        changed_only=changed_only,
        insecure_registries=tuple(config.getoption("multiarch_insecure")
                                  or config.getini("multiarch_insecure_registries")),
        cache_dir=cache_dir,
        reference_arch=reference_arch,
        gate_only=gate_only,
        smoke_timeout=_smoke_timeout(config.getoption("multiarch_smoke_timeout")),
        cache_problem=_cache_problem(cache_dir) if cache_dir is not None else "",
        unpack_max_bytes=_unpack_limit(config, "bytes"),
        unpack_max_files=_unpack_limit(config, "files"),
        **_variant_settings(config),
    )


def _unpack_limit(config: pytest.Config, what: str) -> Sourced[int] | None:
    """``--multiarch-unpack-max-bytes`` (a size, 64g) or ``-files`` (a count), validated."""
    raw = _pick(config, f"multiarch_unpack_max_{what}",
                f"PYTEST_MULTIARCH_UNPACK_MAX_{what.upper()}", f"multiarch_unpack_max_{what}")
    if raw is None:
        return None
    text = raw.value.strip()
    try:
        if what == "files":
            value = int(text)
        else:
            from docker.utils import parse_bytes

            value = int(parse_bytes(text))
    except Exception:  # docker's parser raises its own DockerException, int() a ValueError
        value = 0
    if value <= 0:
        example = "2000000" if what == "files" else "a size such as 64g or 500m"
        raise _fail(f"--multiarch-unpack-max-{what}={text!r} ({raw.source}): expected {example}")
    return Sourced(value, raw.source)


def _split_cmd(text: str) -> list[str]:
    import shlex

    try:
        parts = shlex.split(text)
    except ValueError as exc:
        raise _fail(f"--multiarch-smoke-cmd {text!r}: {exc}") from None
    if not parts:
        raise _fail("--multiarch-smoke-cmd is empty")
    return parts


def _validate_size(text: str) -> None:
    from pytest_multiarch.runners.base import parse_mem_limit

    try:
        parse_mem_limit(text)  # the runners' own parser: what passes here, the engine takes
    except MultiarchError:
        raise _fail(f"--multiarch-mem-limit={text!r}: expected a size such as 512m, 512mb, 2g "
                    "or a byte count") from None


def _validate_image(text: str) -> None:
    """One usage error for a reference that cannot name an image (not one failure per check)."""
    from pytest_multiarch.oci.layout import LayoutReference
    from pytest_multiarch.oci.reference import Reference

    if not text.strip():
        raise _fail("--multiarch-image is empty; give a reference like host:5000/app:1.0")
    try:
        if text.strip().startswith("oci:"):
            layout = LayoutReference.parse(text.strip())
            if not (Path(layout.path) / "index.json").is_file():
                raise _fail(
                    f"--multiarch-image={text!r}: {layout.path} is not an OCI layout (no "
                    "index.json there); make one with e.g. skopeo copy --all docker://REF "
                    f"oci:{layout.path}:TAG"
                )
        else:
            Reference.parse(text)
    except MultiarchError as exc:
        raise _fail(f"--multiarch-image={text!r}: {exc}") from None


def _run_timeout(raw: Sourced[str] | None) -> Sourced[float]:
    if raw is None:
        return Sourced(DEFAULT_RUN_TIMEOUT, "default")
    try:
        value = float(raw.value)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise _fail(f"--multiarch-run-timeout={raw.value!r} ({raw.source}): expected a number "
                    "of seconds above 0, e.g. 300")
    return Sourced(value, raw.source)


def _smoke_timeout(text: str | None) -> float:
    if text is None:
        return DEFAULT_SMOKE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise _fail(f"--multiarch-smoke-timeout={text!r}: expected a number of seconds > 0, "
                    "e.g. 10")
    return value


def _cache_problem(path: Path) -> str:
    """Why *path* cannot hold the cache (said once in the header), or ""."""
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        return (f"--multiarch-cache-dir {path} is not writable ({exc.strerror or exc}); this "
                "run fetches and scans everything again. Point it at a writable directory")
    return ""


STATE_KEY = pytest.StashKey["State"]()


def get_state(config: pytest.Config) -> State:
    """The session state the plugin stored in ``config.stash``."""
    return config.stash[STATE_KEY]
