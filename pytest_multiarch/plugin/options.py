"""Options, ini keys and environment variables, resolved once per session.

Precedence is pytest-django's: command-line option, then environment variable, then ini key, then
the default.  Every resolved value remembers where it came from so the report header can say so.
The values themselves are parsed in :mod:`pytest_multiarch.plugin.values`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.oci.attestations import KINDS as ATTESTATION_KINDS
from pytest_multiarch.platforms import valid_names
from pytest_multiarch.plugin.values import (
    cache_problem,
    check_engine,
    parse_archs,
    parse_attestation_kinds,
    parse_expect_platforms,
    parse_hosts,
    parse_reference_arch,
    parse_run_timeout,
    parse_smoke_timeout,
    parse_unpack_limit,
    split_cmd,
    usage_error,
    validate_image,
    validate_size,
)
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


@dataclass(frozen=True, slots=True)
class Option:
    """One option of the ``multiarch`` group: ``--flag`` stored in ``config.option.<dest>``."""

    flag: str
    dest: str
    help: str
    metavar: str | None = None  # None for a switch (store_true takes no metavar)
    action: str | None = None  # "store_true" or "append"; None stores the value given
    default: bool | None = None

    def add_to(self, group: pytest.OptionGroup) -> None:
        extra: dict[str, Any] = {}
        if self.metavar is not None:
            extra["metavar"] = self.metavar
        if self.action is not None:
            extra["action"] = self.action
        group.addoption(self.flag, dest=self.dest, default=self.default, help=self.help, **extra)


@dataclass(frozen=True, slots=True)
class IniKey:
    """One ini key; its default is the empty value of its type."""

    name: str
    help: str
    type: Literal["string", "linelist", "bool"] = "string"

    def add_to(self, parser: pytest.Parser) -> None:
        default: object = {"string": "", "linelist": [], "bool": False}[self.type]
        parser.addini(self.name, self.help, type=self.type, default=default)


#: The options, in the order ``--help`` shows them.
OPTIONS: tuple[Option, ...] = (
    Option("--arch", "multiarch_archs", metavar="LIST",
           help="Comma-separated architectures to run each arch-aware test on, e.g. "
                "arm64,s390x (aliases such as aarch64 and ppc64el work; 'native' is this host). "
                f"Valid: native, {', '.join(valid_names())}"),
    Option("--arch-required", "multiarch_arch_required", action="store_true",
           help="Fail, instead of skip, tests whose architecture cannot run on this host "
                "(use this in CI gates)"),
    Option("--arch-host", "multiarch_arch_hosts", metavar="ARCH=URL", action="append",
           help="Run ARCH on a remote native engine: ssh://user@host[:port], tcp://host:port "
                "or unix://path (repeatable)"),
    Option("--multiarch-image", "multiarch_images", metavar="REF", action="append",
           help="Generate the gate checks for this image (registry reference or oci:DIR[:TAG]); "
                "repeatable; test files of the current directory are collected too unless "
                "--multiarch-gate-only is given"),
    Option("--multiarch-gate-only", "multiarch_gate_only", action="store_true", default=False,
           help="Run only the generated gate of --multiarch-image: collect no test files"),
    Option("--engine", "multiarch_engine", metavar="NAME",
           help=f"Container engine: {', '.join(ENGINES)} (default auto)"),
    Option("--multiarch-mem-limit", "multiarch_mem_limit", metavar="SIZE",
           help="Memory limit of every container the plugin starts (default "
                f"{DEFAULT_MEM_LIMIT})"),
    Option("--multiarch-allow", "multiarch_allow", metavar="GLOB", action="append",
           help="Path pattern of a foreign-architecture ELF file the audit accepts (repeatable)"),
    Option("--multiarch-smoke-cmd", "multiarch_smoke_cmd", metavar="CMD",
           help="Command the gate's smoke check runs in each variant (default: the image's own)"),
    Option("--multiarch-smoke-timeout", "multiarch_smoke_timeout", metavar="SECONDS",
           help="Native seconds the smoke command may run, times the emulation factor; a "
                "command still running then is a service that stays up and passes (default "
                f"{DEFAULT_SMOKE_TIMEOUT:g})"),
    Option("--multiarch-run-timeout", "multiarch_run_timeout", metavar="SECONDS",
           help="Native seconds a command may run before it fails as RunTimeout, scaled by the "
                f"arch's emulation factor (default {DEFAULT_RUN_TIMEOUT:g})"),
    Option("--multiarch-report", "multiarch_report", metavar="PATH",
           help="Write the arch matrix as JSON to PATH"),
    Option("--multiarch-baseline", "multiarch_baseline", metavar="PATH",
           help="Compare with the digests and outcomes recorded in PATH, then update it"),
    Option("--multiarch-changed-only", "multiarch_changed_only", action="store_true",
           default=False,
           help="With --multiarch-baseline: run only the variants whose digest changed"),
    Option("--multiarch-insecure-registry", "multiarch_insecure", metavar="HOST",
           action="append",
           help="Registry host reached over plain HTTP besides loopback ones (repeatable)"),
    Option("--multiarch-cache-dir", "multiarch_cache_dir", metavar="DIR",
           help="Cache of manifests, blobs and audit verdicts (default ~/.cache/pytest-multiarch)"),
    Option("--multiarch-reference-arch", "multiarch_reference_arch", metavar="ARCH",
           help="Arch whose answers the others are compared with (default: the first of --arch)"),
    Option("--arch-cpu", "multiarch_arch_cpus", metavar="ARCH=MODEL", action="append",
           help="qemu CPU model to emulate ARCH on, e.g. arm64=cortex-a76 or arm/v6=arm1176; "
                "'max' is qemu's newest (default: the oldest model of the level the platform "
                "promises; repeatable)"),
    Option("--multiarch-unpack-max-bytes", "multiarch_unpack_max_bytes", metavar="SIZE",
           help="Largest root filesystem the rootfs runner unpacks, e.g. 64g (default 64g)"),
    Option("--multiarch-unpack-max-files", "multiarch_unpack_max_files", metavar="N",
           help="Most entries (files, directories, links) the rootfs runner unpacks (default "
                "2000000)"),
    # The index, attestations and packages checks (issue #15).
    Option("--multiarch-expect-platforms", "multiarch_expect_platforms", metavar="LIST",
           help="Platforms every --multiarch-image index must list, exactly, e.g. "
                "linux/amd64,linux/arm64 (an extra or a missing one fails the index check)"),
    Option("--multiarch-require-attestations", "multiarch_require_attestations",
           metavar="LIST",
           help=f"Attachments every variant must carry: {', '.join(ATTESTATION_KINDS)}"),
    Option("--multiarch-allow-package", "multiarch_allow_packages", metavar="GLOB",
           action="append",
           help="Package name whose version may differ across archs (glob, repeatable)"),
)

#: The ini keys, in the order ``--help`` shows them.
INI_KEYS: tuple[IniKey, ...] = (
    IniKey("multiarch_unpack_max_bytes", "Largest rootfs the rootfs runner unpacks"),
    IniKey("multiarch_unpack_max_files", "Most entries the rootfs runner unpacks"),
    IniKey("multiarch_expect_platforms", "Platforms every index must list exactly"),
    IniKey("multiarch_require_attestations",
           f"Attachments every variant must carry ({', '.join(ATTESTATION_KINDS)})"),
    IniKey("multiarch_allow_packages", "Package names whose version may differ across archs",
           "linelist"),
    IniKey("multiarch_archs", "Architectures to run arch-aware tests on"),
    IniKey("multiarch_arch_cpus", "ARCH=MODEL qemu CPU models", "linelist"),
    IniKey("multiarch_arch_required", "Fail instead of skip unrunnable archs", "bool"),
    IniKey("multiarch_arch_hosts", "ARCH=URL remote native engines", "linelist"),
    IniKey("multiarch_images", "Images to generate gate checks for", "linelist"),
    IniKey("multiarch_engine", "Container engine: auto, docker, podman, rootfs"),
    IniKey("multiarch_mem_limit", "Memory limit of every container"),
    IniKey("multiarch_run_timeout", "Native seconds a command may run (scaled)"),
    IniKey("multiarch_allow_foreign", "Foreign ELF path patterns the audit accepts", "linelist"),
    IniKey("multiarch_insecure_registries", "Plain-HTTP registry hosts", "linelist"),
    IniKey("multiarch_service_image", "Image of the REST service under test"),
    IniKey("multiarch_db_image", "MariaDB image for REST and replication checks"),
)


def addoption(parser: pytest.Parser) -> None:
    """Register the ``multiarch`` option group and its ini keys."""
    group = parser.getgroup("multiarch", "cross-architecture container image checks")
    for option in OPTIONS:
        option.add_to(group)
    for key in INI_KEYS:
        key.add_to(parser)


def _env_name(dest: str) -> str:
    """The environment variable of option *dest*: ``multiarch_mem_limit`` →
    ``PYTEST_MULTIARCH_MEM_LIMIT`` (its ini key is *dest* itself)."""
    return "PYTEST_MULTIARCH_" + dest.removeprefix("multiarch_").upper()


def _pick(config: pytest.Config, dest: str) -> Sourced[str] | None:
    """Option beats environment beats ini; empty values do not count, except an empty option."""
    env, ini = _env_name(dest), dest
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


def _bool(config: pytest.Config, dest: str) -> bool:
    env = _env_name(dest)
    if config.getoption(dest):
        return True
    env_value = os.environ.get(env, "").strip().lower()
    if env_value:
        if env_value in ("1", "true", "yes", "on"):
            return True
        if env_value in ("0", "false", "no", "off"):
            return False
        raise usage_error(f"{env}={env_value!r}: expected 1/0, true/false, yes/no")
    return bool(config.getini(dest))


def _listed(config: pytest.Config, dest: str, ini: str) -> tuple[str, ...]:
    """A repeatable option's values, else its ini key's lines."""
    return tuple(config.getoption(dest) or config.getini(ini))


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
        raise usage_error(str(exc)) from None


def _variant_settings(config: pytest.Config) -> dict[str, Any]:
    """The settings of the index, attestations and packages checks (issue #15)."""
    expect = _pick(config, "multiarch_expect_platforms")
    require = _pick(config, "multiarch_require_attestations")
    allow = _listed(config, "multiarch_allow_packages", "multiarch_allow_packages")
    return {
        "expect_platforms_from": parse_expect_platforms(expect) if expect else None,
        "require_attestations_from": parse_attestation_kinds(require) if require else None,
        "allow_packages": allow,
    }


def _unpack_limit(config: pytest.Config, what: str) -> Sourced[int] | None:
    """``--multiarch-unpack-max-bytes`` or ``-files``, validated; None: the runner's default."""
    raw = _pick(config, f"multiarch_unpack_max_{what}")
    return parse_unpack_limit(raw, what) if raw is not None else None


def load(config: pytest.Config) -> MultiarchConfig:
    """Resolve and validate every multiarch setting; bad values raise ``pytest.UsageError``."""
    archs = parse_archs(_pick(config, "multiarch_archs"))
    host_entries = _listed(config, "multiarch_arch_hosts", "multiarch_arch_hosts")
    engine = check_engine(_pick(config, "multiarch_engine") or Sourced("auto", "default"))
    mem = _pick(config, "multiarch_mem_limit")
    mem_limit = mem.value.strip() if mem else DEFAULT_MEM_LIMIT
    validate_size(mem_limit)
    run_timeout = parse_run_timeout(_pick(config, "multiarch_run_timeout"))
    images = _listed(config, "multiarch_images", "multiarch_images")
    for image in images:
        validate_image(image)
    gate_only = bool(config.getoption("multiarch_gate_only"))
    if gate_only and not images:
        raise usage_error("--multiarch-gate-only needs --multiarch-image=REF (the image to gate)")
    smoke = config.getoption("multiarch_smoke_cmd")
    report = config.getoption("multiarch_report")
    baseline = config.getoption("multiarch_baseline")
    changed_only = bool(config.getoption("multiarch_changed_only"))
    if changed_only and not baseline:
        raise usage_error("--multiarch-changed-only needs --multiarch-baseline=PATH")
    cache = config.getoption("multiarch_cache_dir") or os.environ.get("PYTEST_MULTIARCH_CACHE")
    cache_dir = Path(cache).expanduser() if cache else None
    reference_arch = parse_reference_arch(config.getoption("multiarch_reference_arch"))
    return MultiarchConfig(
        arch_cpus=_parse_cpus(config),
        archs=archs,
        arch_required=_bool(config, "multiarch_arch_required"),
        images=tuple(i.strip() for i in images),
        arch_hosts=parse_hosts(list(host_entries)),
        engine=engine,
        mem_limit=mem_limit,
        run_timeout=run_timeout,
        allow_foreign=_listed(config, "multiarch_allow", "multiarch_allow_foreign"),
        smoke_cmd=tuple(split_cmd(smoke)) if smoke else None,
        report_path=Path(report) if report else None,
        baseline_path=Path(baseline) if baseline else None,
        changed_only=changed_only,
        insecure_registries=_listed(config, "multiarch_insecure", "multiarch_insecure_registries"),
        cache_dir=cache_dir,
        reference_arch=reference_arch,
        gate_only=gate_only,
        smoke_timeout=parse_smoke_timeout(config.getoption("multiarch_smoke_timeout")),
        cache_problem=cache_problem(cache_dir) if cache_dir is not None else "",
        unpack_max_bytes=_unpack_limit(config, "bytes"),
        unpack_max_files=_unpack_limit(config, "files"),
        **_variant_settings(config),
    )


STATE_KEY = pytest.StashKey["State"]()


def get_state(config: pytest.Config) -> State:
    """The session state the plugin stored in ``config.stash``."""
    return config.stash[STATE_KEY]
