"""One image, N variants, one truth (#15): indexes built for real in the test bed's registry.

The variants are assembled from real Debian packages (``apt-get download``: two versions of
libssl3 from the archive's ``bookworm`` and ``bookworm-security``/``-updates`` suites, and
busybox-static as the entrypoint), their dpkg status written from the packages' own control
fields; an Alpine-like variant carries an apk database.  Indexes, buildx attestation manifests
and OCI 1.1 referrers are pushed over the distribution API.  The registry is distribution 2.8,
which has no referrers API (``GET /v2/<repo>/referrers/<digest>`` answers 404): referrers are
pushed with the ``sha256-<hex>`` tag fallback, and the plugin reads them there.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from index_corpus import (
    IN_TOTO,
    OCI_INDEX,
    OCI_MANIFEST,
    SLSA,
    SPDX,
    Pusher,
    deb,
    libssl_versions,
    rootfs_layer,
    spdx,
    statement,
    status_stanza,
)

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed

ARCHS = ("amd64", "arm64")
STATIC = ("-m", "multiarch_static")  # the smoke check runs the variants: not what is tested here


def gate(pytester: pytest.Pytester, refs: list[str], *args: str) -> pytest.RunResult:
    images = [f"--multiarch-image={ref}" for ref in refs]
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--arch={','.join(ARCHS)}",
                                         *STATIC, *images, *args, timeout=600)


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Rootfs layers from real packages: per arch, libssl3 old and new, plus busybox-static."""
    old, new = libssl_versions()
    tmp = tmp_path_factory.mktemp("rootfs")
    out: dict[str, bytes] = {}
    for arch in ARCHS:
        busybox = deb("busybox-static", None, arch)
        for label, version in (("old", old), ("new", new)):
            out[f"{arch}-{label}"] = rootfs_layer(tmp, [busybox, deb("libssl3", version, arch)])
        stanza = status_stanza(deb("libssl3", old, arch))
        out[f"{arch}-truncated"] = rootfs_layer(tmp, [busybox], status=stanza[:stanza.index(
            b"\nVersion:")] + b"\n")
        out[f"{arch}-garbage"] = rootfs_layer(tmp, [busybox], status=b"\x00\x01garbage\x02" * 50)
    return out


# -- the checks ----------------------------------------------------------------------------------


def test_package_skew_from_real_debian_packages(
    pytester: pytest.Pytester, testbed: Testbed, layers: dict[str, bytes], tmp_path: Path
) -> None:
    old, new = libssl_versions()
    push = Pusher(testbed, "skew")
    ref = push.index("1", [push.image("amd64", "amd64", layers["amd64-new"]),
                           push.image("arm64", "arm64", layers["arm64-old"])])
    report = tmp_path / "report.json"
    result = gate(pytester, [ref], f"--multiarch-report={report}")
    result.assert_outcomes(passed=10, failed=2)  # packages[amd64] and packages[arm64]
    out = result.stdout.str()
    assert f"package libssl3 differs across archs: amd64 {new}, arm64 {old}; rebuild" in out
    assert "--multiarch-allow-package=libssl3" in out
    result.stdout.fnmatch_lines([f"arm64 {ref}: package versions that differ: libssl3 {old}"])
    doc = json.loads(report.read_text())["images"][ref]
    assert doc["amd64"]["packages_differing"] == {"libssl3": new}
    assert doc["arm64"]["packages_differing"] == {"libssl3": old}
    assert doc["arm64"]["packages"] == 2  # busybox-static and libssl3, from the dpkg status

    allowed = gate(pytester, [ref], "--multiarch-allow-package=libssl*")
    allowed.assert_outcomes(passed=12)


def test_good_index_passes_and_shows_what_is_attached(
    pytester: pytest.Pytester, testbed: Testbed, layers: dict[str, bytes], tmp_path: Path
) -> None:
    old, _ = libssl_versions()
    push = Pusher(testbed, "good")
    amd64 = push.image("amd64", "amd64", layers["amd64-old"])
    arm64 = push.image("arm64", "arm64", layers["arm64-old"])
    sbom = statement(amd64["digest"], SPDX, spdx({"libssl3": old}))
    attestation = push.attestation("att-amd64", amd64["digest"], [
        (IN_TOTO, statement(amd64["digest"], SLSA), SLSA), (IN_TOTO, sbom, SPDX)])
    push.referrer(arm64, statement(arm64["digest"], SLSA), signed=True)
    ref = push.index("1", [amd64, arm64, attestation])
    # distribution 2.8 has no referrers API: the plugin must have used the tag fallback
    probe = requests.get(f"{push.url}/v2/{push.repo}/referrers/{arm64['digest']}", timeout=10)
    assert probe.status_code == 404

    report = tmp_path / "report.json"
    result = gate(pytester, [ref], "--multiarch-require-attestations=provenance",
                  "--multiarch-expect-platforms=linux/amd64,linux/arm64",
                  f"--multiarch-report={report}")
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines([f"amd64 {ref}: attached: provenance ({SLSA}), sbom (spdx)",
                                 f"arm64 {ref}: attached: provenance ({SLSA}), 1 signature(s)"])
    doc = json.loads(report.read_text())["images"][ref]
    assert doc["arm64"]["attachments"]["sources"] == [
        f"referrers tag {arm64['digest'].replace(':', '-')}"]
    assert doc["amd64"]["attachments"]["attached"] == ["provenance", "sbom"]

    strict = gate(pytester, [ref], "--multiarch-require-attestations=provenance,sbom")
    strict.assert_outcomes(passed=11, failed=1)
    assert "the linux/arm64 variant (sha256:" in strict.stdout.str()
    strict.stdout.fnmatch_lines(["*carries no sbom (it has: provenance (*), 1 signature(s));*"])
    signed = gate(pytester, [ref], "--multiarch-require-attestations=signature", "-k",
                  "attestations")
    signed.assert_outcomes(passed=1, failed=1)  # arm64 is signed, amd64 is not
    signed.stdout.fnmatch_lines(["*the linux/amd64 variant (*) carries no signature*cosign sign*"])


def test_broken_indexes_fail_with_named_findings(
    pytester: pytest.Pytester, testbed: Testbed, layers: dict[str, bytes]
) -> None:
    old, new = libssl_versions()
    push = Pusher(testbed, "broken")
    amd64 = push.image("amd64", "amd64", layers["amd64-old"])
    amd64_b = push.image("amd64-b", "amd64", layers["amd64-new"])
    arm64 = push.image("arm64", "arm64", layers["arm64-old"])
    dup = push.index("dup", [amd64, amd64_b, arm64])
    shared = push.index("shared", [amd64, {**amd64, "platform": {"os": "linux",
                                                                  "architecture": "arm64"}}])
    wrong = push.attestation("att-wrong", amd64["digest"], [
        (IN_TOTO, statement(arm64["digest"], SLSA), SLSA),
        (IN_TOTO, statement(amd64["digest"], SPDX, spdx({"libssl3": new})), SPDX)])
    gone = push.attestation("att-gone", "sha256:" + "0" * 64, [
        (IN_TOTO, statement("sha256:" + "0" * 64, SLSA), SLSA)])
    dangling = push.index("dangling", [amd64, arm64, wrong, gone])
    inner = push.manifest("inner", {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                    "manifests": [arm64]})
    layer_blob = push.blob(layers["arm64-old"])
    nested = push.index("nested", [amd64, {**inner, "platform": arm64["platform"]},
                                   {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                    **layer_blob, "platform": {"os": "linux",
                                                               "architecture": "s390x"}}])
    result = gate(pytester, [dup, shared, dangling, nested], "-rf")
    out = result.stdout.str()
    assert (f"lists linux/amd64 2 times (entry 0 {amd64['digest']}, entry 1 {amd64_b['digest']}"
            f"): ambiguous — Docker and containerd take the first, {amd64['digest']}") in out
    assert (f"one manifest {amd64['digest']} is listed under 2 platforms (linux/amd64, "
            "linux/arm64)") in out
    assert "attestation entry 3 (sha256:" in out
    assert f"names sha256:{'0' * 64}, which the index does not hold" in out
    assert (f"has the subject {arm64['digest']}: the linux/arm64 variant's digest, not this "
            "variant's") in out
    assert f"says libssl3 {new}, the filesystem has {old}" in out  # SBOM against the dpkg db
    assert "is itself an index (application/vnd.oci.image.index.v1+json); refused" in out
    assert ("has media type 'application/vnd.oci.image.layer.v1.tar+gzip', which is neither "
            "an image manifest nor an index") in out
    for ref, check in ((dup, "index[[]amd64[]]"), (shared, "index[[]arm64[]]"),
                       (dangling, "attestations[[]amd64[]]"), (dangling, "packages[[]amd64[]]"),
                       (nested, "index[[]arm64[]]")):
        result.stdout.fnmatch_lines([f"FAILED multiarch-gate[[]{ref}[]]::{check}*"])
    # the arm64 variant of the duplicate index is fine: only amd64 is ambiguous
    assert f"FAILED multiarch-gate[{dup}]::index[arm64]" not in out

    expect = gate(pytester, [dup.replace(":dup", ":shared")],
                  "--multiarch-expect-platforms=linux/amd64,linux/s390x", "-k", "not config")
    expect.stdout.fnmatch_lines(["*has no linux/s390x variant, which is expected*",
                                 "*lists linux/arm64, which is not in the expected platforms*"])


def test_bad_input_is_a_named_finding_never_a_crash(
    pytester: pytest.Pytester, testbed: Testbed, layers: dict[str, bytes]
) -> None:
    push = Pusher(testbed, "bad")
    amd64 = push.image("amd64", "amd64", layers["amd64-truncated"])
    arm64 = push.image("arm64", "arm64", layers["arm64-garbage"])
    huge = b"\0" * (100 * 1024 * 1024)  # a 100 MB "statement": never read
    attestation = push.attestation("att", amd64["digest"], [
        (IN_TOTO, b"this is not JSON {", SLSA), (IN_TOTO, huge, SPDX)])
    # the tag fallback names an image manifest, not an index
    push.manifest(arm64["digest"].replace(":", "-"),
                  {k: v for k, v in json.loads(requests.get(
                      f"{push.url}/v2/{push.repo}/manifests/arm64", timeout=10,
                      headers={"Accept": OCI_MANIFEST}).content).items()})
    envelope = {"payloadType": "application/vnd.in-toto+json", "payload":
                base64.b64encode(b"[1, 2]").decode(), "signatures": []}
    dsse = push.attestation("att-dsse", amd64["digest"], [
        (IN_TOTO, json.dumps(envelope).encode(), SLSA)])
    ref = push.index("1", [amd64, arm64, attestation, dsse])
    result = gate(pytester, [ref], "-rf")
    result.assert_outcomes(passed=8, failed=4)
    out = result.stdout.str()
    assert "Traceback" not in out
    assert "of the linux/amd64 variant is not JSON (expected an object with _type" in out
    assert "is JSON, but not an in-toto statement" in out  # the DSSE payload is a list
    assert (f"of the linux/amd64 variant is {len(huge)} bytes, more than the 16777216 read; "
            "it was not read") in out
    assert "referrers tag sha256-" in out
    assert "answered not an index (media type application/vnd.oci.image.manifest.v1+json)" in out
    assert "/var/lib/dpkg/status (layer sha256:" in out
    assert "truncated: the file ends inside the stanza at line 1 has no Version field" in out
    assert "is not a 'Field: value' line" in out


def test_apk_database_of_an_alpine_like_layout(
    pytester: pytest.Pytester, testbed: Testbed, tmp_path: Path
) -> None:
    push = Pusher(testbed, "apk")
    entries = []
    for arch, apk_arch, busybox_version in (("amd64", "x86_64", "1.36.1-r15"),
                                            ("arm64", "aarch64", "1.36.1-r14")):
        db = (f"C:Q1{arch}=\nP:musl\nV:1.2.4-r2\nA:{apk_arch}\nS:383152\nI:622592\n\n"
              f"P:busybox\nV:{busybox_version}\nA:{apk_arch}\nS:506000\n\n"
              f"P:alpine-baselayout-data\nV:3.4.3-r1\nA:{apk_arch}\n\n").encode()
        layer = rootfs_layer(tmp_path, [deb("busybox-static", None, arch)], status=b"",
                             extra={"lib/apk/db/installed": db})
        entries.append(push.image(arch, arch, layer))
    ref = push.index("1", entries)
    result = gate(pytester, [ref], "-k", "packages")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*package busybox differs across archs: amd64 1.36.1-r15, arm64 1.36.1-r14; rebuild*"])
    assert "musl" not in result.stdout.str()


def test_baseline_says_which_packages_moved(
    pytester: pytest.Pytester, testbed: Testbed, layers: dict[str, bytes], tmp_path: Path
) -> None:
    old, new = libssl_versions()
    push = Pusher(testbed, "baseline")
    arm64 = push.image("arm64", "arm64", layers["arm64-old"])
    ref = push.index("1", [push.image("amd64", "amd64", layers["amd64-old"]), arm64])
    baseline = tmp_path / "baseline.json"
    args = (f"--multiarch-baseline={baseline}", "--multiarch-allow-package=libssl3")
    gate(pytester, [ref], *args).assert_outcomes(passed=12)
    # the amd64 build pulled a newer base: only amd64's libssl3 moved
    push.index("1", [push.image("amd64-2", "amd64", layers["amd64-new"]), arm64])
    second = gate(pytester, [ref], *args)
    second.assert_outcomes(passed=12)
    second.stdout.fnmatch_lines([f"  {ref} [[]amd64[]]: packages changed: libssl3 {old} -> {new}"])
    assert f"{ref} [arm64]: packages changed" not in second.stdout.str()


def test_the_checks_from_python(
    pytester: pytest.Pytester, testbed: Testbed, layers: dict[str, bytes]
) -> None:
    old, new = libssl_versions()
    push = Pusher(testbed, "fixture")
    ref = push.index("1", [push.image("amd64", "amd64", layers["amd64-new"]),
                           push.image("arm64", "arm64", layers["arm64-old"])])
    pytester.makepyfile(f"""
        import pytest

        REF = {ref!r}

        def test_skew_is_named(multiarch_variants):
            (skew,) = multiarch_variants.package_skew(REF)
            assert dict(skew.versions) == {{"amd64": {new!r}, "arm64": {old!r}}}
            assert multiarch_variants.packages(REF, "arm64").versions["libssl3"] == {old!r}
            with pytest.raises(Exception, match="package libssl3 differs across archs"):
                multiarch_variants.check(REF)

        @pytest.mark.multiarch_allow_packages("libssl3")
        def test_allowed_by_marker(multiarch_variants):
            multiarch_variants.check(REF)
            assert multiarch_variants.index_problems(REF) == []
            assert multiarch_variants.attached(REF, "arm64").describe() == "nothing"
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--arch=amd64,arm64",
                                           "--strict-markers", timeout=300)
    result.assert_outcomes(passed=2)
