"""What the static audit has to say: severities, kinds of finding, findings.

The layer scan, the filesystem model and the verdicts all report in these terms, so they sit below
all three (:mod:`pytest_multiarch.audit.verdicts` re-exports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Finding", "Kind", "Severity", "short_digest"]


class Severity(StrEnum):
    """How much a finding weighs: only ``fail`` makes :attr:`AuditResult.ok` false."""

    FAIL = "fail"  # the image would not work on the variant's platform
    WARN = "warn"  # suspicious, worth a look, not failing
    INFO = "info"  # recorded for the report (an allowlisted foreign binary …)


class Kind(StrEnum):
    """What a finding is about; stable names for reports, baselines and tests."""

    ENTRYPOINT_FOREIGN = "entrypoint-foreign-arch"
    ENTRYPOINT_MISSING = "entrypoint-missing"
    ENTRYPOINT_NOT_EXECUTABLE = "entrypoint-not-executable"
    NO_ENTRYPOINT = "no-entrypoint"
    CONFIG_MISMATCH = "config-platform-mismatch"
    SYMLINK_LOOP = "symlink-loop"
    INTERPRETER_LOOP = "interpreter-loop"
    LOADER_MISSING = "loader-missing"
    INVALID_ELF = "invalid-elf"
    FOREIGN_ELF = "foreign-elf"
    FOREIGN_ELF_ALLOWED = "foreign-elf-allowed"
    HOST_NATIVE_ONLY = "host-native-only"
    ARM_SOFT_FLOAT = "arm-soft-float"
    ARM_HARD_FLOAT = "arm-hard-float"
    CPU_LEVEL = "cpu-level-above-platform"
    UNSAFE_PATH = "unsafe-path"
    HARDLINK_MISSING = "hardlink-missing"
    ZERO_BYTE_LAYER = "zero-byte-layer"
    TRUNCATED_STREAM = "truncated-stream"
    CORRUPT_STREAM = "corrupt-stream"
    CORRUPT_TAR = "corrupt-tar"
    MEDIA_TYPE_MISMATCH = "media-type-mismatch"
    DIGEST_MISMATCH = "digest-mismatch"
    LAYER_UNREADABLE = "layer-unreadable"
    NOT_AUDITED = "not-audited"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the audit has to say; ``path`` is a path in the image, ``layer`` a digest."""

    kind: Kind
    severity: Severity
    message: str
    path: str = ""
    layer: str = ""

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "severity": self.severity.value, "message": self.message,
                "path": self.path, "layer": self.layer}

    @classmethod
    def from_json(cls, obj: Mapping[str, str]) -> Finding:
        return cls(Kind(obj["kind"]), Severity(obj["severity"]), str(obj["message"]),
                   str(obj.get("path", "")), str(obj.get("layer", "")))

    def __str__(self) -> str:
        return f"{self.severity.value.upper()} {self.kind.value}: {self.message}"


def short_digest(digest: str) -> str:
    """``sha256:`` and the first 12 hex digits: how messages name a layer."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest
