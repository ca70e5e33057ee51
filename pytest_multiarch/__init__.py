"""pytest-multiarch: verify every architecture of a multi-arch container image from pytest.

Every failure class a matrix, a report or a test can show is importable from here::

    from pytest_multiarch import ExecFormatError, MultiarchError, Platform
"""

from __future__ import annotations

from pytest_multiarch.errors import (
    AuditFailed,
    AuthenticationError,
    CommandFailed,
    CommandNotFound,
    CorruptLayer,
    DigestMismatchError,
    EmulatorCrash,
    EmulatorMissing,
    EngineUnavailable,
    ExecFormatError,
    InvalidManifestError,
    InvalidReference,
    LoaderMissing,
    MultiarchError,
    NoDefaultCommand,
    NotFoundError,
    OutOfMemory,
    PlatformMismatchError,
    PlatformNotInIndex,
    RegistryError,
    RegistryUnreachable,
    RemoteHostArchMismatch,
    RemoteHostUnavailable,
    RootfsTooLarge,
    RunnerError,
    RunTimeout,
    ShardError,
    UlimitRefused,
    UnknownPlatformError,
    UnsafeLayerError,
    UsageError,
)
from pytest_multiarch.platforms import Platform

__all__ = [
    "AuditFailed",
    "AuthenticationError",
    "CommandFailed",
    "CommandNotFound",
    "CorruptLayer",
    "DigestMismatchError",
    "EmulatorCrash",
    "EmulatorMissing",
    "EngineUnavailable",
    "ExecFormatError",
    "InvalidManifestError",
    "InvalidReference",
    "LoaderMissing",
    "MultiarchError",
    "NoDefaultCommand",
    "NotFoundError",
    "OutOfMemory",
    "Platform",
    "PlatformMismatchError",
    "PlatformNotInIndex",
    "RegistryError",
    "RegistryUnreachable",
    "RemoteHostArchMismatch",
    "RemoteHostUnavailable",
    "RootfsTooLarge",
    "RunTimeout",
    "RunnerError",
    "ShardError",
    "UlimitRefused",
    "UnknownPlatformError",
    "UnsafeLayerError",
    "UsageError",
]
__version__ = "0.1.0"
