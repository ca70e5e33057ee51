"""Registry credentials and authentication, the way the Docker CLI finds and uses them.

Credentials come from ``auth=``, ``~/.docker/config.json`` (``auths``), ``credsStore`` or
``credHelpers``; they are only ever held in objects whose ``repr`` is redacted
(:class:`Credentials`, :class:`HeaderAuth`) and never put into a message.
:func:`parse_challenges` reads the ``WWW-Authenticate`` header a registry answers with; the token
exchange itself is the client's (:class:`pytest_multiarch.oci.registry.RegistryClient`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.auth import AuthBase

from pytest_multiarch.errors import RegistryError
from pytest_multiarch.oci.reference import DEFAULT_REGISTRY

# -- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """A username and secret, and where they came from.  ``repr`` and ``str`` hide both."""

    username: str
    secret: str
    source: str

    def __repr__(self) -> str:
        return f"Credentials(source={self.source!r}, username=<redacted>, secret=<redacted>)"

    __str__ = __repr__

    @property
    def is_identity_token(self) -> bool:
        """Docker stores OAuth refresh tokens with the username ``<token>``."""
        return self.username == "<token>"


def docker_config_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """*explicit*, else ``$DOCKER_CONFIG``, else ``~/.docker`` (read per call)."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def normalize_host(key: str) -> str:
    """The registry host a Docker config key or registry name means; Docker Hub's aliases fold."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return DEFAULT_REGISTRY if host in ("index.docker.io", "registry-1.docker.io") else host


def _server_url(registry: str) -> str:
    return "https://index.docker.io/v1/" if registry == DEFAULT_REGISTRY else registry


def load_docker_credentials(
    registry: str, config_dir: str | os.PathLike[str] | None = None
) -> Credentials | None:
    """Credentials for *registry* the way the Docker CLI finds them, or ``None``.

    ``credHelpers[registry]`` first, then ``credsStore``, then ``auths`` (``auth`` as base64
    ``user:password``, or ``username``/``password``, or ``identitytoken``).
    """
    path = docker_config_dir(config_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        # JSONDecodeError's message gives a position only, never the file's content.
        raise RegistryError(f"cannot read Docker config {path}: {exc}") from None
    if not isinstance(config, dict):
        raise RegistryError(f"Docker config {path} is not a JSON object")
    host = normalize_host(registry)
    helpers = config.get("credHelpers") or {}
    helper = next((v for k, v in helpers.items() if normalize_host(k) == host), None)
    if isinstance(helper, str) and helper:
        return _from_helper(helper, registry, f"credHelpers[{host}] in {path}")
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        found = _from_helper(store, registry, f"credsStore in {path}")
        if found is not None:
            return found
    auths = config.get("auths") or {}
    entry = next((v for k, v in auths.items() if normalize_host(k) == host), None)
    if not isinstance(entry, dict):
        return None
    source = f"auths[{host}] in {path}"
    if entry.get("identitytoken"):
        return Credentials("<token>", str(entry["identitytoken"]), source)
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"{source}: 'auth' is not base64 of user:password") from None
        user, sep, secret = decoded.partition(":")
        if not sep:
            raise RegistryError(f"{source}: 'auth' does not decode to user:password")
        return Credentials(user, secret, source)
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]), source)
    return None


def _from_helper(name: str, registry: str, source: str) -> Credentials | None:
    program = f"docker-credential-{name}"
    if shutil.which(program) is None:
        raise RegistryError(
            f"credential helper {program} (from {source}) is not on PATH; install it or "
            "remove it from the Docker config"
        )
    try:
        done = subprocess.run(
            [program, "get"], input=_server_url(registry), capture_output=True, text=True,
            timeout=30, check=False,
        )
    except subprocess.TimeoutExpired:
        raise RegistryError(f"credential helper {program} (from {source}) hung for 30 s") from None
    if done.returncode != 0:
        if "credentials not found" in (done.stdout + done.stderr).lower():
            return None
        # Its output is not shown: a misbehaving helper might print a secret.
        raise RegistryError(
            f"credential helper {program} (from {source}) failed with exit status "
            f"{done.returncode} for {registry}"
        )
    try:
        answer = json.loads(done.stdout)
        return Credentials(str(answer["Username"]), str(answer["Secret"]), source)
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RegistryError(
            f"credential helper {program} (from {source}) answered something that is not "
            "{Username, Secret} JSON"
        ) from None


# -- authentication -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: ``Bearer realm=…,service=…,scope=…``."""

    scheme: str
    params: Mapping[str, str]


_SCHEME_RE = re.compile(r"[\s,]*([A-Za-z][\w.-]*)")
_PARAM_RE = re.compile(r'\s*([\w.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` header (RFC 7235), schemes lower-cased."""
    challenges: list[Challenge] = []
    pos = 0
    while True:
        match = _SCHEME_RE.match(header, pos)
        if match is None:
            return challenges
        pos = match.end()
        params: dict[str, str] = {}
        while (param := _PARAM_RE.match(header, pos)) is not None:
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        challenges.append(Challenge(match.group(1).lower(), params))


class HeaderAuth(AuthBase):
    """Sets ``Authorization`` when a request is prepared, so no local variable holds the value."""

    def __init__(self, value: str, expires: float = float("inf")) -> None:
        self._value = value
        self.expires = expires

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._value
        return request

    def __repr__(self) -> str:
        return f"<{self._value.split(' ', 1)[0]} authorization, redacted>"


def basic_auth(creds: Credentials) -> HeaderAuth:
    """``Authorization: Basic …`` for *creds*, held redacted."""
    token = base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()
    return HeaderAuth(f"Basic {token}")

