"""The application checks' failure classes, importable from here as the README has long said.

They are defined in :mod:`pytest_multiarch.errors` with every other failure class (and exported
from ``pytest_multiarch``); each message names the target, the platform(s) and what was seen,
and ends with a hint.
"""

from __future__ import annotations

from pytest_multiarch.errors import (
    CheckError,
    NotReady,
    ReplicationBroken,
    ReplicationError,
    ReplicationLag,
    ReplicationMismatch,
    ReplicationRefused,
    ResponsesDiffer,
    ServiceUnavailable,
)

__all__ = [
    "CheckError",
    "NotReady",
    "ReplicationBroken",
    "ReplicationError",
    "ReplicationLag",
    "ReplicationMismatch",
    "ReplicationRefused",
    "ResponsesDiffer",
    "ServiceUnavailable",
]
