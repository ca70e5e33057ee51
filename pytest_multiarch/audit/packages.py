"""Package databases of a variant, read while the audit streams its layers, and their skew.

The tar scanner hands every member at a package-database path to :func:`parse_member` (the
bytes are read from the stream it already decompresses, bounded by :data:`MAX_DB_BYTES`): dpkg's
``/var/lib/dpkg/status`` and the one-file-per-package ``status.d/`` of distroless images, apk's
``/lib/apk/db/installed``, and rpm's ``rpmdb.sqlite``.  What it finds is cached with the layer
summary.  :func:`variant_packages` applies the layers in order (later files replace earlier
ones, whiteouts remove them) and :func:`compare_variants` compares name -> version across the
variants of one index.
"""

from __future__ import annotations

import fnmatch
import sqlite3
import struct
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_multiarch.audit.entries import Op
from pytest_multiarch.audit.findings import short_digest

if TYPE_CHECKING:
    from pytest_multiarch.audit.layerscan import LayerSummary

__all__ = [
    "DB_PREFIXES",
    "MAX_DB_BYTES",
    "DbFile",
    "Package",
    "Skew",
    "VariantPackages",
    "compare_variants",
    "is_db_path",
    "parse_member",
    "variant_packages",
]

DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_STATUS_D = "/var/lib/dpkg/status.d/"
APK_INSTALLED = "/lib/apk/db/installed"
RPM_SQLITE = ("/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite")
#: What the tar scanner tests each member path against (one C-level startswith per member).
DB_PREFIXES = (DPKG_STATUS, APK_INSTALLED, *RPM_SQLITE)
#: A package database larger than this is not read (a full Debian status is ~2 MB, an rpmdb
#: of a big Fedora image ~30 MB); the variant then gets a finding, never a silent pass.
MAX_DB_BYTES = 64 * 1024 * 1024

#: Packages that exist on some architectures only by nature: reported, never failed.
BY_NATURE = (
    "*:*", "firmware-*", "*-firmware", "linux-firmware*", "grub-*", "grub2*", "shim*",
    "syslinux*", "u-boot*", "intel-microcode", "amd64-microcode", "iucode-tool", "s390-tools*",
    "libc6-i386", "lib32*", "libx32*", "lib64*", "linux-image-*", "linux-headers-*",
    "raspi-*", "efibootmgr", "efivar", "libefi*", "mokutil", "powerpc-utils*", "ppc64-diag",
    "yaboot*", "opal-*", "librtas*", "libnuma*", "valgrind*", "libunwind*",
)


_REMOVING = frozenset((Op.WHITEOUT, Op.OPAQUE))


def is_db_path(path: str) -> bool:
    """Whether the member at *path* is a package database the audit reads."""
    if path.startswith(DPKG_STATUS_D):
        return "/" not in path[len(DPKG_STATUS_D):] and not path.endswith(".md5sums")
    return path in (DPKG_STATUS, APK_INSTALLED, *RPM_SQLITE)


@dataclass(frozen=True, slots=True)
class Package:
    """One installed package: name, version, architecture (as its database spells them)."""

    name: str
    version: str
    arch: str = ""


@dataclass(frozen=True, slots=True)
class DbFile:
    """One package-database member of one layer: what it lists, or why it could not be read."""

    path: str
    kind: str  # "dpkg", "apk", "rpm"
    packages: tuple[Package, ...] = ()
    problem: str = ""  # non-empty: the file is unreadable (truncated, garbage, too large)

    def to_json(self) -> list[Any]:
        return [self.path, self.kind, [[p.name, p.version, p.arch] for p in self.packages],
                self.problem]

    @classmethod
    def from_json(cls, obj: Sequence[Any]) -> DbFile:
        return cls(str(obj[0]), str(obj[1]),
                   tuple(Package(str(n), str(v), str(a)) for n, v, a in obj[2]), str(obj[3]))


def kind_of(path: str) -> str:
    if path.startswith("/var/lib/dpkg/"):
        return "dpkg"
    return "apk" if path == APK_INSTALLED else "rpm"


def parse_member(path: str, data: bytes | None, size: int) -> DbFile:
    """What the package database at *path* lists; *data* is None when it was too large."""
    kind = kind_of(path)
    if data is None:
        return DbFile(path, kind, problem=f"{size} bytes, more than the {MAX_DB_BYTES} read")
    try:
        if kind == "rpm":
            return DbFile(path, kind, _parse_rpm_sqlite(data))
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DbFile(path, kind, problem=f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except (sqlite3.DatabaseError, ValueError, struct.error) as exc:
        return DbFile(path, kind, problem=f"not a readable rpm sqlite database ({exc})")
    parse = _parse_apk if kind == "apk" else _parse_dpkg
    try:
        return DbFile(path, kind, parse(text))
    except ValueError as exc:
        return DbFile(path, kind, problem=str(exc))


def _stanzas(text: str, *, sep: str) -> Iterable[tuple[int, dict[str, str]]]:
    """RFC 822-style paragraphs: ``(line number, fields)``; raises ValueError on garbage."""
    fields: dict[str, str] = {}
    start = 0
    key = ""
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            if fields:
                yield start, fields
            fields, key = {}, ""
            continue
        if not fields:
            start = number
        if sep == ": " and line[0] in " \t":
            if not key:
                raise ValueError(f"line {number}: a continuation line outside any field")
            continue  # multi-line values (Description, Conffiles): nothing we compare
        name, found, value = line.partition(sep if sep == ":" else ":")
        if not found or not name or " " in name:
            raise ValueError(f"line {number}: {line[:60]!r} is not a 'Field: value' line")
        key = name
        fields[name] = value.strip()
    if fields:
        yield start, fields


def _parse_dpkg(text: str) -> tuple[Package, ...]:
    found: list[Package] = []
    complete = text.endswith("\n\n")  # dpkg ends every stanza with a blank line
    stanzas = list(_stanzas(text, sep=": "))
    for index, (line, fields) in enumerate(stanzas):
        name, version = fields.get("Package"), fields.get("Version")
        if not name or not version:
            last = index == len(stanzas) - 1
            why = "truncated: the file ends inside" if last and not complete else "broken:"
            raise ValueError(f"{why} the stanza at line {line} has no "
                             f"{'Package' if not name else 'Version'} field")
        status = fields.get("Status", "install ok installed").split()
        if status[-1:] in (["installed"], ["half-configured"], ["unpacked"]) or not status:
            found.append(Package(name, version, fields.get("Architecture", "")))
    if text.strip() and not stanzas:
        raise ValueError("no package stanza in a non-empty file")
    return tuple(found)


def _parse_apk(text: str) -> tuple[Package, ...]:
    found: list[Package] = []
    for line, fields in _stanzas(text, sep=":"):
        name, version = fields.get("P"), fields.get("V")
        if not name or not version:
            raise ValueError(f"the record at line {line} has no {'P' if not name else 'V'}: line")
        found.append(Package(name, version, fields.get("A", "")))
    return tuple(found)


def _parse_rpm_sqlite(data: bytes) -> tuple[Package, ...]:
    # sqlite3 opens files only; the member is at most MAX_DB_BYTES, read in the scan thread.
    with tempfile.NamedTemporaryFile(suffix=".sqlite") as handle:
        handle.write(data)
        handle.flush()
        db = sqlite3.connect(f"file:{handle.name}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT blob FROM Packages").fetchall()
        finally:
            db.close()
    return tuple(_rpm_header(bytes(blob)) for (blob,) in rows)


_RPM_NAME, _RPM_VERSION, _RPM_RELEASE, _RPM_EPOCH, _RPM_ARCH = 1000, 1001, 1002, 1003, 1022


def _rpm_header(blob: bytes) -> Package:
    """Name, epoch:version-release and arch of one rpm header blob (the rpmdb sqlite format)."""
    count, size = struct.unpack_from(">II", blob, 0)
    base = 8 + 16 * count
    if base + size > len(blob):
        raise ValueError("an rpm header longer than its blob")
    tags: dict[int, str | int] = {}
    for i in range(count):
        tag, kind, offset, _ = struct.unpack_from(">IIII", blob, 8 + 16 * i)
        if tag == _RPM_EPOCH and kind == 4:
            tags[tag] = struct.unpack_from(">I", blob, base + offset)[0]
        elif tag in (_RPM_NAME, _RPM_VERSION, _RPM_RELEASE, _RPM_ARCH) and kind == 6:
            end = blob.index(b"\0", base + offset)
            tags[tag] = blob[base + offset : end].decode("utf-8", "replace")
    version = f"{tags.get(_RPM_VERSION, '')}-{tags.get(_RPM_RELEASE, '')}"
    if tags.get(_RPM_EPOCH):
        version = f"{tags[_RPM_EPOCH]}:{version}"
    return Package(str(tags.get(_RPM_NAME, "?")), version, str(tags.get(_RPM_ARCH, "")))


# -- one variant ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VariantPackages:
    """The packages of one variant's final filesystem, by name, and the databases they came from."""

    packages: Mapping[str, Package] = field(default_factory=dict)
    databases: tuple[str, ...] = ()  # paths, in the final filesystem
    problems: tuple[str, ...] = ()  # unreadable databases: "path (layer …): why"

    @property
    def versions(self) -> dict[str, str]:
        return {name: p.version for name, p in self.packages.items()}


def variant_packages(
    summaries: Iterable[LayerSummary], native: Iterable[str] = ()
) -> VariantPackages:
    """The package databases of the final filesystem: layers applied in order, whiteouts and
    opaque directories honoured.  A package of a foreign architecture (``libc6:i386``) is keyed
    ``name:arch`` when the same name is also installed for the variant's own architecture;
    *native* names that architecture as its databases spell it (dpkg ``arm64``, apk and rpm
    ``aarch64``)."""
    own = {"", "all", "any", "noarch", *native}
    files: dict[str, tuple[DbFile, str]] = {}
    for summary in summaries:
        for entry in summary.entries:
            if entry.op in _REMOVING:
                # A whiteout removes the path and what is under it; an opaque directory only
                # what is under it (from the layers below, not from its own layer: see below).
                prefix = entry.path.rstrip("/") + "/"
                whiteout = entry.op == Op.WHITEOUT
                for path in [p for p in files
                             if p.startswith(prefix) or (whiteout and p == entry.path)]:
                    del files[path]
        for db in summary.package_files:
            files[db.path] = (db, summary.digest)
    packages: dict[str, Package] = {}
    problems: list[str] = []
    for path in sorted(files):
        db, digest = files[path]
        if db.problem:
            problems.append(f"{path} (layer {short_digest(digest)}): {db.problem}")
        for pkg in db.packages:
            # Keyed by name: a mislabeled variant's packages compare as what they are (the
            # config and binaries checks report the label).  Only a name installed for two
            # architectures (multiarch co-installation) keys its foreign one as name:arch.
            held = packages.get(pkg.name)
            if held is None or held.arch == pkg.arch:
                packages[pkg.name] = pkg
            elif pkg.arch in own and held.arch not in own:
                packages[f"{pkg.name}:{held.arch}"], packages[pkg.name] = held, pkg
            else:
                packages[f"{pkg.name}:{pkg.arch}"] = pkg
    return VariantPackages(packages, tuple(sorted(files)), tuple(problems))


# -- across the variants of one index ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skew:
    """One package that is not the same on every variant: its version per arch (None: absent)."""

    name: str
    versions: Mapping[str, str | None]
    by_nature: bool = False
    allowed: bool = False

    @property
    def failing(self) -> bool:
        return not (self.by_nature or self.allowed)

    def describe(self) -> str:
        shown = ", ".join(f"{arch} {version or '(not installed)'}"
                          for arch, version in self.versions.items())
        if self.by_nature:
            return f"{self.name} exists on some archs only, by nature: {shown}"
        what = "differs across archs" if all(self.versions.values()) else "is missing on some"
        tail = " (allowlisted)" if self.allowed else ""
        return f"{self.name} {what}: {shown}{tail}"


def compare_variants(
    variants: Mapping[str, VariantPackages], *, allow: Sequence[str] = ()
) -> list[Skew]:
    """Every package whose version is not the same on all *variants* (arch -> packages) that
    have a package database; sorted by name.  Names matching :data:`BY_NATURE` or *allow*
    (glob patterns) are marked, not failing."""
    with_db = {arch: v for arch, v in variants.items() if v.databases}
    if len(with_db) < 2:
        return []
    names = sorted({name for v in with_db.values() for name in v.packages})
    skews: list[Skew] = []
    for name in names:
        versions = {arch: (v.packages[name].version if name in v.packages else None)
                    for arch, v in with_db.items()}
        if len(set(versions.values())) == 1:
            continue
        present = [version for version in versions.values() if version]
        nature = len(present) < len(versions) and _matches(name, BY_NATURE)
        skews.append(Skew(name, versions, by_nature=nature, allowed=_matches(name, allow)))
    return skews


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
