"""REST answers compared across machines: ``multiarch_rest.record`` in each shard, compared by
``pytest-multiarch merge`` with ``assert_same``'s rules.

The service is a real two-arch image built here: busybox httpd serving files, whose arm64 variant
serves a different ``offerings.json`` (a float off in its last bit, one more key), the kind of
difference a float-formatting or struct-layout bug makes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from merge_helpers import load, merge, project, run_shard

pytestmark = pytest.mark.integration

CORPUS = Path("/var/lib/pytest-multiarch-testbed/corpus.json")
REPO = "127.0.0.1:5000/scratch-merge/httpd"
OFFERINGS = {
    "amd64": [{"name": "tea", "price": 0.3, "tags": ["hot"]}],
    "arm64": [{"name": "tea", "price": 0.30000000000000004, "tags": ["hot"], "extra": True}],
}
RECORDING_TESTS = '''
def test_answers(multiarch_rest):
    assert multiarch_rest.record("GET", "/healthz").status_code == 200
    assert multiarch_rest.record("GET", "/offerings.json").status_code == 200
'''


def _docker(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def httpd_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``scratch-merge/httpd:1``: amd64 and arm64 variants, built FROM the corpus busybox by
    digest with the legacy builder, pushed, and joined into a manifest list."""
    digests = json.loads(CORPUS.read_text())["busybox"]["digests"]
    base = json.loads(CORPUS.read_text())["busybox"]["ref"].rsplit(":", 1)[0]
    tags = []
    for arch, offerings in OFFERINGS.items():
        ctx = tmp_path_factory.mktemp(f"httpd-{arch}")
        (ctx / "www").mkdir()
        (ctx / "www" / "healthz").write_text("ok\n")
        (ctx / "www" / "offerings.json").write_text(json.dumps(offerings))
        (ctx / "Dockerfile").write_text(
            f"FROM {base}@{digests[f'linux/{arch}']}\nCOPY www /www\n"
            'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n')
        tag = f"{REPO}:1-{arch}"
        _docker("build", "-q", "--platform", f"linux/{arch}", "-t", tag, str(ctx))
        _docker("push", "-q", tag)
        tags.append(tag)
    index = f"{REPO}:1"
    subprocess.run(["docker", "manifest", "rm", index], capture_output=True, check=False)
    _docker("manifest", "create", "--insecure", index, *tags)
    _docker("manifest", "push", "--insecure", "--purge", index)
    try:
        yield index
    finally:
        subprocess.run(["docker", "rmi", *tags], capture_output=True, check=False, timeout=120)


def test_rest_answers_that_differ_on_one_arch_fail_the_merge(httpd_image: str,
                                                             tmp_path: Path) -> None:
    root = project(tmp_path / "project", RECORDING_TESTS,
                   f"multiarch_service_image = {httpd_image}\nmultiarch_db_image = none\n")
    amd64, arm64 = tmp_path / "amd64.json", tmp_path / "arm64.json"
    for arch, shard in (("amd64", amd64), ("arm64", arm64)):
        run = run_shard(root, shard, f"--arch={arch}", "--arch-required")
        assert run.returncode == 0, run.stdout + run.stderr
    recorded = load(arm64)["rest"]["test_shard.py::test_answers"]["arm64"]
    assert [r["request"] for r in recorded] == ["GET /healthz", "GET /offerings.json"]
    assert json.loads(recorded[1]["body"]) == OFFERINGS["arm64"]

    run = merge(amd64, arm64, "--require-arch=amd64,arm64")
    assert run.returncode == 1, run.stdout + run.stderr
    text = run.stdout
    assert ("FAILED: GET /offerings.json answers differently than on amd64 (reference) on arm64"
            in text)
    assert "  arm64: $[0].price: 0.30000000000000004 (on amd64: 0.3)" in run.lines
    assert "  arm64: $[0].extra: true (on amd64: <missing>)" in run.lines
    assert "GET /healthz answers differently" not in text  # the same on both: no problem
    reversed_ref = merge(amd64, arm64, "--reference-arch=arm64")
    assert "answers differently than on arm64 (reference) on amd64" in reversed_ref.stdout

