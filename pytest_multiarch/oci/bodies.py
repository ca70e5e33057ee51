"""Bounded readers of the small bodies a registry sends for a message: the token response and
the error document.  Each reads at most a few KiB and never raises (see :func:`read_token`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from pytest_multiarch._secret import Secret
from pytest_multiarch.oci.auth import HeaderAuth
from pytest_multiarch.oci.content import CHUNK
from pytest_multiarch.oci.deadline import Deadline

__all__ = ["MAX_DETAIL_BYTES", "MAX_TOKEN_BYTES", "error_detail", "read_token"]

MAX_DETAIL_BYTES = 4096  # of an error body, for its ``errors[0]`` code and message
MAX_TOKEN_BYTES = 64 * 1024  # a JWT with many scopes is a few KiB


def read_token(resp: requests.Response, deadline: Deadline) -> tuple[HeaderAuth | None, str]:
    """The bearer token in *resp* and ``""``, or ``None`` and what is wrong.

    Never raises: its locals hold the token, and a frame that raises into a test report shows
    its locals under ``pytest -l``.  The caller raises, holding only the masked result.
    """
    body: Any = None
    try:
        raw = bytearray()
        for chunk in resp.iter_content(CHUNK):
            raw += chunk
            if len(raw) > MAX_TOKEN_BYTES:
                return None, f"sent more than {MAX_TOKEN_BYTES} bytes; not a token response"
        body = json.loads(raw)
        raw.clear()
    except requests.RequestException:
        if deadline.expired:
            return None, f"did not finish answering within {deadline.seconds:g} s"
        return None, "broke off the transfer of the token"
    except (ValueError, RecursionError):
        return None, "sent no JSON"
    if not isinstance(body, dict):
        return None, "sent JSON that is not an object"
    value = body.get("token") or body.get("access_token")
    expires_in = body.get("expires_in")
    body = None
    if not isinstance(value, str) or not value:
        return None, "answered without 'token' or 'access_token'"
    try:
        lifetime = float(expires_in) if expires_in is not None else 60.0
    except (TypeError, ValueError, OverflowError):
        lifetime = 60.0  # Docker's default; an odd value must not end the run (or show the token)
    if not lifetime == lifetime or lifetime <= 0:  # NaN or negative: the default
        lifetime = 60.0
    lifetime = min(lifetime, 86400.0)
    # Renew a little early so a token cannot expire between check and use.
    return HeaderAuth(Secret(f"Bearer {value}"),
                      time.monotonic() + max(lifetime - 10, 1)), ""


def error_detail(resp: requests.Response, deadline: Deadline) -> str:
    """`` CODE: message`` from a distribution error body (its first 4 KiB), if it has one."""
    if resp.request is not None and resp.request.method == "HEAD":
        return ""
    raw = bytearray()
    try:
        for chunk in resp.iter_content(1024):
            raw += chunk
            if len(raw) >= MAX_DETAIL_BYTES:
                break  # enough for a message; an endless body is not read on
        errors = json.loads(raw).get("errors")
        first = errors[0]
        code, message = str(first.get("code", ""))[:60], str(first.get("message", ""))[:200]
        return f" {code}: {message}" if message else f" {code}"
    except (ValueError, AttributeError, TypeError, IndexError, KeyError, RecursionError,
            requests.RequestException):
        return ""
