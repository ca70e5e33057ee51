"""The native-runner CI recipes say what the README promises: amd64 and arm64 on native runners,
s390x/ppc64le emulated on one x86 runner, a shard per job, and a merge job gating the push.

``make lint`` also runs actionlint on the workflow files (syntax, expressions, action inputs);
these checks read what actionlint cannot know: that the recipes still merge and gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "example_project"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLE / name).read_text())
    return data


def test_github_recipe_runs_arm64_natively_and_gates_the_push_on_the_merge() -> None:
    jobs = _load(".github/workflows/multiarch-native.yml")["jobs"]
    matrix = jobs["native"]["strategy"]["matrix"]["include"]
    assert {(m["runner"], m["arch"]) for m in matrix} == {("ubuntu-24.04", "amd64"),
                                                           ("ubuntu-24.04-arm", "arm64")}
    assert jobs["native"]["runs-on"] == "${{ matrix.runner }}"
    emulated = " ".join(str(s.get("run", "")) for s in jobs["emulated"]["steps"])
    assert "--arch=s390x,ppc64le" in emulated
    assert jobs["emulated"]["runs-on"] == "ubuntu-24.04"
    for name in ("native", "emulated"):
        uploads = [s for s in jobs[name]["steps"] if "upload-artifact" in s.get("uses", "")]
        assert uploads
        assert uploads[0]["if"] == "always()"
        assert uploads[0]["with"]["name"].startswith("shard-")
    merge = jobs["merge"]
    assert set(merge["needs"]) >= {"native", "emulated"}
    runs = [str(s.get("run", "")) for s in merge["steps"]]
    merge_at = next(i for i, r in enumerate(runs) if "pytest-multiarch merge" in r)
    push_at = next(i for i, r in enumerate(runs) if "skopeo copy --all" in r)
    assert merge_at < push_at
    assert "--require-arch=" in runs[merge_at]
    assert merge["steps"][push_at]["if"].startswith("success()")


def test_every_test_job_tests_the_built_digest_not_a_tag() -> None:
    jobs = _load(".github/workflows/multiarch-native.yml")["jobs"]
    assert "steps.push.outputs.digest" in jobs["build"]["outputs"]["image"]
    for name in ("native", "emulated"):
        step = next(s for s in jobs[name]["steps"] if "pytest " in str(s.get("run", "")))
        assert step["env"]["IMAGE"] == "${{ needs.build.outputs.image }}"


def test_gitlab_recipe_matches() -> None:
    ci = _load(".gitlab-ci-native.yml")
    assert ci["native-arm64"]["tags"] == ["saas-linux-small-arm64"]
    assert "--arch=native" in " ".join(ci["native-arm64"]["script"])
    assert "--arch=s390x,ppc64le" in " ".join(ci["emulated"]["script"])
    assert ci[".shard"]["artifacts"]["when"] == "always"
    assert ci["merge"]["when"] == "always"
    assert "pytest-multiarch merge" in " ".join(ci["merge"]["script"])
    assert ci["push"]["needs"] == ["build", "merge"]
    assert "skopeo copy --all" in " ".join(ci["push"]["script"])
