"""The unpacked trees of the rootfs runner: one per variant digest in ``CACHE/rootfs/<hex>``.

A tree is unpacked (:mod:`.unpack`: whiteouts, nothing escapes the directory) into a temporary
directory and renamed into place, so a cached tree is always complete; several xdist workers
wanting the same tree wait for the one that unpacks it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_multiarch._fs import cache_root
from pytest_multiarch.errors import PlatformMismatchError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import require_digest
from pytest_multiarch.runners.rootfs.unpack import UnpackLimits, remove_tree, unpack_layers

__all__ = ["Rootfs", "default_cache_dir", "prepare"]


@dataclass(frozen=True, slots=True)
class Rootfs:
    """An unpacked variant: its directory, its image config and its digest."""

    path: Path
    config: Mapping[str, Any]
    digest: str
    platform: Platform

    @property
    def container_config(self) -> Mapping[str, Any]:
        """The image config's ``config`` object (Env, Entrypoint, Cmd, WorkingDir …)."""
        value = self.config.get("config") or {}
        return value if isinstance(value, Mapping) else {}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-multiarch/rootfs`` (read per call, never at import)."""
    return cache_root("rootfs")


def prepare(
    image: str, platform: Platform, *, cache_dir: Path, registry: Any, limits: UnpackLimits
) -> Rootfs:
    """The unpacked tree of *image*'s *platform* variant in *cache_dir*, from the cache or
    unpacked now (its layers read through *registry*, or the OCI layout *image* names)."""
    require_digest(image)
    digest = image.rsplit("@", 1)[1]
    cached = _cached(cache_dir, digest, platform)
    if cached is not None:
        return cached
    from pytest_multiarch.oci.resolve import open_source, resolve

    source, ref = open_source(image, client=registry)
    resolved = resolve(source, ref, platform)
    found = resolved.config_platform
    if found is not None and found.match_rank(platform) is None:
        raise PlatformMismatchError(
            f"{image} is {found}, not {platform}: pass the {platform} variant's digest"
        )
    cached = _cached(cache_dir, resolved.digest, platform)
    if cached is not None:
        return cached
    variant_ref = ref.with_digest(resolved.digest)
    final = _dir(cache_dir, resolved.digest)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _lock(cache_dir, resolved.digest):
        if not final.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=cache_dir))
            try:
                unpack_layers(
                    (source.open_blob(variant_ref, layer) for layer in resolved.layers),
                    tmp / "rootfs", limits=limits,
                    digests=[layer.digest for layer in resolved.layers],
                )
                meta = {"digest": resolved.digest, "platform": str(platform),
                        "config": dict(resolved.config), "image": image}
                (tmp / "image.json").write_text(json.dumps(meta))
                os.rename(tmp, final)
            finally:
                if tmp.exists():
                    remove_tree(tmp)
    cached = _cached(cache_dir, resolved.digest, platform)
    assert cached is not None
    return cached


def _dir(cache_dir: Path, digest: str) -> Path:
    return cache_dir / digest.replace(":", "-")


@contextlib.contextmanager
def _lock(cache_dir: Path, digest: str) -> Iterator[None]:
    # Several xdist workers may want the same tree: one unpacks, the others wait.
    with (cache_dir / f".{digest.replace(':', '-')}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached(cache_dir: Path, digest: str, platform: Platform) -> Rootfs | None:
    top = _dir(cache_dir, digest)
    try:
        meta = json.loads((top / "image.json").read_text())
    except (OSError, ValueError):
        return None
    found = Platform.parse(meta["platform"])
    if found != platform:
        raise PlatformMismatchError(
            f"{digest} is the {found} variant, not {platform}: pass the {platform} "
            "variant's digest"
        )
    return Rootfs(top / "rootfs", meta["config"], digest, found)
