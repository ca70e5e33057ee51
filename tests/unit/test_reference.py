"""Image references follow Docker's grammar (distribution/reference, normalize.go)."""

from __future__ import annotations

import pytest

from pytest_multiarch.errors import InvalidReference, UsageError
from pytest_multiarch.oci.reference import Reference, registry_api_host

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("library/busybox", "docker.io", "library/busybox", "latest", None),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("user/app:v1", "docker.io", "user/app", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app:1.0", "localhost:5000", "app", "1.0", None),
        ("127.0.0.1:5000/corpus/busybox:1", "127.0.0.1:5000", "corpus/busybox", "1", None),
        ("ghcr.io/org/team/app:2", "ghcr.io", "org/team/app", "2", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        ("Example.com/app", "Example.com", "app", "latest", None),
        ("host:5000/a_b/c__d/e-f/g.h:T_1.x-y", "host:5000", "a_b/c__d/e-f/g.h", "T_1.x-y", None),
        (f"busybox@{D}", "docker.io", "library/busybox", None, D),
        (f"127.0.0.1:5000/app@{D}", "127.0.0.1:5000", "app", None, D),
        (f"127.0.0.1:5000/app:1.0@{D}", "127.0.0.1:5000", "app", "1.0", D),
        ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None,
               digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry, repository, tag, digest
    )
    # Normalized text parses back to the same reference.
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("", "empty"),
        ("Busybox", "lowercase: 'Busybox'"),
        ("host:5000/App:1", "lowercase: 'App'"),
        ("app:", "tag ''"),
        ("app:-x", "tag '-x'"),
        ("app:" + "x" * 129, "tag 'xxx"),
        ("app@sha256:abc", "exactly 64"),
        ("app@sha256:" + "AB" * 32, "lower-case hex"),
        ("app@md5:" + "ab" * 16, "algorithm 'md5'"),
        ("app@" + "ab" * 32, "algorithm:hex"),
        ("host:port/app", "registry 'host:port'"),
        ("-bad.host/app", "registry '-bad.host'"),
        ("app//x", "component ''"),
        ("app/-x", "component '-x'"),
        ("app/x_", "component 'x_'"),
        ("my app", "whitespace"),
        ("ab" * 32, "image ID"),
        ("host:5000/", "no repository"),
        ("h.io/" + "a" * 260, "longer than 255"),
    ],
)
def test_malformed_reference_names_the_bad_part(text: str, bad_part: str) -> None:
    with pytest.raises(InvalidReference) as info:
        Reference.parse(text)
    assert bad_part in str(info.value)
    assert isinstance(info.value, UsageError)


def test_str_name_and_pinned() -> None:
    ref = Reference.parse("127.0.0.1:5000/app:1.0")
    assert str(ref) == "127.0.0.1:5000/app:1.0"
    assert ref.name == "127.0.0.1:5000/app"
    assert ref.api_reference == "1.0"
    pinned = ref.with_digest(D)
    assert str(pinned) == f"127.0.0.1:5000/app:1.0@{D}"
    assert pinned.pinned == f"127.0.0.1:5000/app@{D}"
    assert pinned.api_reference == D
    assert str(Reference.parse("busybox")) == "docker.io/library/busybox:latest"


def test_pinned_without_digest_and_bad_with_digest() -> None:
    ref = Reference.parse("app:1")
    with pytest.raises(InvalidReference, match="no digest to pin"):
        _ = ref.pinned
    with pytest.raises(InvalidReference, match="64"):
        ref.with_digest("sha256:1234")


def test_reference_is_frozen_and_hashable() -> None:
    ref = Reference.parse("app:1")
    assert {ref: 1}[Reference.parse("docker.io/library/app:1")] == 1
    with pytest.raises(AttributeError):
        ref.tag = "2"  # type: ignore[misc]


def test_registry_api_host() -> None:
    assert registry_api_host("docker.io") == "registry-1.docker.io"
    assert Reference.parse("busybox").api_host == "registry-1.docker.io"
    assert Reference.parse("127.0.0.1:5000/x").api_host == "127.0.0.1:5000"


@pytest.mark.parametrize("text", [
    "alice:hunter2@registry.example.com/app:1",
    "https://alice:hunter2@registry.example.com/app:1",
    "alice:hunter2@127.0.0.1:5000/app",
    "alice:hunter2@registry.example.com",
    "hunter2@registry.example.com/app",
])
def test_credentials_in_a_reference_are_masked(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        Reference.parse(text)
    message = str(info.value)
    assert "hunter2" not in message
    assert "alice" not in message
    assert "<redacted>@registry" in message or "<redacted>@127.0.0.1" in message
    assert "carries credentials" in message


def test_a_digest_after_at_is_not_taken_for_credentials() -> None:
    digest = "sha256:" + "a" * 64
    assert Reference.parse(f"registry.example.com/app@{digest}").digest == digest
    assert Reference.parse(f"app@{digest}").digest == digest
    with pytest.raises(InvalidReference, match="digest"):
        Reference.parse("app@notadigest")
