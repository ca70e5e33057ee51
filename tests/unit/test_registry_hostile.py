"""The registry client against hostile registries: small HTTP servers on 127.0.0.1, one thread
per connection, started by each test and stopped at its end.

Each server is bounded: it serves at most ``max_connections`` connections and every handler
stops when the test ends (``stop`` event) or after ``HANDLER_LIFETIME`` seconds, whichever comes
first, so a test can never leave a thread behind feeding bytes into the void.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_multiarch.errors import (
    AuthenticationError,
    InvalidManifestError,
    NotFoundError,
    RegistryError,
    RegistryUnreachable,
)
from pytest_multiarch.oci.bodies import MAX_TOKEN_BYTES
from pytest_multiarch.oci.content import MAX_MANIFEST_BYTES, OCI_INDEX
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.registry import RegistryClient

HANDLER_LIFETIME = 30.0
Behaviour = Callable[[socket.socket, str, threading.Event], None]


class Hostile(socketserver.ThreadingTCPServer):
    """Reads one request head per connection and hands the socket to *behaviour*."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: Behaviour, max_connections: int = 8) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.requests: list[str] = []
        self.max_connections = max_connections
        self.sent = 0

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server = self.server
                assert isinstance(server, Hostile)
                if len(server.requests) >= server.max_connections:
                    return
                conn: socket.socket = self.request
                conn.settimeout(5)
                head = conn.recv(4096)
                if head[:1] == b"\x16":
                    return  # a TLS ClientHello: plain HTTP only, so the client falls back
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    data = conn.recv(4096)
                    if not data:
                        return
                    head += data
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                server.requests.append(line)
                with_deadline = threading.Timer(HANDLER_LIFETIME, server.stop.set)
                with_deadline.daemon = True
                with_deadline.start()
                try:
                    server.behaviour(conn, line, server.stop)
                except OSError:
                    pass  # the client hung up: what it is supposed to do
                finally:
                    with_deadline.cancel()

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def hostile() -> Iterator[Callable[..., Hostile]]:
    servers: list[Hostile] = []

    def start(behaviour: Behaviour, **kwargs: Any) -> Hostile:
        server = Hostile(behaviour, **kwargs)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop.set()
        server.shutdown()
        server.server_close()


def _client(**kwargs: Any) -> RegistryClient:
    options: dict[str, Any] = {"cache": False, "max_retries": 0, "timeout": 5.0,
                               "connect_timeout": 2.0, "deadline": 3.0}
    options.update(kwargs)
    return RegistryClient(**options)


def _endless_chunked(status: str, content_type: str = "application/json") -> Behaviour:
    def behave(conn: socket.socket, line: str, stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"x" * 65536
        frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        while not stop.is_set():
            conn.sendall(frame)

    return behave


def _measured(func: Callable[[], object]) -> tuple[BaseException, float, int]:
    tracemalloc.start()
    started = time.monotonic()
    try:
        func()
    except BaseException as exc:
        error: BaseException = exc
    else:
        raise AssertionError("no error raised")
    finally:
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, elapsed, peak


# -- unbounded bodies -----------------------------------------------------------------------------


def test_404_with_an_endless_body_is_read_to_a_few_kib(hostile: Callable[..., Hostile]) -> None:
    server = hostile(_endless_chunked("404 Not Found"))
    ref = Reference.parse(f"{server.host}/app:1")
    error, elapsed, peak = _measured(lambda: _client().get_manifest(ref))
    assert isinstance(error, NotFoundError)
    assert str(error).startswith(f"manifest 1 of {ref}: not found (HTTP 404)")
    # Before: resp.content read the whole endless body (1.2 GiB for 600 MiB sent) until the
    # deadline-less client ran out of memory.  The bound here is MAX_DETAIL_BYTES (4 KiB).
    assert elapsed < 2.0
    assert peak < 2 << 20


def test_endless_manifest_stops_at_the_manifest_cap(hostile: Callable[..., Hostile]) -> None:
    server = hostile(_endless_chunked("200 OK", OCI_INDEX))
    ref = Reference.parse(f"{server.host}/app:1")
    error, elapsed, peak = _measured(lambda: _client(deadline=30.0).get_manifest(ref))
    assert isinstance(error, RegistryError)
    assert f"larger than {MAX_MANIFEST_BYTES} bytes; refusing to hold it" in str(error)
    assert elapsed < 10.0
    assert peak < 3 * MAX_MANIFEST_BYTES


def test_endless_token_response_is_capped(hostile: Callable[..., Hostile]) -> None:
    token = hostile(_endless_chunked("200 OK"))

    def registry(conn: socket.socket, line: str, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                     b'WWW-Authenticate: Bearer realm="http://' + token.host.encode()
                     + b'/token",service="hostile"\r\n\r\n')

    server = hostile(registry)
    ref = Reference.parse(f"{server.host}/app:1")
    error, elapsed, peak = _measured(lambda: _client(deadline=30.0).get_manifest(ref))
    assert isinstance(error, AuthenticationError)
    assert str(error) == (f"manifest 1 of {ref}: token endpoint http://{token.host}/token sent "
                          f"more than {MAX_TOKEN_BYTES} bytes; not a token response")
    assert elapsed < 5.0
    assert peak < 2 << 20


# -- slow servers: the overall deadline -----------------------------------------------------------


def _drip(prefix: bytes, every: float) -> Behaviour:
    def behave(conn: socket.socket, line: str, stop: threading.Event) -> None:
        conn.sendall(prefix)
        while not stop.wait(every):
            conn.sendall(b"x")

    return behave


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_one_byte_every_two_seconds_ends_at_the_deadline(
    hostile: Callable[..., Hostile], phase: str,
) -> None:
    prefix = (b"HTTP/1.1 200 OK\r\nX-Slow: " if phase == "headers" else
              b"HTTP/1.1 200 OK\r\nContent-Type: " + OCI_INDEX.encode()
              + b"\r\nContent-Length: 100000\r\n\r\n")
    server = hostile(_drip(prefix, 2.0))
    ref = Reference.parse(f"{server.host}/app:1")
    # timeout=5 is the per-read timeout: each byte comes sooner, so only the deadline can end it.
    error, elapsed, _ = _measured(lambda: _client(timeout=5.0, deadline=3.0).get_manifest(ref))
    assert isinstance(error, RegistryUnreachable), error
    assert str(error) == (
        f"manifest 1 of {ref}: {server.host} did not finish answering within 3 s (the overall "
        "deadline of one registry request); it is too slow or stalling on purpose")
    assert 2.9 <= elapsed < 6.0  # the 3 s deadline, plus scheduling on a loaded 2-core host


def test_streamed_blob_deadline_grows_with_its_size() -> None:
    client = _client(deadline=3.0, min_rate=1 << 20)
    assert client.transport.deadline_for(None) == 3.0
    assert client.transport.deadline_for(100 << 20) == 103.0


# -- hostile JSON ---------------------------------------------------------------------------------


def _answer(body: bytes, status: str = "200 OK", content_type: str = OCI_INDEX) -> Behaviour:
    def behave(conn: socket.socket, line: str, stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    return behave


def test_deeply_nested_json_is_a_named_error(hostile: Callable[..., Hostile]) -> None:
    body = b"[" * 200_000  # 200 KB: far under the manifest cap
    server = hostile(_answer(body))
    ref = Reference.parse(f"{server.host}/app:1")
    with pytest.raises(InvalidManifestError) as info:
        _client().get_manifest(ref)
    assert str(info.value) == (f"manifest 1 of {ref}: JSON nested too deeply to be a manifest "
                               "(a hostile or broken document)")


def test_error_detail_of_a_huge_error_document_is_short(hostile: Callable[..., Hostile]) -> None:
    message = "m" * 100_000
    body = json.dumps({"errors": [{"code": "DENIED", "message": message}]}).encode()
    server = hostile(_answer(body, "403 Forbidden", "application/json"))
    ref = Reference.parse(f"{server.host}/app:1")
    with pytest.raises(AuthenticationError) as info:
        _client().get_manifest(ref)
    # The detail comes from the first 4 KiB only: not parseable JSON, so it is left out.
    assert str(info.value).startswith(f"manifest 1 of {ref}: {server.host} denied anonymous "
                                      "access (HTTP 403); log in")
    assert len(str(info.value)) < 400


def test_small_error_document_still_gives_its_code(hostile: Callable[..., Hostile]) -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
    server = hostile(_answer(body, "404 Not Found", "application/json"))
    with pytest.raises(NotFoundError, match=r"HTTP 404 MANIFEST_UNKNOWN: manifest unknown"):
        _client().get_manifest(Reference.parse(f"{server.host}/app:1"))
