"""Parsers of single option values: text in, a typed value out, or a ``pytest.UsageError``.

Each error names the option, the bad value and what would be valid; a value that may come from
the environment or an ini key also says which (``option``, ``env NAME``, ``ini NAME``).  Which
source wins is :mod:`.options`' business.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.oci.attestations import KINDS as ATTESTATION_KINDS
from pytest_multiarch.platforms import Platform, parse_arch_list
from pytest_multiarch.session.settings import (
    DEFAULT_RUN_TIMEOUT,
    DEFAULT_SMOKE_TIMEOUT,
    ENGINES,
    Sourced,
)

HOST_SCHEMES = ("ssh", "tcp", "unix")


def usage_error(message: str) -> pytest.UsageError:
    return pytest.UsageError(f"pytest-multiarch: {message}")


def parse_archs(raw: Sourced[str] | None) -> Sourced[tuple[Platform, ...]]:
    if raw is None:
        return Sourced((Platform.host(),), "default: native")
    try:
        return Sourced(tuple(parse_arch_list(raw.value)), raw.source)
    except MultiarchError as exc:
        raise usage_error(f"--arch ({raw.source}): {exc}") from None


def parse_reference_arch(text: str | None) -> Platform | None:
    if not text:
        return None
    try:
        return Platform.parse(text)
    except MultiarchError as exc:
        raise usage_error(f"--multiarch-reference-arch: {exc}") from None


def parse_hosts(entries: list[str]) -> dict[Platform, str]:
    hosts: dict[Platform, str] = {}
    for entry in entries:
        arch, sep, url = entry.partition("=")
        url = url.strip()
        if not sep or not url:
            raise usage_error(
                f"--arch-host {entry!r}: expected ARCH=URL, e.g. arm64=ssh://ci@graviton")
        problem = host_url_problem(url)
        if problem:
            raise usage_error(f"--arch-host {entry!r}: {problem}")
        try:
            plat = Platform.parse(arch)
        except MultiarchError as exc:
            raise usage_error(f"--arch-host {entry!r}: {exc}") from None
        hosts[plat] = url
    return hosts


def host_url_problem(url: str) -> str:
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


def check_engine(engine: Sourced[str]) -> Sourced[str]:
    if engine.value not in ENGINES:
        raise usage_error(
            f"--engine={engine.value!r} ({engine.source}); valid: {', '.join(ENGINES)}")
    return engine


def parse_expect_platforms(raw: Sourced[str]) -> Sourced[tuple[Platform, ...]]:
    try:
        plats = tuple(Platform.parse(p.strip()) for p in raw.value.split(",") if p.strip())
    except MultiarchError as exc:
        raise usage_error(f"--multiarch-expect-platforms ({raw.source}): {exc}") from None
    if not plats:
        raise usage_error(f"--multiarch-expect-platforms ({raw.source}) is empty; give e.g. "
                          "linux/amd64,linux/arm64")
    return Sourced(plats, raw.source)


def parse_attestation_kinds(raw: Sourced[str]) -> Sourced[tuple[str, ...]]:
    kinds = tuple(k.strip() for k in raw.value.split(",") if k.strip())
    bad = [k for k in kinds if k not in ATTESTATION_KINDS]
    if bad or not kinds:
        raise usage_error(f"--multiarch-require-attestations={raw.value!r} ({raw.source}):"
                          f" {', '.join(bad) or 'empty'} is not valid; valid: "
                          f"{', '.join(ATTESTATION_KINDS)}")
    return Sourced(kinds, raw.source)


def parse_unpack_limit(raw: Sourced[str], what: str) -> Sourced[int]:
    """The value of ``--multiarch-unpack-max-bytes`` (a size, 64g) or ``-files`` (a count)."""
    from pytest_multiarch.runners.base import parse_mem_limit

    text = raw.value.strip()
    try:
        value = int(text) if what == "files" else parse_mem_limit(text)  # the one size parser
    except (ValueError, MultiarchError):
        value = 0
    if value <= 0:
        example = "2000000" if what == "files" else "a size such as 64g or 500m"
        raise usage_error(
            f"--multiarch-unpack-max-{what}={text!r} ({raw.source}): expected {example}")
    return Sourced(value, raw.source)


def split_cmd(text: str) -> list[str]:
    import shlex

    try:
        parts = shlex.split(text)
    except ValueError as exc:
        raise usage_error(f"--multiarch-smoke-cmd {text!r}: {exc}") from None
    if not parts:
        raise usage_error("--multiarch-smoke-cmd is empty")
    return parts


def validate_size(text: str) -> None:
    from pytest_multiarch.runners.base import parse_mem_limit

    try:
        parse_mem_limit(text)  # the runners' own parser: what passes here, the engine takes
    except MultiarchError:
        raise usage_error(f"--multiarch-mem-limit={text!r}: expected a size such as 512m, "
                          "512mb, 2g or a byte count") from None


def validate_image(text: str) -> None:
    """One usage error for a reference that cannot name an image (not one failure per check)."""
    from pytest_multiarch.oci.layout import PREFIX, LayoutReference
    from pytest_multiarch.oci.reference import Reference

    if not text.strip():
        raise usage_error("--multiarch-image is empty; give a reference like host:5000/app:1.0")
    try:
        if text.strip().startswith(PREFIX):
            layout = LayoutReference.parse(text.strip())
            if not (Path(layout.path) / "index.json").is_file():
                raise usage_error(
                    f"--multiarch-image={text!r}: {layout.path} is not an OCI layout (no "
                    "index.json there); make one with e.g. skopeo copy --all docker://REF "
                    f"oci:{layout.path}:TAG"
                )
        else:
            Reference.parse(text)
    except MultiarchError as exc:
        raise usage_error(f"--multiarch-image={text!r}: {exc}") from None


def parse_run_timeout(raw: Sourced[str] | None) -> Sourced[float]:
    if raw is None:
        return Sourced(DEFAULT_RUN_TIMEOUT, "default")
    try:
        value = float(raw.value)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise usage_error(f"--multiarch-run-timeout={raw.value!r} ({raw.source}): expected a "
                          "number of seconds above 0, e.g. 300")
    return Sourced(value, raw.source)


def parse_smoke_timeout(text: str | None) -> float:
    if text is None:
        return DEFAULT_SMOKE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise usage_error(f"--multiarch-smoke-timeout={text!r}: expected a number of seconds "
                          "> 0, e.g. 10")
    return value


def cache_problem(path: Path) -> str:
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
