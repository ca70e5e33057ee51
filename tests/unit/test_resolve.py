"""Variant selection on hand-written indexes, through a tiny in-memory ImageSource."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest

from pytest_multiarch.errors import (
    DigestMismatchError,
    InvalidManifestError,
    PlatformMismatchError,
    PlatformNotInIndex,
)
from pytest_multiarch.oci.content import (
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    blob_digest,
    verify_digest,
)
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.resolve import (
    check_config_platform,
    list_platforms,
    resolve,
)
from pytest_multiarch.platforms import Platform

REF = Reference.parse("127.0.0.1:5000/app:1.0")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MemorySource:
    """Content by digest plus one tag; verifies like the real sources do."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.tags: dict[str, str] = {}
        self.manifest_fetches = 0

    def add(self, data: bytes) -> str:
        digest = _digest(data)
        self.blobs[digest] = data
        return digest

    def image(self, arch: str, variant: str = "", os_name: str = "linux",
              config_arch: str | None = None) -> tuple[str, int]:
        config: dict[str, Any] = {"os": os_name, "architecture": config_arch or arch,
                                  "rootfs": {"type": "layers", "diff_ids": []}}
        if variant:
            config["variant"] = variant
        config_raw = json.dumps(config).encode()
        layer = f"layer of {arch}{variant}".encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.add(config_raw), "size": len(config_raw)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": self.add(layer), "size": len(layer)}],
        }).encode()
        return self.add(manifest), len(manifest)

    def index(self, entries: list[dict[str, Any]], media_type: str = OCI_INDEX) -> None:
        raw = json.dumps({"schemaVersion": 2, "mediaType": media_type,
                          "manifests": entries}).encode()
        self.tags["1.0"] = self.add(raw)

    def get_manifest(self, ref: Reference) -> Manifest:
        self.manifest_fetches += 1
        digest = ref.digest or self.tags[str(ref.tag)]
        raw = self.blobs[digest]
        verify_digest(raw, digest, what=f"manifest of {ref}")
        return Manifest.parse(raw, digest, what=f"manifest of {ref}")

    def get_blob(self, ref: Reference, blob: str | Descriptor) -> bytes:
        digest, _ = blob_digest(blob)
        data = self.blobs[digest]
        verify_digest(data, digest, what=f"blob of {ref}")
        return data

    @contextlib.contextmanager
    def open_blob(self, ref: Reference, blob: str | Descriptor) -> Iterator[BinaryIO]:
        yield io.BytesIO(self.get_blob(ref, blob))


def entry(src: MemorySource, arch: str, variant: str = "", *, platform: bool = True,
          config_arch: str | None = None, **extra: Any) -> dict[str, Any]:
    digest, size = src.image(arch, variant, config_arch=config_arch)
    result: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": size, **extra}
    if platform:
        plat = {"os": "linux", "architecture": arch}
        if variant:
            plat["variant"] = variant
        result["platform"] = plat
    return result


def attestation(src: MemorySource, of: str) -> dict[str, Any]:
    digest, size = src.image("unknown")
    return {
        "mediaType": OCI_MANIFEST, "digest": digest, "size": size,
        "platform": {"os": "unknown", "architecture": "unknown"},
        "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": of},
    }


@pytest.fixture
def five() -> MemorySource:
    src = MemorySource()
    entries = [entry(src, "amd64"), entry(src, "arm64", "v8"), entry(src, "arm", "v7"),
               entry(src, "arm", "v6"), entry(src, "s390x")]
    entries.append(attestation(src, entries[0]["digest"]))
    src.index(entries)
    return src


@pytest.mark.parametrize(
    ("asked", "config_arch", "config_variant"),
    [
        ("amd64", "amd64", ""),
        ("x86_64", "amd64", ""),
        ("arm64", "arm64", "v8"),  # entry says arm64/v8, asked without v8
        ("linux/arm64/v8", "arm64", "v8"),
        ("aarch64", "arm64", "v8"),
        ("arm", "arm", "v7"),  # bare arm means v7, never v6
        ("armhf", "arm", "v7"),
        ("arm/v6", "arm", "v6"),  # v6 only when asked
        ("armel", "arm", "v6"),
        ("s390x", "s390x", ""),
    ],
)
def test_variant_rules(five: MemorySource, asked: str, config_arch: str,
                       config_variant: str) -> None:
    resolved = resolve(five, REF, Platform.parse(asked))
    assert resolved.config["architecture"] == config_arch
    assert resolved.config.get("variant", "") == config_variant
    assert resolved.platform == Platform.parse(asked)
    assert resolved.index_digest == five.tags["1.0"]
    assert resolved.pinned == f"127.0.0.1:5000/app@{resolved.digest}"
    assert resolved.reference == "127.0.0.1:5000/app:1.0"
    assert resolved.digest != resolved.index_digest
    assert [layer.media_type for layer in resolved.layers] == [
        "application/vnd.oci.image.layer.v1.tar"
    ]
    check_config_platform(resolved)


def test_arm64_entry_without_v8_matches_arm64_v8_request() -> None:
    src = MemorySource()
    src.index([entry(src, "amd64"), entry(src, "arm64")])
    assert resolve(src, REF, Platform.parse("arm64/v8")).config["architecture"] == "arm64"


def test_arm_entry_without_variant_is_v7_and_v6_is_not_offered_for_v7() -> None:
    src = MemorySource()
    src.index([entry(src, "arm")])
    assert resolve(src, REF, Platform.parse("arm/v7")).platform == Platform.parse("arm/v7")
    with pytest.raises(PlatformNotInIndex, match="no linux/arm/v6 in index"):
        resolve(src, REF, Platform.parse("arm/v6"))

    only_v6 = MemorySource()
    only_v6.index([entry(only_v6, "arm", "v6")])
    with pytest.raises(PlatformNotInIndex, match=r"it has linux/arm/v6"):
        resolve(only_v6, REF, Platform.parse("arm"))


def test_entry_without_platform_is_linux_amd64() -> None:
    src = MemorySource()
    src.index([entry(src, "amd64", platform=False), entry(src, "arm64")])
    assert resolve(src, REF, Platform.parse("amd64")).config["architecture"] == "amd64"
    assert list_platforms(src, REF) == [Platform.parse("amd64"), Platform.parse("arm64")]


def test_attestations_are_skipped_and_never_listed(five: MemorySource) -> None:
    assert [str(p) for p in list_platforms(five, REF)] == [
        "linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/s390x"
    ]


def test_attestation_annotation_alone_is_enough() -> None:
    src = MemorySource()
    # An attestation that (wrongly) carries a real platform must still never be picked.
    att = entry(src, "s390x", annotations={"vnd.docker.reference.type": "attestation-manifest"})
    src.index([entry(src, "amd64"), att])
    with pytest.raises(PlatformNotInIndex, match="it has linux/amd64 "):
        resolve(src, REF, Platform.parse("s390x"))


def test_missing_platform_message() -> None:
    src = MemorySource()
    src.index([entry(src, "amd64"), entry(src, "arm64"), attestation(src, "x")])
    with pytest.raises(PlatformNotInIndex) as info:
        resolve(src, REF, Platform.parse("s390x"))
    index_digest = src.tags["1.0"]
    assert str(info.value).startswith(
        f"no linux/s390x in index 127.0.0.1:5000/app:1.0 ({index_digest}); "
        "it has linux/amd64, linux/arm64 "
    )
    assert "unknown" not in str(info.value)


def test_docker_manifest_list_works_like_an_oci_index() -> None:
    src = MemorySource()
    src.index([entry(src, "amd64"), entry(src, "ppc64le")], media_type=DOCKER_MANIFEST_LIST)
    assert resolve(src, REF, Platform.parse("ppc64el")).config["architecture"] == "ppc64le"


def test_unknown_architecture_in_index_is_listed_but_not_matched() -> None:
    src = MemorySource()
    src.index([entry(src, "amd64"), entry(src, "wasm")])
    with pytest.raises(PlatformNotInIndex, match="it has linux/amd64, linux/wasm"):
        resolve(src, REF, Platform.parse("riscv64"))


def test_config_platform_mismatch_names_entry_digest_and_config() -> None:
    src = MemorySource()
    src.index([entry(src, "amd64"), entry(src, "arm64", config_arch="amd64")])
    resolved = resolve(src, REF, Platform.parse("arm64"))
    with pytest.raises(PlatformMismatchError) as info:
        check_config_platform(resolved)
    assert str(info.value).startswith(
        f"index entry of 127.0.0.1:5000/app:1.0 for linux/arm64 points at {resolved.digest} "
        "whose config says linux/amd64"
    )
    assert resolved.config_platform == Platform.parse("amd64")


def test_config_variant_v8_and_missing_arm_variant_are_consistent() -> None:
    src = MemorySource()
    # Entry says arm/v7, config says plain arm: containerd treats those as the same.
    src.index([entry(src, "arm", "v7", config_arch="arm")])
    check_config_platform(resolve(src, REF, Platform.parse("arm")))


def test_single_manifest_resolves_by_config_platform() -> None:
    src = MemorySource()
    digest, _ = src.image("arm64", "v8")
    src.tags["1.0"] = digest
    resolved = resolve(src, REF, Platform.parse("arm64"))
    assert resolved.index_digest is None
    assert resolved.digest == digest
    assert resolved.platform == Platform.parse("arm64")
    check_config_platform(resolved)
    assert list_platforms(src, REF) == [Platform.parse("arm64")]
    with pytest.raises(PlatformNotInIndex, match=r"single-platform image.*says linux/arm64"):
        resolve(src, REF, Platform.parse("amd64"))


def test_prefetched_index_is_not_fetched_again(five: MemorySource) -> None:
    top = five.get_manifest(REF)
    five.manifest_fetches = 0
    for name in ("amd64", "arm64", "s390x"):
        resolve(five, REF, Platform.parse(name), manifest=top)
    assert five.manifest_fetches == 3  # the three variants only
    assert len(list_platforms(five, REF, manifest=top)) == 5
    assert five.manifest_fetches == 3


def test_index_without_manifests_is_a_clear_error() -> None:
    src = MemorySource()
    src.tags["1.0"] = src.add(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX}).encode())
    with pytest.raises(InvalidManifestError, match="has no 'manifests' list"):
        resolve(src, REF, Platform.parse("amd64"))


def test_tampered_variant_manifest_is_refused() -> None:
    src = MemorySource()
    src.index([entry(src, "amd64")])
    child = json.loads(src.blobs[src.tags["1.0"]])["manifests"][0]["digest"]
    src.blobs[child] = src.blobs[child].replace(b"layers", b"layerz")
    with pytest.raises(DigestMismatchError, match=child):
        resolve(src, REF, Platform.parse("amd64"))


def test_resolved_image_is_frozen(five: MemorySource) -> None:
    resolved = resolve(five, REF, Platform.parse("amd64"))
    with pytest.raises(AttributeError):
        resolved.digest = "x"  # type: ignore[misc]
