"""Index hygiene on parsed indexes (the registry-built ones are in tests/integration)."""

from __future__ import annotations

import json
from typing import Any

from pytest_multiarch.oci.content import OCI_INDEX, OCI_MANIFEST, Manifest, digest_of
from pytest_multiarch.oci.hygiene import check_index
from pytest_multiarch.platforms import Platform

A, B, C = ("sha256:" + c * 64 for c in "abc")


def entry(digest: str, arch: str, media: str = OCI_MANIFEST, **annotations: str) -> dict:
    out: dict[str, Any] = {"mediaType": media, "digest": digest, "size": 100,
                           "platform": {"os": "linux", "architecture": arch}}
    if annotations:
        out["annotations"] = {k.replace("_", "."): v for k, v in annotations.items()}
        out["platform"] = {"os": "unknown", "architecture": "unknown"}
    return out


def index(*entries: dict) -> Manifest:
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                      "manifests": list(entries)}).encode()
    return Manifest.parse(raw, digest_of(raw), what="test index")


def kinds(problems: list[Any]) -> list[tuple[str, str]]:
    return [(p.kind, p.platform) for p in problems]


def test_a_clean_index_has_no_problems() -> None:
    assert check_index(index(entry(A, "amd64"), entry(B, "arm64")), "r") == []
    assert check_index(index(entry(A, "amd64"), entry(B, "arm64")), "r",
                       expect=[Platform.parse("arm64"), Platform.parse("amd64")]) == []


def test_duplicates_and_shared_digests() -> None:
    dup = check_index(index(entry(A, "amd64"), entry(B, "amd64"), entry(C, "arm64")), "r")
    assert kinds(dup) == [("duplicate-platform", "linux/amd64")]
    assert f"take the first, {A}" in dup[0].message
    shared = check_index(index(entry(A, "amd64"), entry(A, "arm64")), "r")
    assert kinds(shared) == [("shared-digest", "")]
    # the same digest twice under one platform is a duplicate, not a shared digest
    assert kinds(check_index(index(entry(A, "amd64"), entry(A, "amd64")), "r")) == [
        ("duplicate-platform", "linux/amd64")]


def test_attestation_entries_must_name_a_variant_of_the_index() -> None:
    ok = entry(C, "x", vnd_docker_reference_type="attestation-manifest",
               vnd_docker_reference_digest=A)
    gone = entry(C, "x", vnd_docker_reference_type="attestation-manifest",
                 vnd_docker_reference_digest=B)
    unnamed = entry(C, "x", vnd_docker_reference_type="attestation-manifest")
    assert check_index(index(entry(A, "amd64"), ok), "r") == []
    problems = check_index(index(entry(A, "amd64"), gone, unnamed), "r")
    assert kinds(problems) == [("dangling-attestation", "")] * 2
    assert f"names {B}, which the index does not hold" in problems[0].message
    assert "has no vnd.docker.reference.digest annotation" in problems[1].message


def test_nested_and_unreadable_entries() -> None:
    problems = check_index(index(entry(A, "amd64"), entry(B, "arm64", OCI_INDEX),
                                 entry(C, "s390x", "application/vnd.example+json")), "r")
    assert kinds(problems) == [("nested-index", "linux/arm64"), ("unreadable-media-type", "")]
    assert "refused, not followed" in problems[0].message


def test_expected_platforms_exactly() -> None:
    problems = check_index(index(entry(A, "amd64"), entry(B, "arm64")), "r",
                           expect=[Platform.parse("amd64"), Platform.parse("s390x")])
    assert kinds(problems) == [("unexpected-platform", ""), ("missing-platform", "")]
    assert "lists linux/arm64, which is not in the expected" in problems[0].message
    assert "has no linux/s390x variant" in problems[1].message


def test_a_single_manifest_against_several_expected_platforms() -> None:
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": "x", "digest": A, "size": 1},
                      "layers": []}).encode()
    single = Manifest.parse(raw, digest_of(raw), what="m")
    assert check_index(single, "r") == []
    (problem,) = check_index(single, "r", expect=[Platform.parse("amd64"),
                                                  Platform.parse("arm64")])
    assert problem.kind == "not-an-index"
