"""Static audit of one variant's layers: predict "exec format error" before running anything.

The layers are scanned by :mod:`~pytest_multiarch.audit.layerscan` (streamed once, never extracted,
summaries cached by digest), their summaries applied in order to the filesystem model of
:mod:`~pytest_multiarch.audit.imagefs`, and the rules of :mod:`~pytest_multiarch.audit.rules` judge
that model: the entrypoint (through PATH, symlinks and ``#!`` interpreters) must be an ELF binary
of the variant's architecture whose loader exists, and other foreign binaries are listed unless
allowlisted.

This module is the public face of the audit: :func:`audit_variant` and :class:`AuditResult`, and
the value types and scan functions of the modules below, re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_multiarch.audit.findings import Finding, Kind, Severity, short_digest
from pytest_multiarch.audit.imagefs import Filesystem
from pytest_multiarch.audit.layerscan import (
    Layer,
    LayerSummary,
    Opener,
    default_cache_dir,
    media_type_findings,
    scan_layer,
    scan_layers,
)
from pytest_multiarch.audit.rules import VariantRules
from pytest_multiarch.platforms import Platform

__all__ = [
    "AuditResult",
    "Finding",
    "Kind",
    "Layer",
    "LayerSummary",
    "Severity",
    "audit_variant",
    "default_cache_dir",
    "scan_layer",
    "scan_layers",
]


@dataclass(frozen=True, slots=True)
class AuditResult:
    """The verdict on one variant.  ``ok`` unless a finding has severity ``fail``."""

    image: str
    platform: Platform
    findings: tuple[Finding, ...]
    #: ELF files of the final filesystem by architecture (``arm64``, ``arm/v6``, ``invalid`` …).
    elf_counts: Mapping[str, int] = field(default_factory=dict, hash=False)
    #: The paths the kernel would execute, in order: entrypoint, then #! interpreters.
    exec_chain: tuple[str, ...] = ()
    layers_scanned: int = 0
    layers_cached: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.FAIL)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARN)

    def format(self, *, limit: int = 10) -> str:
        """A report paragraph: the verdict, ELF counts, findings grouped by kind."""
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.elf_counts.items())) or "none"
        count = len(self.failures)
        verdict = "ok" if self.ok else f"FAILED ({count} failing finding{'s' * (count != 1)})"
        lines = [f"{self.platform} variant of {self.image}: {verdict}; ELF files: {counts}"]
        groups: dict[tuple[Severity, Kind], list[Finding]] = {}
        for finding in self.findings:
            groups.setdefault((finding.severity, finding.kind), []).append(finding)
        order = {Severity.FAIL: 0, Severity.WARN: 1, Severity.INFO: 2}
        for (severity, kind), group in sorted(groups.items(), key=lambda g: order[g[0][0]]):
            lines.append(f"  {severity.value.upper()} {kind.value}: {group[0].message}")
            if len(group) > 1:
                paths = [f.path for f in group[1:limit] if f.path]
                more = len(group) - 1 - len(paths)
                tail = f" … and {more} more" if more > 0 else ""
                lines.append(f"    also: {', '.join(paths)}{tail}")
        return "\n".join(lines)


def audit_variant(
    image_name: str,
    platform: Platform,
    config: Mapping[str, Any],
    layers: Iterable[Layer | tuple[str, str, Opener]],
    *,
    host: Platform,
    allow: Iterable[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> AuditResult:
    """Audit one variant: *image_name* as it should appear in messages (``repo@sha256:…``),
    its *platform*, its image *config* (the whole config blob or just its ``config`` object),
    its *layers* in order, and the *host* the tests run on (for the host-native-only verdict).

    *allow* holds glob patterns (``fnmatch``; ``*`` also matches ``/``) of absolute paths in the
    image whose foreign architecture is intended.  Bad layer content gives findings, not errors.
    """
    ordered = [Layer(*item) for item in layers]
    summaries = scan_layers(ordered, cache_dir=cache_dir, workers=workers)
    cached = sum(s.from_cache for s in summaries)
    if platform.os != "linux":
        note = Finding(Kind.NOT_AUDITED, Severity.INFO,
                       f"{platform} variant of {image_name}: only linux variants are audited")
        return AuditResult(image_name, platform, (note,), {}, (), len(summaries) - cached, cached)
    fs = Filesystem()
    findings: list[Finding] = []
    layer_types = {layer.digest: layer.media_type for layer in ordered}
    unread: list[str] = []  # layers not read to their end: the filesystem model lacks their part
    for summary in summaries:
        findings.extend(summary.findings)
        findings.extend(media_type_findings(summary, layer_types.get(summary.digest, "")))
        if any(f.kind in _UNREAD for f in summary.findings):
            unread.append(short_digest(summary.digest))
        fs.apply(summary)
    findings.extend(fs.findings)
    verdict = VariantRules(image_name, platform, config, fs, host, tuple(allow), tuple(unread))
    findings.extend(verdict.run())
    return AuditResult(image_name, platform, tuple(findings), dict(verdict.elf_counts),
                       tuple(verdict.exec_chain), len(summaries) - cached, cached)


#: Layer findings after which the filesystem model lacks part of that layer.
_UNREAD = frozenset((Kind.DIGEST_MISMATCH, Kind.LAYER_UNREADABLE, Kind.ZERO_BYTE_LAYER,
                     Kind.TRUNCATED_STREAM, Kind.CORRUPT_STREAM, Kind.CORRUPT_TAR))
