"""Safe layer unpacking, against malicious and tricky tarballs built here."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pytest_multiarch.errors import CorruptLayer, RootfsTooLarge, UnsafeLayerError
from pytest_multiarch.oci.content import Manifest
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.rootfs.runner import RootfsRunner
from pytest_multiarch.runners.rootfs.unpack import (
    LayerApplier,
    UnpackLimits,
    resolve_in_root,
    unpack_layers,
)

Entry = tuple[str, str, Any]  # (name, kind, payload): file bytes, link target, mode …


def layer(*entries: Entry, compress: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                data, mode = payload if isinstance(payload, tuple) else (payload, 0o644)
                info.size, info.mode = len(data), mode
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, payload or 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "chr":
                info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, 1, 3, 0o666
            elif kind == "fifo":
                info.type, info.mode = tarfile.FIFOTYPE, 0o600
            tar.addfile(info)
    raw = buf.getvalue()
    if compress == "gzip":
        return gzip.compress(raw)
    if compress == "zstd":
        import zstandard

        return bytes(zstandard.ZstdCompressor().compress(raw))
    return raw


def apply(root: Path, *layers: bytes, is_root: bool = False) -> LayerApplier:
    applier = LayerApplier(root, is_root=is_root)
    for data in layers:
        applier.apply(io.BytesIO(data))
    applier.finish()
    return applier


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the target that nothing may touch."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("host secret")
    return path


def snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() if p.is_file() else "<dir>"
            for p in sorted(path.rglob("*"))}


# -- refused outright ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../escape", "a/../../escape", "/etc/evil", "./../escape", "ok/../../../../tmp/x"]
)
def test_dotdot_and_absolute_names_reject_the_layer(tmp_path: Path, outside: Path,
                                                    name: str) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeLayerError, match="refusing"):
        apply(tmp_path / "root", layer((name, "file", b"pwned")))
    assert not (tmp_path / "escape").exists()
    assert snapshot(outside) == {"secret": "host secret"}
    assert set(snapshot(tmp_path)) - set(before) <= {"root"}


@pytest.mark.parametrize("target", ["../outside/secret", "/etc/passwd", "a/../../outside/secret"])
def test_hardlink_out_is_refused(tmp_path: Path, outside: Path, target: str) -> None:
    with pytest.raises(UnsafeLayerError):
        apply(tmp_path / "root", layer(("h", "hardlink", target)))
    assert os.stat(outside / "secret").st_nlink == 1


def test_hardlink_through_a_symlinked_dir_stays_inside(tmp_path: Path, outside: Path) -> None:
    # evil -> <outside>; a hard link to evil/secret must not reach the host's file.
    with pytest.raises(UnsafeLayerError, match="no file to point at"):
        apply(tmp_path / "root", layer(("evil", "symlink", str(outside)),
                                       ("h", "hardlink", "evil/secret")))
    assert os.stat(outside / "secret").st_nlink == 1


# -- symlinks followed the way chroot would ----------------------------------------------------


@pytest.mark.parametrize("target", ["/", "../../../../..", "{outside}", "../outside"])
def test_write_through_escaping_symlink_lands_inside(tmp_path: Path, outside: Path,
                                                     target: str) -> None:
    root = tmp_path / "root"
    apply(root, layer(("evil", "symlink", target.format(outside=outside))),
          layer(("evil/secret", "file", b"pwned"), ("evil/new", "file", b"new")))
    assert snapshot(outside) == {"secret": "host secret"}
    written = [p for p in root.rglob("new") if p.is_file()]
    assert len(written) == 1
    assert written[0].read_bytes() == b"new"
    assert root in written[0].parents


def test_existing_symlink_as_last_component_is_replaced_not_followed(tmp_path: Path,
                                                                     outside: Path) -> None:
    root = tmp_path / "root"
    apply(root, layer(("link", "symlink", str(outside / "secret"))),
          layer(("link", "file", b"replaced")))
    assert (outside / "secret").read_text() == "host secret"
    assert not (root / "link").is_symlink()
    assert (root / "link").read_bytes() == b"replaced"


def test_merged_usr_symlinks_work(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(root, layer(("usr/", "dir", 0o755), ("usr/lib/", "dir", 0o755),
                      ("lib", "symlink", "usr/lib")),
          layer(("lib/libfoo.so", "file", b"elf")))
    assert (root / "usr/lib/libfoo.so").read_bytes() == b"elf"
    assert (root / "lib").is_symlink()


def test_symlink_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    with pytest.raises(UnsafeLayerError, match="too many levels"):
        apply(tmp_path / "root", layer(("a", "symlink", "b"), ("b", "symlink", "a"),
                                       ("a/x", "file", b"")))


def test_resolve_in_root_clamps(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "up").symlink_to("../../..")
    assert resolve_in_root(root, ["up", "etc", "passwd"]) == root / "etc" / "passwd"


# -- whiteouts -------------------------------------------------------------------------------


def test_whiteout_removes_lower_file_and_dir(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(root,
          layer(("a/", "dir", 0o755), ("a/x", "file", b"x"), ("a/y", "file", b"y"),
                ("a/d/", "dir", 0o755), ("a/d/deep", "file", b"d")),
          layer(("a/.wh.x", "file", b""), ("a/.wh.d", "file", b"")))
    assert sorted(p.name for p in (root / "a").iterdir()) == ["y"]


def test_opaque_dir_hides_lower_content_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(root,
          layer(("d/", "dir", 0o755), ("d/old", "file", b"o"), ("d/sub/", "dir", 0o755),
                ("d/sub/deep", "file", b"d"), ("keep", "file", b"k")),
          layer(("d/", "dir", 0o755), ("d/new", "file", b"n"), ("d/.wh..wh..opq", "file", b""),
                ("d/later", "file", b"l")))
    assert sorted(p.name for p in (root / "d").iterdir()) == ["later", "new"]
    assert (root / "keep").exists()


def test_whiteout_through_symlink_cannot_delete_outside(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    apply(root, layer(("evil", "symlink", str(outside))), layer(("evil/.wh.secret", "file", b"")))
    assert (outside / "secret").exists()


# -- modes, owners, devices ---------------------------------------------------------------------


def test_modes_are_kept_and_readonly_dirs_do_not_block(tmp_path: Path) -> None:
    root = tmp_path / "root"
    apply(root, layer(("ro/", "dir", 0o555), ("ro/tool", "file", (b"#!", 0o4755)),
                      ("ro/data", "file", (b"d", 0o600))),
          layer(("ro/added", "file", (b"a", 0o644))))
    assert stat.S_IMODE((root / "ro").stat().st_mode) == 0o555
    assert stat.S_IMODE((root / "ro/tool").stat().st_mode) == 0o4755
    assert stat.S_IMODE((root / "ro/data").stat().st_mode) == 0o600
    assert (root / "ro/added").read_bytes() == b"a"
    assert (root / "ro/tool").stat().st_mtime == 1_700_000_000


def test_device_nodes_skipped_unless_root(tmp_path: Path) -> None:
    applier = apply(tmp_path / "root", layer(("dev/", "dir", 0o755), ("dev/null", "chr", None),
                                             ("dev/fifo", "fifo", None)), is_root=False)
    assert not os.path.lexists(tmp_path / "root/dev/null")
    assert applier.stats.skipped_devices == 1
    assert stat.S_ISFIFO(os.lstat(tmp_path / "root/dev/fifo").st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating device nodes needs root")
def test_device_nodes_created_as_root(tmp_path: Path) -> None:
    apply(tmp_path / "root", layer(("dev/null", "chr", None)), is_root=True)
    assert stat.S_ISCHR(os.lstat(tmp_path / "root/dev/null").st_mode)


@pytest.mark.parametrize("compress", ["", "gzip", "zstd"])
def test_compressed_layers(tmp_path: Path, compress: str) -> None:
    data = layer(("etc/", "dir", 0o755), ("etc/hostname", "file", b"box\n"), compress=compress)
    stats = unpack_layers([contextlib.nullcontext(io.BytesIO(data))], tmp_path / "root")
    assert (tmp_path / "root/etc/hostname").read_bytes() == b"box\n"
    assert stats.entries == 2


# -- the cache: atomic, keyed by digest -------------------------------------------------------


class FakeRegistry:
    """Serves one image manifest, its config and layers, like RegistryClient does."""

    def __init__(self, layers: list[bytes], arch: str = "arm64") -> None:
        self.blobs = {self._digest(b): b for b in layers}
        config = json.dumps({"architecture": arch, "os": "linux",
                             "config": {"Cmd": ["uname", "-m"]}}).encode()
        self.config_digest = self._digest(config)
        self.blobs[self.config_digest] = config
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": self._digest(b), "size": len(b)} for b in layers],
        }
        self.raw = json.dumps(manifest).encode()
        self.digest = self._digest(self.raw)
        self.opened = 0

    @staticmethod
    def _digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def get_manifest(self, ref: Any) -> Manifest:
        return Manifest.parse(self.raw, self.digest, what="test")

    def get_blob(self, ref: Any, blob: Any) -> bytes:
        return self.blobs[blob.digest if hasattr(blob, "digest") else blob]

    @contextlib.contextmanager
    def open_blob(self, ref: Any, blob: Any) -> Iterator[BinaryIO]:
        self.opened += 1
        yield io.BytesIO(self.blobs[blob.digest])


def test_prepare_unpacks_once_into_digest_keyed_dir(tmp_path: Path) -> None:
    registry = FakeRegistry([layer(("bin/", "dir", 0o755), ("bin/sh", "file", (b"x", 0o755)))])
    runner = RootfsRunner(registry=registry, cache_dir=tmp_path / "cache")
    image = f"127.0.0.1:5000/t/img@{registry.digest}"
    tree = runner.prepare(image, Platform.parse("arm64"))
    assert tree.path == tmp_path / "cache" / registry.digest.replace(":", "-") / "rootfs"
    assert (tree.path / "bin/sh").read_bytes() == b"x"
    assert tree.container_config["Cmd"] == ["uname", "-m"]
    runner.prepare(image, Platform.parse("arm64"))
    assert registry.opened == 1  # second time from the cache


def test_failed_unpack_leaves_nothing_behind(tmp_path: Path, outside: Path) -> None:
    registry = FakeRegistry([layer(("ok", "file", b"1")), layer(("../x", "file", b"2"))])
    runner = RootfsRunner(registry=registry, cache_dir=tmp_path / "cache")
    with pytest.raises(UnsafeLayerError):
        runner.prepare(f"127.0.0.1:5000/t/img@{registry.digest}", Platform.parse("arm64"))
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
    assert not (tmp_path / "x").exists()


def test_prepare_refuses_another_platform(tmp_path: Path) -> None:
    from pytest_multiarch.errors import PlatformNotInIndex

    registry = FakeRegistry([layer(("ok", "file", b"1"))], arch="amd64")
    runner = RootfsRunner(registry=registry, cache_dir=tmp_path / "cache")
    with pytest.raises(PlatformNotInIndex):
        runner.prepare(f"127.0.0.1:5000/t/img@{registry.digest}", Platform.parse("arm64"))


# -- whiteouts that name nothing, the directory itself or the one above ---------------------------


@pytest.mark.parametrize("name", [".wh..", ".wh...", ".wh.", "sub/.wh..", "sub/.wh...",
                                  "./.wh...", "sub/.wh."])
def test_whiteout_of_dot_dotdot_or_nothing_rejects_the_layer(tmp_path: Path, outside: Path,
                                                             name: str) -> None:
    root = tmp_path / "root"
    apply(root, layer(("sub/", "dir", 0o755), ("sub/keep", "file", b"k"), ("top", "file", b"t")))
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeLayerError, match=r"whiteout .* names no file below its directory"):
        apply(root, layer((name, "file", b"")))
    # Before the fix '.wh...' at the top removed tmp_path itself, '.wh..' the root.
    assert snapshot(tmp_path) == before


# -- limits on the unpacked tree ----------------------------------------------------------------


def test_byte_limit_names_layer_member_and_limit(tmp_path: Path) -> None:
    layers = [layer(("a", "file", b"x" * 600)), layer(("b", "file", b"y" * 600))]
    digests = ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]
    with pytest.raises(RootfsTooLarge) as info:
        unpack_layers((contextlib.nullcontext(io.BytesIO(d)) for d in layers), tmp_path / "r",
                      limits=UnpackLimits(max_bytes=1000), digests=digests)
    assert str(info.value) == (
        f"layer 1 ({digests[1]}): member 'b' takes the unpacked root filesystem past 1000 bytes "
        "(the unpack size limit); raise --multiarch-unpack-max-bytes if the image really is "
        "that large")
    assert not (tmp_path / "r" / "b").exists()  # refused before a byte of it was written


def test_file_limit_counts_every_entry(tmp_path: Path) -> None:
    data = layer(*((f"d{i}/", "dir", 0o755) for i in range(5)))
    with pytest.raises(RootfsTooLarge, match=r"past 4 entries .*--multiarch-unpack-max-files"):
        unpack_layers([contextlib.nullcontext(io.BytesIO(data))], tmp_path / "r",
                      limits=UnpackLimits(max_files=4))
    stats = unpack_layers([contextlib.nullcontext(io.BytesIO(data))], tmp_path / "r2",
                          limits=UnpackLimits(max_files=5))
    assert stats.entries == 5


def test_default_limits_fit_a_cuda_sized_image() -> None:
    # nvidia/cuda:12.x-cudnn-devel unpacks to ~10 GiB in ~60,000 entries; PyTorch images ~25 GiB.
    assert UnpackLimits().max_bytes >= 32 << 30
    assert UnpackLimits().max_files >= 500_000


def test_gzip_bomb_stops_at_the_limit_without_writing_it(tmp_path: Path) -> None:
    # 256 MiB of zeros in one member: ~250 KiB compressed, refused from its header alone.
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 256 << 20
        tar.addfile(info, io.BytesIO(bytes(256 << 20)))
    bomb = gzip.compress(payload.getvalue(), compresslevel=9)
    assert len(bomb) < 1 << 20
    with pytest.raises(RootfsTooLarge, match="past 67108864 bytes"):
        unpack_layers([contextlib.nullcontext(io.BytesIO(bomb))], tmp_path / "r",
                      limits=UnpackLimits(max_bytes=64 << 20))
    assert not (tmp_path / "r" / "zeros").exists()


def test_corrupt_tar_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(CorruptLayer, match=r"layer 0: not a valid layer"):
        unpack_layers([contextlib.nullcontext(io.BytesIO(b"\x1f\x8b" + b"\0" * 100))],
                      tmp_path / "r")


def test_prepare_stops_at_the_runner_limits_naming_the_layer_digest(tmp_path: Path) -> None:
    big = layer(("a", "file", b"x" * 5000))
    registry = FakeRegistry([layer(("ok", "file", b"1")), big])
    runner = RootfsRunner(registry=registry, cache_dir=tmp_path / "cache",
                          unpack_limits=UnpackLimits(max_bytes=4096))
    with pytest.raises(RootfsTooLarge) as info:
        runner.prepare(f"127.0.0.1:5000/t/img@{registry.digest}", Platform.parse("arm64"))
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    assert str(info.value).startswith(f"layer 1 ({digest}): member 'a' takes the unpacked root "
                                      "filesystem past 4096 bytes")
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
