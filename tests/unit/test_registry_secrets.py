"""No secret in a test report: failing tests that use the client, run with ``pytest -l --tb=long``
(every frame's locals shown), over every auth path: Basic from ``auth=``, a wrong password, a
real ``docker-credential-*`` helper, bearer tokens with odd ``expires_in`` and a token endpoint
that answers garbage.  The registries are small HTTP servers on 127.0.0.1 in this process.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from pytest_multiarch._secret import Secret

USER, PASSWORD = "alice", "Pa55-basic-do-not-show"
WRONG = "Wr0ng-do-not-show"
HELPER_SECRET = "He1per-secret-do-not-show"
TOKEN = "T0ken-do-not-show-" + "q" * 40
# repository -> the expires_in its token response carries (or the raw body it sends)
ODD: dict[str, Any] = {"soon": "soon", "nan": "NaN", "neg": -5, "huge": "1e400",
                       "list": [1], "null": None}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class _Registries:
    """A Basic-auth registry and a bearer registry with its token endpoint, one server."""

    def __init__(self) -> None:
        self.token_calls: list[str] = []
        registries = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urlparse(self.path)
                header = self.headers.get("Authorization", "")
                if url.path == "/token":
                    scope = parse_qs(url.query).get("scope", [""])[0]
                    repo = scope.split(":")[1].removeprefix("bearer/")
                    registries.token_calls.append(repo)
                    if repo == "nojson":
                        self._send(200, b"<html>" + TOKEN.encode() + b"</html>", "text/html")
                        return
                    body = {"token": TOKEN, "expires_in": ODD.get(repo, 300)}
                    raw = json.dumps(body).replace('"1e400"', "1e400").encode()
                    self._send(200, raw)
                    return
                if url.path.startswith("/v2/bearer/"):
                    if header == f"Bearer {TOKEN}":
                        self._send(500, b'{"errors":[{"code":"UNAVAILABLE"}]}')
                    else:
                        host = self.headers["Host"]
                        self._send(401, b"", extra={"WWW-Authenticate":
                                   f'Bearer realm="http://{host}/token",service="t"'})
                    return
                accepted = {f"Basic {_b64(f'{USER}:{PASSWORD}')}",
                            f"Basic {_b64(f'helper:{HELPER_SECRET}')}"}
                if header in accepted:
                    self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                else:
                    self._send(401, b"", extra={"WWW-Authenticate": 'Basic realm="r"'})

            def _send(self, status: int, body: bytes, ctype: str = "application/json",
                      extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def registries() -> Iterator[_Registries]:
    bed = _Registries()
    threading.Thread(target=bed.server.serve_forever, args=(0.05,), daemon=True).start()
    yield bed
    bed.server.shutdown()
    bed.server.server_close()


def test_no_secret_in_pytest_l_output_on_any_auth_path(
    pytester: pytest.Pytester, registries: _Registries, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-hostile"
    answer = f'{{"ServerURL":"%s","Username":"helper","Secret":"{HELPER_SECRET}"}}'
    helper.write_text(f"#!/bin/sh\nread url\nprintf '{answer}' \"$url\"\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    helper_cfg = tmp_path / "helper-config"
    helper_cfg.mkdir()
    (helper_cfg / "config.json").write_text(
        json.dumps({"credHelpers": {registries.host: "hostile"}}))
    empty = tmp_path / "no-config"
    host = registries.host
    pytester.makepyfile(f"""
        import pytest
        from pytest_multiarch.oci.reference import Reference
        from pytest_multiarch.oci.registry import RegistryClient

        HOST = {host!r}

        def client(**kw):
            kw.setdefault("docker_config", {str(empty)!r})
            return RegistryClient(cache=False, max_retries=0, deadline=10, **kw)

        def test_basic_then_not_found():
            c = client(auth={{HOST: ({USER!r}, open({str(tmp_path / 'pw')!r}).read())}})
            c.get_manifest(Reference.parse(HOST + "/basic/app:1"))

        def test_wrong_password():
            c = client(auth={{HOST: ("alice", open({str(tmp_path / 'wrong')!r}).read())}})
            c.get_manifest(Reference.parse(HOST + "/basic/app:1"))

        def test_helper():
            client(docker_config={str(helper_cfg)!r}).get_manifest(
                Reference.parse(HOST + "/basic/app:1"))

        @pytest.mark.parametrize("repo", {[*ODD, "nojson"]!r})
        def test_bearer_with_odd_expires_in(repo):
            client().get_manifest(Reference.parse(HOST + "/bearer/" + repo + ":1"))
    """)
    # The test file holds no secret itself: the passwords come from files, as a user's would.
    (tmp_path / "pw").write_text(PASSWORD)
    (tmp_path / "wrong").write_text(WRONG)
    result = pytester.runpytest_subprocess("-l", "--tb=long", "-vv", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=3 + len(ODD) + 1)
    output = result.stdout.str() + result.stderr.str()
    # The failures are the ones each path leads to, and -l did show the library's frames.
    assert f"manifest 1 of {host}/basic/app:1: not found (HTTP 404 MANIFEST_UNKNOWN)" in output
    assert f"{host} refused the credentials from auth= given to RegistryClient" in output
    for repo in ODD:  # an odd expires_in is not an error: the token worked, the registry failed
        assert f"/bearer/{repo}:1: {host} answered HTTP 500 (server error UNAVAILABLE)" in output
    assert f"token endpoint http://{host}/token sent no JSON" in output
    assert "pytest_multiarch/oci/transport.py" in output
    assert "what       = 'manifest 1 of" in output or "what = 'manifest 1 of" in output
    assert sorted(set(registries.token_calls)) == sorted([*ODD, "nojson"])
    for secret in (PASSWORD, WRONG, HELPER_SECRET, TOKEN, TOKEN[:20], _b64(f"{USER}:{PASSWORD}"),
                   _b64(f"alice:{WRONG}"), _b64(f"helper:{HELPER_SECRET}")):
        assert secret not in output, f"{secret[:6]}… appears in the report"


def test_secret_is_masked_everywhere() -> None:
    import pickle

    secret = Secret("hunter2")
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>20}",
                 repr([secret]), repr({"k": secret})):
        assert "hunter2" not in text
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2")
    assert Secret(secret).reveal() == "hunter2"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
