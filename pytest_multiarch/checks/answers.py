"""Answers of one service on several architectures, compared: status, named headers and the
body (JSON structurally, floats bit-exact).

Split from :mod:`pytest_multiarch.checks.rest` so ``pytest-multiarch merge`` can compare answers
recorded on other machines without loading ``requests`` or the container code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pytest_multiarch.errors import CheckError, ResponsesDiffer
from pytest_multiarch.platforms import Platform

if TYPE_CHECKING:
    import requests

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


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer reduced to what the comparison reads: status, named headers, body text.

    The body stays text (not parsed JSON) so that key order and float spelling survive a trip
    through a JSON report unchanged.
    """

    request: str  # "GET /offerings"
    status: int
    headers: Mapping[str, str]
    body: str

    @classmethod
    def from_response(cls, resp: requests.Response, request: str | None = None,
                      headers: Sequence[str] = ("Content-Type",)) -> Answer:
        if request is None:
            request = (f"{resp.request.method} {urlsplit(resp.url).path}"
                       if resp.request is not None else resp.url)
        kept = {name: resp.headers[name] for name in headers if name in resp.headers}
        return cls(request, resp.status_code, kept, resp.text)

    def to_json(self) -> dict[str, Any]:
        return {"request": self.request, "status": self.status, "headers": dict(self.headers),
                "body": self.body}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Answer:
        """Raises KeyError/TypeError/ValueError on a malformed record (the caller names it)."""
        headers = data["headers"]
        if not isinstance(headers, dict) or not isinstance(data["body"], str):
            raise TypeError("headers must be an object and body a string")
        return cls(str(data["request"]), int(data["status"]),
                   {str(k): str(v) for k, v in headers.items()}, data["body"])


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
    answers = {_arch_key(k): Answer.from_response(v, headers=headers)
               for k, v in responses.items()}
    return compare_answers(answers, reference_arch, headers=headers, ignore=ignore,
                           max_differences=max_differences)


def compare_answers(
    answers: Mapping[str, Answer],
    reference_arch: str | Platform,
    *,
    headers: Sequence[str] = ("Content-Type",),
    ignore: Sequence[str] = (),
    max_differences: int = 20,
) -> Comparison:
    """:func:`compare_responses` on normalized answers (from this process or from reports)."""
    ref_key = _arch_key(reference_arch)
    if ref_key not in answers:
        raise CheckError(
            f"no response from reference arch {ref_key}; responses came from {', '.join(answers)}"
        )
    ref = answers[ref_key]
    differences: dict[str, tuple[Difference, ...]] = {}
    for arch, resp in answers.items():
        if arch == ref_key:
            continue
        found: list[Difference] = []
        if resp.status != ref.status:
            found.append(Difference("status", ref.status, resp.status))
        for name in headers:
            want, got = ref.headers.get(name, _MISSING), resp.headers.get(name, _MISSING)
            if want != got:
                found.append(Difference(f"header {name}", want, got))
        _diff_bodies(ref, resp, found, set(ignore))
        differences[arch] = tuple(found[:max_differences])
    return Comparison(ref.request, ref_key, differences)


def _arch_key(key: str | Platform) -> str:
    return key.architecture if isinstance(key, Platform) else str(key)


def _diff_bodies(ref: Answer, resp: Answer, out: list[Difference], ignore: set[str]) -> None:
    try:
        want, got = json.loads(ref.body), json.loads(resp.body)
    except ValueError:
        if ref.body != resp.body:
            out.append(Difference("body", ref.body[:200], resp.body[:200]))
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
