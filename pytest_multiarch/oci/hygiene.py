"""Index hygiene: what is wrong with an image index as a whole, before any variant is read.

An index is assembled from builds that ran at different times: it can list one platform twice
(engines silently take the first entry), one manifest under several platforms, entries no engine
can pull, nested indexes, and buildx attestation entries for a digest it no longer holds.  Each of
those is a :class:`Problem` naming the index, the entries and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pytest_multiarch.oci.content import INDEX_TYPES, MANIFEST_TYPES, Descriptor, Manifest
from pytest_multiarch.oci.resolve import ATTESTATION_ANNOTATION, is_attestation, platform_of
from pytest_multiarch.platforms import Platform

__all__ = ["REFERENCE_DIGEST", "Problem", "check_index"]

#: buildx: the digest of the image manifest an attestation entry describes.
REFERENCE_DIGEST = "vnd.docker.reference.digest"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about an index; ``platform`` is empty for the index as a whole."""

    kind: str
    message: str
    platform: str = ""
    fatal: bool = True

    def __str__(self) -> str:
        return f"{'FAIL' if self.fatal else 'INFO'} {self.kind}: {self.message}"


def _short(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}"


def check_index(
    index: Manifest, ref: str, *, expect: Sequence[Platform] | None = None
) -> list[Problem]:
    """Every hygiene problem of *index* (named *ref* in messages).

    *expect*: the platforms the index must list, exactly (``--multiarch-expect-platforms``);
    ``None`` checks nothing about which platforms there are.
    """
    where = f"index {ref} ({_short(index.digest)})"
    if not index.is_index:
        if expect is not None and len(expect) > 1:
            return [Problem("not-an-index", f"{ref} ({_short(index.digest)}) is a single-platform "
                            f"manifest, but {len(expect)} platforms are expected "
                            f"({', '.join(map(str, expect))}); push a multi-arch index")]
        return []
    entries = index.manifests
    images = [(n, e) for n, e in enumerate(entries) if not is_attestation(e)]
    problems = [*_media_types(where, entries), *_duplicates(where, images),
                *_shared_digests(where, images), *_attestations(where, entries, images)]
    if expect is not None:
        problems.extend(_expected(where, images, expect))
    return problems


def _media_types(where: str, entries: Iterable[Descriptor]) -> list[Problem]:
    found: list[Problem] = []
    for n, entry in enumerate(entries):
        plat = "" if is_attestation(entry) else str(platform_of(entry))
        name = f"entry {n} ({plat or 'attestation'}, {_short(entry.digest)})"
        if entry.media_type in INDEX_TYPES:
            found.append(Problem(
                "nested-index", f"{where}: {name} is itself an index ({entry.media_type}); "
                "refused, not followed: engines and this plugin resolve one level only, so "
                f"{plat or 'it'} cannot be pulled by platform — flatten it into the top index",
                plat))
        elif entry.media_type not in MANIFEST_TYPES:
            found.append(Problem(
                "unreadable-media-type", f"{where}: {name} has media type "
                f"{entry.media_type or '(none)'!r}, which is neither an image manifest nor an "
                f"index ({', '.join(MANIFEST_TYPES + INDEX_TYPES)}); engines skip or refuse it "
                "— push the entry with a standard media type"))  # the index is broken for all
    return found


def _duplicates(where: str, images: list[tuple[int, Descriptor]]) -> list[Problem]:
    by_platform: dict[Platform, list[tuple[int, Descriptor]]] = {}
    for n, entry in images:
        by_platform.setdefault(platform_of(entry), []).append((n, entry))
    found: list[Problem] = []
    for plat, group in by_platform.items():
        if len(group) < 2:
            continue
        listed = ", ".join(f"entry {n} {e.digest}" for n, e in group)
        first = group[0][1].digest
        found.append(Problem(
            "duplicate-platform", f"{where} lists {plat} {len(group)} times ({listed}): "
            f"ambiguous — Docker and containerd take the first, {first}, and never test or "
            "run the other; remove the stale entry and push the index again", str(plat)))
    return found


def _shared_digests(where: str, images: list[tuple[int, Descriptor]]) -> list[Problem]:
    by_digest: dict[str, list[Platform]] = {}
    for _, entry in images:
        plats = by_digest.setdefault(entry.digest, [])
        if platform_of(entry) not in plats:
            plats.append(platform_of(entry))
    return [
        Problem("shared-digest", f"{where}: one manifest {digest} is listed under "
                f"{len(plats)} platforms ({', '.join(map(str, plats))}); one image cannot be "
                "built for all of them — one of them is mislabeled (see the config check) or a "
                "build step copied the wrong digest; rebuild each platform")
        for digest, plats in by_digest.items() if len(plats) > 1
    ]


def _attestations(
    where: str, entries: Sequence[Descriptor], images: list[tuple[int, Descriptor]]
) -> list[Problem]:
    held = {e.digest: platform_of(e) for _, e in images}
    found: list[Problem] = []
    for n, entry in enumerate(entries):
        if entry.annotations.get(ATTESTATION_ANNOTATION) != "attestation-manifest":
            continue
        target = entry.annotations.get(REFERENCE_DIGEST, "")
        if target in held:
            continue
        what = (f"names {target}, which the index does not hold" if target else
                f"has no {REFERENCE_DIGEST} annotation")
        found.append(Problem(
            "dangling-attestation", f"{where}: attestation entry {n} ({_short(entry.digest)}) "
            f"{what}: it attests an image this index no longer serves (a variant was rebuilt "
            "or dropped after the attestation was made); rebuild with `docker buildx build "
            "--provenance/--sbom` so each attestation matches its variant, or drop it"))
    return found


def _expected(
    where: str, images: list[tuple[int, Descriptor]], expect: Sequence[Platform]
) -> list[Problem]:
    listed = list(dict.fromkeys(platform_of(e) for _, e in images))
    found: list[Problem] = []
    for plat in listed:
        if plat not in expect:
            found.append(Problem(
                "unexpected-platform", f"{where} lists {plat}, which is not in the expected "
                f"platforms ({', '.join(map(str, expect))}); remove it from the index or add it "
                "to --multiarch-expect-platforms"))
    for want in expect:
        if want not in listed:
            found.append(Problem(
                "missing-platform", f"{where} has no {want} variant, which is expected (it "
                f"lists {', '.join(map(str, listed)) or 'nothing'}); build and push {want}"))
    return found
