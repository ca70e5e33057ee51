"""Manifest parsing, streaming verification, the digest cache and transport rules (no server)."""

from __future__ import annotations

import hashlib
import io
import json
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import requests

from pytest_multiarch.errors import (
    DigestMismatchError,
    InvalidManifestError,
    InvalidReference,
    RegistryUnreachable,
)
from pytest_multiarch.oci.content import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    DigestCache,
    Manifest,
    VerifyingReader,
    default_cache_dir,
    digest_of,
)
from pytest_multiarch.oci.hosts import is_loopback
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.registry import ACCEPT, RegistryClient

D = "sha256:" + "ab" * 32
DESC = {"mediaType": OCI_MANIFEST, "digest": D, "size": 10}


def parse(obj: Any, content_type: str = "") -> Manifest:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return Manifest.parse(raw, digest_of(raw), content_type=content_type, what="manifest of x")


def test_accept_lists_all_four_types() -> None:
    for media_type in (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST):
        assert media_type in ACCEPT


def test_index_and_manifest_parse() -> None:
    index = parse({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [DESC]})
    assert index.is_index
    assert index.manifests[0].digest == D
    image = parse({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": DESC,
                   "layers": [DESC, DESC]})
    assert not image.is_index
    assert image.config.digest == D
    assert len(image.layers) == 2


def test_media_type_from_content_type_then_shape() -> None:
    no_type = {"schemaVersion": 2, "manifests": [DESC]}
    assert parse(no_type, DOCKER_MANIFEST_LIST).media_type == DOCKER_MANIFEST_LIST
    assert parse(no_type).media_type == OCI_INDEX
    assert parse({"schemaVersion": 2, "config": DESC, "layers": []}).media_type == OCI_MANIFEST


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html; charset=utf-8",
         "HTML page"),
        (b"  <html>", "application/json", "HTML page"),
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "", "not an object"),
        ({"schemaVersion": 2, "mediaType": OCI_INDEX}, "", "has no 'manifests' list"),
        ({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": {}}, "",
         "has no 'manifests' list"),
        ({"schemaVersion": 1, "name": "x", "fsLayers": []}, "", "schema 1"),
        ({"schemaVersion": 2, "mediaType": "application/x-other"}, "", "unsupported manifest"),
        ({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"digest": "sha256:1"}]},
         "", "64"),
        ({"schemaVersion": 2, "mediaType": OCI_INDEX,
          "manifests": [{"digest": D, "size": "10"}]}, "", "no valid size"),
        ({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": DESC}, "", "'layers'"),
    ],
)
def test_bad_manifests_are_clear_errors(body: Any, content_type: str, message: str) -> None:
    with pytest.raises(InvalidManifestError, match=message) as info:
        parse(body, content_type)
    assert str(info.value).startswith("manifest of x")


def chunks(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_verifying_reader_passes_good_content() -> None:
    data = b"layer bytes " * 1000
    reader = VerifyingReader(chunks(data), digest_of(data), size=len(data), what="blob of x")
    assert reader.read() == data
    assert reader.verified


def test_verifying_reader_raises_at_eof_on_wrong_digest() -> None:
    data = b"layer bytes " * 1000
    reader = io.BufferedReader(VerifyingReader(chunks(data), D, size=None, what="blob of x"))
    assert reader.read(100) == data[:100]  # nothing known yet
    with pytest.raises(DigestMismatchError, match=f"not {D}") as info:
        reader.read()
    assert digest_of(data) in str(info.value)
    assert not reader.raw.verified


def test_verifying_reader_refuses_more_than_the_descriptor_size() -> None:
    data = b"x" * 100
    endless = iter(lambda: b"x" * 10, b"")  # never ends
    reader = VerifyingReader(endless, digest_of(data), size=100, what="blob")
    with pytest.raises(DigestMismatchError, match="more than the 100 bytes"):
        reader.read()


def test_verifying_reader_short_content() -> None:
    data = b"x" * 100
    reader = VerifyingReader(chunks(data[:50]), digest_of(data), size=100, what="blob")
    with pytest.raises(DigestMismatchError, match="got 50 bytes, its descriptor says 100"):
        reader.read()


def test_cache_round_trip_and_layout(tmp_path: Path) -> None:
    cache = DigestCache(tmp_path / "c")
    data = b'{"architecture": "arm64"}'
    digest = digest_of(data)
    assert cache.get(digest) is None
    cache.put(digest, data)
    assert cache.get(digest) == data
    assert cache.path(digest) == tmp_path / "c" / "blobs" / "sha256" / digest[7:]
    # Atomic writes leave no temp files behind, and nothing outside blobs/.
    assert [p.name for p in (tmp_path / "c" / "blobs" / "sha256").iterdir()] == [digest[7:]]
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["blobs"]


def test_cache_drops_corrupt_entries(tmp_path: Path) -> None:
    cache = DigestCache(tmp_path)
    data = b"config"
    digest = digest_of(data)
    cache.put(digest, data)
    cache.path(digest).write_bytes(b"tampered")
    assert cache.get(digest) is None
    assert not cache.path(digest).exists()


def test_cache_rejects_path_tricks(tmp_path: Path) -> None:
    with pytest.raises(InvalidReference, match="64"):
        DigestCache(tmp_path).path("sha256:../../etc/passwd")


def test_unwritable_cache_is_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = DigestCache(blocker)
    cache.put(digest_of(b"x"), b"x")  # logs a warning, does not raise
    assert cache.get(digest_of(b"x")) is None


def test_default_cache_dir_is_resolved_at_call_time(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "h1"))
    assert default_cache_dir() == tmp_path / "h1" / ".cache" / "pytest-multiarch"
    assert RegistryClient().cache is not None
    assert RegistryClient().cache.directory == tmp_path / "h1" / ".cache" / "pytest-multiarch"  # type: ignore[union-attr]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pytest-multiarch"
    assert RegistryClient(cache=False).cache is None
    assert not (tmp_path / "h1").exists()  # constructing a client writes nothing


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1:5000", True), ("127.3.4.5", True), ("localhost:5000", True), ("[::1]:5000", True),
     ("::1", True), ("10.0.0.1:5000", False), ("registry.example.com", False),
     ("localhost.example.com:5000", False), ("[2001:db8::1]:5000", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


class RecordingSession(requests.Session):
    """Records the URLs a client tries; every attempt fails the way a plain-HTTP server does."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.verify_args: list[Any] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        self.urls.append(str(url))
        self.verify_args.append(kwargs.get("verify"))
        raise requests.exceptions.SSLError("[SSL: WRONG_VERSION_NUMBER] wrong version number")


@pytest.mark.parametrize(
    ("image", "insecure", "schemes", "verify"),
    [
        ("registry.example.com/app:1", (), ["https"], True),
        ("10.1.2.3:5000/app:1", (), ["https"], True),
        ("127.0.0.1:5000/app:1", (), ["https", "http"], True),
        ("localhost:5000/app:1", (), ["https", "http"], True),
        ("registry.example.com/app:1", ("registry.example.com",), ["https", "http"], False),
        ("10.1.2.3:5000/app:1", ("10.0.0.0/8",), ["https", "http"], False),
        ("10.1.2.3:5000/app:1", ("10.1.2.3:5001",), ["https"], True),
    ],
)
def test_plain_http_only_for_loopback_or_named_hosts(
    tmp_path: Path, image: str, insecure: tuple[str, ...], schemes: list[str], verify: bool
) -> None:
    session = RecordingSession()
    client = RegistryClient(session=session, insecure_registries=insecure, cache=False)
    with pytest.raises(RegistryUnreachable, match="TLS with"):
        client.get_manifest(Reference.parse(image))
    assert [u.split("://")[0] for u in session.urls] == schemes
    assert set(session.verify_args) == {verify}


def test_ca_bundle_is_used_for_verification(tmp_path: Path) -> None:
    session = RecordingSession()
    client = RegistryClient(session=session, ca_bundle=tmp_path / "ca.pem", cache=False)
    with pytest.raises(RegistryUnreachable):
        client.get_manifest(Reference.parse("registry.example.com/app:1"))
    assert session.verify_args == [str(tmp_path / "ca.pem")]


def _response(status: int, headers: dict[str, str]) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.headers.update(headers)
    return resp


def test_retry_delay_honours_and_caps_retry_after() -> None:
    client = RegistryClient(cache=False, max_retry_after=5.0)
    assert client.transport._retry_delay(_response(429, {"Retry-After": "2"}), 0) == 2.0
    assert client.transport._retry_delay(_response(429, {"Retry-After": "3600"}), 0) == 5.0
    soon = formatdate(time.time() + 3, usegmt=True)
    assert 1.0 < client.transport._retry_delay(_response(503, {"Retry-After": soon}), 0) <= 3.0
    past = formatdate(time.time() - 60, usegmt=True)
    assert client.transport._retry_delay(_response(503, {"Retry-After": past}), 0) == 0.0
    # No header: exponential backoff, capped too.
    assert [client.transport._retry_delay(_response(500, {}), n) for n in range(5)] == [
        0.5, 1.0, 2.0, 4.0, 5.0
    ]
    assert client.transport._retry_delay(_response(500, {"Retry-After": "soon"}), 1) == 1.0


def test_digest_of_matches_hashlib() -> None:
    assert digest_of(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert digest_of(b"abc", "sha512") == "sha512:" + hashlib.sha512(b"abc").hexdigest()
