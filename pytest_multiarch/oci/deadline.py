"""The overall deadline of one registry exchange: connect, headers and body.

A per-read timeout never fires against a server that sends one byte every two seconds, so each
exchange runs under a :class:`Deadline` whose timer shuts the connection's socket down when the
time is up; the blocked ``recv()`` in the requesting thread then returns and the transport
reports the deadline.  The connection registers itself when it sends (the connection classes of
:class:`DeadlineAdapter`), through a thread-local: requests gives no other handle on it before
the response.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from pytest_multiarch.errors import RegistryUnreachable

__all__ = ["Deadline", "DeadlineAdapter"]

_current = threading.local()  # the Deadline of the exchange this thread is in


class Deadline:
    """Shuts down the socket of the exchange it watches when *seconds* have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._conn: HTTPConnection | None = None
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def overdue(self, what: str, host: str) -> RegistryUnreachable:
        """The error to raise for *what* when this deadline cut *host*'s exchange short."""
        return RegistryUnreachable(
            f"{what}: {host} did not finish answering within {self.seconds:g} s (the "
            "overall deadline of one registry request); it is too slow or stalling on purpose"
        )

    def watch(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            if self.expired:
                self._shutdown(conn)

    def _expire(self) -> None:
        with self._lock:
            if self._done:  # the exchange ended as the timer fired: its connection is not ours
                return
            self.expired = True
            if self._conn is not None:
                self._shutdown(self._conn)

    @staticmethod
    def _shutdown(conn: HTTPConnection) -> None:
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv() in the other thread

    def __enter__(self) -> Deadline:
        self._timer.start()
        _current.deadline = self
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._done, self._conn = True, None
        _current.deadline = None


class _Watched:
    """Mixin: a connection registers with the thread's :class:`Deadline` when it sends."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        deadline: Deadline | None = getattr(_current, "deadline", None)
        if deadline is not None:
            deadline.watch(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """Mount on a session: its connections answer to the thread's :class:`Deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
