"""registries.conf for the private podman service: the system's file plus insecure entries."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pytest_multiarch.runners.docker.podman import LOOPBACK_REGISTRIES, registries_conf


def test_system_file_kept_and_hosts_added(tmp_path: Path) -> None:
    system = tmp_path / "registries.conf"
    system.write_text('unqualified-search-registries = ["docker.io"]\n\n'
                      '[[registry]]\nlocation = "127.0.0.1"\ninsecure = false\n')
    parsed = tomllib.loads(registries_conf(["reg.lan:5000", 'we"ird'], system) or "")
    assert parsed["unqualified-search-registries"] == ["docker.io"]
    locations = [r["location"] for r in parsed["registry"]]
    # The system's own entry for 127.0.0.1 stays as it is (a location may appear once a file).
    assert locations.count("127.0.0.1") == 1
    assert {"localhost", "[::1]", "reg.lan:5000", 'we"ird'} <= set(locations)
    assert all(r["insecure"] for r in parsed["registry"] if r["location"] != "127.0.0.1")


def test_missing_system_file_is_loopback_only(tmp_path: Path) -> None:
    parsed = tomllib.loads(registries_conf((), tmp_path / "absent.conf") or "")
    assert [r["location"] for r in parsed["registry"]] == list(LOOPBACK_REGISTRIES)


def test_v1_or_broken_system_file_is_left_alone(tmp_path: Path) -> None:
    v1 = tmp_path / "v1.conf"
    v1.write_text('[registries.insecure]\nregistries = ["x:5000"]\n')
    assert registries_conf((), v1) is None
    broken = tmp_path / "broken.conf"
    broken.write_text("[[registry]\n")
    assert registries_conf((), broken) is None
