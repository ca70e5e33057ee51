"""The registry client against the real Debian docker-registry, images pushed by skopeo and docker.

Bad-input cases that a real registry cannot produce on demand (500 forever, 429, HTML, a lying
digest) use a tiny scripted HTTP server on 127.0.0.1; the bearer-token flow uses a real
docker-registry configured for token auth, with a small token endpoint in front of it.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from pytest_multiarch.errors import (
    AuthenticationError,
    DigestMismatchError,
    InvalidManifestError,
    NotFoundError,
    PlatformMismatchError,
    PlatformNotInIndex,
    RegistryError,
    RegistryUnreachable,
)
from pytest_multiarch.oci.content import DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, digest_of
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.registry import RegistryClient
from pytest_multiarch.oci.resolve import check_config_platform, list_platforms, open_source, resolve
from pytest_multiarch.platforms import Platform

pytestmark = pytest.mark.integration

STATE = Path(os.environ.get("PYTEST_MULTIARCH_TESTBED", "/var/lib/pytest-multiarch-testbed"))
PLAIN = "127.0.0.1:5000"
AUTH = "127.0.0.1:5001"
SCRATCH = "scratch-registry-tests"
HINT = "run scripts/provision-host (make provision) first"


# -- test-bed access ----------------------------------------------------------------------------


def _require(url: str, *, what: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # verify=False: only asking whether it is up
            status = requests.get(url, timeout=3, verify=False).status_code
    except requests.RequestException as exc:
        pytest.fail(f"test bed missing: {what} does not answer at {url} ({exc}); {HINT}")
    if status not in (200, 401):
        pytest.fail(f"test bed broken: {what} at {url} answered HTTP {status}; {HINT}")


@pytest.fixture(scope="module")
def plain_registry() -> str:
    _require(f"http://{PLAIN}/v2/", what="the plain registry")
    if shutil.which("skopeo") is None:
        pytest.fail(f"test bed missing: skopeo is not installed; {HINT}")
    return PLAIN


@dataclass(frozen=True)
class AuthBed:
    user: str
    password: str
    cert: Path
    cert_dir: Path


@pytest.fixture(scope="module")
def auth_registry() -> AuthBed:
    _require(f"https://{AUTH}/v2/", what="the TLS+htpasswd registry")
    auth = STATE / "auth"
    try:
        bed = AuthBed((auth / "user").read_text().strip(), (auth / "password").read_text().strip(),
                      auth / "cert.pem", auth / "certs")
    except OSError as exc:
        pytest.fail(f"test bed missing: {exc}; {HINT}")
    if not bed.cert.is_file() or not any(bed.cert_dir.glob("*.crt")):
        pytest.fail(f"test bed missing: no CA certificate in {bed.cert} / {bed.cert_dir}; {HINT}")
    return bed


def unique(name: str) -> str:
    return f"{SCRATCH}/{name}-{uuid.uuid4().hex[:10]}"


def run(*cmd: str, timeout: float = 120) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd[:3])} failed: {done.stderr[-2000:]}"
    return done.stdout


# -- building real images -----------------------------------------------------------------------


def _blob_path(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.removeprefix("sha256:")


@dataclass
class Layout:
    """An OCI layout written the way `skopeo copy --all … oci:DIR:TAG` writes one."""

    root: Path
    entries: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = digest_of(data)
        _blob_path(self.root, digest).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def image(self, arch: str, variant: str = "", *, config_arch: str | None = None,
              payload: str = "") -> dict[str, Any]:
        """One platform's image: a real gzip'd tar layer and a config naming *config_arch*."""
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as archive:
            data = f"{arch}{variant} {payload} {uuid.uuid4()}\n".encode() * 64
            info = tarfile.TarInfo("etc/built-for")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        layer = gzip.compress(tar.getvalue(), mtime=0)
        config: dict[str, Any] = {
            "architecture": config_arch or arch, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(tar.getvalue())]},
        }
        if variant and config_arch is None:
            config["variant"] = variant
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       **self.blob(json.dumps(config).encode())},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        **self.blob(layer)}],
        }
        platform = {"os": "linux", "architecture": arch}
        if variant:
            platform["variant"] = variant
        return {"mediaType": OCI_MANIFEST, **self.blob(json.dumps(manifest).encode()),
                "platform": platform}

    def tag(self, tag: str, entries: list[dict[str, Any]]) -> str:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        desc = {"mediaType": OCI_INDEX, **self.blob(json.dumps(index).encode()),
                "annotations": {"org.opencontainers.image.ref.name": tag}}
        self.entries.append(desc)
        (self.root / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "manifests": self.entries}))
        return str(desc["digest"])


def push(layout: Layout, tag: str, dest: str, *extra: str) -> None:
    run("skopeo", "copy", "--all", "--quiet", *extra, f"oci:{layout.root}:{tag}",
        f"docker://{dest}")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "layout")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[RegistryClient]:
    with RegistryClient(cache_dir=tmp_path / "cache") as c:
        yield c


@pytest.fixture(scope="module")
def three_arch(plain_registry: str,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Reference, str]:
    """amd64, arm64/v8, s390x (+ an attestation) pushed by skopeo; returns (ref, index digest)."""
    layout = Layout(tmp_path_factory.mktemp("three") / "layout")
    entries = [layout.image("amd64"), layout.image("arm64", "v8"), layout.image("s390x")]
    attestation = layout.image("unknown")
    attestation["platform"] = {"os": "unknown", "architecture": "unknown"}
    attestation["annotations"] = {"vnd.docker.reference.type": "attestation-manifest",
                                  "vnd.docker.reference.digest": entries[0]["digest"]}
    index_digest = layout.tag("1.0", [*entries, attestation])
    image = f"{plain_registry}/{unique('three')}:1.0"
    push(layout, "1.0", image, "--dest-tls-verify=false")
    return Reference.parse(image), index_digest


# -- resolution against the real registry -------------------------------------------------------


def test_resolves_each_variant_of_a_skopeo_pushed_index(
    three_arch: tuple[Reference, str], client: RegistryClient
) -> None:
    ref, index_digest = three_arch
    top = client.get_manifest(ref)
    assert top.digest == index_digest
    # skopeo sees byte-identical content: same digest.
    raw = run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert digest_of(raw.encode()) == index_digest
    assert [str(p) for p in list_platforms(client, ref, manifest=top)] == [
        "linux/amd64", "linux/arm64", "linux/s390x"]
    for name in ("amd64", "arm64", "s390x"):
        resolved = resolve(client, ref, Platform.parse(name), manifest=top)
        check_config_platform(resolved)
        assert resolved.index_digest == index_digest
        assert resolved.pinned == f"{ref.name}@{resolved.digest}"
        assert resolved.config["architecture"] == name
        # The pinned reference is what skopeo fetches too.
        config = json.loads(run("skopeo", "inspect", "--config", "--raw",
                                "--tls-verify=false", f"docker://{resolved.pinned}"))
        assert config == resolved.config
        with client.open_blob(ref, resolved.layers[0]) as reader, \
                tarfile.open(fileobj=reader, mode="r|gz") as archive:
            member = archive.next()
            assert member is not None
            extracted = archive.extractfile(member)
            assert extracted is not None
            assert extracted.read().startswith(name.encode())


def test_second_resolution_makes_no_blob_requests(
    three_arch: tuple[Reference, str], client: RegistryClient, tmp_path: Path
) -> None:
    ref, _ = three_arch
    platforms = [Platform.parse(p) for p in ("amd64", "arm64", "s390x")]
    first = [resolve(client, ref, p) for p in platforms]
    assert client.stats.blob_requests == 3
    client.stats.reset()
    second = [resolve(client, ref, p) for p in platforms]
    assert second == first
    assert client.stats.blob_requests == 0
    assert client.stats.manifest_requests == 3  # one HEAD of the tag per resolve, nothing else
    assert client.stats.requests == 3
    # Another process (an xdist worker) sharing the cache directory needs no blobs either.
    with RegistryClient(cache_dir=tmp_path / "cache") as other:
        assert [resolve(other, ref, p) for p in platforms] == first
        assert other.stats.blob_requests == 0
    # The cache holds content by digest and nothing else.
    cached = {p.name for p in (tmp_path / "cache" / "blobs" / "sha256").iterdir()}
    assert {r.config_digest[7:] for r in first} | {r.digest[7:] for r in first} <= cached
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".tmp")]


def test_docker_pushed_manifest_list(plain_registry: str, client: RegistryClient,
                                     tmp_path: Path) -> None:
    """Images built and pushed by the real Docker engine, joined by `docker manifest`."""
    repo = f"{plain_registry}/{unique('docker')}"
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY hello /hello\n")
    (tmp_path / "ctx" / "hello").write_text(f"{uuid.uuid4()}\n")
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    for arch in ("amd64", "arm64"):
        # --no-cache: the legacy builder's cache ignores --platform for FROM scratch and would
        # hand back the amd64 image for arm64.
        done = subprocess.run(["docker", "build", "--no-cache", "-q", "--platform",
                               f"linux/{arch}", "-t", f"{repo}:{arch}", str(tmp_path / "ctx")],
                              capture_output=True, text=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, f"docker build failed (is dockerd up? {HINT}): {done.stderr}"
        run("docker", "push", "-q", f"{repo}:{arch}")
    try:
        run("docker", "manifest", "create", "--insecure", f"{repo}:list", f"{repo}:amd64",
            f"{repo}:arm64")
        run("docker", "manifest", "push", "--purge", "--insecure", f"{repo}:list")
    finally:
        subprocess.run(["docker", "rmi", f"{repo}:amd64", f"{repo}:arm64"], capture_output=True,
                       check=False, timeout=60)
    ref = Reference.parse(f"{repo}:list")
    top = client.get_manifest(ref)
    assert top.media_type == DOCKER_MANIFEST_LIST
    resolved = resolve(client, ref, Platform.parse("aarch64"), manifest=top)
    check_config_platform(resolved)
    assert resolved.config["architecture"] == "arm64"
    # The single-arch tag is a plain manifest: it resolves by its config platform.
    single = resolve(client, Reference.parse(f"{repo}:amd64"), Platform.parse("amd64"))
    assert single.index_digest is None
    with pytest.raises(PlatformNotInIndex, match="single-platform image"):
        resolve(client, Reference.parse(f"{repo}:amd64"), Platform.parse("arm64"))


def test_oci_layout_written_by_skopeo_resolves_like_the_registry(
    three_arch: tuple[Reference, str], client: RegistryClient, tmp_path: Path
) -> None:
    ref, index_digest = three_arch
    out = tmp_path / "copied"
    run("skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
        f"oci:{out}:v1")
    source, layout_ref = open_source(f"oci:{out}:v1")
    for name in ("arm64", "s390x"):
        local = resolve(source, layout_ref, Platform.parse(name))
        remote = resolve(client, ref, Platform.parse(name))
        assert (local.index_digest, local.digest, local.config) == (
            index_digest, remote.digest, remote.config)
        assert local.pinned == f"oci:{out}@{remote.digest}"


def test_missing_platform_names_image_and_what_it_has(
    three_arch: tuple[Reference, str], client: RegistryClient
) -> None:
    ref, index_digest = three_arch
    with pytest.raises(PlatformNotInIndex) as info:
        resolve(client, ref, Platform.parse("ppc64le"))
    assert str(info.value).startswith(
        f"no linux/ppc64le in index {ref} ({index_digest}); "
        "it has linux/amd64, linux/arm64, linux/s390x")


def test_entry_whose_config_says_another_arch(plain_registry: str, layout: Layout,
                                              client: RegistryClient) -> None:
    layout.tag("1", [layout.image("amd64"), layout.image("arm64", config_arch="amd64")])
    image = f"{plain_registry}/{unique('liar')}:1"
    push(layout, "1", image, "--dest-tls-verify=false")
    resolved = resolve(client, Reference.parse(image), Platform.parse("arm64"))
    with pytest.raises(PlatformMismatchError) as info:
        check_config_platform(resolved)
    assert str(info.value).startswith(
        f"index entry of {image} for linux/arm64 points at {resolved.digest} "
        "whose config says linux/amd64")


def test_missing_tag_and_repository(three_arch: tuple[Reference, str],
                                    client: RegistryClient) -> None:
    ref, _ = three_arch
    started = time.monotonic()
    with pytest.raises(NotFoundError) as info:
        client.get_manifest(Reference.parse(f"{ref.name}:no-such-tag"))
    assert f"manifest no-such-tag of {ref.name}:no-such-tag: not found" in str(info.value)
    assert "MANIFEST_UNKNOWN" in str(info.value)
    missing_repo = Reference.parse(f"{PLAIN}/{unique('nothing')}:1")
    with pytest.raises(NotFoundError, match=f"manifest 1 of {missing_repo}: not found"):
        client.get_manifest(missing_repo)
    assert client.stats.retries == 0
    assert time.monotonic() - started < 5


def _storage_blob(root: Path, digest: str) -> Path:
    hexpart = digest.removeprefix("sha256:")
    path = root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"
    if not path.is_file():
        pytest.fail(f"registry storage layout unexpected: {path} missing; {HINT}")
    return path


@pytest.fixture
def corrupt(three_arch: tuple[Reference, str]) -> Iterator[Callable[[str], None]]:
    """Flip bytes of a blob in the registry's own storage (same size); restore afterwards."""
    saved: dict[Path, bytes] = {}

    def flip(digest: str) -> None:
        path = _storage_blob(STATE / "registry", digest)
        saved[path] = original = path.read_bytes()
        path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])

    yield flip
    for path, data in saved.items():
        path.write_bytes(data)


def test_corrupted_blobs_in_registry_storage(
    three_arch: tuple[Reference, str], corrupt: Callable[[str], None], tmp_path: Path
) -> None:
    ref, _ = three_arch
    with RegistryClient(cache_dir=tmp_path / "before") as warm:
        good = resolve(warm, ref, Platform.parse("arm64"))
    corrupt(good.config_digest)
    corrupt(good.layers[0].digest)
    with RegistryClient(cache_dir=tmp_path / "fresh") as fresh:
        with pytest.raises(DigestMismatchError) as info:
            resolve(fresh, ref, Platform.parse("arm64"))
        message = str(info.value)
        assert f"blob {good.config_digest} of {ref}" in message
        assert f"not {good.config_digest} as asked" in message
        # Nothing unverified was cached.
        assert not (tmp_path / "fresh" / "blobs" / "sha256" / good.config_digest[7:]).exists()
        with fresh.open_blob(ref, good.layers[0]) as reader, \
                pytest.raises(DigestMismatchError, match=good.layers[0].digest):
            reader.read()


# -- the provisioned corpus (scripts/build-test-images) ------------------------------------------


@pytest.fixture(scope="module")
def corpus(plain_registry: str) -> dict[str, Any]:
    path = STATE / "corpus.json"
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        pytest.fail(f"test bed missing: cannot read {path} ({exc}); run scripts/build-test-images "
                    f"or {HINT}")
    return doc


def test_corpus_resolves_to_the_recorded_digests(corpus: dict[str, Any],
                                                 client: RegistryClient) -> None:
    for name in corpus["images"]:
        image = corpus[name]
        ref = Reference.parse(image["ref"])
        top = client.get_manifest(ref)
        assert top.digest == image["index_digest"], name
        assert [str(p) for p in list_platforms(client, ref, manifest=top)] == image["platforms"]
        for plat_text, verdict in image["verdicts"].items():
            plat = Platform.parse(plat_text)
            if verdict == "missing-platform":
                has = ", ".join(image["platforms"])
                with pytest.raises(PlatformNotInIndex, match=f"; it has {has} "):
                    resolve(client, ref, plat, manifest=top)
                continue
            resolved = resolve(client, ref, plat, manifest=top)
            assert resolved.digest == image["digests"][plat_text], (name, plat_text)
            assert str(resolved.config_platform) == image["config_platforms"][plat_text]
            if verdict == "config-mismatch":
                with pytest.raises(PlatformMismatchError, match=f"points at {resolved.digest}"):
                    check_config_platform(resolved)
            else:
                check_config_platform(resolved)


def test_corpus_busybox_has_five_platforms(corpus: dict[str, Any], client: RegistryClient) -> None:
    busybox = corpus["busybox"]
    assert busybox["ref"] == "127.0.0.1:5000/corpus/busybox:1"
    assert len(list_platforms(client, Reference.parse(busybox["ref"]))) == 5


def test_corpus_corrupt_layer_is_refused(corpus: dict[str, Any], client: RegistryClient) -> None:
    image = corpus["corrupt"]
    bad = image["corrupt_blob"]
    ref = Reference.parse(image["ref"])
    resolved = resolve(client, ref, Platform.parse(bad["platform"]))
    layer = next(d for d in resolved.layers if d.digest == bad["digest"])
    with client.open_blob(ref, layer) as reader, \
            pytest.raises(DigestMismatchError, match=f"not {bad['digest']} as asked"):
        _drain(reader)


def _drain(reader: BinaryIO) -> int:
    """Read a stream to its end a chunk at a time, as a layer scan does."""
    total = 0
    while chunk := reader.read(1 << 20):
        total += len(chunk)
    return total


def test_corpus_auth_registry_and_oci_layout(corpus: dict[str, Any], tmp_path: Path) -> None:
    auth = corpus["auth_registry"]
    config = Path(auth["docker_config"])
    with RegistryClient(docker_config=config.parent if config.suffix == ".json" else config,
                        ca_bundle=auth["ca_cert"], cache_dir=tmp_path) as client:
        top = client.get_manifest(Reference.parse(auth["busybox"]["ref"]))
        assert top.digest == auth["busybox"]["index_digest"]
    layout = corpus["oci_layout"]
    source, ref = open_source(layout["ref"])
    assert [str(p) for p in list_platforms(source, ref)] == layout["platforms"]
    for plat_text, digest in layout["digests"].items():
        resolved = resolve(source, ref, Platform.parse(plat_text))
        assert (resolved.index_digest, resolved.digest) == (layout["index_digest"], digest)
        check_config_platform(resolved)


# -- the TLS + htpasswd registry ----------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_image(auth_registry: AuthBed, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    layout = Layout(tmp_path_factory.mktemp("auth") / "layout")
    layout.tag("1", [layout.image("amd64"), layout.image("arm", "v7")])
    image = f"{AUTH}/{unique('auth')}:1"
    push(layout, "1", image, "--dest-creds", f"{auth_registry.user}:{auth_registry.password}",
         "--dest-cert-dir", str(auth_registry.cert_dir))
    return Reference.parse(image)


def _docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


def test_basic_auth_with_docker_config_and_ca_bundle(
    auth_image: Reference, auth_registry: AuthBed, tmp_path: Path
) -> None:
    config = _docker_config(tmp_path / "docker", AUTH, auth_registry.user, auth_registry.password)
    with RegistryClient(docker_config=config, ca_bundle=auth_registry.cert,
                        cache_dir=tmp_path / "c") as client:
        resolved = resolve(client, auth_image, Platform.parse("arm"))
        assert resolved.config["architecture"] == "arm"
        assert client.stats.tls_fallbacks == 0
        assert auth_registry.password not in repr(client)
        # Basic credentials are sent up front after the first challenge: one 401 in total.
        assert client.stats.requests == 5  # HEAD (401), HEAD, GET index, child, config


def test_insecure_registry_skips_verification(auth_image: Reference, auth_registry: AuthBed,
                                              tmp_path: Path) -> None:
    with RegistryClient(auth={AUTH: (auth_registry.user, auth_registry.password)},
                        insecure_registries=[AUTH], cache=False) as client:
        assert client.get_manifest(auth_image).is_index


def test_untrusted_certificate_is_a_clear_error(auth_image: Reference, auth_registry: AuthBed,
                                                tmp_path: Path) -> None:
    with RegistryClient(auth={AUTH: (auth_registry.user, auth_registry.password)},
                        cache=False) as client, \
            pytest.raises(RegistryUnreachable, match=r"TLS with 127\.0\.0\.1:5001 failed") as info:
        client.get_manifest(auth_image)
    assert "ca_bundle" in str(info.value)
    assert "certificate verify failed" in str(info.value)


@pytest.mark.parametrize("how", ["wrong", "none"])
def test_refused_credentials_never_show(auth_image: Reference, auth_registry: AuthBed,
                                        tmp_path: Path, how: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"wrong-{auth_registry.password[::-1]}"
    config = _docker_config(tmp_path / "docker", AUTH, auth_registry.user, wrong) \
        if how == "wrong" else tmp_path / "empty"
    client = RegistryClient(docker_config=config, ca_bundle=auth_registry.cert, cache=False)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        resolve(client, auth_image, Platform.parse("amd64"))
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert f"manifest 1 of {auth_image}" in message
    assert "docker login 127.0.0.1:5001" in message
    if how == "wrong":
        assert f"refused the credentials from auths[{AUTH}] in {config}" in message
    else:
        assert "none are configured" in message
    assert "401" in caplog.text  # the exchange was logged (urllib3 and ours) ...
    for text in (message, repr(info.value), repr(client), str(info.value.args), caplog.text):
        assert wrong not in text
        assert auth_registry.password not in text
        assert base64.b64encode(f"{auth_registry.user}:{wrong}".encode()).decode() not in text
    assert client.stats.retries == 0


def test_credentials_never_in_pytest_output(pytester: pytest.Pytester, auth_image: Reference,
                                            auth_registry: AuthBed, tmp_path: Path) -> None:
    """Failing tests using the client, run with -vv and --showlocals: no secret in the output.

    The credentials come from Docker configs, as a user's would, so the test source holds none.
    """
    user, password = auth_registry.user, auth_registry.password
    wrong = f"x{password}"
    good = _docker_config(tmp_path / "good", AUTH, user, password)
    bad = _docker_config(tmp_path / "bad", AUTH, user, wrong)
    pytester.makepyfile(
        f"""
        from pytest_multiarch.oci.reference import Reference
        from pytest_multiarch.oci.registry import RegistryClient
        from pytest_multiarch.oci.resolve import resolve
        from pytest_multiarch.platforms import Platform

        REF = Reference.parse({str(auth_image)!r})
        CA = {str(auth_registry.cert)!r}

        def test_wrong_password():
            client = RegistryClient(docker_config={str(bad)!r}, ca_bundle=CA, cache=False)
            client.get_manifest(REF)

        def test_right_password_then_failure():
            client = RegistryClient(docker_config={str(good)!r}, ca_bundle=CA, cache=False)
            resolved = resolve(client, REF, Platform.parse("amd64"))
            assert resolved.digest == "something else", client
        """
    )
    result = pytester.runpytest_subprocess("-vv", "-l", "--tb=long", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    output = result.stdout.str() + result.stderr.str()
    assert f"refused the credentials from auths[{AUTH}] in {bad}/config.json" in output
    # --showlocals did show the client and the library's frames, just not their secrets.
    assert f"docker_config={str(bad)!r}" in output or "RegistryClient(insecure_registries" in output
    assert "pytest_multiarch/oci/registry.py" in output
    assert "pytest_multiarch/oci/transport.py" in output
    for secret in (password, wrong, base64.b64encode(f"{user}:{password}".encode()).decode(),
                   base64.b64encode(f"{user}:{wrong}".encode()).decode()):
        assert secret not in output


# -- the bearer-token flow: a real registry with token auth, and a small token endpoint ----------


@dataclass
class TokenBed:
    registry: str
    realm: str
    calls: list[dict[str, Any]]
    settings: dict[str, Any]


def _make_signer(directory: Path) -> tuple[Callable[[dict[str, Any]], str], Path]:
    """An ES256 JWT signer and the certificate the registry trusts it by (x5c header)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pytest-multiarch token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = directory / "token-signer.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def sign(claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "ES256", "x5c": [x5c]}
        parts = (json.dumps(header).encode(), json.dumps(claims).encode())
        signing_input = ".".join(b64url(part) for part in parts)
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    return sign, cert_path


TOKEN_USER, TOKEN_PASSWORD = "tokenuser", "t0ken-Pa55-do-not-show"


@pytest.fixture(scope="module")
def token_bed(plain_registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenBed]:
    """docker-registry with ``auth.token``: anonymous pulls of public/*, credentials for all."""
    if shutil.which("docker-registry") is None:
        pytest.fail(f"test bed missing: docker-registry is not installed; {HINT}")
    workdir = tmp_path_factory.mktemp("token-registry")
    sign, cert_path = _make_signer(workdir)
    calls: list[dict[str, Any]] = []
    settings: dict[str, Any] = {"field": "token"}

    class TokenHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            header = self.headers.get("Authorization", "")
            expected = "Basic " + base64.b64encode(
                f"{TOKEN_USER}:{TOKEN_PASSWORD}".encode()).decode()
            authed = header == expected
            calls.append({"scope": query.get("scope", []), "service": query.get("service"),
                          "basic": header.startswith("Basic "), "authed": authed})
            if header and not authed:
                self._answer(401, {"details": "bad credentials"})
                return
            access = []
            for scope in query.get("scope", []):
                kind, name, actions = scope.split(":")
                if authed or name.startswith("public/"):
                    allowed = actions.split(",") if authed else ["pull"]
                    access.append({"type": kind, "name": name, "actions": allowed})
            now = int(time.time())
            token = sign({"iss": "pytest-multiarch-tests", "sub": TOKEN_USER if authed else "",
                          "aud": "token-registry", "exp": now + 300, "nbf": now - 10,
                          "iat": now, "jti": uuid.uuid4().hex, "access": access})
            self._answer(200, {settings["field"]: token, "expires_in": 300})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    token_server = ThreadingHTTPServer(("127.0.0.1", 0), TokenHandler)
    threading.Thread(target=token_server.serve_forever, args=(0.05,), daemon=True).start()
    realm = f"http://127.0.0.1:{token_server.server_address[1]}/token"
    port = _free_port()
    (workdir / "config.yml").write_text(json.dumps({
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "auth": {"token": {"realm": realm, "service": "token-registry",
                           "issuer": "pytest-multiarch-tests",
                           "rootcertbundle": str(cert_path)}},
    }))
    with (workdir / "registry.log").open("w") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(workdir / "config.yml")],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("token-auth docker-registry did not start: "
                                + (workdir / "registry.log").read_text()[-2000:])
                time.sleep(0.05)
        bed = TokenBed(f"127.0.0.1:{port}", realm, calls, settings)
        layout = Layout(workdir / "layout")
        layout.tag("1", [layout.image("amd64"), layout.image("ppc64le")])
        for repo in ("public/app", "private/app"):
            push(layout, "1", f"{bed.registry}/{repo}:1", "--dest-tls-verify=false",
                 "--dest-creds", f"{TOKEN_USER}:{TOKEN_PASSWORD}")
        calls.clear()
        yield bed
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        token_server.shutdown()
        token_server.server_close()


@pytest.mark.parametrize("field_name", ["token", "access_token"])
def test_anonymous_bearer_token(token_bed: TokenBed, tmp_path: Path, field_name: str) -> None:
    token_bed.settings["field"] = field_name
    with RegistryClient(cache_dir=tmp_path, docker_config=tmp_path / "none") as client:
        ref = Reference.parse(f"{token_bed.registry}/public/app:1")
        resolved = resolve(client, ref, Platform.parse("ppc64el"))
        assert resolved.config["architecture"] == "ppc64le"
        assert client.stats.token_requests == 1  # one token serves the whole repository
        assert token_bed.calls[-1] == {"scope": ["repository:public/app:pull"],
                                       "service": ["token-registry"], "basic": False,
                                       "authed": False}


def test_bearer_token_with_credentials(token_bed: TokenBed, tmp_path: Path) -> None:
    token_bed.settings["field"] = "token"
    ref = Reference.parse(f"{token_bed.registry}/private/app:1")
    with RegistryClient(cache=False, docker_config=tmp_path / "none") as anonymous, \
            pytest.raises(AuthenticationError, match="refused anonymous access"):
        anonymous.get_manifest(ref)
    config = _docker_config(tmp_path / "docker", token_bed.registry, TOKEN_USER, TOKEN_PASSWORD)
    with RegistryClient(cache=False, docker_config=config) as client:
        assert client.get_manifest(ref).is_index
        assert token_bed.calls[-1]["authed"] is True


def test_token_endpoint_refusing_credentials(token_bed: TokenBed, tmp_path: Path) -> None:
    wrong = TOKEN_PASSWORD + "-nope"
    ref = Reference.parse(f"{token_bed.registry}/private/app:1")
    with RegistryClient(auth={token_bed.registry: (TOKEN_USER, wrong)}, cache=False) as client, \
            pytest.raises(AuthenticationError) as info:
        client.get_manifest(ref)
    message = str(info.value)
    assert f"token endpoint {token_bed.realm} refused the credentials from auth=" in message
    assert wrong not in message
    assert TOKEN_USER not in message


# -- bad registries: a scripted HTTP server on 127.0.0.1 ------------------------------------------


Answer = tuple[int, dict[str, str], bytes]


class Scripted(ThreadingHTTPServer):
    """Answers each request with ``script(method, path, count_so_far)``; records every hit."""

    daemon_threads = True

    def __init__(self, script: Callable[[str, str, int], Answer]) -> None:
        self.script = script
        self.hits: list[tuple[str, str, float]] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                server = self.server
                assert isinstance(server, Scripted)
                server.hits.append((self.command, self.path, time.monotonic()))
                status, headers, body = server.script(self.command, self.path, len(server.hits))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _handle

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[str, str, int], Answer]], Scripted]]:
    servers: list[Scripted] = []

    def start(script: Callable[[str, str, int], Answer]) -> Scripted:
        server = Scripted(script)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _json(obj: Any, media_type: str = OCI_INDEX, **headers: str) -> Answer:
    return 200, {"Content-Type": media_type, **headers}, json.dumps(obj).encode()


def _fast_client(**options: Any) -> RegistryClient:
    return RegistryClient(cache=False, max_retries=2, max_retry_after=0.2, timeout=2.0,
                          **options)


def test_registry_down(tmp_path: Path) -> None:
    ref = Reference.parse(f"127.0.0.1:{_free_port()}/app:1")
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable) as info:
        _fast_client().get_manifest(ref)
    assert time.monotonic() - started < 3
    assert str(info.value).startswith(f"manifest 1 of {ref}: cannot connect to {ref.registry} "
                                      "([Errno 111] Connection refused)")


def test_registry_that_never_answers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never replies
        ref = Reference.parse(f"127.0.0.1:{silent.getsockname()[1]}/app:1")
        started = time.monotonic()
        with pytest.raises(RegistryUnreachable, match=r"did not answer within 0\.5 s"):
            RegistryClient(cache=False, timeout=0.5, connect_timeout=0.5).get_manifest(ref)
        assert time.monotonic() - started < 4


def test_500_forever_is_retried_a_bounded_number_of_times(scripted: Any) -> None:
    server = scripted(lambda m, p, n: (500, {"Content-Type": "text/plain"}, b"boom"))
    ref = Reference.parse(f"{server.host}/app:1")
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        _fast_client().get_manifest(ref)
    assert time.monotonic() - started < 3
    assert str(info.value).startswith(
        f"manifest 1 of {ref}: {server.host} answered HTTP 500 (server error) on all 3 attempts")
    assert len(server.hits) == 3


def test_429_retry_after_is_honoured(scripted: Any) -> None:
    child = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"digest": "sha256:" + "0" * 64, "size": 2}, "layers": []})

    def script(method: str, path: str, n: int) -> Answer:
        if n == 1:
            return 429, {"Retry-After": "1"}, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}'
        return 200, {"Content-Type": OCI_MANIFEST}, child.encode()

    server = scripted(script)
    client = RegistryClient(cache=False, max_retries=2, max_retry_after=5)
    manifest = client.get_manifest(Reference.parse(f"{server.host}/app:1"))
    assert manifest.digest == digest_of(child.encode())
    assert 0.9 <= server.hits[1][2] - server.hits[0][2] < 2.5
    assert client.stats.retries == 1


def test_429_forever_with_huge_retry_after_is_capped(scripted: Any) -> None:
    server = scripted(lambda m, p, n: (429, {"Retry-After": "3600"}, b""))
    ref = Reference.parse(f"{server.host}/app:1")
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"HTTP 429 \(too many requests\) on all 3 attempts"):
        _fast_client().get_manifest(ref)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_are_not_retried(scripted: Any, status: int) -> None:
    server = scripted(lambda m, p, n: (status, {}, b'{"errors":[{"code":"DENIED"}]}'))
    with pytest.raises(RegistryError, match=f"HTTP {status}"):
        _fast_client().get_manifest(Reference.parse(f"{server.host}/app:1"))
    assert len(server.hits) == 1


def test_html_instead_of_manifest(scripted: Any) -> None:
    page = b"<!DOCTYPE html><html><body><form>Sign in</form></body></html>"
    server = scripted(lambda m, p, n: (200, {"Content-Type": "text/html"}, page))
    ref = Reference.parse(f"{server.host}/app:1")
    with pytest.raises(InvalidManifestError, match=f"manifest 1 of {ref}: got an HTML page"):
        _fast_client().get_manifest(ref)


def test_invalid_json_and_index_without_manifests(scripted: Any) -> None:
    bodies = {"/v2/app/manifests/broken": (200, {"Content-Type": OCI_INDEX}, b'{"schemaV'),
              "/v2/app/manifests/empty": _json({"schemaVersion": 2, "mediaType": OCI_INDEX})}
    server = scripted(lambda m, p, n: bodies[p])
    with pytest.raises(InvalidManifestError, match="not valid JSON"):
        _fast_client().get_manifest(Reference.parse(f"{server.host}/app:broken"))
    with pytest.raises(InvalidManifestError, match="has no 'manifests' list"):
        resolve(_fast_client(), Reference.parse(f"{server.host}/app:empty"),
                Platform.parse("amd64"))


def test_manifest_that_does_not_match_its_digest(scripted: Any, tmp_path: Path) -> None:
    honest = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    asked = digest_of(honest)
    forged = honest.replace(b"[]", b"[ ]")

    def script(method: str, path: str, n: int) -> Answer:
        # By digest and by tag, the server sends other bytes than the digest it claims.
        return 200, {"Content-Type": OCI_INDEX, "Docker-Content-Digest": asked}, forged

    server = scripted(script)
    for text in (f"{server.host}/app@{asked}", f"{server.host}/app:1"):
        with RegistryClient(cache_dir=tmp_path) as client, \
                pytest.raises(DigestMismatchError) as info:
            client.get_manifest(Reference.parse(text))
        assert f"hashes to {digest_of(forged)}, not {asked} as asked" in str(info.value)
        assert "app" in str(info.value)
    assert not (tmp_path / "blobs" / "sha256" / asked[7:]).exists()
    assert not (tmp_path / "blobs" / "sha256" / digest_of(forged)[7:]).exists()


def test_blob_that_does_not_match_its_digest(scripted: Any) -> None:
    wanted = b'{"architecture": "arm64", "os": "linux"}'
    digest = digest_of(wanted)
    server = scripted(lambda m, p, n: (200, {}, wanted.replace(b"arm64", b"amd64")))
    ref = Reference.parse(f"{server.host}/app:1")
    with pytest.raises(DigestMismatchError, match=f"blob {digest} of {ref}"):
        _fast_client().get_blob(ref, digest)
    with _fast_client().open_blob(ref, digest) as reader, \
            pytest.raises(DigestMismatchError, match=digest):
        reader.read()
