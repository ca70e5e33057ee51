"""The static audit on the provisioned corpus: real images in the loopback registry, layers
streamed through the registry client (scripts/build-test-images writes corpus.json)."""

from __future__ import annotations

import functools
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_multiarch.audit.layerscan import SCHEMA
from pytest_multiarch.audit.verdicts import AuditResult, Kind, Layer, Severity, audit_variant
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.registry import RegistryClient
from pytest_multiarch.oci.resolve import resolve
from pytest_multiarch.platforms import Platform

pytestmark = pytest.mark.integration

STATE = Path(os.environ.get("PYTEST_MULTIARCH_TESTBED", "/var/lib/pytest-multiarch-testbed"))
HINT = "run scripts/provision-host and scripts/build-test-images"
HOST = Platform.host()

#: corpus verdict -> the failing kinds the audit must give (HOST_NATIVE_ONLY added per case).
FAILING = {
    "good": set(),
    "wrong-arch": {Kind.ENTRYPOINT_FOREIGN},
    "foreign-interpreter": {Kind.ENTRYPOINT_FOREIGN},
    "foreign-binary": {Kind.FOREIGN_ELF},
    "missing-loader": {Kind.LOADER_MISSING},
    "config-mismatch": {Kind.CONFIG_MISMATCH},
    "digest-mismatch": {Kind.DIGEST_MISMATCH},
}


@pytest.fixture(scope="module")
def corpus() -> dict[str, Any]:
    path = STATE / "corpus.json"
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        pytest.fail(f"test bed missing: cannot read {path} ({exc}); {HINT}")
    url = f"{doc['registry']['url']}/v2/"
    try:
        urllib.request.urlopen(url, timeout=5).close()
    except OSError as exc:
        pytest.fail(f"test bed broken: the registry at {url} does not answer ({exc}); {HINT}")
    return doc


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryClient]:
    with RegistryClient(cache_dir=tmp_path_factory.mktemp("registry-cache")) as c:
        yield c


@pytest.fixture(scope="module")
def audit_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-cache")


def audit(
    client: RegistryClient, cache: Path, image: dict[str, Any], plat: str,
    allow: tuple[str, ...] = (),
) -> AuditResult:
    ref = Reference.parse(image["ref"])
    resolved = resolve(client, ref, Platform.parse(plat))
    variant = ref.with_digest(resolved.digest)
    layers = [Layer(d.digest, d.media_type, functools.partial(client.open_blob, variant, d))
              for d in resolved.layers]
    return audit_variant(resolved.pinned, Platform.parse(plat), resolved.config, layers,
                         host=HOST, allow=allow, cache_dir=cache)


def cases() -> list[tuple[str, str]]:
    """(image, platform) of every variant the corpus has, read at collection time if it can."""
    try:
        doc = json.loads((STATE / "corpus.json").read_text())
    except (OSError, ValueError):
        return [("corpus.json", "missing")]
    return [(name, plat) for name in doc["images"]
            for plat, verdict in doc[name]["verdicts"].items() if verdict != "missing-platform"]


@pytest.mark.parametrize(("name", "plat"), cases())
def test_corpus_verdict(
    corpus: dict[str, Any], client: RegistryClient, audit_cache: Path, name: str, plat: str
) -> None:
    image = corpus[name]
    verdict = image["verdicts"][plat]
    result = audit(client, audit_cache, image, plat)
    expected = set(FAILING[verdict])
    foreign = image.get("foreign_paths", {}).get(plat, [])
    foreign_arches = {_arch_of(result, path) for path in foreign}
    if verdict in ("wrong-arch", "foreign-interpreter", "foreign-binary") and (
        HOST.arch_name in foreign_arches
    ):
        expected.add(Kind.HOST_NATIVE_ONLY)  # the arm64 variant carries this host's binaries
    failing = {f.kind for f in result.failures}
    assert failing == expected, result.format()

    if verdict == "good":
        assert result.ok
        assert set(result.elf_counts) == {Platform.parse(plat).arch_name}, result.elf_counts
    if verdict == "wrong-arch":
        message = next(f.message for f in result.failures if f.kind is Kind.ENTRYPOINT_FOREIGN)
        repository = image["ref"].rsplit(":", 1)[0]
        assert message.startswith(f"{plat} variant of {repository}@{image['digests'][plat]}: ")
        assert f"is x86-64 (EM_X86_64, 64-bit LE); this would fail with exec format error on " \
               f"{Platform.parse(plat).arch_name}" in message
        assert result.exec_chain[-1] in foreign
    if verdict == "foreign-interpreter":
        (finding,) = [f for f in result.failures if f.kind is Kind.ENTRYPOINT_FOREIGN]
        assert finding.path == image["interpreter"]
        assert f"the interpreter of {image['entrypoint'][0]}, via #!{image['interpreter']}" in (
            finding.message)
    if verdict == "foreign-binary":
        assert [f.path for f in result.failures if f.kind is Kind.FOREIGN_ELF] == foreign
        allowed = audit(client, audit_cache, image, plat, allow=tuple(image["allowlist"]))
        assert allowed.ok, allowed.format()
        assert [f.path for f in allowed.findings] == foreign
    if verdict == "missing-loader":
        (finding,) = result.failures
        assert f"asks for the loader {image['loader'][plat]}, which is not in the image" in (
            finding.message)
        assert finding.message.endswith("this would fail with 'no such file or directory'")
    if verdict == "config-mismatch":
        (finding,) = result.failures
        assert f"its config says {image['config_platforms'][plat]}" in finding.message
        assert "the config lies" in finding.message  # its binaries are what the index says
    if verdict == "digest-mismatch":
        bad = image["corrupt_blob"]
        (finding,) = [f for f in result.failures if f.kind is Kind.DIGEST_MISMATCH]
        assert finding.layer == bad["digest"]
        assert f"not {bad['digest']} as asked" in finding.message
    if name in ("dynamic", "missing-loader"):
        assert result.exec_chain == ("/usr/bin/hello",)


def test_verdicts_are_cached_except_for_bad_digests(
    corpus: dict[str, Any], client: RegistryClient, tmp_path: Path
) -> None:
    good = audit(client, tmp_path, corpus["busybox"], "linux/arm64")
    again = audit(client, tmp_path, corpus["busybox"], "linux/arm64")
    assert again.layers_scanned == 0
    assert again.layers_cached == good.layers_scanned + good.layers_cached
    assert again.findings == good.findings
    image = corpus["corrupt"]
    plat = image["corrupt_blob"]["platform"]
    first = audit(client, tmp_path, image, plat)
    second = audit(client, tmp_path, image, plat)
    assert second.layers_scanned >= 1  # the corrupt layer is read again, never cached
    assert {f.kind for f in first.failures} == {f.kind for f in second.failures}
    cached = {p.name for p in (tmp_path / f"v{SCHEMA}").iterdir()}
    assert image["corrupt_blob"]["digest"].replace(":", "-") + ".json" not in cached


def test_every_variant_in_parallel_threads(
    corpus: dict[str, Any], client: RegistryClient, tmp_path: Path
) -> None:
    """All variants of the multi-layer images scanned with several workers give the same
    verdicts as one at a time (layer scans run in threads; the client is shared)."""
    for name in ("dynamic", "foreign-helper"):
        for plat in corpus[name]["platforms"]:
            ref = Reference.parse(corpus[name]["ref"])
            resolved = resolve(client, ref, Platform.parse(plat))
            variant = ref.with_digest(resolved.digest)
            layers = [Layer(d.digest, d.media_type,
                            functools.partial(client.open_blob, variant, d))
                      for d in resolved.layers]
            results = [
                audit_variant(resolved.pinned, Platform.parse(plat), resolved.config, layers,
                              host=HOST, cache_dir=tmp_path / f"w{workers}", workers=workers)
                for workers in (1, 4)
            ]
            assert results[0].findings == results[1].findings
            assert results[0].elf_counts == results[1].elf_counts


def _arch_of(result: AuditResult, path: str) -> str:
    """The architecture a finding names for *path*, by the host's and target's names."""
    for finding in result.findings:
        if finding.path == path and finding.severity is not Severity.INFO:
            if "x86-64" in finding.message:
                return "amd64"
            if "AArch64" in finding.message:
                return "arm64"
    return ""
