"""Builders for the index tests: real Debian packages as variant layers, and a pusher that puts
blobs, manifests, indexes, buildx attestation manifests and OCI 1.1 referrers (tag fallback)
into one repository of the test bed's registry over the distribution API.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

if TYPE_CHECKING:  # the root conftest; imported for types only, as conftests shadow
    from conftest import Testbed

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
SLSA = "https://slsa.dev/provenance/v0.2"
SPDX = "https://spdx.dev/Document"
SIGSTORE = "application/vnd.dev.sigstore.bundle.v0.3+json"


# -- real Debian packages ------------------------------------------------------------------------


def _cache() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = root / "pytest-multiarch-tests" / "debs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _compare(a: str, b: str) -> int:
    if a == b:
        return 0
    lower = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode
    return -1 if lower == 0 else 1


@functools.cache
def libssl_versions() -> tuple[str, str]:
    """(older, newer): two libssl3 versions the archive has for both amd64 and arm64."""
    out = subprocess.run(["apt-cache", "madison", "libssl3:amd64", "libssl3:arm64"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    per_arch: dict[str, set[str]] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3:
            per_arch.setdefault(parts[2].split()[-2], set()).add(parts[1])
    common = sorted(per_arch.get("amd64", set()) & per_arch.get("arm64", set()),
                    key=functools.cmp_to_key(_compare))
    if not common:
        pytest.fail("apt-cache knows no libssl3 for both amd64 and arm64; run "
                    "scripts/provision-host (it adds the architectures and runs apt-get update)")
    if len(common) < 2:  # one suite only: the newer one is a local rebuild with a bumped version
        return common[0], common[0] + REBUILT
    return common[0], common[-1]


REBUILT = "+multiarch1"


def rebuilt(path: Path, version: str) -> Path:
    """*path* rebuilt (``dpkg-deb -R``, then ``-b``) with Version set to *version*."""
    out = path.with_name(path.name.replace(".deb", f"{REBUILT}.deb"))
    if out.exists():
        return out
    work = path.with_suffix(".rebuild")
    subprocess.run(["rm", "-rf", str(work)], check=True)
    subprocess.run(["dpkg-deb", "-R", str(path), str(work)], check=True)
    control = work / "DEBIAN" / "control"
    lines = [f"Version: {version}" if line.startswith("Version:") else line
             for line in control.read_text().splitlines()]
    control.write_text("\n".join(lines) + "\n")
    subprocess.run(["dpkg-deb", "-b", "-Zxz", str(work), str(out)], check=True,
                   capture_output=True)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return out


def deb(name: str, version: str | None, arch: str) -> Path:
    """The .deb of *name*=*version* for *arch*, downloaded once into the cache."""
    if version and version.endswith(REBUILT):
        return rebuilt(deb(name, version.removesuffix(REBUILT), arch), version)
    cache = _cache()
    spec = f"{name}:{arch}" + (f"={version}" if version else "")
    marker = cache / (spec.replace(":", "_").replace("=", "_").replace("~", "_") + ".path")
    if marker.exists() and Path(marker.read_text()).exists():
        return Path(marker.read_text())
    before = set(cache.glob("*.deb"))
    subprocess.run(["apt-get", "download", "-q", spec], cwd=cache, check=True,
                   capture_output=True, timeout=300)
    (new,) = set(cache.glob("*.deb")) - before or {
        p for p in cache.glob(f"{name}_*_{arch}.deb") if version is None or
        _field(p, "Version") == version}
    marker.write_text(str(new))
    return new


def _field(path: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(path), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def status_stanza(path: Path) -> bytes:
    """The dpkg status stanza dpkg itself writes for an installed *path*."""
    fields = subprocess.run(["dpkg-deb", "-f", str(path)], capture_output=True, text=True,
                            check=True).stdout
    head, _, rest = fields.partition("\n")
    return f"{head}\nStatus: install ok installed\n{rest}".rstrip("\n").encode() + b"\n\n"


def rootfs_layer(tmp: Path, debs: list[Path], *, status: bytes | None = None,
                 extra: dict[str, bytes] | None = None) -> bytes:
    """A gzip layer: the packages unpacked (``dpkg-deb -x``) plus their dpkg status."""
    root = tmp / uuid.uuid4().hex
    root.mkdir()
    for path in debs:
        subprocess.run(["dpkg-deb", "-x", str(path), str(root)], check=True)
    files = dict(extra or {})
    files["var/lib/dpkg/status"] = (status if status is not None
                                    else b"".join(status_stanza(p) for p in debs))
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name)
    return gzip.compress(raw.getvalue(), mtime=0)


# -- pushing -------------------------------------------------------------------------------------


class Pusher:
    """Blobs, manifests and tags into one repository of the test bed's registry."""

    def __init__(self, testbed: Testbed, name: str) -> None:
        self.url = f"http://{testbed.registry}"
        self.repo = f"scratch-index-{name}-{uuid.uuid4().hex[:8]}"
        self.registry = testbed.registry

    def ref(self, tag: str) -> str:
        return f"{self.registry}/{self.repo}:{tag}"

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = requests.post(f"{self.url}/v2/{self.repo}/blobs/uploads/", timeout=30)
        start.raise_for_status()
        location = start.headers["Location"]
        location = location if location.startswith("http") else self.url + location
        sep = "&" if "?" in location else "?"
        done = requests.put(f"{location}{sep}digest={digest}", data=data, timeout=300)
        done.raise_for_status()
        return {"digest": digest, "size": len(data)}

    def manifest(self, tag: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = json.dumps(body).encode()
        answer = requests.put(f"{self.url}/v2/{self.repo}/manifests/{tag}", data=raw,
                              headers={"Content-Type": body["mediaType"]}, timeout=30)
        answer.raise_for_status()
        return {"mediaType": body["mediaType"], "digest": "sha256:" +
                hashlib.sha256(raw).hexdigest(), "size": len(raw)}

    def image(self, tag: str, arch: str, layer: bytes) -> dict[str, Any]:
        config = {"architecture": arch, "os": "linux",
                  "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["true"]},
                  "rootfs": {"type": "layers", "diff_ids": []}}
        body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **self.blob(json.dumps(config).encode())},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            **self.blob(layer)}]}
        return {**self.manifest(tag, body), "platform": {"os": "linux", "architecture": arch}}

    def index(self, tag: str, entries: list[dict[str, Any]]) -> str:
        self.manifest(tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        return self.ref(tag)

    def attestation(self, tag: str, of: str, layers: list[tuple[str, bytes, str]]) -> dict:
        """A buildx attestation manifest for the variant *of*: layers (media, data, predicate)."""
        body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **self.blob(b"{}")},
                "layers": [{"mediaType": media, **self.blob(data),
                            "annotations": {"in-toto.io/predicate-type": predicate}}
                           for media, data, predicate in layers]}
        return {**self.manifest(tag, body), "platform": {"os": "unknown",
                                                         "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                "vnd.docker.reference.digest": of}}

    def referrer(self, subject: dict[str, Any], statement: bytes, *, signed: bool = False
                 ) -> None:
        """OCI 1.1 referrers of *subject* (an in-toto statement, and a sigstore bundle when
        *signed*), listed with the tag fallback ``sha256-<hex>``."""
        entries = []
        for artifact, data in ((IN_TOTO, statement), *([(SIGSTORE, b"{}")] if signed else [])):
            body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact,
                    "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                               **self.blob(b"{}")},
                    "layers": [{"mediaType": artifact, **self.blob(data)}],
                    "subject": {k: subject[k] for k in ("mediaType", "digest", "size")}}
            desc = self.manifest(f"ref-{uuid.uuid4().hex[:8]}", body)
            entries.append({**desc, "artifactType": artifact})
        self.manifest(subject["digest"].replace(":", "-"), {
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


def statement(subject: str, predicate: str, body: dict[str, Any] | None = None) -> bytes:
    algorithm, _, hexpart = subject.partition(":")
    return json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": predicate,
                       "subject": [{"name": "image", "digest": {algorithm: hexpart}}],
                       "predicate": body or {}}).encode()


def spdx(packages: dict[str, str]) -> dict[str, Any]:
    return {"spdxVersion": "SPDX-2.3", "packages": [
        {"name": name, "versionInfo": version} for name, version in packages.items()]}
