"""Property tests for every parser that takes outside input: any input ends in a result or a
:class:`MultiarchError` subclass, within a time bound (``bounded``: a thread that must end; the
Hypothesis deadline of the active profile bounds each example that does end).

Profiles (tests/conftest.py): ``ci`` is the default (fixed, derandomized, small);
``HYPOTHESIS_PROFILE=dev`` runs thousands of examples per property.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pytest_multiarch.audit import elf
from pytest_multiarch.audit.tarscan import TarScanner
from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.oci.auth import Challenge, parse_challenges
from pytest_multiarch.oci.content import Manifest, load_json
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.platforms import Platform, parse_arch_list

Bounded = Callable[..., Any]
DIGEST = "sha256:" + "0" * 64

# -- image references -------------------------------------------------------------------------

REF_ALPHABET = st.sampled_from([*"abcXYZ019.-_:/@ \t", "sha256:", "a" * 64, "localhost",
                                "docker.io", "[::1]", "%", "é"])
ref_texts = st.one_of(st.text(max_size=80), st.lists(REF_ALPHABET, max_size=20).map("".join))


@given(ref_texts)
def test_reference_parse_ends_in_a_reference_or_invalid_reference(
    bounded: Bounded, text: str,
) -> None:
    try:
        ref = bounded(lambda: Reference.parse(text), 5.0)
    except MultiarchError:
        return
    assert isinstance(ref, Reference)
    # What was parsed prints as a reference that parses to the same thing.
    assert Reference.parse(str(ref)) == ref


# -- platform strings -------------------------------------------------------------------------

PLATFORM_PARTS = st.sampled_from(["linux", "windows", "arm64", "amd64", "arm", "v7", "v8",
                                  "s390x", "ppc64le", "native", "/", ",", "", " ", "x86_64",
                                  "aarch64", "armhf", "riscv64", "??"])
platform_texts = st.one_of(st.text(max_size=40),
                           st.lists(PLATFORM_PARTS, max_size=8).map("".join))


@given(platform_texts)
def test_platform_parse_ends_in_a_platform_or_a_named_error(bounded: Bounded, text: str) -> None:
    for parse in (Platform.parse, parse_arch_list):
        try:
            result = bounded(lambda parse=parse: parse(text), 5.0)
        except MultiarchError:
            continue
        assert result is not None


# -- manifests and indexes ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["schemaVersion", "mediaType", "manifests", "config", "layers", "digest",
                         "size", "platform", "architecture", "os", "variant", "x"]),
        children, max_size=6),
    max_leaves=30,
)
MEDIA = ["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
         "application/vnd.docker.distribution.manifest.list.v2+json", "text/html", ""]
descriptor = st.fixed_dictionaries(
    {"mediaType": st.sampled_from(MEDIA), "digest": st.sampled_from([DIGEST, "sha256:x", "", 5]),
     "size": st.one_of(st.integers(-5, 10**20), st.text(max_size=3))},
    optional={"platform": st.dictionaries(st.sampled_from(["architecture", "os", "variant"]),
                                          st.one_of(st.text(max_size=8), st.integers()))})
manifest_docs = st.one_of(
    json_values,
    st.fixed_dictionaries({"schemaVersion": st.sampled_from([1, 2, "2"]),
                           "mediaType": st.sampled_from(MEDIA)},
                          optional={"manifests": st.lists(descriptor, max_size=4),
                                    "config": descriptor,
                                    "layers": st.lists(descriptor, max_size=3)}),
)
manifest_bytes = st.one_of(
    manifest_docs.map(lambda doc: json.dumps(doc).encode()),
    st.binary(max_size=200),
    st.integers(1, 50_000).map(lambda n: b"[" * n),  # the nesting that was a RecursionError
)


@given(manifest_bytes, st.sampled_from(MEDIA))
def test_manifest_parse_ends_in_a_manifest_or_a_named_error(
    bounded: Bounded, raw: bytes, content_type: str,
) -> None:
    def parse() -> None:
        manifest = Manifest.parse(raw, DIGEST, content_type=content_type, what="fuzzed")
        for entry in manifest.manifests:  # what resolve() reads next
            assert entry.digest
        if not manifest.is_index:
            assert manifest.config.digest
            assert isinstance(manifest.layers, tuple)

    try:
        bounded(parse, 5.0)
    except MultiarchError:
        pass


@given(st.binary(max_size=100) | st.text(max_size=100).map(str.encode))
def test_load_json_never_raises_anything_but_a_named_error(bounded: Bounded, raw: bytes) -> None:
    try:
        bounded(lambda: load_json(raw, what="fuzzed", expected="a document"), 5.0)
    except MultiarchError:
        pass


# -- WWW-Authenticate challenges ------------------------------------------------------------------

CHALLENGE_PARTS = st.sampled_from(['Bearer ', 'Basic ', 'realm=', '"', '\\"', ',', ' ', '=',
                                   'https://t/token', 'service=', 'scope=', 'repository:x:pull',
                                   '\\', 'a', '\t', 'é'])
challenge_texts = st.one_of(st.text(max_size=200),
                            st.lists(CHALLENGE_PARTS, max_size=40).map("".join))


@given(challenge_texts)
def test_parse_challenges_never_raises_and_never_backtracks(bounded: Bounded, header: str) -> None:
    challenges = bounded(lambda: parse_challenges(header), 5.0)
    assert all(isinstance(c, Challenge) and c.scheme == c.scheme.lower() for c in challenges)


def test_parse_challenges_on_a_long_hostile_header_is_fast(bounded: Bounded) -> None:
    for header in ('Bearer realm="' + "\\" * 50_000, "Bearer " + "a=" * 50_000,
                   "," * 100_000, 'Basic realm="' + '\\"' * 40_000):
        bounded(lambda header=header: parse_challenges(header), 5.0)


# -- tar headers: the scanner ---------------------------------------------------------------------


def _real_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in (("bin/sh", b"\x7fELF" + bytes(60)), ("etc/x", b"#!/bin/sh\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("l" * 120)
        link.type, link.linkname = tarfile.SYMTYPE, "t" * 120
        archive.addfile(link)
    return out.getvalue()[:4096]


REAL_TAR = _real_tar()
mutations = st.lists(st.tuples(st.integers(0, len(REAL_TAR) - 1), st.integers(0, 255)),
                     max_size=12)


def _fix_checksums(data: bytearray) -> None:
    # Mutated headers mostly fail the checksum; fix some so the fields behind it get fuzzed.
    for at in range(0, len(data) - 511, 512):
        block = data[at : at + 512]
        if block[257:262] in (b"ustar", b"\0\0\0\0\0") and any(block):
            block[148:156] = b" " * 8
            block[148:156] = b"%06o\0 " % sum(block)
            data[at : at + 512] = block


@given(mutations, st.booleans(), st.integers(0, len(REAL_TAR)))
def test_tar_scanner_ends_in_entries_or_a_tar_error(
    bounded: Bounded, changes: list[tuple[int, int]], fix: bool, cut: int,
) -> None:
    data = bytearray(REAL_TAR)
    for at, value in changes:
        data[at] = value
    if fix:
        _fix_checksums(data)
    scanner = TarScanner(io.BytesIO(bytes(data[:cut])), DIGEST)
    try:
        bounded(scanner.run, 5.0)
    except MultiarchError:
        return
    assert all(entry.path.startswith("/") for entry in scanner.entries)


@given(st.binary(min_size=0, max_size=2048))
def test_tar_scanner_on_random_bytes(bounded: Bounded, data: bytes) -> None:
    try:
        bounded(TarScanner(io.BytesIO(data), DIGEST).run, 5.0)
    except MultiarchError:
        pass


@given(mutations, st.booleans())
def test_unpacker_ends_in_a_tree_or_a_named_error(
    bounded: Bounded, changes: list[tuple[int, int]], fix: bool,
) -> None:
    import tempfile
    from pathlib import Path

    from pytest_multiarch.runners.rootfs.unpack import LayerApplier, UnpackLimits

    data = bytearray(REAL_TAR)
    for at, value in changes:
        data[at] = value
    if fix:
        _fix_checksums(data)
    with tempfile.TemporaryDirectory(prefix="fuzz-unpack-bytes-") as tmp:
        applier = LayerApplier(Path(tmp) / "root", is_root=False,
                               limits=UnpackLimits(max_bytes=1 << 20, max_files=100))
        try:
            bounded(lambda: applier.apply(io.BytesIO(bytes(data)), what="fuzzed"), 10.0)
        except MultiarchError:
            pass
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["root"]


# -- ELF and #! headers ---------------------------------------------------------------------------


def _elf_header(cls: int, data: int, machine: int, phoff: int, phentsize: int, phnum: int,
                e_type: int) -> bytes:
    end = "<" if data == 1 else ">"
    ident = b"\x7fELF" + bytes([cls, data, 1]) + bytes(9)
    if cls == 2:
        rest = struct.pack(end + "HHIQQQIHHH", e_type, machine, 1, 0, phoff, 0, 0, 64,
                           phentsize, phnum)
    else:
        rest = struct.pack(end + "HHIIIIIHHH", e_type, machine, 1, 0, phoff & 0xFFFFFFFF, 0, 0,
                           52, phentsize, phnum)
    return ident + rest


elf_headers = st.builds(
    _elf_header, st.sampled_from([0, 1, 2, 3]), st.sampled_from([0, 1, 2, 3]),
    st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
)


@given(elf_headers, st.binary(max_size=600), st.one_of(st.none(), st.integers(0, 2**40)))
def test_parse_elf_never_raises(bounded: Bounded, header: bytes, tail: bytes,
                                file_size: int | None) -> None:
    result = bounded(lambda: elf.parse_elf(header + tail, file_size=file_size), 5.0)
    assert result is None or isinstance(result, elf.ElfHeader | elf.InvalidElf)


@given(st.binary(max_size=300).map(lambda b: b"#!" + b))
def test_parse_shebang_never_raises(bounded: Bounded, data: bytes) -> None:
    result = bounded(lambda: elf.parse_shebang(data), 5.0)
    assert result is None or (isinstance(result, tuple) and len(result) == 2)
