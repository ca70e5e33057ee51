"""Verdicts of the application checks, as errors.

Each message names the target, the platform(s) and what was seen, and ends with a hint; container
logs, when there are any, ride along in :attr:`CheckError.logs` and as exception notes.
"""

from __future__ import annotations

from collections.abc import Mapping

from pytest_multiarch.errors import MultiarchError


class CheckError(MultiarchError):
    """An application check failed; ``logs`` maps container names to their last log lines."""

    def __init__(self, message: str, logs: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.logs: dict[str, str] = dict(logs or {})


class NotReady(CheckError):
    """A container did not pass its readiness probe in time, or exited while being probed."""


class ServiceUnavailable(NotReady):
    """The service answers, but with 503: its database is unreachable."""


class ResponsesDiffer(CheckError):
    """An endpoint answers differently on some architecture than on the reference one."""


class ReplicationError(CheckError):
    """Replication between a primary and a replica does not work or lost data."""


class ReplicationRefused(ReplicationError):
    """The primary refuses the replica's replication user."""


class ReplicationBroken(ReplicationError):
    """The replica's IO or SQL thread stopped with an error."""


class ReplicationLag(ReplicationError):
    """The replica did not reach the primary's GTID position in time."""


class ReplicationMismatch(ReplicationError):
    """Replica tables differ from the primary's (checksums, then rows by primary key)."""
