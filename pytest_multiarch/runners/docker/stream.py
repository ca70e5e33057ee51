"""Reading a container's attached output with a deadline, and what a lost engine raises.

docker-py's own frame reader polls the socket without a timeout before each read, so neither its
``attach()`` nor a socket timeout can bound a run on an engine that stopped answering (daemon
frozen, host gone, tunnel dropped).  This reader sets the socket's timeout before every read to
what is left of the run's deadline plus a grace, so such a run ends in
:class:`~pytest_multiarch.errors.EngineUnavailable` instead of hanging the CI job.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

import requests.exceptions
import urllib3.exceptions

__all__ = ["ENGINE_LOST", "KILL_GRACE", "AttachedOutput", "attach"]

#: What a dead engine (daemon killed, host gone, tunnel dropped) raises from the Docker SDK.
ENGINE_LOST: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
    TimeoutError, urllib3.exceptions.ProtocolError,
)
#: Seconds after a run's deadline for the engine to report the killed container's end.
KILL_GRACE = 30.0

_HEADER = struct.Struct(">BxxxL")  # stream (1 stdout, 2 stderr), 3 padding bytes, size


class AttachedOutput:
    """The demultiplexed output of an attached container, read until *ends_at* (monotonic)."""

    def __init__(self, response: Any, sock: Any, ends_at: float) -> None:
        self._response = response
        self._sock = sock
        self.ends_at = ends_at

    def _read(self, size: int) -> bytes:
        """Exactly *size* bytes (fewer only at the end of the stream)."""
        chunks: list[bytes] = []
        while size > 0:
            left = self.ends_at - time.monotonic()
            if left <= 0:
                raise TimeoutError("the engine sent no end of the container's output in time")
            raw = getattr(self._sock, "_sock", self._sock)
            raw.settimeout(left)
            data = self._sock.read(size) if hasattr(self._sock, "read") else self._sock.recv(size)
            if not data:
                break
            chunks.append(data)
            size -= len(data)
        return b"".join(chunks)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """``(stream, data)`` frames: stream 1 is stdout, 2 stderr."""
        while True:
            header = self._read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            stream, size = _HEADER.unpack(header)
            yield stream, self._read(size)

    def close(self) -> None:
        """Close the connection (never raises)."""
        try:
            self._response.close()
        except Exception:  # closing a dead connection: nothing left to release
            pass


def attach(api: Any, container_id: str, ends_at: float) -> AttachedOutput:
    """Attach to a created container's stdout and stderr (with its logs), like `docker run`."""
    response = api._post(  # the public attach() reads without any deadline (see module doc)
        api._url("/containers/{0}/attach", container_id),
        params={"logs": 1, "stdout": 1, "stderr": 1, "stream": 1},
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        stream=True, timeout=max(1.0, ends_at - time.monotonic()),
    )
    return AttachedOutput(response, api._get_raw_response_socket(response), ends_at)
