"""The static layer audit, on layers built here with tarfile around real foreign binaries."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import sys
import tarfile
import tracemalloc
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import zstandard

from pytest_multiarch.audit.layerscan import SCHEMA
from pytest_multiarch.audit.verdicts import (
    AuditResult,
    Kind,
    Layer,
    Severity,
    audit_variant,
    default_cache_dir,
    scan_layer,
)
from pytest_multiarch.errors import DigestMismatchError
from pytest_multiarch.platforms import Platform

IMAGE = "localhost:5000/app@sha256:" + "ab" * 32
MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "tar": "application/vnd.oci.image.layer.v1.tar",
}
BINARIES = {  # bins key -> (package, dpkg arch) of the debian_binaries fixture
    "arm64": ("busybox-static", "arm64"),
    "armhf": ("busybox-static", "armhf"),
    "armel": ("busybox-static", "armel"),
    "s390x": ("busybox-static", "s390x"),
    "hello-arm64": ("hello", "arm64"),
}


@pytest.fixture(scope="session")
def bins(debian_binaries: dict[tuple[str, str], Path]) -> dict[str, bytes]:
    """Real binaries: static busybox of arm64/armhf/armel/s390x, dynamic arm64 hello, /bin/ls."""
    found = {"amd64": Path("/bin/ls").read_bytes()}
    found.update((key, debian_binaries[deb].read_bytes()) for key, deb in BINARIES.items())
    return found


# -- building layers ----------------------------------------------------------------------------

Spec = tuple[Any, ...]  # ("f", name, data[, mode]) | ("l", name, target) | ("h", …) | ("d", name)


def file(name: str, data: bytes, mode: int = 0o755) -> Spec:
    return ("f", name, data, mode)


def symlink(name: str, target: str) -> Spec:
    return ("l", name, target)


def hardlink(name: str, target: str) -> Spec:
    return ("h", name, target)


def tar_of(specs: Sequence[Spec], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for kind, name, *rest in specs:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "f":
                info.size, info.mode = len(rest[0]), rest[1]
                tar.addfile(info, io.BytesIO(rest[0]))
                continue
            info.type = {"l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE, "d": tarfile.DIRTYPE}[kind]
            info.mode = 0o777 if kind == "l" else 0o755
            info.linkname = rest[0] if rest else ""
            tar.addfile(info)
    return buf.getvalue()


def compressed(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def digest_of(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


class VerifyingStream(io.RawIOBase):
    """Like the registry client's blob stream: raises DigestMismatchError at EOF."""

    def __init__(self, path: Path, digest: str) -> None:
        super().__init__()
        self._handle = path.open("rb")
        self._hash = hashlib.sha256()
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._handle.readinto(buffer)
        if not n:
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self._digest:
                raise DigestMismatchError(f"blob {self._digest}: content hashes to {actual}")
            return 0
        self._hash.update(memoryview(buffer)[:n])
        return n

    def close(self) -> None:
        self._handle.close()
        super().close()


class Blobs:
    """Writes layer blobs under a directory and hands out counted openers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.opens: Counter[str] = Counter()

    def layer(
        self, specs: Sequence[Spec] = (), compression: str = "gzip", *, blob: bytes | None = None,
        media_type: str | None = None, digest: str | None = None,
    ) -> Layer:
        data = blob if blob is not None else compressed(tar_of(specs), compression)
        real = digest_of(data)
        path = self.directory / real.replace(":", "-")
        path.write_bytes(data)
        claimed = digest or real

        @contextlib.contextmanager
        def opener() -> Iterator[BinaryIO]:
            self.opens[claimed] += 1
            with VerifyingStream(path, claimed) as stream:
                yield stream  # type: ignore[misc]

        return Layer(claimed, media_type or MEDIA_TYPES[compression], opener)


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    directory = tmp_path / "blobs"
    directory.mkdir()
    return Blobs(directory)


def config(
    entrypoint: list[str] | None = None, cmd: list[str] | None = None,
    env: list[str] | None = None, workdir: str = "",
) -> dict[str, Any]:
    runtime: dict[str, Any] = {"Entrypoint": entrypoint, "Cmd": cmd, "WorkingDir": workdir}
    if env is not None:
        runtime["Env"] = env
    return {"os": "linux", "config": runtime}  # audit() adds the architecture


def audit(
    tmp_path: Path, layers: Sequence[Layer], cfg: dict[str, Any], *,
    platform: str = "linux/arm64", host: str = "linux/amd64", allow: Sequence[str] = (),
    workers: int = 1,
) -> AuditResult:
    """Audit with a config that agrees with *platform* unless *cfg* names an architecture."""
    plat = Platform.parse(platform)
    cfg = {"architecture": plat.architecture, "variant": plat.variant, **cfg}
    return audit_variant(IMAGE, plat, cfg, layers, host=Platform.parse(host), allow=allow,
                         cache_dir=tmp_path / "cache", workers=workers)


def kinds(result: AuditResult, severity: Severity | None = None) -> list[Kind]:
    return [f.kind for f in result.findings if severity is None or f.severity is severity]


def one(result: AuditResult, kind: Kind) -> str:
    (message,) = [f.message for f in result.findings if f.kind is kind]
    return message


# -- verdicts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "tar"])
def test_good_arm64_variant_passes(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes], compression: str
) -> None:
    layer = blobs.layer([("d", "bin"), file("bin/busybox", bins["arm64"]),
                         symlink("bin/sh", "busybox"), file("etc/motd", b"hi\n", 0o644)],
                        compression)
    result = audit(tmp_path, [layer], config(["/bin/sh"], ["-c", "true"]))
    assert result.ok, result.format()
    assert result.findings == ()
    assert dict(result.elf_counts) == {"arm64": 1}
    assert result.exec_chain == ("/bin/busybox",)


def test_amd64_binaries_in_the_arm64_variant(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([file("usr/bin/app", bins["amd64"]), file("usr/bin/tool", bins["amd64"])])
    result = audit(tmp_path, [layer], config(["/usr/bin/app"]))
    assert not result.ok
    assert one(result, Kind.ENTRYPOINT_FOREIGN) == (
        f"linux/arm64 variant of {IMAGE}: /usr/bin/app is x86-64 (EM_X86_64, 64-bit LE); "
        "this would fail with exec format error on arm64"
    )
    assert [f.path for f in result.findings if f.kind is Kind.FOREIGN_ELF] == ["/usr/bin/tool"]
    suspicious = one(result, Kind.HOST_NATIVE_ONLY)
    assert "host-native-only suspicious: 2 of its ELF files" in suspicious
    assert "the architecture of this host (amd64)" in suspicious
    assert "run them natively and pass" in suspicious
    assert "exec format error" in suspicious
    # The loader of a binary that cannot even start is beside the point.
    assert Kind.LOADER_MISSING not in kinds(result)


def test_foreign_but_not_host_arch_is_not_host_native_only(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([file("app", bins["s390x"])])
    result = audit(tmp_path, [layer], config(["/app"]))
    assert kinds(result) == [Kind.ENTRYPOINT_FOREIGN]
    assert "IBM S/390 (EM_S390, 64-bit BE)" in one(result, Kind.ENTRYPOINT_FOREIGN)
    # On an s390x host the same image is the dangerous case.
    on_s390x = audit(tmp_path, [layer], config(["/app"]), host="linux/s390x")
    assert Kind.HOST_NATIVE_ONLY in kinds(on_s390x)


def test_path_search_and_symlink_chain(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([
        file("first/app", b"not me: not executable", 0o644),
        symlink("opt/bin/app", "../lib/app/run"),  # relative
        symlink("opt/lib/app/run", "/usr/libexec/real"),  # absolute
        file("usr/libexec/real", bins["arm64"]),
    ])
    cfg = config(cmd=["app", "--serve"], env=["PATH=/first:/nowhere:/opt/bin"])
    result = audit(tmp_path, [layer], cfg)
    assert result.ok, result.format()
    assert result.exec_chain == ("/usr/libexec/real",)
    missing = audit(tmp_path, [layer], config(cmd=["app"], env=["PATH=/usr/bin"]))
    assert "not an executable file in any PATH directory (/usr/bin)" in one(
        missing, Kind.ENTRYPOINT_MISSING)


def test_default_path_and_working_dir(tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]) -> None:
    layer = blobs.layer([file("usr/local/bin/app", bins["arm64"]), file("srv/run", bins["amd64"])])
    default = audit(tmp_path, [layer], config(cmd=["app"]))  # Docker's PATH when Env has none
    assert default.exec_chain == ("/usr/local/bin/app",)
    assert Kind.ENTRYPOINT_FOREIGN not in kinds(default)
    result = audit(tmp_path, [layer], config(["./run"], workdir="/srv"))
    assert kinds(result, Severity.FAIL)[0] is Kind.ENTRYPOINT_FOREIGN
    assert result.exec_chain == ("/srv/run",)


def test_shebang_through_env_to_a_foreign_interpreter(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([
        file("bin/busybox", bins["arm64"]),
        symlink("usr/bin/env", "/bin/busybox"),
        file("usr/bin/python3", bins["amd64"]),
        file("app/run.sh", b"#!/usr/bin/env python3\nprint('hi')\n"),
    ])
    result = audit(tmp_path, [layer], config(["/app/run.sh"]))
    assert result.exec_chain == ("/app/run.sh", "/bin/busybox", "/usr/bin/python3")
    assert one(result, Kind.ENTRYPOINT_FOREIGN) == (
        f"linux/arm64 variant of {IMAGE}: python3 (→ /usr/bin/python3) (the interpreter of "
        "/app/run.sh, via #!/usr/bin/env python3) is x86-64 (EM_X86_64, 64-bit LE); this would "
        "fail with exec format error on arm64"
    )


def test_shebang_to_a_direct_interpreter_and_env_options(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([
        file("bin/sh", bins["arm64"]),
        file("bin/env", bins["arm64"]),
        file("usr/bin/node", bins["arm64"]),
        file("start", b"#!/bin/sh -e\nexec node app.js\n"),
    ])
    assert audit(tmp_path, [layer], config(["/start"])).exec_chain == ("/start", "/bin/sh")
    cfg = config(["/bin/env", "-i", "NODE_ENV=production", "-S", "node --trace", "app.js"],
                 env=["PATH=/usr/bin:/bin"])
    result = audit(tmp_path, [layer], cfg)
    assert result.ok, result.format()
    assert result.exec_chain == ("/bin/env", "/usr/bin/node")


def test_interpreter_missing_loop_and_not_a_program(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([
        file("a.sh", b"#!/b.sh\n"), file("b.sh", b"#!/a.sh\n"),
        file("py.sh", b"#!/usr/bin/python3\n"),
        file("notes.txt", b"just text\n"),
        file("data", b"x", 0o644),
    ])
    looped = audit(tmp_path, [layer], config(["/a.sh"]))
    assert "starts a chain of more than 4 #! interpreters" in one(looped, Kind.INTERPRETER_LOOP)
    missing = one(audit(tmp_path, [layer], config(["/py.sh"])), Kind.ENTRYPOINT_MISSING)
    assert "/usr/bin/python3 (the interpreter of /py.sh, via #!/usr/bin/python3) does not" in (
        missing)
    assert "'no such file or directory'" in missing
    text = one(audit(tmp_path, [layer], config(["/notes.txt"])), Kind.ENTRYPOINT_NOT_EXECUTABLE)
    assert "neither an ELF binary nor a #! script; this would fail with exec format error" in text
    data = one(audit(tmp_path, [layer], config(["/data"])), Kind.ENTRYPOINT_NOT_EXECUTABLE)
    assert "is not executable (mode 0644)" in data


def test_dynamic_entrypoint_needs_its_loader(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    app = blobs.layer([file("usr/bin/hello", bins["hello-arm64"])])
    result = audit(tmp_path, [app], config(["/usr/bin/hello"]))
    assert one(result, Kind.LOADER_MISSING) == (
        f"linux/arm64 variant of {IMAGE}: /usr/bin/hello is dynamically linked and asks for the "
        "loader /lib/ld-linux-aarch64.so.1, which is not in the image; this would fail with 'no "
        "such file or directory'"
    )
    # Merged /usr: /lib is a symlink, the loader a symlink to the real file.
    base = blobs.layer([
        symlink("lib", "usr/lib"),
        symlink("usr/lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu/ld-linux-aarch64.so.1"),
        file("usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", bins["arm64"]),
    ])
    assert audit(tmp_path, [base, app], config(["/usr/bin/hello"])).ok


def test_whiteouts_and_opaque_directories(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    lower = blobs.layer([
        file("usr/bin/app", bins["amd64"]),
        file("opt/tools/x86tool", bins["amd64"]),
        file("opt/tools/sub/deep", bins["amd64"]),
        file("usr/share/x86dir/helper", bins["amd64"]),
        file("keep/kept", bins["amd64"]),
    ])
    upper = blobs.layer([
        file("usr/bin/.wh.app", b""),
        file("usr/bin/app", bins["arm64"]),  # same layer as the whiteout: not hidden by it
        ("d", "opt/tools"),
        file("opt/tools/.wh..wh..opq", b""),
        file("opt/tools/armtool", bins["arm64"]),
        file("usr/share/.wh.x86dir", b""),
        file("keep/.wh.not-there", b""),
    ])
    result = audit(tmp_path, [lower, upper], config(["/usr/bin/app"]), allow=["/keep/*"])
    assert result.ok, result.format()
    assert dict(result.elf_counts) == {"arm64": 2, "amd64": 1}
    assert [f.path for f in result.findings] == ["/keep/kept"]  # allowlisted, info
    assert kinds(result) == [Kind.FOREIGN_ELF_ALLOWED]
    # Order matters: the other way round, the amd64 files are on top.
    reverse = audit(tmp_path, [upper, lower], config(["/usr/bin/app"]), allow=["/keep/*"])
    assert Kind.ENTRYPOINT_FOREIGN in kinds(reverse)


def test_symlink_loop_for_the_entrypoint(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([symlink("bin/app", "/bin/a"), symlink("bin/a", "b"),
                         symlink("bin/b", "../bin/a"), symlink("usr/bin/app", "/usr/bin/app")])
    result = audit(tmp_path, [layer], config(["/bin/app"]))
    assert "symbolic link loop" in one(result, Kind.SYMLINK_LOOP)
    assert "'too many levels of symbolic links'" in one(result, Kind.SYMLINK_LOOP)
    via_path = audit(tmp_path, [layer], config(cmd=["app"], env=["PATH=/usr/bin"]))
    assert kinds(via_path) == [Kind.SYMLINK_LOOP]


def test_hardlinks(tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]) -> None:
    layer = blobs.layer([file("bin/busybox", bins["arm64"]), hardlink("bin/sh", "bin/busybox"),
                         hardlink("bin/gone", "bin/nothing")])
    result = audit(tmp_path, [layer], config(["/bin/sh"]))
    assert result.ok
    assert dict(result.elf_counts) == {"arm64": 2}
    assert "hard link /bin/gone points to /bin/nothing" in one(result, Kind.HARDLINK_MISSING)


def test_no_entrypoint_and_missing_entrypoint(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([file("bin/busybox", bins["arm64"])])
    none = audit(tmp_path, [layer], config())
    assert kinds(none) == [Kind.NO_ENTRYPOINT]
    assert "neither Entrypoint nor Cmd" in one(none, Kind.NO_ENTRYPOINT)
    missing = audit(tmp_path, [layer], config(["/usr/bin/app"]))
    assert one(missing, Kind.ENTRYPOINT_MISSING) == (
        f"linux/arm64 variant of {IMAGE}: /usr/bin/app does not exist in the image; this would "
        "fail with 'no such file or directory'"
    )
    bare = audit_variant(IMAGE, Platform.parse("arm64"), {"Cmd": ["/bin/busybox"]}, [layer],
                         host=Platform.parse("amd64"), cache_dir=tmp_path / "cache")
    assert bare.ok  # a runtime config without the outer image config works too


def test_allowlist_for_intended_foreign_binaries(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([file("bin/app", bins["arm64"]),
                         file("usr/libexec/qemu/x86-helper", bins["amd64"])])
    cfg = config(["/bin/app"])
    strict = audit(tmp_path, [layer], cfg)
    assert kinds(strict, Severity.FAIL) == [Kind.FOREIGN_ELF, Kind.HOST_NATIVE_ONLY]
    assert one(strict, Kind.FOREIGN_ELF) == (
        f"linux/arm64 variant of {IMAGE}: /usr/libexec/qemu/x86-helper is x86-64 (EM_X86_64, "
        "64-bit LE), which cannot run on arm64; allowlist it if it is there on purpose"
    )
    allowed = audit(tmp_path, [layer], cfg, allow=["/usr/libexec/*"])
    assert allowed.ok
    assert kinds(allowed) == [Kind.FOREIGN_ELF_ALLOWED]


def test_soft_float_binaries_in_the_armhf_variant(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([file("bin/busybox", bins["armhf"]), file("opt/old", bins["armel"])])
    result = audit(tmp_path, [layer], config(["/bin/busybox"]), platform="linux/arm/v7")
    assert result.ok  # a warning: armhf CPUs do execute them
    assert kinds(result) == [Kind.ARM_SOFT_FLOAT]
    assert "/opt/old is ARM EABI5 soft-float (EM_ARM, 32-bit LE), an armel (arm/v6) binary" in (
        one(result, Kind.ARM_SOFT_FLOAT))
    assert dict(result.elf_counts) == {"arm/v7": 1, "arm/v6": 1}
    armel = audit(tmp_path, [layer], config(["/opt/old"]), platform="linux/arm/v6")
    # Debian's armhf busybox records Tag_CPU_arch v7: more than arm/v6 promises (a Pi Zero).
    assert kinds(armel) == [Kind.CPU_LEVEL, Kind.ARM_HARD_FLOAT]
    assert "/bin/busybox records that it needs arm/v7 (Tag_CPU_arch)" in one(armel, Kind.CPU_LEVEL)
    assert not armel.ok


def test_invalid_elf_headers(tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]) -> None:
    layer = blobs.layer([file("bin/app", bins["arm64"]),
                         file("usr/lib/broken.so", b"\x7fELF\x09garbage" + bytes(60)),
                         file("bin/broken", b"\x7fELF\x02\x01\x01" + bytes(9) + b"\xff" * 48)])
    fine = audit(tmp_path, [layer], config(["/bin/app"]))
    assert fine.ok
    assert [f.path for f in fine.warnings] == ["/bin/broken", "/usr/lib/broken.so"]
    assert fine.elf_counts["invalid"] == 2
    (broken,) = [f.message for f in audit(tmp_path, [layer], config(["/bin/broken"])).failures]
    assert "/bin/broken has an invalid ELF header: " in broken
    assert broken.endswith("; this would fail with exec format error")


def test_config_that_disagrees_with_the_platform(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([file("bin/busybox", bins["arm64"])])
    lies = audit(tmp_path, [layer], {**config(["/bin/busybox"]), "architecture": "amd64"})
    assert kinds(lies) == [Kind.CONFIG_MISMATCH]
    assert one(lies, Kind.CONFIG_MISMATCH) == (
        f"linux/arm64 variant of {IMAGE}: its config says linux/amd64; its ELF files (1) are all "
        "for arm64: the config lies. `docker run --platform linux/arm64` refuses such an image "
        "('does not match the specified platform'); rebuild the variant or fix the index entry"
    )
    aliases = audit(tmp_path, [layer], {**config(["/bin/busybox"]), "architecture": "aarch64",
                                        "variant": "v8"})
    assert aliases.findings == ()  # normalized like the index entry


def test_other_os_is_not_audited(tmp_path: Path, blobs: Blobs) -> None:
    layer = blobs.layer([file("Files/app.exe", b"MZ")])
    result = audit(tmp_path, [layer], config(["app.exe"]), platform="windows/amd64")
    assert result.ok
    assert kinds(result) == [Kind.NOT_AUDITED]


# -- bad input ----------------------------------------------------------------------------------


def test_names_that_climb_out_or_are_absolute(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([file("../../etc/evil", bins["arm64"]), file("/abs/file", b"x"),
                         file("a/../../b", b"y"), file("fine/../ok", b"z")])
    result = audit(tmp_path, [layer], config(["/etc/evil"]))
    unsafe = [f for f in result.findings if f.kind is Kind.UNSAFE_PATH]
    assert [(f.path, f.severity) for f in unsafe] == [
        ("/etc/evil", Severity.FAIL), ("/abs/file", Severity.WARN), ("/b", Severity.FAIL)]
    assert "climbs out of the root with '..'; Docker refuses to unpack such a layer" in (
        unsafe[0].message)
    assert result.exec_chain == ("/etc/evil",)  # audited where a clamping unpacker puts it
    # Nothing was written but the cache.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "cache"]
    assert [p.suffix for p in (tmp_path / "cache").rglob("*") if p.is_file()] == [".json"]


def test_truncated_gzip(tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]) -> None:
    whole = compressed(tar_of([file("bin/app", bins["arm64"])]), "gzip")
    layer = blobs.layer(blob=whole[: len(whole) // 2], compression="gzip")
    result = audit(tmp_path, [layer], config(["/bin/app"]))
    message = one(result, Kind.TRUNCATED_STREAM)
    assert f"truncated gzip stream: its {len(whole) // 2} bytes end inside" in message
    assert "unexpected EOF" in message
    assert not result.ok


def test_without_isal_gzip_falls_back_to_zlib(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "isal", None)  # `from isal import …` now fails
    layer = blobs.layer([file("bin/app", bins["arm64"])])
    assert audit(tmp_path, [layer], config(["/bin/app"])).ok
    whole = compressed(tar_of([file("bin/app", bins["arm64"])]), "gzip")
    cut = blobs.layer(blob=whole[: len(whole) // 2], compression="gzip")
    assert Kind.TRUNCATED_STREAM in kinds(audit(tmp_path, [cut], config(["/bin/app"])))


def test_truncated_zstd_is_noticed(tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]) -> None:
    # zstandard's stream reader ends a cut stream silently; the frame walker notices.
    data = tar_of([file("bin/app", bins["arm64"])])
    whole = compressed(data, "zstd")
    for cut in (len(whole) - 3, len(whole) // 2):
        layer = blobs.layer(blob=whole[:cut], compression="zstd")
        assert "truncated zstd stream" in one(
            audit(tmp_path, [layer], config(["/bin/app"])), Kind.TRUNCATED_STREAM)


def test_multi_frame_zstd_with_a_skippable_frame(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    data = tar_of([file("bin/app", bins["arm64"]), file("bin/other", bins["arm64"])])
    half = len(data) // 2
    skippable = (0x184D2A5E).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    blob = cctx.compress(data[:half]) + skippable + cctx.compress(data[half:])
    result = audit(tmp_path, [blobs.layer(blob=blob, compression="zstd")], config(["/bin/app"]))
    assert result.ok, result.format()
    assert dict(result.elf_counts) == {"arm64": 2}


def test_corrupt_tar_and_corrupt_gzip(tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]) -> None:
    data = bytearray(tar_of([file("a", b"x" * 600), file("bin/app", bins["arm64"])]))
    second = data.index(b"bin/app")
    data[second + 148 : second + 150] = b"77"  # its checksum, still octal
    result = audit(tmp_path, [blobs.layer(blob=bytes(data), compression="tar")],
                   config(["/bin/app"]))
    corrupt = one(result, Kind.CORRUPT_TAR)
    assert "corrupt tar: header checksum" in corrupt
    assert f"at byte {second} of the tar" in corrupt
    assert kinds(result, Severity.FAIL) == [Kind.CORRUPT_TAR]  # not also "missing": unread
    assert "not conclusive: layer sha256:" in one(result, Kind.ENTRYPOINT_MISSING)
    noise = blobs.layer(blob=b"this is not a tar archive at all" * 40, compression="tar")
    assert Kind.CORRUPT_TAR in kinds(audit(tmp_path, [noise], config(["/x"])))
    gz = bytearray(compressed(tar_of([file("bin/app", bins["arm64"])]), "gzip"))
    gz[len(gz) // 2] ^= 0xFF
    damaged = audit(tmp_path, [blobs.layer(blob=bytes(gz), compression="gzip")],
                    config(["/bin/app"]))
    assert set(kinds(damaged, Severity.FAIL)) & {Kind.CORRUPT_STREAM, Kind.CORRUPT_TAR}


def test_zero_byte_layer(tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]) -> None:
    good = blobs.layer([file("bin/app", bins["arm64"])])
    empty = blobs.layer(blob=b"", compression="gzip")
    result = audit(tmp_path, [good, empty], config(["/bin/app"]))
    assert kinds(result) == [Kind.ZERO_BYTE_LAYER]
    assert f"layer {empty.digest[:19]} is 0 bytes" in one(result, Kind.ZERO_BYTE_LAYER)


def test_digest_mismatch_is_a_finding_and_never_cached(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    wrong = "sha256:" + "00" * 32
    layer = blobs.layer([file("bin/app", bins["arm64"])], digest=wrong)
    for _ in range(2):
        result = audit(tmp_path, [layer], config(["/bin/app"]))
        assert "content hashes to sha256:" in one(result, Kind.DIGEST_MISMATCH)
    assert blobs.opens[wrong] == 2
    # A cut download that also fails its digest is reported as what it is.
    whole = compressed(tar_of([file("bin/app", bins["arm64"])]), "gzip")
    cut = blobs.layer(blob=whole[:100], compression="gzip", digest=digest_of(whole))
    assert kinds(audit(tmp_path, [cut], config(["/bin/app"])), Severity.FAIL)[0] is (
        Kind.DIGEST_MISMATCH)


def test_opener_failure_is_a_finding(tmp_path: Path) -> None:
    def opener() -> contextlib.AbstractContextManager[BinaryIO]:
        raise DigestMismatchError("blob sha256:…: refused")

    def broken() -> contextlib.AbstractContextManager[BinaryIO]:
        raise OSError("connection reset")

    layers = [Layer("sha256:" + "11" * 32, MEDIA_TYPES["gzip"], opener),
              Layer("sha256:" + "22" * 32, MEDIA_TYPES["gzip"], broken)]
    result = audit(tmp_path, layers, config(["/x"]))
    assert kinds(result, Severity.FAIL)[:2] == [Kind.DIGEST_MISMATCH, Kind.LAYER_UNREADABLE]


def test_media_type_that_lies_about_compression(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([file("bin/app", bins["arm64"])], "gzip", media_type=MEDIA_TYPES["tar"])
    result = audit(tmp_path, [layer], config(["/bin/app"]))
    assert result.ok
    assert "says tar, the content is gzip" in one(result, Kind.MEDIA_TYPE_MISMATCH)


def test_long_names_in_pax_and_gnu_formats(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    deep = "/".join(["d" * 40] * 5) + "/app"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        blob = compressed(tar_of([file(deep, bins["arm64"]), symlink("link", "/" + deep)], fmt),
                          "gzip")
        result = audit(tmp_path, [blobs.layer(blob=blob, compression="gzip")], config(["/link"]))
        assert result.exec_chain == ("/" + deep,)
        assert result.ok
    ustar = "p" * 90 + "/" + "n" * 90  # the prefix field
    blob = tar_of([file(ustar, bins["arm64"])], tarfile.USTAR_FORMAT)
    result = audit(tmp_path, [blobs.layer(blob=blob, compression="tar")], config(["/" + ustar]))
    assert result.exec_chain == ("/" + ustar,)


# -- cache, parallelism, memory -----------------------------------------------------------------


def test_summaries_are_cached_by_digest(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layer = blobs.layer([file("bin/app", bins["arm64"])])
    first = audit(tmp_path, [layer], config(["/bin/app"]))
    second = audit(tmp_path, [layer], config(["/bin/app"]))
    assert (first.layers_scanned, first.layers_cached) == (1, 0)
    assert (second.layers_scanned, second.layers_cached) == (0, 1)
    assert blobs.opens[layer.digest] == 1
    assert first.findings == second.findings
    assert first.elf_counts == second.elf_counts
    (cached,) = (tmp_path / "cache" / f"v{SCHEMA}").iterdir()
    assert cached.name == layer.digest.replace(":", "-") + ".json"
    assert json.loads(cached.read_text())["digest"] == layer.digest
    cached.write_text("{not json")  # a damaged entry is scanned again and replaced
    assert audit(tmp_path, [layer], config(["/bin/app"])).layers_scanned == 1
    assert json.loads(cached.read_text())["schema"] == SCHEMA


def test_default_cache_dir_is_resolved_at_call_time(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "pytest-multiarch" / "audit"
    layer = blobs.layer([file("bin/app", bins["arm64"])])
    audit_variant(IMAGE, Platform.parse("arm64"), config(["/bin/app"]), [layer],
                  host=Platform.parse("amd64"))
    cached = tmp_path / "xdg" / "pytest-multiarch" / "audit" / f"v{SCHEMA}"
    assert list(cached.glob("sha256-*.json"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pytest-multiarch" / "audit"


def test_a_digest_that_is_not_one_is_never_a_cache_path(
    tmp_path: Path, bins: dict[str, bytes]
) -> None:
    blob = compressed(tar_of([file("bin/app", bins["arm64"])]), "gzip")

    def opener() -> contextlib.AbstractContextManager[BinaryIO]:
        return io.BytesIO(blob)

    layer = Layer("sha256:../../../escape", MEDIA_TYPES["gzip"], opener)
    result = audit(tmp_path, [layer], config(["/bin/app"]))
    assert result.ok
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.json"))
    assert not list(tmp_path.parent.glob("escape*"))


def test_parallel_scan_gives_the_same_verdict(
    tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]
) -> None:
    layers = [
        blobs.layer([file(f"l{i}/{name}", bins[key]) for name, key in
                     [("a", "arm64"), ("b", "amd64"), ("c", "s390x")]], compression)
        for i, compression in enumerate(["gzip", "zstd", "tar", "gzip", "zstd"])
    ]
    layers.append(blobs.layer([file("l0/.wh.b", b""), file("bin/app", bins["arm64"])]))
    serial = audit(tmp_path / "one", layers, config(["/bin/app"]), workers=1)
    parallel = audit(tmp_path / "many", layers, config(["/bin/app"]), workers=4)
    assert serial.findings == parallel.findings
    assert serial.elf_counts == parallel.elf_counts == {"arm64": 6, "amd64": 4, "s390x": 5}
    assert parallel.layers_scanned == 6


def test_memory_stays_flat_for_a_big_member(tmp_path: Path, bins: dict[str, bytes]) -> None:
    size = 256 * 1024 * 1024  # of tar; about 250 KB gzipped
    path = tmp_path / "big.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as out, tarfile.open(fileobj=out, mode="w|") as tar:
        info = tarfile.TarInfo("big/app")
        info.size, info.mode = size, 0o755
        tar.addfile(info, _Zeros(bins["arm64"][:4096], size))  # type: ignore[arg-type]
    layer = Layer("sha256:" + "33" * 32, MEDIA_TYPES["gzip"], lambda: path.open("rb"))
    tracemalloc.start()
    try:
        summary = scan_layer(layer)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.tar_bytes >= size
    assert summary.findings == ()
    (entry,) = summary.entries
    assert entry.elf is not None
    assert peak < 6 * 1024 * 1024, f"peak {peak} bytes of Python allocations"


class _Zeros:
    """*head*, then zeros up to *size* bytes, produced on the fly."""

    def __init__(self, head: bytes, size: int) -> None:
        self._data, self._left = head, size

    def read(self, size: int) -> bytes:
        size = min(size, self._left)
        self._left -= size
        out, self._data = self._data[:size], self._data[size:]
        return out + bytes(size - len(out))


def test_format_groups_findings(tmp_path: Path, blobs: Blobs, bins: dict[str, bytes]) -> None:
    layer = blobs.layer([file("bin/app", bins["amd64"])]
                        + [file(f"usr/lib/x{i}.so", bins["amd64"]) for i in range(15)])
    text = audit(tmp_path, [layer], config(["/bin/app"])).format(limit=5)
    lines = text.splitlines()
    assert lines[0] == (f"linux/arm64 variant of {IMAGE}: FAILED (17 failing findings); "
                        "ELF files: amd64 16")
    assert lines[1].startswith("  FAIL entrypoint-foreign-arch: ")
    assert any(line.startswith("  FAIL foreign-elf: ") for line in lines)
    assert any("… and 10 more" in line for line in lines)

