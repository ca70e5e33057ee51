"""From an image reference and a :class:`Platform` to the one variant to test, by digest.

Tests must run ``repo@sha256:<variant>``, never the tag: local stores key images by tag, not by
platform, so a tag run after another platform's pull silently tests the wrong variant.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from pytest_multiarch.errors import (
    InvalidManifestError,
    PlatformMismatchError,
    PlatformNotInIndex,
    UnknownPlatformError,
)
from pytest_multiarch.oci.content import Descriptor, ImageRef, ImageSource, Manifest, load_json
from pytest_multiarch.oci.layout import PREFIX, LayoutReference, OciLayout
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.registry import RegistryClient
from pytest_multiarch.platforms import Platform

ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
DEFAULT_PLATFORM = Platform("linux", "amd64")

R = TypeVar("R", bound=ImageRef)


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """One platform's variant of an image, pinned by digest."""

    reference: str  # the image as given
    index_digest: str | None  # None when the reference names a single-platform manifest
    digest: str  # the variant's manifest digest
    platform: Platform  # as its index entry says (for a single manifest: as its config says)
    config: Mapping[str, Any]
    config_digest: str
    layers: tuple[Descriptor, ...]
    pinned: str  # repo@sha256:<variant digest>: what to run

    @property
    def config_platform(self) -> Platform | None:
        """The platform the image config claims, or ``None`` if it names no architecture."""
        return _config_platform(self.config)


def platform_of(entry: Descriptor) -> Platform:
    """The normalized platform of an index entry; an entry without one is linux/amd64."""
    if entry.platform is None:
        return DEFAULT_PLATFORM
    return _normalized(
        str(entry.platform.get("os", "")),
        str(entry.platform.get("architecture", "")),
        str(entry.platform.get("variant", "")),
    )


def is_attestation(entry: Descriptor) -> bool:
    """BuildKit's provenance/SBOM entries: ``unknown/unknown`` or annotated as attestations."""
    if entry.annotations.get(ATTESTATION_ANNOTATION) == "attestation-manifest":
        return True
    plat = entry.platform or {}
    return plat.get("os") == "unknown" or plat.get("architecture") == "unknown"


def list_platforms(
    source: ImageSource[R], ref: R, *, manifest: Manifest | None = None
) -> list[Platform]:
    """The platforms an image offers (attestations left out), in index order.

    Pass *manifest* (from ``source.get_manifest(ref)``) to avoid fetching it again.
    """
    top = manifest or source.get_manifest(ref)
    if not top.is_index:
        config = _load_config(source, ref.with_digest(top.digest), top, ref)
        plat = _config_platform(config)
        return [plat] if plat is not None else []
    found: list[Platform] = []
    for entry in top.manifests:
        plat = platform_of(entry)
        if not is_attestation(entry) and plat not in found:
            found.append(plat)
    return found


def resolve(
    source: ImageSource[R], ref: R, platform: Platform, *, manifest: Manifest | None = None
) -> ResolvedImage:
    """Pick *platform*'s variant of *ref* and load its manifest and config.

    Matching normalizes both sides (``arm64/v8`` is ``arm64``; an ``arm`` entry without a variant
    is arm/v7; arm/v6 matches only when asked for).  Raises :class:`PlatformNotInIndex` when no
    entry matches.  Pass *manifest* to resolve several platforms from one fetch of the index.
    """
    top = manifest or source.get_manifest(ref)
    if not top.is_index:
        variant_ref = ref.with_digest(top.digest)
        config = _load_config(source, variant_ref, top, ref)
        found = _config_platform(config)
        if found is None or not found.satisfies(platform):
            raise PlatformNotInIndex(
                f"no {platform} in {ref} ({top.digest}): it is a single-platform image, not an "
                f"index, and its config says {found or 'no architecture'}; push a multi-arch "
                f"index that includes {platform}"
            )
        return _resolved(ref, None, variant_ref, top, found, config)

    candidates = [e for e in top.manifests if not is_attestation(e)]
    entry = next((e for e in candidates if platform_of(e).satisfies(platform)), None)
    if entry is None:
        have = ", ".join(dict.fromkeys(str(platform_of(e)) for e in candidates)) or "nothing"
        raise PlatformNotInIndex(
            f"no {platform} in index {ref} ({top.digest}); it has {have} — build and push a "
            f"{platform} variant, or leave {platform.arch_name} out of the requested platforms"
        )
    variant_ref = ref.with_digest(entry.digest)
    child = source.get_manifest(variant_ref)
    if child.is_index:
        raise InvalidManifestError(
            f"index entry of {ref} for {platform} ({entry.digest}) is itself an index; nested "
            "indexes are not supported"
        )
    config = _load_config(source, variant_ref, child, ref)
    return _resolved(ref, top.digest, variant_ref, child, platform_of(entry), config)


def check_config_platform(resolved: ResolvedImage) -> None:
    """Raise :class:`PlatformMismatchError` if the variant's config names another platform."""
    found = resolved.config_platform
    if found is not None and found.satisfies(resolved.platform):
        return
    raise PlatformMismatchError(
        f"index entry of {resolved.reference} for {resolved.platform} points at "
        f"{resolved.digest} whose config says {found or 'no architecture'}; the variant was "
        f"built for the wrong platform — rebuild it with --platform {resolved.platform} "
        "and recreate the index"
    )


class OpenedSource(NamedTuple):
    """An image source and the reference to ask it for."""

    source: ImageSource[Any]
    ref: ImageRef


def open_source(
    text: str,
    *,
    client: RegistryClient | None = None,
    insecure_registries: Iterable[str] = (),
    ca_bundle: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> OpenedSource:
    """``oci:DIR[:TAG]`` opens an OCI layout; anything else is a registry reference.

    Registry references use *client*, or a new :class:`RegistryClient` built from the options.
    """
    if text.startswith(PREFIX):
        return OpenedSource(OciLayout(), LayoutReference.parse(text))
    ref = Reference.parse(text)
    if client is None:
        client = RegistryClient(
            insecure_registries=insecure_registries, ca_bundle=ca_bundle, cache_dir=cache_dir
        )
    return OpenedSource(client, ref)


# -- helpers ------------------------------------------------------------------------------------


def _normalized(os_name: str, arch: str, variant: str) -> Platform:
    try:
        return Platform.from_parts(os_name or "linux", arch, variant)
    except UnknownPlatformError:
        # Keep what the image says (mips64, wasm …) so messages can show it; it matches nothing.
        return Platform(os_name or "linux", arch or "?", variant)


def _config_platform(config: Mapping[str, Any]) -> Platform | None:
    arch = config.get("architecture")
    if not isinstance(arch, str) or not arch:
        return None
    return _normalized(str(config.get("os") or ""), arch, str(config.get("variant") or ""))


def _load_config(
    source: ImageSource[R], variant_ref: R, manifest: Manifest, ref: ImageRef
) -> Mapping[str, Any]:
    raw = source.get_blob(variant_ref, manifest.config)
    config = load_json(raw, what=f"config {manifest.config.digest} of {ref}",
                       expected="an image config")
    if not isinstance(config, dict):
        raise InvalidManifestError(f"config {manifest.config.digest} of {ref} is not an object")
    return config


def _resolved(
    ref: ImageRef, index_digest: str | None, variant_ref: ImageRef, manifest: Manifest,
    platform: Platform, config: Mapping[str, Any],
) -> ResolvedImage:
    return ResolvedImage(
        reference=str(ref),
        index_digest=index_digest,
        digest=manifest.digest,
        platform=platform,
        config=config,
        config_digest=manifest.config.digest,
        layers=manifest.layers,
        pinned=variant_ref.pinned,
    )
