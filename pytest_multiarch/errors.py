"""The error hierarchy.

Every error the plugin raises on purpose is a :class:`MultiarchError`.  Each message names the
image, the platform that was asked for and what was found instead, and ends with what to do, so a
failure reads as one paragraph rather than a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping


class MultiarchError(Exception):
    """Base class of every error pytest-multiarch raises on purpose."""


class UsageError(MultiarchError):
    """A value given by the user (option, ini, env, marker argument) is invalid."""


class UnknownPlatformError(UsageError):
    """A platform or architecture name that no alias table entry knows."""


class InvalidReference(UsageError):
    """An image reference that does not follow Docker's grammar."""


class RegistryError(MultiarchError):
    """The registry could not give what was asked (network, HTTP status, bad content)."""


class AuthenticationError(RegistryError):
    """The registry refused the credentials (401/403)."""


class NotFoundError(RegistryError):
    """The registry has no such repository, tag or digest (404)."""


class DigestMismatchError(RegistryError):
    """Content fetched does not hash to the digest it was asked for."""


class RegistryUnreachable(RegistryError):
    """No answer from the registry: connection refused, DNS, TLS handshake or timeout."""


class InvalidManifestError(RegistryError):
    """What came back is not a usable manifest (HTML, invalid JSON, index without manifests)."""


class PlatformNotInIndex(MultiarchError):
    """The image index has no entry for the requested platform."""


class PlatformMismatchError(MultiarchError):
    """An index entry claims one platform while its image config says another."""


class EngineUnavailable(MultiarchError):
    """No container engine answers where one is required."""


class RunnerError(MultiarchError):
    """A container could not be run for a reason of the runner itself, not the image."""

    #: The container's output (stdout and stderr interleaved), set by the runner for reports.
    logs: str = ""


class ExecFormatError(RunnerError):
    """The kernel refused to execute the binary: it is for another architecture."""


class EmulatorMissing(RunnerError):
    """No qemu-user handler is registered in binfmt_misc for a foreign architecture."""


class EmulatorCrash(RunnerError):
    """qemu-user itself died (``qemu: uncaught target signal``)."""


class IllegalInstruction(RunnerError):
    """The program executed an instruction the CPU it ran on lacks (SIGILL): it was built for a
    newer CPU than its platform promises."""

    #: What the runner knew: the arch, the variant's digest, the CPU model, the level promised.
    arch: str = ""
    digest: str = ""
    cpu_model: str = ""
    level: str = ""
    #: Whether the same command exited 0 under ``max`` (None: not tried).
    passes_under_max: bool | None = None


class OutOfMemory(RunnerError):
    """The container was killed by the kernel for exceeding its memory limit."""


class UlimitRefused(RunnerError):
    """The engine's runtime could not set a ulimit (``error setting rlimit type N``)."""


class RemoteHostUnavailable(RunnerError):
    """A remote engine named with ``--arch-host`` did not answer."""


class RemoteHostArchMismatch(RunnerError):
    """A remote engine reports another architecture than the one it was named for."""


class CommandNotFound(RunnerError):
    """The command to run does not exist in the image (exit 127)."""


class CommandFailed(RunnerError):
    """The command ran and exited non-zero: a failure of the application, not of the runner."""


class NoDefaultCommand(RunnerError):
    """No command was given and the image's config has neither Entrypoint nor Cmd."""


class RunTimeout(RunnerError):
    """The command did not finish within its (emulation-scaled) timeout and was killed."""


class LoaderMissing(RunnerError):
    """The variant's entrypoint is dynamically linked and its ELF interpreter (the dynamic loader,
    e.g. ``/lib/ld-linux-aarch64.so.1``) is not in the image: nothing of it can start."""


class AuditFailed(MultiarchError):
    """The static audit found binaries that would not run on the variant's platform."""


class IndexHygieneFailed(MultiarchError):
    """The image index is ambiguous or broken (duplicates, shared digests, dangling entries)."""


class AttestationCheckFailed(MultiarchError):
    """A variant's attestations attest another digest, are unreadable, or a required one lacks."""


class PackageSkewFailed(MultiarchError):
    """The variants of one index do not carry the same package versions."""


class UnsafeLayerError(MultiarchError):
    """A layer tarball tries to write outside its root (``..``, absolute path, hard link out)."""


class ShardError(UsageError):
    """A file given to ``pytest-multiarch merge`` is not a readable shard of this schema."""


class RootfsTooLarge(MultiarchError):
    """Unpacking a variant's layers would pass the unpack limits (bytes or entries)."""


class CorruptLayer(MultiarchError):
    """A layer is not a valid tar archive (in its compression): bad header, truncated stream."""


class NotATestcontainer(UsageError):
    """``multiarch_testcontainer`` was given something that is not a testcontainers container."""


class TestcontainerAlreadyStarted(UsageError):
    """``multiarch_testcontainer`` was given a container that is already running."""

    __test__ = False  # pytest: not a test class despite the name


# -- the application checks (pytest_multiarch.checks) ---------------------------------------------


class CheckError(MultiarchError):
    """An application check failed; ``logs`` maps container names to their last log lines.

    Container logs, when there are any, ride along in :attr:`logs` and as exception notes.
    """

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


class MultiarchWarning(UserWarning):
    """Something asked for could not be honoured on this arch; the message says what instead."""
