"""What the index/attestations/packages checks add to the matrix survives JSON and a merge."""

from __future__ import annotations

from pytest_multiarch.session.report import Matrix, Outcome

REF = "registry.local:5000/app:1.4"


def test_facts_reach_the_table_and_the_json_and_come_back() -> None:
    matrix = Matrix(["amd64", "arm64"])
    for arch in matrix.archs:
        matrix.add(Outcome(test=f"{REF} packages", arch=arch, outcome="failed", image=REF))
    matrix.note(REF, "amd64", {"attached": "provenance (x), sbom (spdx)",
                               "package_versions": {"libssl3": "3.0.22"},
                               "packages_differing": {"libssl3": "3.0.22"}})
    matrix.note(REF, "arm64", {"attached": "nothing", "package_versions": {"libssl3": "3.0.17"},
                               "packages_differing": {"libssl3": "3.0.17"}})
    lines = matrix.render()
    assert f"amd64 {REF}: attached: provenance (x), sbom (spdx)" in lines
    assert f"arm64 {REF}: attached: nothing" not in lines  # the JSON says so; the table need not
    assert f"arm64 {REF}: package versions that differ: libssl3 3.0.17" in lines
    doc = matrix.to_json()
    assert doc["images"][REF]["arm64"]["packages_differing"] == {"libssl3": "3.0.17"}
    assert matrix.package_versions() == {(REF, "amd64"): {"libssl3": "3.0.22"},
                                         (REF, "arm64"): {"libssl3": "3.0.17"}}

    merged = Matrix([])
    for arch, entry in doc["images"][REF].items():
        merged.note_from_json(REF, arch, entry)
    assert merged.package_versions() == matrix.package_versions()
    assert merged.facts[REF, "amd64"]["attached"] == "provenance (x), sbom (spdx)"


def test_the_baseline_keeps_package_versions_and_says_what_moved() -> None:
    from pytest_multiarch.session import baseline

    def run(version: str, digest: str, outcome: str = "passed") -> dict:
        return {"format": baseline.BASELINE_FORMAT, "images": {REF: {"platforms": [], "variants": {
            "amd64": {"digest": digest, "config": None, "layers": [],
                      "outcomes": {f"{REF} packages": outcome},
                      "packages": {"libssl3": version, "tzdata": "2025b"}}}}}}

    first = baseline.merge(None, run("3.0.17", "sha256:" + "1" * 64))
    assert first["images"][REF]["variants"]["amd64"]["packages"]["libssl3"] == "3.0.17"
    changes = baseline.compare(first, run("3.0.22", "sha256:" + "2" * 64))
    assert f"{REF} [amd64]: packages changed: libssl3 3.0.17 -> 3.0.22" in changes
    # a failing run does not teach the baseline its packages either
    kept = baseline.merge(first, run("3.0.99", "sha256:" + "3" * 64, "failed"))
    assert kept["images"][REF]["variants"]["amd64"]["packages"]["libssl3"] == "3.0.17"
