"""Hostile tar headers against the streaming scanner: every header field is checked, no loop.

The layers are real tar archives written by :mod:`tarfile`, then patched the way an attacker
would (a GNU base-256 negative size, a ``-1`` in octal, a pax size past 2**63) with a correct
checksum, so the scanner gets past the checksum check and has to deal with the field itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pytest

from pytest_multiarch.audit.findings import Kind
from pytest_multiarch.audit.layerscan import Layer, scan_layer
from pytest_multiarch.audit.tarheader import TarError
from pytest_multiarch.audit.tarscan import TarScanner
from pytest_multiarch.errors import MultiarchError

DIGEST = "sha256:" + "cd" * 32
BOUND = 5.0  # seconds: a scan of a 1.5 KB layer takes microseconds; a loop never ends


def _tar(name: str = "evil", data: bytes = b"x" * 300, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        info2 = tarfile.TarInfo("after")
        archive.addfile(info2, io.BytesIO(b""))
    raw = out.getvalue()  # without tarfile's padding to 10 KiB: the end marker is enough
    return raw[: (len(raw.rstrip(b"\0")) + 511) & ~511] + bytes(1024)


def _patch_size(tar: bytes, field: bytes, at: int = 0) -> bytes:
    """*tar* with the size field of the header at *at* replaced and the checksum redone."""
    block = bytearray(tar[at : at + 512])
    block[124:136] = field
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return tar[:at] + bytes(block) + tar[at + 512 :]


def _scan_bounded(data: bytes) -> TarScanner:
    """Scan *data* in a thread; fail (not hang) if it has not finished within :data:`BOUND`."""
    scanner = TarScanner(io.BytesIO(data), DIGEST)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            scanner.run()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), f"the scan did not end within {BOUND} s (a loop)"
    if errors:
        raise errors[0]
    return scanner


NEGATIVE_BASE256 = b"\xff" * 4 + (-1024).to_bytes(8, "big", signed=True)  # -1024, 12 bytes


@pytest.mark.parametrize(
    ("field", "shown"),
    [
        (NEGATIVE_BASE256, "-1024"),
        (b"\xff" * 12, "-1"),
        (b"-0000002000\0", "-1024"),  # int(..., 8) takes a sign: the fast path, not base-256
        (b"\x80" + (1 << 70).to_bytes(11, "big"), str(1 << 70)),
    ],
    ids=["base256-minus-1024", "base256-minus-1", "octal-minus", "base256-2**70"],
)
def test_out_of_range_size_is_a_named_error_not_a_loop(field: bytes, shown: str) -> None:
    data = _patch_size(_tar(), field)
    assert len(data) < 4096  # the 1.5 KB layer
    with pytest.raises(TarError) as info:
        _scan_bounded(data)
    assert isinstance(info.value, MultiarchError)
    message = str(info.value)
    assert message.startswith("layer sha256:cdcdcdcdcdcd: corrupt tar: member size")
    assert shown in message
    assert "member 'evil'" in message
    assert "header at byte 0" in message


def test_negative_size_on_an_extension_header_is_refused() -> None:
    # A GNU long-name header ('L') read through _take(): negative sizes moved backwards there too.
    data = _tar(name="n" * 150)
    assert data[156:157] == b"L"
    with pytest.raises(TarError, match="member size -1024 is out of range"):
        _scan_bounded(_patch_size(data, NEGATIVE_BASE256))


def _with_pax_size(size: str) -> bytes:
    """A ustar :func:`_tar` whose first member a pax record gives *size* (written as is)."""
    record = f"size={size}\n".encode()
    length = len(record) + 3  # the length field counts itself: two digits and a space here
    record = b"%d " % length + record
    assert len(record) == length
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = len(record)
    return (header.tobuf(tarfile.USTAR_FORMAT) + record + b"\0" * (-len(record) % 512)
            + _tar(fmt=tarfile.USTAR_FORMAT))


def test_huge_pax_size_is_refused() -> None:
    with pytest.raises(TarError, match=r"pax size 18446744073709551616 is out of range"):
        _scan_bounded(_with_pax_size(f"{1 << 64}"))


def test_unicode_digits_in_a_pax_size_are_not_a_crash() -> None:
    # str.isdigit() is true for '²', which int() refuses: that was an uncaught ValueError.
    scanner = _scan_bounded(_with_pax_size("²"))
    assert [e.path for e in scanner.entries] == ["/evil", "/after"]


def test_the_audit_turns_it_into_a_finding_naming_layer_and_member() -> None:
    data = gzip.compress(_patch_size(_tar(), NEGATIVE_BASE256))
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    @contextmanager
    def opener() -> Iterator[BinaryIO]:
        yield io.BytesIO(data)

    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(
        scan_layer(Layer(digest, "application/vnd.oci.image.layer.v1.tar+gzip", opener))),
        daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), "the audit of a 1.5 KB layer did not end"
    summary = result[0]
    findings = summary.findings  # type: ignore[attr-defined]
    assert [f.kind for f in findings] == [Kind.CORRUPT_TAR]
    assert findings[0].message == (
        f"layer sha256:{digest[7:19]}: corrupt tar: member size -1024 is out of range "
        "(0 to 2**63-1) (the header at byte 0 of the tar, member 'evil'); unpacking it fails")
