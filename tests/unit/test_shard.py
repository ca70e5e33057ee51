"""Shard validation and the merge's own rules, on report documents made by the report code.

The real shards (separate pytest runs against the test bed) are in
tests/integration/test_merge.py; these check the edges of the schema quickly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_multiarch.errors import ShardError
from pytest_multiarch.session.merge import merge_shards
from pytest_multiarch.session.report import Matrix, Outcome
from pytest_multiarch.session.shard import Shard, load_shard


def _shard(tmp_path: Path, arch: str, outcomes: dict[str, str], **extra: Any) -> Path:
    matrix = Matrix([arch])
    for test, outcome in outcomes.items():
        matrix.add(Outcome(test, arch, outcome))
    matrix.collected[arch] = list(extra.pop("collected", outcomes))
    doc = matrix.to_json({"exitstatus": 0, **extra})
    path = tmp_path / f"{arch}-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_report_is_a_shard(tmp_path: Path) -> None:
    shard = load_shard(_shard(tmp_path, "arm64", {"t::a": "passed"}))
    assert shard.archs == ["arm64"]
    assert shard.exitstatus == 0


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d.update(archs=[]), "is a damaged report: 'archs' is not an object"),
    (lambda d: d["archs"]["arm64"].pop("collected"), "archs.arm64 lacks one of"),
    (lambda d: d.pop("index_digests"), "'index_digests' is not an object"),
    (lambda d: d["images"]["(tests)"]["arm64"]["checks"][0].pop("outcome"), "lacks test or"),
    (lambda d: d.update(format="2"), "has report format '2'; this version reads format 2"),
    (lambda d: d.pop("schema"), "is not a pytest-multiarch report (its top-level keys: "),
    (lambda d: (d.pop("schema"), d.update(format=1)), "is a format 1 report"),
])
def test_damaged_shards_are_one_line(tmp_path: Path, mutate: Any, expected: str) -> None:
    path = _shard(tmp_path, "arm64", {"t::a": "passed"})
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ShardError) as info:
        load_shard(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("content", "expected"), [
    ("", "is empty"), ("[1, 2]", "holds a JSON list"), (b"\xff\xfe", "is not text"),
])
def test_files_that_are_no_report(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path = tmp_path / "x.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ShardError, match=expected):
        load_shard(path)


def test_collected_without_outcome_is_not_run(tmp_path: Path) -> None:
    path = _shard(tmp_path, "s390x", {"t::a": "passed"}, collected=["t::a", "t::b"])
    result = merge_shards([load_shard(path)])
    assert not result.ok
    assert result.problems == (
        f"s390x ({path}): 1 collected test(s) have no outcome, e.g. t::b; the run stopped early",
    )
    assert [line.split() for line in result.matrix.render()[2:4]] == [
        ["t::a", "|", "PASS"], ["t::b", "|", "not", "run"]]


def test_one_arch_split_over_two_jobs_without_overlap_merges(tmp_path: Path) -> None:
    first = load_shard(_shard(tmp_path, "arm64", {"t::a": "passed"}))
    second = load_shard(_shard(tmp_path, "arm64", {"t::b": "passed"}))
    result = merge_shards([first, second])
    assert result.ok, result.problems
    assert result.matrix.totals() == {"arm64": {"passed": 2}}


def test_merged_report_is_itself_a_shard(tmp_path: Path) -> None:
    shards = [load_shard(_shard(tmp_path, a, {"t::a": "passed"})) for a in ("amd64", "arm64")]
    merged = tmp_path / "merged.json"
    merged.write_text(json.dumps(merge_shards(shards).document))
    again = merge_shards([load_shard(merged)])
    assert again.ok
    assert again.matrix.archs == ["amd64", "arm64"]
    assert isinstance(load_shard(merged), Shard)


def test_the_merge_command_loads_no_pytest_requests_or_docker() -> None:
    """A merge job installs the package and runs the script: nothing heavy, no test runner."""
    code = ("import sys, pytest_multiarch.cli, pytest_multiarch.session.merge, "
            "pytest_multiarch.session.summary; "
            "bad = [m for m in ('pytest', 'requests', 'docker') if m in sys.modules]; "
            "sys.exit(', '.join(bad) or None)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_recorded_answers_pair_by_request_and_floats_compare_bit_exact(tmp_path: Path) -> None:
    from pytest_multiarch.checks.answers import Answer

    json_type = {"Content-Type": "application/json"}
    docs = {
        "amd64": [Answer("GET /a", 200, json_type, '{"p": 0.3}')],
        # arm64's test asked something else first: pairing by position would compare /b with /a
        "arm64": [Answer("GET /b", 404, json_type, "{}"),
                  Answer("GET /a", 200, json_type, '{"p": 0.30000000000000004}')],
    }
    shards = []
    for arch, answers in docs.items():
        matrix = Matrix([arch])
        matrix.add(Outcome("t::rest", arch, "passed"))
        matrix.collected[arch] = ["t::rest"]
        matrix.rest["t::rest", arch] = [a.to_json() for a in answers]
        path = tmp_path / f"{arch}.json"
        path.write_text(json.dumps(matrix.to_json({"exitstatus": 0})))
        shards.append(load_shard(path))
    result = merge_shards(shards, reference_arch="amd64")
    assert [c.request for c in result.comparisons] == ["GET /a"]
    assert result.problems == (
        "GET /a answers differently than on amd64 (reference) on arm64\n"
        "  arm64: $.p: 0.30000000000000004 (on amd64: 0.3)",
    )
