"""Removing what runners created: a session's objects at its end, dead sessions' at the next start.

Every container, network and volume carries :meth:`Session.labels`: the session id, the owning
process's pid and host, and the session's start time.  A dead owner on this host (its pid gone,
or reused by a process started later) makes its objects stale at once; objects of other hosts,
or labelled by tooling that records no owner, only once older than ``max_age``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import docker.errors

from pytest_multiarch.runners.base import (
    LABEL,
    LABEL_CREATED,
    LABEL_HOST,
    LABEL_PID,
    LABEL_SESSION,
    Session,
)

__all__ = ["reap_stale", "remove_labelled", "remove_session", "sigint_deferred"]


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM, which the plugin turns into one) while removing containers,
    so a second signal cannot leave them behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def process_alive(pid: int, since: float) -> bool:
    """Whether *pid* is a live process that started before *since* (so not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    return started <= since + 2  # the label's time is rounded and taken after process start


def created_at(obj: Any) -> float:
    """The engine's creation time of a container, network or volume (epoch s; 0 if unknown)."""
    attrs: dict[str, Any] = obj.attrs
    created = attrs.get("Created")
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        return float(created)  # a container from a (sparse) list: epoch seconds
    text = str(created or attrs.get("CreatedAt") or "")
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?", text)
    if match is None:
        return 0.0
    stamp = match.group(1) + (match.group(2) or "")[:7] + (
        "+00:00" if match.group(3) in (None, "Z") else match.group(3))
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


def is_stale(labels: Mapping[str, str], created: float, max_age: float, now: float,
              host: str) -> bool:
    try:
        pid = int(labels.get(LABEL_PID, "0"))
        created = float(labels.get(LABEL_CREATED, created))
    except ValueError:
        return False
    if labels.get(LABEL_HOST) == host and pid > 0:
        return not process_alive(pid, created)
    # Another machine's session, or an object labelled by other tooling without an owner:
    # only its age can tell.  Unknown age is never stale.
    return created > 0 and now - created > max_age


def remove_labelled(client: Any, label: str, wanted: Any) -> int:
    """Remove containers, then networks and volumes, carrying *label* and passing *wanted*."""
    removed = 0
    # sparse: no inspect per container, so none can go between the list and its inspect (Docker
    # answers 404, which ignore_removed covers; podman 500 "no such container", which it does not).
    containers = client.containers.list(all=True, filters={"label": label}, sparse=True)
    groups: tuple[tuple[list[Any], dict[str, bool]], ...] = (
        (containers, {"force": True, "v": True}),
        (client.networks.list(filters={"label": label}), {}),
        (client.volumes.list(filters={"label": label}), {"force": True}),
    )
    for objects, kwargs in groups:
        for obj in objects:
            labels = obj.attrs.get("Labels") or obj.attrs.get("Config", {}).get("Labels") or {}
            if not wanted(labels, obj):
                continue
            # NotFound / 409 "removal already in progress": someone else cleaned it up first.
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                obj.remove(**kwargs)
                removed += 1
    return removed


def reap_stale(
    client: Any, max_age: float = 24 * 3600.0, *, keep: str | None = None,
    sessions: Collection[str] | None = None,
) -> int:
    """Remove the containers, networks and volumes of dead sessions; returns how many.

    A session of this host is dead when its owning process is gone (``io.pytest-multiarch.pid``,
    checked against the process start time so a reused pid does not keep it alive).  Objects of
    another host sharing the engine, or labelled ``io.pytest-multiarch=1`` by tooling that does
    not record an owner, are reaped only when older than *max_age* seconds.  *keep* is a session
    id never reaped (default: the runner's own); *sessions* restricts reaping to those ids.
    *client* is a ``docker.DockerClient`` or an
    :class:`~pytest_multiarch.runners.docker.engine.EngineRunner` (whose own session is kept).
    """
    session = getattr(client, "session", None)
    if isinstance(session, Session):  # an EngineRunner
        keep = keep or session.id
        client = client.client
    now, host = time.time(), socket.gethostname()
    only = set(sessions) if sessions is not None else None

    def wanted(labels: Mapping[str, str], obj: Any) -> bool:
        session = labels.get(LABEL_SESSION)
        if session == keep or (only is not None and session not in only):
            return False
        return is_stale(labels, created_at(obj), max_age, now, host)

    with sigint_deferred():
        return remove_labelled(client, f"{LABEL}=1", wanted)


def remove_session(client: Any, session_id: str) -> int:
    """Remove every container, network and volume of *session_id*; returns how many."""
    with sigint_deferred():
        return remove_labelled(client, f"{LABEL_SESSION}={session_id}", lambda labels, obj: True)
