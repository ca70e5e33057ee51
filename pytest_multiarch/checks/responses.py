"""Comparing one request's answers across architectures: status, headers, JSON structurally.

Pure data over ``requests.Response`` objects; :mod:`.rest` asks the services, this says how the
answers differ (floats by bit pattern, key order, list lengths) and names each differing arch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from pytest_multiarch.checks.errors import CheckError, ResponsesDiffer
from pytest_multiarch.platforms import Platform

__all__ = ["Comparison", "Difference", "compare_responses"]

_MISSING = "<missing>"


@dataclass(frozen=True, slots=True)
class Difference:
    """One place where an arch's answer differs from the reference arch's."""

    where: str  # "status", "header Content-Type", "$[0].price", "body"
    reference: Any
    actual: Any


@dataclass(frozen=True, slots=True)
class Comparison:
    """Per-arch differences from the reference arch (an empty tuple where the answers agree)."""

    request: str
    reference_arch: str
    differences: Mapping[str, tuple[Difference, ...]]

    @property
    def ok(self) -> bool:
        return not any(self.differences.values())

    @property
    def differing_archs(self) -> tuple[str, ...]:
        return tuple(arch for arch, diffs in self.differences.items() if diffs)

    @property
    def message(self) -> str:
        agree = [a for a, d in self.differences.items() if not d]
        if self.ok:
            return (
                f"{self.request} answers the same on {', '.join(agree)} as on {self.reference_arch}"
            )
        lines = [
            f"{self.request} answers differently than on {self.reference_arch} (reference) on "
            f"{', '.join(self.differing_archs)}"
            + (f"; same on {', '.join(agree)}" if agree else "")
        ]
        for arch in self.differing_archs:
            for diff in self.differences[arch]:
                lines.append(
                    f"  {arch}: {diff.where}: {_show(diff.actual)} "
                    f"(on {self.reference_arch}: {_show(diff.reference)})"
                )
        return "\n".join(lines)

    def raise_for_differences(self) -> None:
        if not self.ok:
            raise ResponsesDiffer(self.message)

    def __str__(self) -> str:
        return self.message


def _show(value: Any) -> str:
    text = (
        value
        if value is _MISSING
        else json.dumps(value, ensure_ascii=False)
        if not isinstance(value, float)
        else repr(value)
    )
    return text if len(text) <= 120 else text[:117] + "..."


def compare_responses(
    responses: Mapping[str, requests.Response] | Mapping[Platform, requests.Response],
    reference_arch: str | Platform,
    *,
    headers: Sequence[str] = ("Content-Type",),
    ignore: Sequence[str] = (),
    max_differences: int = 20,
) -> Comparison:
    """Compare every arch's answer with ``reference_arch``'s: status, the named headers and the body
    (JSON structurally: keys, key order, list lengths, value types and values; floats exactly, so
    ``-0.0`` differs from ``0.0``).  ``ignore`` lists JSON paths (``"$[0].created_at"``) to skip."""
    by_arch = {_arch_key(k): v for k, v in responses.items()}
    ref_key = _arch_key(reference_arch)
    if ref_key not in by_arch:
        raise CheckError(
            f"no response from reference arch {ref_key}; responses came from {', '.join(by_arch)}"
        )
    ref = by_arch[ref_key]
    request = (
        f"{ref.request.method} {urlsplit(ref.url).path}" if ref.request is not None else ref.url
    )
    differences: dict[str, tuple[Difference, ...]] = {}
    for arch, resp in by_arch.items():
        if arch == ref_key:
            continue
        found: list[Difference] = []
        if resp.status_code != ref.status_code:
            found.append(Difference("status", ref.status_code, resp.status_code))
        for name in headers:
            want, got = ref.headers.get(name, _MISSING), resp.headers.get(name, _MISSING)
            if want != got:
                found.append(Difference(f"header {name}", want, got))
        _diff_bodies(ref, resp, found, set(ignore))
        differences[arch] = tuple(found[:max_differences])
    return Comparison(request, ref_key, differences)


def _arch_key(key: str | Platform) -> str:
    return key.architecture if isinstance(key, Platform) else str(key)


def _diff_bodies(
    ref: requests.Response, resp: requests.Response, out: list[Difference], ignore: set[str]
) -> None:
    try:
        want, got = ref.json(), resp.json()
    except ValueError:
        if ref.content != resp.content:
            out.append(Difference("body", ref.text[:200], resp.text[:200]))
        return
    _diff_json(want, got, "$", out, ignore)


def _diff_json(want: Any, got: Any, path: str, out: list[Difference], ignore: set[str]) -> None:
    if path in ignore:
        return
    if isinstance(want, dict) and isinstance(got, dict):
        for key in want:
            child = f"{path}.{key}"
            if key not in got:
                if child not in ignore:
                    out.append(Difference(child, want[key], _MISSING))
            else:
                _diff_json(want[key], got[key], child, out, ignore)
        for key in got:
            if key not in want and f"{path}.{key}" not in ignore:
                out.append(Difference(f"{path}.{key}", _MISSING, got[key]))
        shared_want = [k for k in want if k in got]
        shared_got = [k for k in got if k in want]
        if shared_want != shared_got:
            out.append(Difference(f"{path} key order", shared_want, shared_got))
    elif isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            out.append(Difference(f"{path} length", len(want), len(got)))
        for i, (a, b) in enumerate(zip(want, got, strict=False)):
            _diff_json(a, b, f"{path}[{i}]", out, ignore)
    elif type(want) is not type(got) or not _same_scalar(want, got):
        out.append(Difference(path, want, got))


def _same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a.hex() == b.hex()
    return bool(a == b)
