"""One image, N variants, one truth: index hygiene, attachments and package skew per session.

The fifth family of gate checks (``index``, ``attestations``, ``packages``) and the functions the
fixtures hand out.  What they compute is kept per session (index problems, what is attached to
each variant, each variant's packages) so the checks, the report and the baseline share one read.
No pytest here.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_multiarch.errors import (
    AttestationCheckFailed,
    IndexHygieneFailed,
    MultiarchError,
    PackageSkewFailed,
)
from pytest_multiarch.oci.resolve import is_attestation, platform_of
from pytest_multiarch.platforms import Platform
from pytest_multiarch.session import images

if TYPE_CHECKING:
    from pytest_multiarch.audit.packages import Skew, VariantPackages
    from pytest_multiarch.oci.attestations import Attached
    from pytest_multiarch.oci.hygiene import Problem
    from pytest_multiarch.session.state import State

CHECKS = ("index", "attestations", "packages")


@dataclass(eq=False)
class _Seen:
    problems: dict[str, list[Problem]] = field(default_factory=dict)
    attached: dict[tuple[str, str], Attached] = field(default_factory=dict)
    packages: dict[tuple[str, str], VariantPackages] = field(default_factory=dict)


_SEEN: weakref.WeakKeyDictionary[State, _Seen] = weakref.WeakKeyDictionary()


def _seen(state: State) -> _Seen:
    if state not in _SEEN:
        _SEEN[state] = _Seen()
    return _SEEN[state]


# -- index hygiene -------------------------------------------------------------------------------


def index_problems(state: State, text: str) -> list[Problem]:
    """Every hygiene problem of *text*'s index (``--multiarch-expect-platforms`` included)."""
    from pytest_multiarch.oci.hygiene import check_index

    seen = _seen(state)
    if text not in seen.problems:
        expect = state.cfg.expect_platforms
        seen.problems[text] = check_index(images.top_manifest(state, text), text, expect=expect)
    return seen.problems[text]


def gate_index(state: State, text: str, plat: Platform) -> str:
    """The index lists *plat* once, under its own digest, and nothing in it is broken."""
    mine = [p for p in index_problems(state, text) if p.platform in ("", str(plat))]
    failing = [p for p in mine if p.fatal]
    if failing:
        raise IndexHygieneFailed(_paragraph(f"index check of {text} for {plat}", failing))
    return images.resolve_variant(state, text, plat).digest


# -- attachments ---------------------------------------------------------------------------------


def attached(state: State, text: str, plat: Platform) -> Attached:
    """What is attached to *text*'s *plat* variant (buildx attestations, OCI referrers)."""
    from pytest_multiarch.oci.attestations import attachments
    from pytest_multiarch.oci.registry import RegistryClient

    key = (text, plat.arch_name)
    seen = _seen(state)
    if key not in seen.attached:
        resolved = images.resolve_variant(state, text, plat)
        source, ref = images.opened(state, text)
        top = images.top_manifest(state, text)
        others = {e.digest: str(platform_of(e)) for e in top.manifests
                  if not is_attestation(e) and e.digest != resolved.digest}
        referrers = None
        if isinstance(source, RegistryClient):
            client = source

            def referrers(digest: str) -> tuple[bytes, str] | None:
                return client.get_referrers(ref, digest)  # type: ignore[arg-type]

        seen.attached[key] = attachments(
            source, ref, top, platform=str(plat), digest=resolved.digest, others=others,
            referrers=referrers, require=state.cfg.require_attestations)
    return seen.attached[key]


def gate_attestations(state: State, text: str, plat: Platform) -> str:
    """Every statement attached to *plat*'s variant is about it; required kinds are there."""
    found = attached(state, text, plat)
    failing = [p for p in found.problems if p.fatal]
    if failing:
        raise AttestationCheckFailed(_paragraph(
            f"attestations of the {plat} variant of {text} (attached: {found.describe()})",
            failing))
    return found.digest


# -- packages ------------------------------------------------------------------------------------


def packages_of(state: State, text: str, plat: Platform) -> VariantPackages:
    """*text*'s *plat* variant's packages, from the layer summaries the audit caches (the
    package databases are read while the audit streams a layer: no second download)."""
    from pytest_multiarch.audit.layerscan import scan_layers
    from pytest_multiarch.audit.packages import variant_packages

    key = (text, plat.arch_name)
    seen = _seen(state)
    if key not in seen.packages:
        resolved = images.resolve_variant(state, text, plat)
        source, ref = images.opened(state, text)
        variant_ref = ref.with_digest(resolved.digest)
        layers = [(layer.digest, layer.media_type,
                   _opener(source, variant_ref, layer)) for layer in resolved.layers]
        summaries = scan_layers(layers, cache_dir=state.cache_subdir("audit"))
        info = plat.info
        native = (info.dpkg, info.uname, info.arch, f"{info.arch}{info.variant}")
        seen.packages[key] = variant_packages(summaries, native)
    return seen.packages[key]


def _opener(source: Any, ref: Any, layer: Any) -> Any:
    return lambda: source.open_blob(ref, layer)


def package_skew(
    state: State, text: str, archs: tuple[Platform, ...] | None = None,
    allow: tuple[str, ...] = (),
) -> list[Skew]:
    """Packages whose version differs between *text*'s variants for *archs* (default: the
    session's archs that the index has)."""
    from pytest_multiarch.audit.packages import compare_variants

    per_arch: dict[str, VariantPackages] = {}
    for plat in archs or state.archs:
        try:
            per_arch[plat.arch_name] = packages_of(state, text, plat)
        except MultiarchError:
            continue  # not in the index, nested, unreadable: that variant's own checks say so
    return compare_variants(per_arch, allow=(*state.cfg.allow_packages, *allow))


def gate_packages(
    state: State, text: str, plat: Platform, allow: tuple[str, ...] = ()
) -> str:
    """*plat*'s variant carries the package versions the other variants carry, its package
    databases are readable, and its SBOMs agree with them (*allow*: more name globs)."""
    mine = packages_of(state, text, plat)
    lines = [f"unreadable package database {p}: a broken or truncated database hides what is "
             "installed — rebuild the layer" for p in mine.problems]
    for skew in package_skew(state, text, allow=allow):
        if skew.failing and _odd_one(skew, plat.arch_name):
            lines.append(f"package {skew.describe()}; rebuild the variants from the same base "
                         "image digest and package snapshot, or allow it with "
                         f"--multiarch-allow-package={skew.name}")
    lines += sbom_disagreements(state, text, plat)
    if lines:
        raise PackageSkewFailed(f"packages of the {plat} variant of {text}:\n  " +
                                "\n  ".join(lines))
    return images.resolve_variant(state, text, plat).digest


def _odd_one(skew: Skew, arch: str) -> bool:
    """Whether *arch* is on the wrong side of *skew*: not with a strict majority of archs."""
    counts = Counter(skew.versions.values())
    top, number = counts.most_common(1)[0]
    if number * 2 <= len(skew.versions):
        return True  # no majority: every arch is a suspect
    return skew.versions.get(arch) != top


def sbom_disagreements(state: State, text: str, plat: Platform) -> list[str]:
    """Where *plat*'s SBOMs and its package databases disagree on a package's version."""
    try:
        found = attached(state, text, plat)
    except MultiarchError:
        return []
    installed = packages_of(state, text, plat).versions
    lines: list[str] = []
    for statement in found.statements:
        for name, version in sorted(statement.sbom_packages.items()):
            have = installed.get(name)
            if have is not None and have != version:
                lines.append(f"the SBOM ({statement.sbom_format}, {statement.where}) says "
                             f"{name} {version}, the filesystem has {have}: the SBOM was made "
                             "from another build — regenerate it with the image")
    return lines


# -- from Python: the multiarch_variants fixture -------------------------------------------------


@dataclass(frozen=True, slots=True)
class VariantChecks:
    """The fifth family from a test: ``multiarch_variants.check(ref)`` runs the index,
    attestations and packages checks on every requested arch and raises one error naming
    every failure; the other methods return what the checks look at."""

    state: State
    allow_packages: tuple[str, ...] = ()

    def index_problems(self, ref: str) -> list[Problem]:
        return index_problems(self.state, ref)

    def attached(self, ref: str, arch: Platform | str) -> Attached:
        return attached(self.state, ref, _platform(arch))

    def packages(self, ref: str, arch: Platform | str) -> VariantPackages:
        return packages_of(self.state, ref, _platform(arch))

    def package_skew(self, ref: str) -> list[Skew]:
        return package_skew(self.state, ref, allow=self.allow_packages)

    def check(self, ref: str) -> None:
        failures: list[str] = []
        for plat in self.state.archs:
            for run in (gate_index, gate_attestations):
                try:
                    run(self.state, ref, plat)
                except MultiarchError as exc:
                    failures.append(str(exc))
            try:
                gate_packages(self.state, ref, plat, self.allow_packages)
            except MultiarchError as exc:
                failures.append(str(exc))
        if failures:
            raise MultiarchError("\n".join(failures))


def _platform(arch: Platform | str) -> Platform:
    return arch if isinstance(arch, Platform) else Platform.parse(arch)


# -- for the report and the baseline -------------------------------------------------------------


def facts(state: State, text: str, plat: Platform) -> dict[str, Any]:
    """What the report shows for one variant: what is attached, packages that differ."""
    out: dict[str, Any] = {}
    key = (text, plat.arch_name)
    seen = _seen(state)
    if key in seen.attached:
        out["attached"] = seen.attached[key].describe()
        out["attachments"] = seen.attached[key].to_json()
    if key in seen.packages:
        out["packages"] = len(seen.packages[key].packages)
        out["package_versions"] = seen.packages[key].versions  # for the baseline, via xdist
        try:  # a side note for the report: the check itself reports what went wrong
            skews = package_skew(state, text)
        except MultiarchError:
            skews = []
        out["packages_differing"] = {s.name: s.versions.get(plat.arch_name)
                                     for s in skews if not s.by_nature}
    return out


def _paragraph(title: str, problems: list[Problem]) -> str:
    return f"{title}: {len(problems)} problem(s)\n  " + "\n  ".join(p.message for p in problems)
