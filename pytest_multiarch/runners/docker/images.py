"""The variant's image on the engine: pulled by digest if missing, and checked to be of the
platform asked for (local stores key by tag, not platform, so a digest of an index, or of
another variant, would silently run the wrong architecture).
"""

from __future__ import annotations

from typing import Any

import docker
import docker.errors

from pytest_multiarch.errors import (
    DigestMismatchError,
    MultiarchError,
    PlatformMismatchError,
    RunnerError,
)
from pytest_multiarch.platforms import Platform

__all__ = ["ensure_image"]


def ensure_image(
    client: docker.DockerClient, image: str, platform: Platform, *, target: str, podman: bool,
    managed_registries: bool,
) -> None:
    """Pull *image* (by digest) unless the engine at *target* has it; check its platform.

    *podman* and *managed_registries* (a podman service of ours, with its own registries.conf)
    say what the hint of a refused plain-HTTP pull is.
    """
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            _pull(client, image, platform)
            found = client.images.get(image)
        except docker.errors.APIError as exc:
            raise _pull_refused(exc, image, platform, target, podman=podman,
                                managed_registries=managed_registries) from exc
    _check_platform(found.attrs, image, platform)


def _pull(client: docker.DockerClient, image: str, platform: Platform) -> None:
    """Pull by digest; an error the engine reports inside the progress stream (podman
    reports them all there; the SDK's images.pull() drops them) raises APIError."""
    repository, digest = image.rsplit("@", 1)
    for event in client.api.pull(repository, tag=digest, platform=platform.engine_platform,
                                 stream=True, decode=True):
        error = event.get("error") if isinstance(event, dict) else None
        if error:
            raise docker.errors.APIError(str(error), explanation=str(error))


def _pull_refused(
    exc: docker.errors.APIError, image: str, platform: Platform, target: str, *, podman: bool,
    managed_registries: bool,
) -> MultiarchError:
    if "filesystem layer verification failed" in str(exc.explanation or exc):
        # the same corrupt blob the static checks report: one failure class for it
        return DigestMismatchError(
            f"{target} refused a layer of {image} for {platform}: "
            f"{exc.explanation or exc}. A blob in the registry does not hash to "
            "its digest: push the image again."
        )
    registry = image.split("/", 1)[0]
    insecure = (
        "this podman service was started by pytest-multiarch with loopback and "
        "--multiarch-insecure-registry hosts marked insecure; another plain-HTTP "
        "registry needs --multiarch-insecure-registry=HOST."
        if podman and managed_registries else
        f"podman needs every plain-HTTP registry, loopback too, marked insecure: "
        f'[[registry]] location="{registry}" insecure=true in a file under '
        "/etc/containers/registries.conf.d/ on the engine's host."
        if podman else
        "plain HTTP registries other than 127.0.0.0/8 need insecure-registries in "
        "its daemon.json."
    )
    return RunnerError(
        f"engine {target} could not pull {image} for {platform}: "
        f"{exc.explanation or exc}. The engine pulls by itself, so the registry must "
        "be reachable from it (a remote host's 127.0.0.1 is its own loopback); "
        + insecure
    )


def _check_platform(attrs: dict[str, Any], image: str, platform: Platform) -> None:
    actual = Platform.from_parts(
        str(attrs.get("Os") or "linux"), str(attrs.get("Architecture") or ""),
        str(attrs.get("Variant") or ""),
    )
    # Docker 20.10 may store a level variant (v8.2) or drop it: the arch is what it checks.
    if actual.match_rank(platform) is None and platform.match_rank(actual) is None and not (
        actual.os == platform.os and actual.architecture == platform.architecture
        and not attrs.get("Variant")
    ):
        raise PlatformMismatchError(
            f"the engine's copy of {image} is {actual}, not {platform}: the digest names "
            f"another variant (or an index whose {actual} variant was pulled). Run the "
            f"{platform} variant by its own manifest digest (the {platform} entry of the "
            "index), not the index digest or a tag."
        )
