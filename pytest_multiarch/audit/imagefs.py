"""A model of an image's final filesystem: layer summaries applied in order, with OCI
whiteouts and opaque directories, and paths resolved through symlinks as the kernel would with
the image as its root.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pytest_multiarch.audit.entries import Entry, Op
from pytest_multiarch.audit.findings import Finding, Kind, Severity, short_digest

if TYPE_CHECKING:
    from pytest_multiarch.audit.layerscan import LayerSummary

__all__ = ["Dir", "Filesystem", "PathMissing", "SymlinkLoop"]

_MAX_SYMLINKS = 40  # Linux MAXSYMLINKS: more hops give ELOOP


class Dir:
    """A directory of the model: its children by name."""

    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str, Dir | Entry] = {}


class PathMissing(Exception):
    """A path (or a component of it) does not exist."""


class SymlinkLoop(Exception):
    """More than MAXSYMLINKS symlinks on the way."""


class Filesystem:
    """The image's final filesystem tree, from layer summaries applied in order."""

    def __init__(self) -> None:
        self.root = Dir()
        self.findings: list[Finding] = []

    def apply(self, summary: LayerSummary) -> None:
        # OCI: whiteouts hide what the layers below hold, never what their own layer holds.
        for entry in summary.entries:
            if entry.op is Op.WHITEOUT:
                self._remove(entry.path)
            elif entry.op is Op.OPAQUE:
                with contextlib.suppress(PathMissing, SymlinkLoop):
                    node = self.walk(entry.path)[1]
                    if isinstance(node, Dir):
                        node.children.clear()
        for entry in summary.entries:
            if entry.op not in (Op.WHITEOUT, Op.OPAQUE):
                self._add(entry, summary.digest)

    def _remove(self, path: str) -> None:
        head, _, name = path.rpartition("/")
        with contextlib.suppress(PathMissing, SymlinkLoop):
            parent = self.walk(head or "/")[1]
            if isinstance(parent, Dir):
                parent.children.pop(name, None)

    def _add(self, entry: Entry, digest: str) -> None:
        head, _, name = entry.path.rpartition("/")
        try:
            parent = self.walk(head or "/", create=True)[1]
        except (PathMissing, SymlinkLoop):
            parent = None
        if not isinstance(parent, Dir):
            return  # its parent is a file or a symlink loop: unpacking skips or fails on it
        if entry.op is Op.DIR:
            if not isinstance(parent.children.get(name), Dir):
                parent.children[name] = Dir()
            return
        if entry.op is Op.HARDLINK:
            try:
                target = self.walk(entry.target, follow_last=False)[1]
            except (PathMissing, SymlinkLoop):
                target = None
            if not isinstance(target, Entry):
                self.findings.append(Finding(
                    Kind.HARDLINK_MISSING, Severity.WARN,
                    f"layer {short_digest(digest)}: hard link {entry.path} points to "
                    f"{entry.target}, which is not a file in the layers so far; unpacking fails "
                    "on it",
                    path=entry.path, layer=digest))
                return
            parent.children[name] = target
            return
        parent.children[name] = entry

    def walk(
        self, path: str, *, follow_last: bool = True, create: bool = False
    ) -> tuple[str, Dir | Entry]:
        """Resolve *path* as the kernel would with the image as its root: ``(real path, node)``.

        Raises :class:`PathMissing` or :class:`SymlinkLoop`.  With *create*, missing directories
        are made (a layer member's parents, as unpacking does).
        """
        todo = _components(path)[::-1]
        names: list[str] = []
        dirs: list[Dir] = [self.root]
        hops = 0
        while todo:
            name = todo.pop()
            if name == "..":
                if len(dirs) > 1:
                    dirs.pop()
                    names.pop()
                continue
            current = dirs[-1]
            child = current.children.get(name)
            if child is None:
                if not create:
                    raise PathMissing("/" + "/".join([*names, name]))
                child = current.children[name] = Dir()
            if isinstance(child, Dir):
                dirs.append(child)
                names.append(name)
                continue
            if child.op is Op.SYMLINK and (todo or follow_last):
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise SymlinkLoop("/" + "/".join([*names, name]))
                if child.target.startswith("/"):
                    del dirs[1:], names[:]
                todo.extend(_components(child.target)[::-1])
                continue
            if todo:
                if not create:
                    raise PathMissing("/" + "/".join([*names, name, *todo[::-1]]))
                child = current.children[name] = Dir()
                dirs.append(child)
                names.append(name)
                continue
            return "/" + "/".join([*names, name]), child
        return "/" + "/".join(names), dirs[-1]

    def files(self) -> Iterator[tuple[str, Entry]]:
        """Every regular file of the final filesystem, by path (sorted)."""
        stack = [("", iter(sorted(self.root.children.items())))]
        while stack:
            prefix, items = stack[-1]
            for name, child in items:
                if isinstance(child, Dir):
                    stack.append((f"{prefix}/{name}", iter(sorted(child.children.items()))))
                    break
                if child.op is Op.FILE:
                    yield f"{prefix}/{name}", child
            else:
                stack.pop()


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]
