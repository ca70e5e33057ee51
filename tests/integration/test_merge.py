"""``pytest-multiarch merge`` on real shards: each shard is a separate pytest process against the
test bed (amd64 natively through the SSH engine, arm64 emulated by qemu-user in the local engine,
s390x through the rootfs runner), then merged like a CI merge job does.

Every failure the gate must catch is made for real: a failing shard, a missing arch, a tag
re-pushed to another index between two shards, a truncated file, a future format.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from merge_helpers import assert_one_line_error, load, merge, project, run_shard

pytestmark = pytest.mark.integration

CORPUS = Path("/var/lib/pytest-multiarch-testbed/corpus.json")
SSH_ENGINE = "amd64=ssh://root@127.0.0.1:2222"
REGISTRY = "127.0.0.1:5000"
MOVING = f"{REGISTRY}/scratch-merge/busybox:moving"

SHARD_TESTS = '''
import os

IMAGE = os.environ["MERGE_IMAGE"]
UNAME = {"amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x"}


def test_uname(arch, multiarch_run):
    result = multiarch_run(IMAGE, ["uname", "-m"], check=True)
    assert result.stdout.strip() == UNAME[arch.arch_name]


def test_resolves(arch, multiarch_image):
    assert multiarch_image(IMAGE).digest.startswith("sha256:")


def test_passes_unless_told(arch):
    assert os.environ.get("MERGE_FAIL_ON") != arch.arch_name, "told to fail here"
'''

RUNS = {  # shard name -> (arch, extra pytest arguments)
    "amd64": ("amd64", (f"--arch-host={SSH_ENGINE}",)),
    "arm64": ("arm64", ()),
    "s390x": ("s390x", ("--engine=rootfs",)),
}


@pytest.fixture(scope="module")
def corpus() -> dict[str, Any]:
    if not CORPUS.is_file():
        pytest.fail(f"{CORPUS} is missing: run scripts/provision-host")
    data: dict[str, Any] = json.loads(CORPUS.read_text())
    return data


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Any]) -> dict[str, Path]:
    """Three real shards, one per arch, run side by side like three CI jobs (plus a failing one)."""
    root = project(tmp_path_factory.mktemp("shards") / "project", SHARD_TESTS)
    image = {"MERGE_IMAGE": corpus["busybox"]["ref"]}
    jobs = {name: (arch, extra, image) for name, (arch, extra) in RUNS.items()}
    jobs["arm64-failing"] = ("arm64", (), {**image, "MERGE_FAIL_ON": "arm64"})
    out = {name: root.parent / f"{name}.json" for name in jobs}

    def one(name: str) -> tuple[str, int, str]:
        arch, extra, env = jobs[name]
        run = run_shard(root, out[name], f"--arch={arch}", "--arch-required", *extra, env=env)
        return name, run.returncode, run.stdout + run.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, jobs))
    for name, code, text in results:
        expected = 1 if name == "arm64-failing" else 0
        assert code == expected, f"shard {name} exited {code}:\n{text}"
    return out


def test_three_real_shards_make_one_passing_gate(shards: dict[str, Path], tmp_path: Path,
                                                 corpus: dict[str, Any]) -> None:
    merged, junit, md = tmp_path / "merged.json", tmp_path / "junit.xml", tmp_path / "gate.md"
    run = merge(shards["amd64"], shards["arm64"], shards["s390x"],
                "--require-arch=amd64,arm64,s390x", "--multiarch-report", merged,
                "--junitxml", junit, "--markdown", md)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.lines[0].split() == ["test", "|", "amd64", "|", "arm64", "|", "s390x"]
    assert any(line.startswith("test_shard.py::test_uname ") and line.count("PASS") == 3
               for line in run.lines), run.stdout
    assert "multiarch merge: gate passed" in run.lines
    doc = load(merged)
    assert doc["schema"] == "pytest-multiarch-report"
    assert doc["format"] == 2
    assert doc["exitstatus"] == 0
    assert doc["problems"] == []
    runs = {arch: info["run"] for arch, info in doc["archs"].items()}
    assert runs["amd64"]["mode"] == "native"
    assert runs["amd64"]["host"] == "127.0.0.1:2222"
    assert runs["arm64"]["mode"] == "emulated"
    assert runs["arm64"]["qemu"]
    assert runs["s390x"]["mode"] == "emulated"
    assert runs["s390x"]["runner"] == "RootfsRunner"
    assert runs["arm64"]["runner"] == "EngineRunner"
    ref = corpus["busybox"]["ref"]
    assert doc["index_digests"] == {ref: corpus["busybox"]["index_digest"]}
    for arch in ("amd64", "arm64", "s390x"):
        assert doc["variants"][ref][arch]["digest"] == corpus["busybox"]["digests"][f"linux/{arch}"]
        assert sorted(doc["archs"][arch]["collected"]) == [
            "test_shard.py::test_passes_unless_told", "test_shard.py::test_resolves",
            "test_shard.py::test_uname"]
    assert [o["path"] for o in doc["merged_from"]] == [str(shards[a]) for a in RUNS]
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert len(cases) == 9
    assert not any(c.find("failure") is not None for c in cases)
    assert "test_shard.py::test_uname[arm64]" in {c.get("name") for c in cases}
    table = md.read_text()
    assert "| test | amd64 | arm64 | s390x |" in table
    assert "passed" in table.splitlines()[0]


def test_python_dash_m_is_the_same_command(shards: dict[str, Path]) -> None:
    run = merge(shards["amd64"], shards["arm64"], module=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "multiarch merge: 2 shard(s), archs amd64, arm64" in run.lines


def test_github_step_summary_is_appended(shards: dict[str, Path], tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("## Build\nearlier step\n")
    run = merge(*(shards[a] for a in RUNS), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert run.returncode == 0, run.stdout + run.stderr
    text = summary.read_text()
    assert text.startswith("## Build\nearlier step\n## pytest-multiarch: passed")
    assert "| `test_shard.py::test_uname` | ✅ pass | ✅ pass | ✅ pass |" in text


def test_a_failing_shard_fails_the_gate_naming_test_arch_and_shard(
    shards: dict[str, Path], tmp_path: Path
) -> None:
    md = tmp_path / "gate.md"
    run = merge(shards["amd64"], shards["arm64-failing"], shards["s390x"], "--markdown", md)
    assert run.returncode == 1
    failing = str(shards["arm64-failing"])
    assert (f"FAILED: shard {failing} (arm64): pytest exited with 1 (tests failed)"
            in run.lines)
    assert any(line.startswith(f"FAILED: FAILED test_shard.py::test_passes_unless_told on arm64 "
                               f"({failing}): ") and "told to fail here" in line
               for line in run.lines), run.stdout
    assert "multiarch merge: gate FAILED (2 problem(s))" in run.lines
    text = md.read_text()
    assert "FAILED" in text.splitlines()[0]
    assert "❌ FAIL `AssertionError`" in text


def test_a_required_arch_without_shard_fails_the_gate(shards: dict[str, Path]) -> None:
    run = merge(shards["amd64"], shards["arm64"], "--require-arch=amd64,arm64,s390x")
    assert run.returncode == 1
    assert any(line.startswith("FAILED: required arch s390x has no shard (the shards have: "
                               f"amd64 ({shards['amd64']}), arm64 ({shards['arm64']}))")
               for line in run.lines), run.stdout


def test_two_shards_of_one_arch_with_different_outcomes(shards: dict[str, Path]) -> None:
    run = merge(shards["arm64"], shards["arm64-failing"])
    assert run.returncode == 1
    assert (f"FAILED: arch arm64 is claimed by {shards['arm64']} and {shards['arm64-failing']} "
            "with different outcomes: test_shard.py::test_passes_unless_told passed in "
            f"{shards['arm64']}, failed in {shards['arm64-failing']}") in run.lines


def test_two_shards_of_one_arch_even_agreeing_are_refused(shards: dict[str, Path],
                                                          tmp_path: Path) -> None:
    copy = tmp_path / "arm64-again.json"
    shutil.copy(shards["arm64"], copy)
    run = merge(shards["arm64"], copy)
    assert run.returncode == 1
    assert (f"FAILED: arch arm64 is claimed by both {shards['arm64']} and {copy} (3 tests in "
            "both); give each arch one shard, or split its tests between jobs without overlap"
            ) in run.lines


def test_the_same_file_twice_is_bad_input(shards: dict[str, Path]) -> None:
    assert_one_line_error(merge(shards["arm64"], shards["arm64"]), "given twice")


def test_a_truncated_shard_is_one_line(shards: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.json"
    text = shards["arm64"].read_text()
    cut.write_text(text[: len(text) // 2])
    run = merge(shards["amd64"], cut)
    assert_one_line_error(run, f"shard {cut} is truncated", "re-run that job")


def test_a_shard_from_a_future_format_is_one_line(shards: dict[str, Path],
                                                  tmp_path: Path) -> None:
    future = tmp_path / "future.json"
    doc = load(shards["arm64"])
    doc["format"] = 3
    future.write_text(json.dumps(doc))
    assert_one_line_error(merge(shards["amd64"], future),
                          f"shard {future} has report format 3, newer than this "
                          "pytest-multiarch reads (format 2)", "upgrade pytest-multiarch")


@pytest.mark.parametrize(("case", "expected"), [
    ("none", "no shard files given"),
    ("directory", "is a directory, not a report file"),
    ("not-json", "is not JSON (line 1"),
    ("other-tool", "is not a pytest-multiarch report (its top-level keys: manifests, "),
    ("missing", "does not exist"),
    ("bogus-arch", "--require-arch='bogus': unknown architecture 'bogus'; valid names: "),
])
def test_bad_input_is_one_clear_line(case: str, expected: str, shards: dict[str, Path],
                                     tmp_path: Path, corpus: dict[str, Any]) -> None:
    args: list[str | Path] = [shards["amd64"]]
    if case == "none":
        args = []
    elif case == "directory":
        args.append(shards["amd64"].parent)
    elif case == "not-json":
        (tmp_path / "junit.xml").write_text("<?xml version='1.0'?><testsuites/>")
        args.append(tmp_path / "junit.xml")
    elif case == "other-tool":  # a real document of another tool: skopeo's raw index
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{corpus['busybox']['ref']}"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        (tmp_path / "index.json").write_text(raw)
        args.append(tmp_path / "index.json")
    elif case == "missing":
        args.append(tmp_path / "nowhere.json")
    else:
        args.append("--require-arch=bogus")
    assert_one_line_error(merge(*args), expected)


# -- a tag re-pushed between two jobs --------------------------------------------------------


def _put_index(repo_tag: str, index: dict[str, Any], media_type: str) -> str:
    repo, tag = repo_tag.split("/", 1)[1].rsplit(":", 1)
    body = json.dumps(index).encode()
    resp = requests.put(f"http://{REGISTRY}/v2/{repo}/manifests/{tag}", data=body,
                        headers={"Content-Type": media_type}, timeout=30)
    resp.raise_for_status()
    return str(resp.headers["Docker-Content-Digest"])


@pytest.fixture
def moving_tag(corpus: dict[str, Any]) -> str:
    """``scratch-merge/busybox:moving``, a copy of the corpus index (variants and all)."""
    subprocess.run(["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{corpus['busybox']['ref']}", f"docker://{MOVING}"],
                   check=True, capture_output=True, timeout=300)
    return MOVING


def test_a_tag_moved_between_two_shards_fails_naming_both_digests(
    moving_tag: str, corpus: dict[str, Any], tmp_path: Path
) -> None:
    root = project(tmp_path / "project", SHARD_TESTS)
    env = {"MERGE_IMAGE": moving_tag}
    first, second = tmp_path / "amd64.json", tmp_path / "arm64.json"
    assert run_shard(root, first, "--arch=amd64", "-k", "resolves", env=env).returncode == 0
    # The release job re-pushes the tag: same variants, a new index (an annotation changes it).
    raw = requests.get(f"http://{REGISTRY}/v2/scratch-merge/busybox/manifests/moving",
                       headers={"Accept": corpus["busybox"]["media_type"]}, timeout=30)
    index = raw.json()
    index["annotations"] = {"org.opencontainers.image.revision": "re-pushed"}
    new_digest = _put_index(moving_tag, index, corpus["busybox"]["media_type"])
    old_digest = load(first)["index_digests"][moving_tag]
    assert new_digest != old_digest
    assert run_shard(root, second, "--arch=arm64", "-k", "resolves", env=env).returncode == 0
    run = merge(first, second, "--require-arch=amd64,arm64")
    assert run.returncode == 1
    assert (f"FAILED: image {moving_tag} was tested as {old_digest} by {first} (amd64) and as "
            f"{new_digest} by {second} (arm64): the reference moved between the jobs, so the "
            "matrix would describe different images; pin one digest "
            f"({moving_tag.rsplit(':', 1)[0]}@sha256:…) in every job") in run.lines


def test_baseline_of_merged_runs_finds_the_regression(shards: dict[str, Path],
                                                      tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    good = [shards["amd64"], shards["arm64"], shards["s390x"]]
    first = merge(*good, f"--multiarch-baseline={baseline}")
    assert first.returncode == 0
    assert f"multiarch baseline: baseline {baseline} does not exist yet; this run records it" \
        in first.lines
    again = merge(*good, f"--multiarch-baseline={baseline}")
    assert f"multiarch baseline: compared with {baseline}: no change(s)" in again.lines
    worse = merge(shards["amd64"], shards["arm64-failing"], shards["s390x"],
                  f"--multiarch-baseline={baseline}")
    assert worse.returncode == 1
    assert f"multiarch baseline: compared with {baseline}: 1 change(s)" in worse.lines
    assert ("  (tests) [arm64]: REGRESSION: test_shard.py::test_passes_unless_told passed "
            "before, failed now") in worse.lines
