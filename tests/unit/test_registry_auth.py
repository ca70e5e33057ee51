"""Credentials from the Docker config and helpers, challenges, and that secrets never show."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_multiarch.errors import RegistryError
from pytest_multiarch.oci import auth
from pytest_multiarch.oci.auth import (
    Credentials,
    docker_config_dir,
    load_docker_credentials,
    parse_challenges,
)
from pytest_multiarch.oci.auth import basic_auth as _basic
from pytest_multiarch.oci.registry import RegistryClient

SECRET = "s3cr3t-Pa55word"


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def helper_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real ``docker-credential-fake`` on PATH; it logs the server URL it was asked for."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    script = bindir / "docker-credential-fake"
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 3\nread url\necho "$url" >> {log}\n'
        'case "$url" in\n'
        f'  127.0.0.1:5001|https://index.docker.io/v1/) printf \'{{"ServerURL":"%s",'
        f'"Username":"helperuser","Secret":"{SECRET}"}}\' "$url";;\n'
        f'  broken.example) echo "leaking {SECRET}"; exit 2;;\n'
        '  *) echo "credentials not found in native keychain"; exit 1;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_auths_base64(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"auths": {"127.0.0.1:5001": {"auth": b64(f"alice:{SECRET}")}}})
    creds = load_docker_credentials("127.0.0.1:5001", cfg)
    assert creds is not None
    assert (creds.username, creds.secret.reveal()) == ("alice", SECRET)
    assert "auths[127.0.0.1:5001]" in creds.source


def test_auths_username_password_and_url_keys(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"auths": {
        "https://reg.example.com/v1/": {"username": "bob", "password": SECRET},
        "https://index.docker.io/v1/": {"auth": b64(f"hub:{SECRET}")},
    }})
    reg = load_docker_credentials("reg.example.com", cfg)
    hub = load_docker_credentials("docker.io", cfg)
    assert reg is not None
    assert reg.username == "bob"
    assert hub is not None
    assert hub.username == "hub"
    assert load_docker_credentials("other.example.com", cfg) is None


def test_identity_token(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"auths": {"reg.io": {"identitytoken": SECRET}}})
    creds = load_docker_credentials("reg.io", cfg)
    assert creds is not None
    assert creds.is_identity_token
    assert creds.secret.reveal() == SECRET


def test_no_config_means_no_credentials(tmp_path: Path) -> None:
    assert load_docker_credentials("reg.io", tmp_path / "nowhere") is None


def test_docker_config_env_read_at_call_time(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path / "dc", {"auths": {"reg.io": {"auth": b64("u:p")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    assert docker_config_dir() == cfg
    creds = load_docker_credentials("reg.io")
    assert creds is not None
    assert creds.username == "u"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert docker_config_dir() == tmp_path / "home" / ".docker"


def test_cred_helpers_and_store(tmp_path: Path, helper_bin: Path) -> None:
    cfg = write_config(tmp_path / "a", {"credHelpers": {"127.0.0.1:5001": "fake"}})
    creds = load_docker_credentials("127.0.0.1:5001", cfg)
    assert creds is not None
    assert (creds.username, creds.secret.reveal()) == ("helperuser", SECRET)
    assert "credHelpers[127.0.0.1:5001]" in creds.source

    store = write_config(tmp_path / "b", {"credsStore": "fake", "auths": {
        "elsewhere.io": {"auth": b64(f"file:{SECRET}")}}})
    hub = load_docker_credentials("docker.io", store)
    assert hub is not None
    assert hub.username == "helperuser"
    # The store says "not found": fall back to the file's auths.
    other = load_docker_credentials("elsewhere.io", store)
    assert other is not None
    assert other.username == "file"
    assert helper_bin.read_text().split() == [
        "127.0.0.1:5001", "https://index.docker.io/v1/", "elsewhere.io"
    ]


def test_failing_helper_output_is_not_shown(tmp_path: Path, helper_bin: Path) -> None:
    cfg = write_config(tmp_path, {"credHelpers": {"broken.example": "fake"}})
    with pytest.raises(RegistryError, match="exit status 2") as info:
        load_docker_credentials("broken.example", cfg)
    assert SECRET not in str(info.value)


def test_hung_helper_is_cut_off_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper that never answers (a keyring waiting for an unlock) is killed, not waited for."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-hangs"
    helper.write_text(f"#!/bin/sh\necho {SECRET}\nexec sleep 600\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(auth, "HELPER_TIMEOUT", 0.5)
    cfg = write_config(tmp_path / "cfg", {"credHelpers": {"slow.example": "hangs"}})
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"docker-credential-hangs .*did not answer within 0.5s"
                       ) as info:
        load_docker_credentials("slow.example", cfg)
    assert time.monotonic() - started < 10
    assert SECRET not in str(info.value)


def test_missing_helper_is_named(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"credsStore": "does-not-exist-here"})
    with pytest.raises(RegistryError, match="docker-credential-does-not-exist-here"):
        load_docker_credentials("reg.io", cfg)


def test_bad_base64_error_does_not_echo_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"auths": {"reg.io": {"auth": f"!!{SECRET}!!"}}})
    with pytest.raises(RegistryError, match="not base64") as info:
        load_docker_credentials("reg.io", cfg)
    assert SECRET not in str(info.value)


def test_invalid_config_json_is_named_without_content(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"auths": {"reg.io": {"auth": "' + SECRET)
    with pytest.raises(RegistryError, match="cannot read Docker config") as info:
        load_docker_credentials("reg.io", tmp_path)
    assert SECRET not in str(info.value)


def test_credentials_repr_and_str_are_redacted() -> None:
    creds = Credentials("alice", SECRET, "auths[reg.io] in /x/config.json")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert SECRET not in text
        assert "alice" not in text
        assert "redacted" in text


def test_client_and_auth_header_reprs_are_redacted(tmp_path: Path) -> None:
    client = RegistryClient(auth={"127.0.0.1:5001": ("alice", SECRET)}, cache_dir=tmp_path)
    assert SECRET not in repr(client)
    assert "alice" not in repr(client)
    assert "127.0.0.1:5001" in repr(client)
    header = _basic(Credentials("alice", SECRET, "test"))
    assert SECRET not in repr(header)
    assert b64(f"alice:{SECRET}") not in repr(header)
    assert repr(header) == "<Basic authorization, redacted>"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/busybox:pull"',
            [("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                         "scope": "repository:library/busybox:pull"})],
        ),
        ('Basic realm="pytest-multiarch"', [("basic", {"realm": "pytest-multiarch"})]),
        (
            'Basic realm="a, b", Bearer realm="https://t/token",scope="repository:x:pull,push"',
            [("basic", {"realm": "a, b"}),
             ("bearer", {"realm": "https://t/token", "scope": "repository:x:pull,push"})],
        ),
        ('Bearer realm=https://t/token, service=reg', [
            ("bearer", {"realm": "https://t/token", "service": "reg"})]),
        ('Basic realm="say \\"hi\\""', [("basic", {"realm": 'say "hi"'})]),
        ("", []),
    ],
)
def test_parse_challenges(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    assert [(c.scheme, dict(c.params)) for c in parse_challenges(header)] == expected


def test_containers_auth_file_after_the_docker_config(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_multiarch.oci.auth import containers_auth_file, load_credentials

    podman = tmp_path / "auth.json"  # what `podman login` writes: auths keyed by host or repo
    podman.write_text(json.dumps({"auths": {
        "quay.example.io/team/app": {"auth": b64(f"pod:{SECRET}")},
        "127.0.0.1:5001": {"auth": b64(f"pod5001:{SECRET}")}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(podman))
    assert containers_auth_file() == podman
    docker = write_config(tmp_path / "docker", {"auths": {
        "127.0.0.1:5001": {"auth": b64(f"docker:{SECRET}")}}})
    first = load_credentials("127.0.0.1:5001", docker)
    assert first is not None
    assert first.username == "docker"  # the Docker config wins where both have an entry
    quay = load_credentials("quay.example.io", docker)
    assert quay is not None
    assert (quay.username, quay.secret.reveal()) == ("pod", SECRET)
    assert quay.source == f"auths[quay.example.io] in {podman}"
    assert load_credentials("nowhere.example.io", docker) is None
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert containers_auth_file() == tmp_path / "home" / ".config" / "containers" / "auth.json"
    (tmp_path / "run" / "containers").mkdir(parents=True)
    podman.rename(tmp_path / "run" / "containers" / "auth.json")
    assert containers_auth_file() == tmp_path / "run" / "containers" / "auth.json"
    again = load_credentials("quay.example.io", tmp_path / "no-docker-config")
    assert again is not None
    assert again.username == "pod"


def test_helper_answering_garbage_is_named_without_its_output(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-garbage"
    script.write_text(f"#!/bin/sh\nread url\necho 'not json {SECRET}'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cfg = write_config(tmp_path / "c", {"credsStore": "garbage"})
    with pytest.raises(RegistryError, match="answered something that is not") as info:
        load_docker_credentials("reg.io", cfg)
    assert SECRET not in str(info.value)
