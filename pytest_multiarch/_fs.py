"""The two file-system rules every cache and report follows: where the cache lives, and how a
file is written so that a reader (another xdist worker, a later session) never sees half of it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["cache_root", "write_atomic"]


def cache_root(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/pytest-multiarch/PARTS``, else ``~/.cache/…``.

    Read at each call, never at import: tests and xdist workers set ``XDG_CACHE_HOME`` late.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "pytest-multiarch", *parts)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write *data* to *path* through a temp file in the same directory and ``os.replace``.

    Creates the parent directory. Raises ``OSError`` (with the path) and leaves no temp file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
