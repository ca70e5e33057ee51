"""OCI image layout directories (oci:DIR[:TAG]) as an ImageSource, and open_source()."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_multiarch.errors import (
    DigestMismatchError,
    InvalidReference,
    NotFoundError,
    PlatformNotInIndex,
)
from pytest_multiarch.oci.content import OCI_INDEX, OCI_MANIFEST
from pytest_multiarch.oci.layout import LayoutReference, OciLayout
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.registry import RegistryClient
from pytest_multiarch.oci.resolve import check_config_platform, list_platforms, open_source, resolve
from pytest_multiarch.platforms import Platform


class LayoutWriter:
    """Writes what ``skopeo copy --all … oci:DIR:TAG`` writes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.entries: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def image(self, arch: str, variant: str = "") -> dict[str, Any]:
        config = {"os": "linux", "architecture": arch, "rootfs": {"type": "layers"}}
        if variant:
            config["variant"] = variant
        layer = self.blob(f"fake layer {arch}".encode() * 100)
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       **self.blob(json.dumps(config).encode())},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
        }
        plat = {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}
        return {"mediaType": OCI_MANIFEST, **self.blob(json.dumps(manifest).encode()),
                "platform": plat}

    def tag_index(self, tag: str | None, archs: list[tuple[str, str]]) -> str:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [self.image(a, v) for a, v in archs]}
        desc = {"mediaType": OCI_INDEX, **self.blob(json.dumps(index).encode())}
        if tag is not None:
            desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.entries.append(desc)
        self.write_index(self.entries)
        return str(desc["digest"])

    def write_index(self, entries: list[dict[str, Any]]) -> None:
        (self.root / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}))


@pytest.fixture
def layout(tmp_path: Path) -> LayoutWriter:
    return LayoutWriter(tmp_path / "image")


@pytest.mark.parametrize(
    ("text", "path", "tag", "digest"),
    [
        ("oci:/tmp/x", "/tmp/x", None, None),
        ("oci:/tmp/x:1.0", "/tmp/x", "1.0", None),
        ("oci:rel/dir:latest", "rel/dir", "latest", None),
        ("oci:/tmp/x@sha256:" + "a" * 64, "/tmp/x", None, "sha256:" + "a" * 64),
    ],
)
def test_layout_reference_parse(text: str, path: str, tag: str | None,
                                digest: str | None) -> None:
    ref = LayoutReference.parse(text)
    assert (ref.path, ref.tag, ref.digest) == (path, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize(("text", "message"), [
    ("oci:", "names no directory"), ("oci:/x:", "empty tag"), ("docker://x", "not an OCI"),
    ("oci:/x@sha256:zz", "64"),
])
def test_layout_reference_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        LayoutReference.parse(text)


def test_resolve_from_tagged_layout(layout: LayoutWriter) -> None:
    index_digest = layout.tag_index("1.0", [("amd64", ""), ("arm64", "v8"), ("s390x", "")])
    layout.tag_index("2.0", [("amd64", "")])
    opened = open_source(f"oci:{layout.root}:1.0")
    assert isinstance(opened.source, OciLayout)
    src, ref = opened
    assert [str(p) for p in list_platforms(src, ref)] == [
        "linux/amd64", "linux/arm64", "linux/s390x"]
    resolved = resolve(src, ref, Platform.parse("arm64"))
    assert resolved.index_digest == index_digest
    assert resolved.pinned == f"oci:{layout.root}@{resolved.digest}"
    assert resolved.config["architecture"] == "arm64"
    check_config_platform(resolved)
    with src.open_blob(ref, resolved.layers[0]) as reader:
        assert reader.read() == b"fake layer arm64" * 100
    with pytest.raises(PlatformNotInIndex) as info:
        resolve(src, ref, Platform.parse("ppc64le"))
    assert str(info.value).startswith(
        f"no linux/ppc64le in index oci:{layout.root}:1.0 ({index_digest}); "
        "it has linux/amd64, linux/arm64, linux/s390x")


def test_single_image_layout_needs_no_tag(layout: LayoutWriter) -> None:
    layout.tag_index(None, [("amd64", ""), ("riscv64", "")])
    src, ref = open_source(f"oci:{layout.root}")
    assert resolve(src, ref, Platform.parse("riscv64")).config["architecture"] == "riscv64"


def test_index_json_listing_platforms_directly(layout: LayoutWriter) -> None:
    layout.write_index([layout.image("amd64"), layout.image("arm", "v7")])
    src, ref = open_source(f"oci:{layout.root}")
    assert resolve(src, ref, Platform.parse("armhf")).config["variant"] == "v7"


def test_missing_tag_lists_the_tags(layout: LayoutWriter) -> None:
    layout.tag_index("1.0", [("amd64", "")])
    layout.tag_index("2.0", [("amd64", "")])
    src = OciLayout()
    with pytest.raises(NotFoundError, match=r"no tag '3.0' in OCI layout .*; it has 1.0, 2.0"):
        src.get_manifest(LayoutReference.parse(f"oci:{layout.root}:3.0"))
    with pytest.raises(NotFoundError, match="several images; name one"):
        src.get_manifest(LayoutReference.parse(f"oci:{layout.root}"))


def test_missing_directory_and_blob(tmp_path: Path, layout: LayoutWriter) -> None:
    with pytest.raises(NotFoundError, match=r"has no index.json .*skopeo copy --all"):
        OciLayout().get_manifest(LayoutReference.parse(f"oci:{tmp_path}/nothing"))
    layout.tag_index("1.0", [("amd64", "")])
    ref = LayoutReference.parse(f"oci:{layout.root}:1.0")
    child = OciLayout().get_manifest(ref).manifests[0].digest
    (layout.root / "blobs" / "sha256" / child[7:]).unlink()
    with pytest.raises(NotFoundError, match=f"blob {child} is missing"):
        resolve(OciLayout(), ref, Platform.parse("amd64"))


def test_corrupted_blobs_are_refused(layout: LayoutWriter) -> None:
    layout.tag_index("1.0", [("amd64", "")])
    ref = LayoutReference.parse(f"oci:{layout.root}:1.0")
    resolved = resolve(OciLayout(), ref, Platform.parse("amd64"))
    layer = layout.root / "blobs" / "sha256" / resolved.layers[0].digest[7:]
    layer.write_bytes(layer.read_bytes().upper())
    with OciLayout().open_blob(ref, resolved.layers[0]) as reader, \
            pytest.raises(DigestMismatchError, match=resolved.layers[0].digest):
        reader.read()
    config = layout.root / "blobs" / "sha256" / resolved.config_digest[7:]
    config.write_bytes(config.read_bytes().replace(b"amd64", b"arm64"))
    with pytest.raises(DigestMismatchError, match=resolved.config_digest):
        resolve(OciLayout(), ref, Platform.parse("amd64"))


def test_open_source_for_registry_references(tmp_path: Path) -> None:
    client = RegistryClient(cache_dir=tmp_path)
    src, ref = open_source("127.0.0.1:5000/app:1", client=client)
    assert src is client
    assert ref == Reference.parse("127.0.0.1:5000/app:1")
    built, _ = open_source("127.0.0.1:5000/app:1", insecure_registries=["reg.lan"],
                           cache_dir=tmp_path)
    assert isinstance(built, RegistryClient)
    assert built.insecure_registries == ("reg.lan",)
    with pytest.raises(InvalidReference):
        open_source("Not/A:Valid:Ref")
