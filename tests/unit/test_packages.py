"""Package databases read while a layer streams (dpkg, status.d, apk, rpm) and their skew."""

from __future__ import annotations

import gzip
import io
import sqlite3
import struct
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pytest_multiarch.audit import packages
from pytest_multiarch.audit.layerscan import LayerSummary, scan_layer, scan_layers
from pytest_multiarch.audit.packages import Package, compare_variants, variant_packages

STATUS = b"""Package: libssl3
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 3.0.22-1~deb12u2
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project's implementation.

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2025b-0+deb12u1

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

"""

APK = b"""C:Q1abc=
P:musl
V:1.2.4-r2
A:aarch64
S:383152

P:busybox
V:1.36.1-r15
A:aarch64

"""


def layer(members: dict[str, bytes | None], digest: str = "sha256:" + "1" * 64) -> LayerSummary:
    """A gzip layer holding *members* (None: a whiteout marker), scanned for real."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    blob = gzip.compress(raw.getvalue())

    @contextmanager
    def opener() -> Iterator[io.BytesIO]:
        yield io.BytesIO(blob)

    return scan_layer((digest, "application/vnd.oci.image.layer.v1.tar+gzip", opener))


def test_dpkg_status_is_read_while_the_layer_streams() -> None:
    summary = layer({"var/lib/dpkg/status": STATUS, "usr/bin/x": b"not a db"})
    (db,) = summary.package_files
    assert db.kind == "dpkg"
    assert not db.problem
    assert [(p.name, p.version) for p in db.packages] == [
        ("libssl3", "3.0.22-1~deb12u2"), ("tzdata", "2025b-0+deb12u1")]
    # the member is still in the filesystem model
    assert any(e.path == "/var/lib/dpkg/status" for e in summary.entries)


def test_a_database_larger_than_the_buffer_is_read_whole() -> None:
    stanzas = b"".join(b"Package: p%d\nStatus: install ok installed\nVersion: 1.%d\n\n" % (i, i)
                       for i in range(60000))  # ~3 MB: more than the scanner's 1 MiB buffer
    summary = layer({"var/lib/dpkg/status": stanzas, "etc/after": b"x"})
    assert len(summary.package_files[0].packages) == 60000
    assert any(e.path == "/etc/after" for e in summary.entries)


def test_distroless_status_d_and_apk() -> None:
    summary = layer({
        "var/lib/dpkg/status.d/base": b"Package: base-files\nVersion: 12.4+deb12u5\n"
                                      b"Architecture: arm64\n",
        "var/lib/dpkg/status.d/base.md5sums": b"abc  etc/issue\n",
        "lib/apk/db/installed": APK,
    })
    found = variant_packages([summary], native=("arm64", "aarch64"))
    assert found.versions == {"base-files": "12.4+deb12u5", "musl": "1.2.4-r2",
                              "busybox": "1.36.1-r15"}
    assert found.databases == ("/lib/apk/db/installed", "/var/lib/dpkg/status.d/base")


@pytest.mark.parametrize(("data", "expected"), [
    (STATUS[:STATUS.index(b"Version: 2025b")], "truncated: the file ends inside the stanza"),
    (b"\x7fELF\x02\x01\x01garbage\x00\x00", "is not a 'Field: value' line"),
    (b"\xff\xfe\x00garbage", "not UTF-8 text"),
    (b"Package: a\nVersion: 1\n\n Version: 2\nPackage: b\n", "continuation line"),
])
def test_bad_dpkg_status_is_a_named_problem(data: bytes, expected: str) -> None:
    summary = layer({"var/lib/dpkg/status": data})
    found = variant_packages([summary])
    assert found.problems
    assert expected in found.problems[0]
    assert found.problems[0].startswith("/var/lib/dpkg/status (layer sha256:111111111111)")


def test_a_name_installed_for_two_archs_keys_the_foreign_one() -> None:
    status = (b"Package: libc6\nArchitecture: i386\nVersion: 2.36-9\n\n"
              b"Package: libc6\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n\n"
              b"Package: zlib1g\nArchitecture: amd64\nVersion: 1:1.2.13\n\n")
    found = variant_packages([layer({"var/lib/dpkg/status": status})], ["amd64", "x86_64"])
    assert found.versions == {"libc6": "2.36-9+deb12u4", "libc6:i386": "2.36-9",
                              "zlib1g": "1:1.2.13"}


def test_later_layers_replace_and_whiteouts_remove() -> None:
    base = layer({"var/lib/dpkg/status": STATUS, "lib/apk/db/installed": APK},
                 digest="sha256:" + "a" * 64)
    upgrade = layer({"var/lib/dpkg/status": b"Package: libssl3\nVersion: 3.0.23\n",
                     "lib/apk/db/.wh.installed": None}, digest="sha256:" + "b" * 64)
    found = variant_packages([base, upgrade])
    assert found.versions == {"libssl3": "3.0.23"}


def test_summary_with_packages_survives_the_cache(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("var/lib/dpkg/status")
        info.size = len(STATUS)
        tar.addfile(info, io.BytesIO(STATUS))
    blob = raw.getvalue()
    import hashlib

    digest = "sha256:" + hashlib.sha256(blob).hexdigest()

    @contextmanager
    def opener() -> Iterator[io.BytesIO]:
        yield io.BytesIO(blob)

    first = scan_layers([(digest, "application/vnd.oci.image.layer.v1.tar", opener)],
                        cache_dir=tmp_path)[0]
    second = scan_layers([(digest, "application/vnd.oci.image.layer.v1.tar", opener)],
                         cache_dir=tmp_path)[0]
    assert second.from_cache
    assert not first.from_cache
    assert second.package_files == first.package_files


def _rpm_blob(name: str, version: str, release: str, arch: str) -> bytes:
    strings = [(1000, name), (1001, version), (1002, release), (1022, arch)]
    data = b""
    index = b""
    for tag, text in strings:
        index += struct.pack(">IIII", tag, 6, len(data), 1)
        data += text.encode() + b"\0"
    return struct.pack(">II", len(strings), len(data)) + index + data


def test_rpm_sqlite_database(tmp_path: Path) -> None:
    path = tmp_path / "rpmdb.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB)")
    db.execute("INSERT INTO Packages (blob) VALUES (?)",
               (_rpm_blob("openssl-libs", "3.0.7", "27.el9", "aarch64"),))
    db.commit()
    db.close()
    summary = layer({"var/lib/rpm/rpmdb.sqlite": path.read_bytes()})
    assert variant_packages([summary], ["aarch64"]).versions == {"openssl-libs": "3.0.7-27.el9"}
    broken = layer({"var/lib/rpm/rpmdb.sqlite": b"SQLite format 3\0" + b"\xff" * 200})
    assert "not a readable rpm sqlite database" in variant_packages([broken]).problems[0]


def test_oversized_database_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packages, "MAX_DB_BYTES", 100)
    summary = layer({"var/lib/dpkg/status": STATUS, "etc/after": b"x"})
    assert "more than the 100 read" in summary.package_files[0].problem
    assert any(e.path == "/etc/after" for e in summary.entries)


def test_skew_across_variants() -> None:
    def variant(*pkgs: tuple[str, str]) -> packages.VariantPackages:
        found = {n: Package(n, v) for n, v in pkgs}
        return packages.VariantPackages(found, ("/var/lib/dpkg/status",))

    skews = compare_variants({
        "amd64": variant(("libssl3", "3.0.22"), ("tzdata", "2025b"), ("intel-microcode", "3"),
                         ("curl", "7.88")),
        "arm64": variant(("libssl3", "3.0.20"), ("tzdata", "2025b")),
        "s390x": packages.VariantPackages(),  # no database at all: not compared
    }, allow=["curl"])
    by_name = {s.name: s for s in skews}
    assert set(by_name) == {"libssl3", "intel-microcode", "curl"}
    assert by_name["libssl3"].failing
    assert by_name["libssl3"].describe() == (
        "libssl3 differs across archs: amd64 3.0.22, arm64 3.0.20")
    assert by_name["intel-microcode"].by_nature
    assert not by_name["intel-microcode"].failing
    assert by_name["curl"].allowed
    assert "(allowlisted)" in by_name["curl"].describe()
