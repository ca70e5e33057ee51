"""Shards: the ``--multiarch-report`` documents of separate runs, loaded and validated for merging.

Every problem with a file is one :class:`ShardError` line naming the file, what is wrong and what
to do; ``pytest-multiarch merge`` prints it instead of a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_multiarch.errors import ShardError
from pytest_multiarch.session.report import REPORT_FORMAT, REPORT_SCHEMA

#: Formats this version merges (format 1 had no collected ids or index digests).
READABLE_FORMATS = frozenset({REPORT_FORMAT})
_ARCH_KEYS = ("how", "run", "totals", "collected", "deselected")


@dataclass(frozen=True, slots=True)
class Shard:
    """One validated report, with the name the merge uses for it in messages."""

    path: Path
    document: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def archs(self) -> list[str]:
        return list(self.document["archs"])

    @property
    def exitstatus(self) -> int | None:
        value = self.document.get("exitstatus")
        return value if isinstance(value, int) else None


def load_shard(path: Path) -> Shard:
    """Read and validate *path*; raise :class:`ShardError` with one line saying what is wrong."""
    where = f"shard {path}"
    if path.is_dir():
        raise ShardError(f"{where} is a directory, not a report file; pass the JSON files in it "
                         f"(e.g. {path}/*.json)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ShardError(f"{where} does not exist; check the artifact download path") from None
    except UnicodeDecodeError:
        raise ShardError(f"{where} is not text (not UTF-8); it is not a pytest-multiarch "
                         "report") from None
    except OSError as exc:
        raise ShardError(f"{where} cannot be read: {exc.strerror}") from None
    return Shard(path, _validated(where, _parsed(where, text)))


def _parsed(where: str, text: str) -> Any:
    if not text.strip():
        raise ShardError(f"{where} is empty; the job that wrote it probably died before the end")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            raise ShardError(
                f"{where} is truncated (the JSON stops at line {exc.lineno}); the job that wrote "
                "it was killed or the upload was cut short: re-run that job"
            ) from None
        raise ShardError(f"{where} is not JSON (line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg}); pass files written by pytest --multiarch-report") from None


def _validated(where: str, doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ShardError(f"{where} holds a JSON {type(doc).__name__}, not a pytest-multiarch "
                         "report; pass files written by pytest --multiarch-report")
    version = doc.get("format")
    if doc.get("schema") != REPORT_SCHEMA:
        if version == 1 and isinstance(doc.get("archs"), dict):
            raise ShardError(f"{where} is a format 1 report (pytest-multiarch 0.1), which records "
                             "no collected tests or index digests; re-run that job with this "
                             "version to merge it")
        keys = ", ".join(sorted(map(str, doc))[:6]) or "none"
        raise ShardError(f"{where} is not a pytest-multiarch report (its top-level keys: {keys}); "
                         "pass files written by pytest --multiarch-report")
    if version not in READABLE_FORMATS:
        newest = max(READABLE_FORMATS)
        if isinstance(version, int) and version > newest:
            raise ShardError(f"{where} has report format {version}, newer than this "
                             f"pytest-multiarch reads (format {newest}); upgrade pytest-multiarch "
                             "in the merge job to the version the shards were written with")
        raise ShardError(f"{where} has report format {version!r}; this version reads format "
                         f"{newest}: re-run that job with it")
    _check_shape(where, doc)
    return doc


def _check_shape(where: str, doc: dict[str, Any]) -> None:
    """The fields the merge reads, with their types: a damaged file fails here, not later."""
    def need(ok: bool, field: str) -> None:
        if not ok:
            raise ShardError(f"{where} is a damaged report: {field}; re-run that job")

    archs = doc.get("archs")
    if not isinstance(archs, dict):
        need(False, "'archs' is not an object")
        return
    for arch, info in archs.items():
        need(isinstance(info, dict) and all(k in info for k in _ARCH_KEYS),
             f"archs.{arch} lacks one of {', '.join(_ARCH_KEYS)}")
        need(isinstance(info["collected"], list) and isinstance(info["deselected"], list),
             f"archs.{arch}.collected is not a list")
    for key in ("images", "index_digests", "variants", "rest"):
        need(isinstance(doc.get(key), dict), f"'{key}' is not an object")
    for ref, per_arch in doc["images"].items():
        need(isinstance(per_arch, dict), f"images[{ref!r}] is not an object")
        for arch, entry in per_arch.items():
            need(isinstance(entry, dict) and isinstance(entry.get("checks"), list),
                 f"images[{ref!r}].{arch}.checks is not a list")
            for check in entry["checks"]:
                need(isinstance(check, dict) and isinstance(check.get("test"), str)
                     and isinstance(check.get("outcome"), str),
                     f"a check of images[{ref!r}].{arch} lacks test or outcome")
