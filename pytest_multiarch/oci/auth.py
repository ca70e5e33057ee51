"""Registry credentials the way Docker and podman find them, and the parts of authentication we
must own.

Finding credentials is the Docker SDK's (``docker.auth``, its credential-store support): ``auths``
(``auth`` as base64 ``user:password``, ``identitytoken``), ``credHelpers`` and ``credsStore``
(a real ``docker-credential-*`` program).  Files, first that has an entry wins: the Docker config
(``docker_config=``, else ``$DOCKER_CONFIG``, else ``~/.docker``), then the containers auth file
podman and skopeo write (``$REGISTRY_AUTH_FILE``, else ``$XDG_RUNTIME_DIR/containers/auth.json``,
else ``~/.config/containers/auth.json``).  What we own: reading the file (so a broken one is named
without its content), the messages, ``WWW-Authenticate`` parsing and the ``Authorization`` header;
bearer tokens, their scope per repository and redirects are the transport's
(:mod:`pytest_multiarch.oci.transport`).

Secrets are held as :class:`~pytest_multiarch._secret.Secret` only.  The functions that see a
decoded password or a helper's answer never raise: they return a problem that their caller
raises, so no frame with a secret in its locals reaches a test report (``pytest -l``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.auth import AuthBase

from pytest_multiarch._secret import Secret
from pytest_multiarch.errors import RegistryError
from pytest_multiarch.oci.reference import DEFAULT_REGISTRY

# -- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False, init=False)
class Credentials:
    """A username and secret, and where they came from.  ``repr`` and ``str`` hide both."""

    username: str  # not a secret, but shown nowhere either: with the host it tells whose it is
    secret: Secret
    source: str

    def __init__(self, username: str, secret: str | Secret, source: str) -> None:
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "secret", Secret(secret))
        object.__setattr__(self, "source", source)

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


def containers_auth_file() -> Path:
    """podman's auth file: ``$REGISTRY_AUTH_FILE``, else the runtime one, else the config one."""
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and (Path(runtime) / "containers" / "auth.json").is_file():
        return Path(runtime) / "containers" / "auth.json"
    return Path.home() / ".config" / "containers" / "auth.json"


def normalize_host(key: str) -> str:
    """The registry host a Docker config key or registry name means; Docker Hub's aliases fold."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return DEFAULT_REGISTRY if host in ("index.docker.io", "registry-1.docker.io") else host


def load_credentials(
    registry: str, docker_config: str | os.PathLike[str] | None = None
) -> Credentials | None:
    """Credentials for *registry* from the Docker config, then the containers auth file."""
    found = load_docker_credentials(registry, docker_config)
    if found is None:
        found = load_docker_credentials(registry, auth_file=containers_auth_file())
    return found


def load_docker_credentials(
    registry: str, config_dir: str | os.PathLike[str] | None = None, *,
    auth_file: Path | None = None,
) -> Credentials | None:
    """Credentials for *registry* in one Docker-format file (``config_dir``'s ``config.json``,
    or *auth_file*), or ``None``; a broken file or helper raises :class:`RegistryError`."""
    path = auth_file or docker_config_dir(config_dir) / "config.json"
    creds, problem = _lookup(path, normalize_host(registry))
    if problem:
        raise RegistryError(problem)
    return creds


def _lookup(path: Path, host: str) -> tuple[Credentials | None, str]:
    """Ask the Docker SDK for *host*'s entry in *path*.  Never raises (see the module doc)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # JSONDecodeError's message gives a position only, never the file's content.
        return None, f"cannot read Docker config {path}: {type(exc).__name__}: {_position(exc)}"
    if not isinstance(config, dict):
        return None, f"Docker config {path} is not a JSON object"
    helper, source = _helper_for(config, host, path)
    if helper and shutil.which(f"docker-credential-{helper}") is None:
        return None, (f"credential helper docker-credential-{helper} (from {source}) is not on "
                      "PATH; install it or remove it from the Docker config")
    import docker.errors

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK warns of helpers missing for other hosts
            found = _bounded_auth_config(dict(config)).resolve_authconfig(host)
    except docker.errors.DockerException as exc:
        if _timed_out(exc):
            return None, (f"credential helper docker-credential-{helper} (from {source}) did not "
                          f"answer within {HELPER_TIMEOUT:g}s for {host}; check that it does not "
                          "wait for a keyring unlock or a prompt")
        # Its message quotes the helper's output, which may hold a secret: only the status.
        return None, (f"credential helper docker-credential-{helper} (from {source}) failed "
                      f"with exit status {_exit_status(exc)} for {host}")
    except (ValueError, UnicodeDecodeError, TypeError, KeyError):
        if helper:
            return None, (f"credential helper docker-credential-{helper} (from {source}) "
                          "answered something that is not {Username, Secret} JSON")
        return None, f"{path}: an 'auth' entry is not base64 of user:password"
    return _credentials(found, config, host, path, source if helper else "")


def _helper_for(config: Mapping[str, Any], host: str, path: Path) -> tuple[str, str]:
    """The helper Docker would ask for *host* (``credHelpers`` first), and where it is named."""
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if normalize_host(str(key)) == host and isinstance(name, str) and name:
                return name, f"credHelpers[{host}] in {path}"
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return store, f"credsStore in {path}"
    return "", ""


def _credentials(found: Any, config: Mapping[str, Any], host: str, path: Path, helper_source: str
                 ) -> tuple[Credentials | None, str]:
    if not isinstance(found, dict):
        return None, ""
    source = helper_source if "ServerAddress" in found else f"auths[{host}] in {path}"
    if found.get("IdentityToken"):
        return Credentials("<token>", str(found["IdentityToken"]), source), ""
    user = found.get("Username") or found.get("username")
    secret = found.get("Password") or found.get("password")
    if user and secret:
        return Credentials(str(user), str(secret), source), ""
    # The SDK ignores plain username/password fields, which the Docker CLI still reads.
    auths = config.get("auths") or {}
    entry = next((v for k, v in auths.items() if normalize_host(str(k)) == host), None)
    if isinstance(entry, dict) and entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]), source), ""
    return None, ""


#: Seconds a credential helper may take. The SDK's own call has no limit, and a helper waiting for
#: a keyring unlock would otherwise hold a CI gate for ever.
HELPER_TIMEOUT = 30.0


def _bounded_auth_config(config: dict[str, Any]) -> Any:
    """``docker.auth.load_config(config_dict=…)``, whose helpers are killed after HELPER_TIMEOUT.

    Subclasses override two protected SDK methods (``_get_store_instance``, ``Store._execute``);
    the SDK keeps the lookup rules (credHelpers, credsStore, auths) and we add only the bound.
    """
    import docker.auth
    import docker.credentials
    from docker.credentials.errors import StoreError, process_store_error
    from docker.credentials.utils import create_environment_dict

    class BoundedStore(docker.credentials.Store):  # type: ignore[misc]
        def _execute(self, subcmd: str, data_input: bytes | None) -> bytes:
            if self.exe is None:
                raise StoreError(f"{self.program} not installed or not available in PATH")
            try:
                done = subprocess.run([self.exe, subcmd], input=data_input, capture_output=True,
                                      env=create_environment_dict(self.environment),
                                      timeout=HELPER_TIMEOUT, check=True)
            except subprocess.CalledProcessError as exc:
                raise process_store_error(exc, self.program) from exc
            except subprocess.TimeoutExpired as exc:  # run() has killed the helper
                raise StoreError(f"{self.program} timed out") from exc
            except OSError as exc:
                raise StoreError(f"{self.program}: {exc.strerror}") from exc
            return done.stdout

    class BoundedAuthConfig(docker.auth.AuthConfig):  # type: ignore[misc]
        def _get_store_instance(self, name: str) -> Any:
            if name not in self._stores:
                self._stores[name] = BoundedStore(name, environment=self._credstore_env)
            return self._stores[name]

    return BoundedAuthConfig.load_config(None, config, None)


def _timed_out(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, subprocess.TimeoutExpired):
            return True
        cause = cause.__cause__
    return False


def _exit_status(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, subprocess.CalledProcessError):
            return str(cause.returncode)
        cause = cause.__cause__
    return "unknown"


def _position(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, OSError):
        return exc.strerror or ""
    return ""


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

    def __init__(self, value: Secret, expires: float = float("inf")) -> None:
        self._value = Secret(value)
        self._scheme = self._value.reveal().split(" ", 1)[0][:20]
        self.expires = expires

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._value.reveal()
        return request

    def __repr__(self) -> str:
        return f"<{self._scheme} authorization, redacted>"


def basic_auth(creds: Credentials) -> HeaderAuth:
    """``Authorization: Basic …`` for *creds*, held redacted."""
    pair = f"{creds.username}:{creds.secret.reveal()}".encode()
    return HeaderAuth(Secret("Basic " + base64.b64encode(pair).decode()))

