"""Image references, parsed the way Docker does (``distribution/reference``).

``busybox`` is ``docker.io/library/busybox:latest``; the first path component is a registry when it
contains a ``.`` or a ``:``, is ``localhost``, or has an upper-case letter (which a repository may
not); a reference may carry a tag, a digest, or both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pytest_multiarch.errors import InvalidReference

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_REGISTRIES = ("index.docker.io", "registry-1.docker.io")
_MAX_NAME_LENGTH = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_ID_RE = re.compile(r"[a-f0-9]{64}")
# "user:pw@host/…" (or with a scheme): the '@' comes before any digest could.  A digest after '@'
# is algorithm:hex, so a userinfo is an '@' whose right side does not look like one.
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*://)?(?P<userinfo>[^/@]*)@(?P<rest>.*)")
_DIGEST_LIKE_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-zA-Z=_-]+")
#: Lengths of the hex part for the algorithms we can verify.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}


def validate_digest(digest: str, *, what: str = "digest") -> str:
    """Return *digest* if it is ``sha256:<64 hex>`` or ``sha512:<128 hex>``; raise otherwise."""
    algo, sep, hexpart = digest.partition(":")
    if not sep or not algo or not hexpart:
        raise InvalidReference(f"{what} {digest!r} is not of the form algorithm:hex (sha256:…)")
    length = DIGEST_HEX_LENGTHS.get(algo)
    if length is None:
        raise InvalidReference(
            f"{what} {digest!r} uses algorithm {algo!r}; supported: "
            f"{', '.join(DIGEST_HEX_LENGTHS)}"
        )
    if len(hexpart) != length or not re.fullmatch(r"[a-f0-9]+", hexpart):
        raise InvalidReference(
            f"{what} {digest!r} must have exactly {length} lower-case hex digits after "
            f"'{algo}:' (it has {len(hexpart)})"
        )
    return digest


def registry_api_host(registry: str) -> str:
    """The host to talk the distribution API to: Docker Hub's ``docker.io`` is served elsewhere."""
    return "registry-1.docker.io" if registry == DEFAULT_REGISTRY else registry


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed, normalized image reference.

    ``tag`` is ``None`` only when the reference was given by digest alone.
    """

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse *text* with Docker's grammar; :class:`InvalidReference` names the bad part."""
        raw = text.strip()
        if not raw:
            raise InvalidReference("empty image reference")
        if _ID_RE.fullmatch(raw):
            raise InvalidReference(
                f"{raw!r} looks like an image ID, not a reference; use REPOSITORY@sha256:{raw}"
            )
        _refuse_credentials(raw)
        if any(ch.isspace() for ch in raw):
            raise InvalidReference(f"image reference {text!r} contains whitespace")

        remainder, at, digest = raw.partition("@")
        if at:
            validate_digest(digest, what=f"digest in {text!r}:")
        registry, path = _split_registry(remainder, text)
        tag: str | None = None
        # A ':' after the last '/' starts the tag; earlier ones belong to host:port.
        slash = path.rfind("/")
        colon = path.rfind(":")
        if colon > slash:
            path, tag = path[:colon], path[colon + 1 :]
            if not _TAG_RE.fullmatch(tag):
                raise InvalidReference(
                    f"tag {tag!r} in {text!r} is invalid: up to 128 characters of letters, "
                    "digits, '_', '.' and '-', not starting with '.' or '-'"
                )
        _check_repository(path, text)
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = f"library/{path}"
        if len(registry) + 1 + len(path) > _MAX_NAME_LENGTH:
            raise InvalidReference(
                f"repository name in {text!r} is longer than {_MAX_NAME_LENGTH} characters"
            )
        if tag is None and not at:
            tag = DEFAULT_TAG
        return cls(registry, path, tag, digest if at else None)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """Host (and port) of the distribution API serving this reference."""
        return registry_api_host(self.registry)

    @property
    def api_reference(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def pinned(self) -> str:
        """``registry/repository@sha256:…``: what to run so that a tag cannot be re-pointed."""
        if self.digest is None:
            raise InvalidReference(f"{self} has no digest to pin; resolve it first")
        return f"{self.name}@{self.digest}"

    def with_digest(self, digest: str) -> Reference:
        """The same reference pinned to *digest* (the tag is kept for messages)."""
        return replace(self, digest=validate_digest(digest))

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _refuse_credentials(raw: str) -> None:
    """A reference with ``user:password@`` is refused without echoing the password."""
    match = _USERINFO_RE.fullmatch(raw)
    if match is None or _DIGEST_LIKE_RE.fullmatch(match["rest"]):
        return
    if "/" not in match["rest"] and ":" not in match["userinfo"] and match["scheme"] is None:
        return  # "app@notadigest": a bad digest, reported as such
    masked = f"{match['scheme'] or ''}<redacted>@{match['rest']}"
    raise InvalidReference(
        f"image reference {masked!r} carries credentials before '@'; a reference cannot hold "
        "them: drop them and log in with `docker login`, or pass auth= for the registry"
    )


def _split_registry(remainder: str, text: str) -> tuple[str, str]:
    first, slash, rest = remainder.partition("/")
    is_registry = slash and (
        any(ch in first for ch in ".:[") or first == "localhost" or first != first.lower()
    )
    if not is_registry:
        return DEFAULT_REGISTRY, remainder
    if not _HOST_RE.fullmatch(first):
        raise InvalidReference(
            f"registry {first!r} in {text!r} is not a valid host[:port] "
            "(letters, digits, '-', '.', an optional numeric port)"
        )
    registry = DEFAULT_REGISTRY if first in _LEGACY_REGISTRIES else first
    return registry, rest


def _check_repository(path: str, text: str) -> None:
    if not path:
        raise InvalidReference(f"image reference {text!r} has no repository name")
    for component in path.split("/"):
        if _PATH_COMPONENT_RE.fullmatch(component):
            continue
        if component.lower() != component and _PATH_COMPONENT_RE.fullmatch(component.lower()):
            raise InvalidReference(
                f"repository name must be lowercase: {component!r} in {text!r}"
            )
        raise InvalidReference(
            f"repository path component {component!r} in {text!r} is invalid: lowercase "
            "letters and digits, separated by '.', '_', '__' or '-'"
        )
