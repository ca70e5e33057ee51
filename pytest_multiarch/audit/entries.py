"""What a layer does to the filesystem, member by member: the records the audit keeps.

:class:`~pytest_multiarch.audit.tarscan.TarScanner` writes them, layer summaries cache them (in the
compact JSON form below), :mod:`~pytest_multiarch.audit.imagefs` applies them and the verdicts and
package comparison read them; none of those needs to know the records came from a tar stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from pytest_multiarch.audit.elf import ElfHeader, InvalidElf

__all__ = ["Entry", "Op"]


class Op(StrEnum):
    """What a layer member does to the filesystem (one letter: cached summaries stay small)."""

    FILE = "f"
    DIR = "d"
    SYMLINK = "l"
    HARDLINK = "h"
    OTHER = "o"  # device, fifo: present, never executable
    WHITEOUT = "w"  # path: what the layer deletes from the layers below
    OPAQUE = "q"  # path: the directory whose lower contents the layer hides


class Entry(NamedTuple):
    """One member of a layer, as far as the audit cares (a tuple: tens of thousands per layer)."""

    op: Op
    path: str  # absolute, normalized
    target: str = ""  # symlink target as written; hardlink target normalized
    mode: int = 0
    elf: ElfHeader | InvalidElf | None = None
    shebang: tuple[str, str] | None = None  # (interpreter, argument)

    def to_json(self) -> list[Any]:
        if self.op is Op.FILE:
            out: list[Any] = [self.op.value, self.path, self.mode, _elf_to_json(self.elf),
                              list(self.shebang) if self.shebang else None]
            while out[-1] is None:
                out.pop()
            return out
        if self.target:
            return [self.op.value, self.path, self.target]
        return [self.op.value, self.path]

    @classmethod
    def from_json(cls, obj: Sequence[Any]) -> Entry:
        op = Op(obj[0])
        if op is Op.FILE:
            shebang = obj[4] if len(obj) > 4 else None
            return cls(op, str(obj[1]), mode=int(obj[2]),
                       elf=_elf_from_json(obj[3] if len(obj) > 3 else None),
                       shebang=(str(shebang[0]), str(shebang[1])) if shebang else None)
        return cls(op, str(obj[1]), str(obj[2]) if len(obj) > 2 else "")


def _elf_to_json(header: ElfHeader | InvalidElf | None) -> Any:
    if header is None:
        return None
    if isinstance(header, InvalidElf):
        return {"invalid": header.reason}
    return [header.elf_class, header.little_endian, header.e_type, header.machine, header.flags,
            header.interp, header.has_interp, header.has_dynamic, header.needed, header.complete,
            header.cpu_level]


def _elf_from_json(obj: Any) -> ElfHeader | InvalidElf | None:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return InvalidElf(str(obj["invalid"]))
    cls, le, e_type, machine, flags, interp, has_interp, has_dyn, needed, complete, level = obj
    return ElfHeader(int(cls), bool(le), int(e_type), int(machine), int(flags),
                     None if interp is None else str(interp), bool(has_interp), bool(has_dyn),
                     int(needed), bool(complete), str(level))
