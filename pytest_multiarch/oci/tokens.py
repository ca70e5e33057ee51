"""Answering a registry's ``401``: Basic credentials, or a bearer token from the challenge's
realm, scoped per repository (go-containerregistry's ``transport/bearer``).

A token for one repository is never sent for another; a token realm in plain HTTP is refused
unless its host may be spoken to that way (:class:`~pytest_multiarch.oci.hosts.HostPolicy`).
Credentials come from a lookup function and stay :class:`~pytest_multiarch._secret.Secret`\\ s:
the frames here that can raise hold only masked values.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from pytest_multiarch.errors import AuthenticationError, RegistryError, RegistryUnreachable
from pytest_multiarch.oci.auth import (
    Challenge,
    Credentials,
    HeaderAuth,
    basic_auth,
    parse_challenges,
)
from pytest_multiarch.oci.bodies import read_token
from pytest_multiarch.oci.deadline import Deadline
from pytest_multiarch.oci.hosts import HostPolicy, reason
from pytest_multiarch.oci.reference import Reference

__all__ = ["USER_AGENT", "Authenticator", "CredentialLookup"]

USER_AGENT = "pytest-multiarch"

CredentialLookup = Callable[[str, bool], "Credentials | None"]


class Authenticator:
    """The ``Authorization`` for each (host, repository), learnt from the registries' challenges.

    *credentials(registry, required)* returns what to log in with, or ``None``; token requests
    go through *session* with *timeout* and end within *deadline* seconds; *on_token* is told of
    each one that got an answer.
    """

    def __init__(
        self, *, credentials: CredentialLookup, session: requests.Session, hosts: HostPolicy,
        timeout: tuple[float, float], deadline: float, on_token: Callable[[], None],
    ) -> None:
        self.lookup = credentials
        self._session = session
        self._hosts = hosts
        self._timeout = timeout
        self._deadline = deadline
        self._on_token = on_token
        self._auth: dict[tuple[str, str], HeaderAuth] = {}

    def auth_for(self, host: str, repository: str) -> HeaderAuth | None:
        """What to send to *host* for *repository*: its unexpired token, else the host's Basic."""
        token = self._auth.get((host, repository))
        if token is not None and token.expires > time.monotonic():
            return token
        return self._auth.get((host, ""))

    def authenticate(self, ref: Reference, header: str, *, what: str) -> None:
        """Answer the challenge in *header* (``WWW-Authenticate``) for *ref*'s repository."""
        host = ref.api_host
        challenges = {c.scheme: c for c in parse_challenges(header)}
        if "bearer" in challenges:
            self._auth[(host, ref.repository)] = self._fetch_token(
                ref, challenges["bearer"], what=what
            )
        elif "basic" in challenges:
            creds = self.lookup(ref.registry, True)
            if creds is None:
                raise AuthenticationError(
                    f"{what}: {host} requires credentials (Basic) and none are configured for "
                    f"{ref.registry}; run `docker login {ref.registry}` or pass auth="
                )
            self._auth[(host, "")] = basic_auth(creds)
        else:
            raise AuthenticationError(
                f"{what}: {host} answered HTTP 401 without a usable challenge "
                f"(WWW-Authenticate: {', '.join(challenges)[:200] or 'none'})"
            )

    def _fetch_token(self, ref: Reference, challenge: Challenge, *, what: str) -> HeaderAuth:
        realm = challenge.params.get("realm", "")
        realm_host = realm.split("://", 1)[-1].split("/", 1)[0]
        if not realm.startswith(("https://", "http://")):
            raise AuthenticationError(
                f"{what}: bearer challenge has no usable realm ({realm[:200]!r})")
        if realm.startswith("http://") and not self._hosts.plain_http_allowed(realm_host):
            raise AuthenticationError(
                f"{what}: token realm {realm} is plain HTTP on a non-loopback host; refusing to "
                "send credentials there (list it as an insecure registry if that is intended)"
            )
        # Scope per repository: a token for one repository is never sent for another.
        scope = challenge.params.get("scope") or f"repository:{ref.repository}:pull"
        params = {"scope": scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        creds = self.lookup(ref.registry, False)
        had = f"the credentials from {creds.source}" if creds else "an anonymous request"
        with Deadline(self._deadline) as deadline:
            try:
                resp = self._token_request(realm, params, creds, self._hosts.verify(realm_host))
            except requests.RequestException as exc:
                if deadline.expired:
                    raise deadline.overdue(what, realm_host) from None
                raise RegistryUnreachable(
                    f"{what}: token endpoint {realm} unreachable ({reason(exc)})"
                ) from None
            self._on_token()
            with resp:
                status = resp.status_code
                if status in (401, 403):
                    raise AuthenticationError(
                        f"{what}: token endpoint {realm} refused {had} (HTTP {status}); "
                        f"log in with `docker login {ref.registry}` or pass credentials for it"
                    )
                if status >= 400:
                    raise RegistryError(f"{what}: token endpoint {realm} answered HTTP {status}")
                token, problem = read_token(resp, deadline)
        if token is None:
            raise AuthenticationError(f"{what}: token endpoint {realm} {problem}")
        return token

    def _token_request(
        self, realm: str, params: dict[str, str], creds: Credentials | None, verify: bool | str,
    ) -> requests.Response:
        if creds is not None and creds.is_identity_token:
            return self._session.post(
                realm, data={**params, "grant_type": "refresh_token",
                             "refresh_token": creds.secret.reveal(), "client_id": USER_AGENT},
                timeout=self._timeout, verify=verify, stream=True,
            )
        return self._session.get(
            realm, params=params, auth=basic_auth(creds) if creds else None,
            timeout=self._timeout, verify=verify, stream=True,
        )
