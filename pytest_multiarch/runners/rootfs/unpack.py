"""Apply OCI/Docker layer tarballs to a directory, safely.

Nothing escapes the target directory:

* member names that are absolute or contain ``..`` reject the layer (:class:`UnsafeLayerError`);
  so do hard links whose target is absolute or contains ``..``;
* symlinks already in the tree are followed the way ``chroot`` would — an absolute target or a
  ``..`` past the top stays at the top — so ``lib -> /usr/lib`` works and ``evil -> /etc``
  followed by ``evil/passwd`` writes the tree's own ``etc/passwd``, never the host's;
* the last component is never followed: an existing file or link is removed, then the new entry
  created with ``O_EXCL|O_NOFOLLOW``.

Whiteouts (``.wh.NAME``) delete from lower layers; an opaque marker (``.wh..wh..opq``) empties a
directory of what lower layers put there.  A whiteout naming nothing (``.wh.``), its own directory
(``.wh..``) or the one above (``.wh...``) rejects the layer: the last would delete the directory
*above* the root.  The unpacked tree is bounded (:class:`UnpackLimits`: bytes and entries), so a
layer that decompresses without end fills neither the disk nor the inode table.

Modes are kept; owners and device nodes only as root (device nodes are skipped otherwise).
Directory modes are applied last, so a read-only directory does not stop later entries.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

from pytest_multiarch.errors import CorruptLayer, RootfsTooLarge, UnsafeLayerError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_MAX_SYMLINK_HOPS = 40
_CHUNK = 1 << 20


# A CUDA "devel" image unpacks to ~10 GiB in ~60,000 entries, the largest PyTorch/CUDA images to
# ~25 GiB: the defaults leave room for those and still stop a layer that expands without end.
DEFAULT_MAX_BYTES = 64 << 30
DEFAULT_MAX_FILES = 2_000_000


@dataclass(frozen=True, slots=True)
class UnpackLimits:
    """How large an unpacked root filesystem may get, in file bytes and in entries."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES


@dataclass(slots=True)
class UnpackStats:
    """What an unpack did, for logs and tests."""

    entries: int = 0
    bytes: int = 0
    whiteouts: int = 0
    skipped_devices: int = 0
    skipped: list[str] = field(default_factory=list)


def _member_parts(name: str, *, what: str) -> list[str]:
    """The components of an archive path; UnsafeLayerError for absolute paths and ``..``."""
    if name.startswith("/"):
        raise UnsafeLayerError(f"{what}: absolute path {name!r} in layer; refusing to unpack it")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayerError(f"{what}: path {name!r} climbs out with '..'; refusing the layer")
    return parts


def resolve_in_root(root: Path, parts: Iterable[str], *, follow_last: bool = True) -> Path:
    """*parts* resolved inside *root* as if *root* were ``/`` (chroot semantics), never outside."""
    resolved: list[str] = []
    pending = list(parts)
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (pending or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise UnsafeLayerError(f"too many levels of symbolic links at {candidate}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = target.split("/") + pending
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _make_writable(path)
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _make_writable(top: Path) -> None:
    """Give the owner rwx on every directory below *top*, so rmtree can empty read-only ones."""
    for dirpath, _dirs, _files in os.walk(top):
        with_mode = os.lstat(dirpath).st_mode
        if with_mode & 0o700 != 0o700:
            os.chmod(dirpath, stat.S_IMODE(with_mode) | 0o700)


def remove_tree(top: Path) -> None:
    """Remove an unpacked tree, read-only directories included."""
    if os.path.lexists(top):
        _remove(top)


def _ensure_dir(root: Path, parts: list[str], written: set[Path]) -> Path:
    """The directory *parts* inside *root*, created (and freed of a non-directory) as needed."""
    current = root
    for part in parts:
        nxt = resolve_in_root(root, [*current.relative_to(root).parts, part])
        if os.path.lexists(nxt) and not nxt.is_dir():
            nxt.unlink()
        if not os.path.lexists(nxt):
            nxt.mkdir(mode=0o755, parents=True)
        written.add(nxt)
        current = nxt
    return current


def _prune(directory: Path, keep: set[Path]) -> None:
    """Remove what is in *directory* but not in *keep* (an opaque whiteout), recursively."""
    for child in list(directory.iterdir()):
        if child not in keep:
            _remove(child)
        elif child.is_dir() and not child.is_symlink():
            _prune(child, keep)


class LayerApplier:
    """Applies layers in order to *root*; call :meth:`finish` once after the last one."""

    def __init__(self, root: Path, *, is_root: bool | None = None,
                 limits: UnpackLimits = UnpackLimits()) -> None:
        self.root = root
        self.is_root = os.geteuid() == 0 if is_root is None else is_root
        self.limits = limits
        self.stats = UnpackStats()
        self._dirs: dict[Path, tarfile.TarInfo] = {}
        root.mkdir(parents=True, exist_ok=True)

    def apply(self, tar_stream: IO[bytes], *, what: str = "layer") -> None:
        """Apply one uncompressed tar stream."""
        written: set[Path] = set()
        try:
            with tarfile.open(fileobj=tar_stream, mode="r|") as archive:
                for member in archive:
                    self._apply_member(archive, member, written, what)
        except _content_errors() as exc:
            # Only what bad content raises: a full disk (OSError) stays what it is.
            raise CorruptLayer(f"{what}: not a valid layer ({type(exc).__name__}: {exc}); "
                               "it cannot be unpacked") from None

    def _apply_member(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, written: set[Path], what: str
    ) -> None:
        parts = _member_parts(member.name, what=what)
        if not parts:  # the root directory itself ("./")
            if member.isdir():
                self._dirs[self.root] = member
            return
        name = parts[-1]
        if name.startswith(WHITEOUT) and name[len(WHITEOUT):] in ("", ".", ".."):
            raise UnsafeLayerError(
                f"{what}: whiteout {member.name!r} names no file below its directory (it would "
                "delete the directory itself or the one above); refusing the layer"
            )
        self._count(member, what)
        parent = _ensure_dir(self.root, parts[:-1], written)
        if name == OPAQUE:
            _prune(parent, written)
            self.stats.whiteouts += 1
            return
        if name.startswith(WHITEOUT):
            _remove(parent / name[len(WHITEOUT):])
            self.stats.whiteouts += 1
            return
        dest = parent / name
        written.add(dest)
        if member.isdir():
            if os.path.lexists(dest) and not (dest.is_dir() and not dest.is_symlink()):
                dest.unlink()
            if not os.path.lexists(dest):
                dest.mkdir(mode=0o755)
            self._dirs[dest] = member
            return
        if os.path.lexists(dest):
            _remove(dest)
        if self._make_entry(archive, member, dest, what):
            self._set_owner_mode_time(dest, member)

    def _make_entry(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, what: str
    ) -> bool:
        """Create the non-directory *member* at *dest*; whether its owner and mode are to be set
        (not for a hard link, which shares its source's inode, nor for a skipped member)."""
        if member.isreg():
            self._write_file(archive, member, dest)
        elif member.issym():
            os.symlink(member.linkname, dest)
        elif member.islnk():
            link_parts = _member_parts(member.linkname, what=f"{what}: hard link {member.name}")
            source = resolve_in_root(self.root, link_parts, follow_last=False)
            if not os.path.lexists(source) or (source.is_dir() and not source.is_symlink()):
                raise UnsafeLayerError(
                    f"{what}: hard link {member.name!r} -> {member.linkname!r} has no file to "
                    "point at in the tree"
                )
            os.link(source, dest, follow_symlinks=False)
            return False
        elif member.ischr() or member.isblk():
            if not self.is_root:
                self.stats.skipped_devices += 1
                self.stats.skipped.append(member.name)
                return False
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(dest, kind | (member.mode & 0o7777), os.makedev(member.devmajor,
                                                                       member.devminor))
        elif member.isfifo():
            os.mkfifo(dest, member.mode & 0o7777)
        else:
            self.stats.skipped.append(member.name)
            return False
        return True

    def _count(self, member: tarfile.TarInfo, what: str) -> None:
        """Count *member* against the limits before anything of it is written."""
        self.stats.entries += 1
        if member.isreg():
            self.stats.bytes += member.size
        limits = self.limits
        if self.stats.entries > limits.max_files:
            raise RootfsTooLarge(
                f"{what}: member {member.name!r} takes the unpacked root filesystem past "
                f"{limits.max_files} entries (the unpack file limit); raise "
                "--multiarch-unpack-max-files if the image really has that many"
            )
        if self.stats.bytes > limits.max_bytes:
            raise RootfsTooLarge(
                f"{what}: member {member.name!r} takes the unpacked root filesystem past "
                f"{limits.max_bytes} bytes (the unpack size limit); raise "
                "--multiarch-unpack-max-bytes if the image really is that large"
            )

    @staticmethod
    def _write_file(archive: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
        source = archive.extractfile(member)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(dest, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            if source is not None:
                shutil.copyfileobj(source, out, _CHUNK)

    def _set_owner_mode_time(self, path: Path, member: tarfile.TarInfo) -> None:
        if self.is_root:
            os.lchown(path, member.uid, member.gid)
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)  # after chown, which clears setuid bits
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def finish(self) -> None:
        """Apply directory owners, modes and times, deepest first."""
        for path in sorted(self._dirs, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                self._set_owner_mode_time(path, self._dirs[path])
        self._dirs.clear()


def _content_errors() -> tuple[type[BaseException], ...]:
    import gzip
    import zlib

    import zstandard

    errors: list[type[BaseException]] = [tarfile.TarError, EOFError, zlib.error,
                                         gzip.BadGzipFile, zstandard.ZstdError]
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency
        pass
    else:
        errors.append(cast("type[BaseException]", isal_zlib.error))
    return tuple(errors)


def decompressed(buffered: io.BufferedReader) -> IO[bytes]:
    """*buffered* decompressed by its magic: gzip (isal when available), zstd, or plain tar."""
    magic = buffered.peek(4)[:4]
    if magic[:2] == b"\x1f\x8b":
        try:
            from isal import igzip

            return cast(IO[bytes], igzip.IGzipFile(fileobj=buffered, mode="rb"))  # type: ignore[no-untyped-call]
        except ImportError:  # pragma: no cover - isal is a dependency
            import gzip

            return cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(
            buffered, read_across_frames=True
        ))
    return cast(IO[bytes], buffered)


def _drain(stream: IO[bytes]) -> None:
    while stream.read(_CHUNK):
        pass


def unpack_layers(
    layers: Iterable[AbstractContextManager[BinaryIO]], root: Path, *, is_root: bool | None = None,
    limits: UnpackLimits = UnpackLimits(), digests: Sequence[str] = (),
) -> UnpackStats:
    """Apply each opened (possibly compressed) layer in order into *root*.

    *digests* (the layers', in order) name the layer in errors; *limits* bound the whole tree.
    """
    applier = LayerApplier(root, is_root=is_root, limits=limits)
    for index, opener in enumerate(layers):
        what = f"layer {index} ({digests[index]})" if index < len(digests) else f"layer {index}"
        with opener as raw:
            buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(
                cast(io.RawIOBase, raw), _CHUNK
            )
            stream = decompressed(buffered)
            applier.apply(stream, what=what)
            # Read both to EOF: the decompressor checks its CRC, a verifying reader the digest.
            try:
                _drain(stream)
            except _content_errors() as exc:
                raise CorruptLayer(f"{what}: its compressed stream is damaged "
                                   f"({type(exc).__name__}: {exc})") from None
            _drain(buffered)
    applier.finish()
    return applier.stats
