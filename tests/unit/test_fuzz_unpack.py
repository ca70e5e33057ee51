"""Property: whatever member names, link targets and whiteouts a layer holds, unpacking it
either succeeds or raises a MultiarchError, and nothing outside the root is written or deleted.

The sandbox is a fresh directory per example: ``root/`` (the target), ``outside/secret`` and a
file beside ``root`` (what ``.wh...`` used to delete).  Link targets point only into the sandbox,
so even a bug could not touch the host.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.runners.rootfs.unpack import LayerApplier, UnpackLimits

COMPONENTS = ["a", "b", "c", ".", "..", "", ".wh.a", ".wh.b", ".wh..", ".wh...", ".wh.",
              ".wh..wh..opq", ".wh..wh.plnk", "outside", "root"]
KINDS = ["file", "dir", "symlink", "hardlink", "fifo"]

WHITEOUTS = [".wh..", ".wh...", ".wh.", ".wh..wh..opq", ".wh.a", ".wh.outside", ".wh.root"]
leads = st.sampled_from(["", "/", "./", "../"])
# Half the names end in a whiteout: those are the members that delete, so the ones to hammer.
names = st.one_of(
    st.builds(lambda lead, parts: lead + "/".join(parts), leads,
              st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4)),
    st.builds(lambda lead, parts, wh: lead + "/".join([*parts, wh]), leads,
              st.lists(st.sampled_from(["a", "b", ".", ".."]), max_size=2),
              st.sampled_from(WHITEOUTS)),
)
targets = st.one_of(names, st.sampled_from(["{outside}", "{outside}/secret", "{sandbox}",
                                            "../outside", "../../", "..", "."]))
members = st.tuples(names, st.sampled_from(KINDS), targets)
layers = st.lists(st.lists(members, min_size=1, max_size=8), min_size=1, max_size=3)


def _tar(entries: list[tuple[str, str, str]], sandbox: Path) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, target in entries:
            info = tarfile.TarInfo(name or ".")
            link = target.format(outside=sandbox / "outside", sandbox=sandbox)
            if kind == "file":
                info.size = 5
                archive.addfile(info, io.BytesIO(b"pwned"))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = link if kind in ("symlink", "hardlink") else ""
            archive.addfile(info)
    return out.getvalue()


def _outside_state(sandbox: Path) -> dict[str, tuple[int, bytes | str]]:
    state: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(sandbox):
        if Path(dirpath) == sandbox:
            dirnames.remove("root")
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st_ = path.lstat()
            body: bytes | str = (os.readlink(path) if path.is_symlink() else
                                 path.read_bytes() if path.is_file() else "<dir>")
            state[str(path.relative_to(sandbox))] = (st_.st_mode, body)
    return state


@given(layers)
def test_unpack_never_touches_anything_outside_its_root(
    bounded: Callable[..., object], content: list[list[tuple[str, str, str]]],
) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-unpack-") as tmp:
        sandbox = Path(tmp)
        (sandbox / "outside").mkdir()
        (sandbox / "outside" / "secret").write_text("host secret")
        (sandbox / "beside-root").write_text("keep")
        applier = LayerApplier(sandbox / "root", is_root=False,
                               limits=UnpackLimits(max_bytes=1 << 20, max_files=1000))
        before = _outside_state(sandbox)

        def unpack() -> None:
            for entries in content:
                applier.apply(io.BytesIO(_tar(entries, sandbox)), what="fuzzed layer")
            applier.finish()

        try:
            bounded(unpack, 10.0)
        except MultiarchError:
            pass  # refusing the layer is a fine answer; escaping is not
        assert _outside_state(sandbox) == before
        assert (sandbox / "root").is_dir()
