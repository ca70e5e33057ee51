"""What is attached to each variant of an index: provenance, SBOMs, signatures.

Two places hold attachments.  buildx puts an *attestation manifest* into the index itself (an
``unknown/unknown`` entry annotated ``vnd.docker.reference.type: attestation-manifest`` and
``vnd.docker.reference.digest: <variant>``) whose layers are in-toto statements.  OCI 1.1 puts
*referrers* beside the image: manifests whose ``subject`` is the variant, listed by the referrers
API (``GET /v2/<repo>/referrers/<digest>``) or, on registries without it (distribution 2.8, the
test bed's), by the tag fallback ``sha256-<hex>`` — an index the pusher maintains.

Each in-toto statement's ``subject`` must be the variant's own manifest digest: a statement
about another platform's digest (or one no longer in the index) attests the wrong thing.
Everything read is bounded (:data:`MAX_STATEMENT_BYTES`) and every bad input is a
:class:`~pytest_multiarch.oci.hygiene.Problem`, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_multiarch.errors import MultiarchError, NotFoundError
from pytest_multiarch.oci.content import INDEX_TYPES, Descriptor, ImageRef, ImageSource, Manifest
from pytest_multiarch.oci.hygiene import REFERENCE_DIGEST, Problem
from pytest_multiarch.oci.resolve import ATTESTATION_ANNOTATION

__all__ = [
    "KINDS",
    "MAX_STATEMENT_BYTES",
    "Attached",
    "Statement",
    "attachments",
    "referrers_by_tag",
]

#: An in-toto layer larger than this is not read (buildx SBOMs of big images reach a few MB).
MAX_STATEMENT_BYTES = 16 * 1024 * 1024
#: What ``--multiarch-require-attestations`` can ask for.
KINDS = ("provenance", "sbom", "signature")

IN_TOTO = "application/vnd.in-toto+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
SPDX_JSON = "application/spdx+json"
CYCLONEDX_JSON = "application/vnd.cyclonedx+json"
SIGNATURE_TYPES = (
    "application/vnd.dev.cosign.simplesigning.v1+json",
    "application/vnd.dev.cosign.artifact.sig.v1+json",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.cncf.notary.signature",
)
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
_HOW = {
    "provenance": "build with `docker buildx build --provenance=mode=max` (or attach an "
                  "in-toto SLSA statement as an OCI referrer)",
    "sbom": "build with `docker buildx build --sbom=true` (or attach an SPDX/CycloneDX "
            "statement as an OCI referrer)",
    "signature": "sign the variant's digest (`cosign sign`, `notation sign`)",
}

#: Fetches the referrers of a digest: ``(raw, content type)``, or None without such an API.
Referrers = Callable[[str], "tuple[bytes, str] | None"]


@dataclass(frozen=True, slots=True)
class Statement:
    """One in-toto statement (or bare SBOM artifact) attached to a variant."""

    predicate_type: str
    kind: str  # "provenance", "sbom" or "other"
    sbom_format: str  # "spdx", "cyclonedx" or ""
    subjects: tuple[str, ...]  # sha256:<hex> of every subject
    where: str  # which manifest and layer it came from
    #: name -> version of the packages an SBOM lists (empty for other statements)
    sbom_packages: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Attached:
    """Everything attached to one variant, how it was found, and what is wrong with it."""

    platform: str
    digest: str
    statements: tuple[Statement, ...] = ()
    signatures: tuple[str, ...] = ()  # media/artifact types of signature artifacts
    sources: tuple[str, ...] = ()  # "attestation manifest sha256:…", "referrers tag sha256-…"
    problems: tuple[Problem, ...] = ()

    @property
    def kinds(self) -> set[str]:
        found = {s.kind for s in self.statements if s.kind != "other"}
        return found | ({"signature"} if self.signatures else set())

    def describe(self) -> str:
        """``provenance (https://slsa.dev/provenance/v0.2), sbom (spdx), 1 signature``."""
        parts = [f"provenance ({s.predicate_type})" for s in self.statements
                 if s.kind == "provenance"]
        parts += [f"sbom ({s.sbom_format})" for s in self.statements if s.kind == "sbom"]
        parts += [f"{s.predicate_type}" for s in self.statements if s.kind == "other"]
        if self.signatures:
            parts.append(f"{len(self.signatures)} signature(s)")
        return ", ".join(parts) or "nothing"

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest, "attached": sorted(self.kinds), "sources": list(self.sources),
            "statements": [{"predicate_type": s.predicate_type, "kind": s.kind,
                            "sbom_format": s.sbom_format, "subjects": list(s.subjects),
                            "where": s.where} for s in self.statements],
            "signatures": list(self.signatures),
            "problems": [p.message for p in self.problems],
        }


def referrers_by_tag(
    source: ImageSource[Any], ref: Any, digest: str
) -> tuple[bytes, str] | None:
    """The OCI 1.1 tag fallback: the index tagged ``sha256-<hex>`` (None when there is none)."""
    tagged = _with_tag(ref, digest.replace(":", "-"))
    try:
        manifest = source.get_manifest(tagged)
    except NotFoundError:
        return None
    return manifest.raw, manifest.media_type


def _with_tag(ref: Any, tag: str) -> Any:
    from dataclasses import replace

    return replace(ref, tag=tag, digest=None)


def attachments(
    source: ImageSource[Any], ref: ImageRef, index: Manifest, *, platform: str, digest: str,
    others: Mapping[str, str], referrers: Referrers | None = None,
    require: Sequence[str] = (),
) -> Attached:
    """What is attached to the variant *digest* (*platform*) of *index*.

    *others*: digest -> platform of the index's other variants, to name a statement that attests
    one of them.  *referrers*: the registry's referrers API (``None`` for sources without one);
    when it answers ``None`` the ``sha256-<hex>`` tag fallback is read.  *require*: kinds of
    :data:`KINDS` the variant must carry.
    """
    reader = _Reader(source, ref, platform, digest, others)
    for entry in index.manifests if index.is_index else ():
        if (entry.annotations.get(ATTESTATION_ANNOTATION) == "attestation-manifest"
                and entry.annotations.get(REFERENCE_DIGEST) == digest):
            reader.sources.append(f"attestation manifest {entry.digest}")
            reader.manifest(entry, f"attestation manifest {_short(entry.digest)}")
    reader.referrers(referrers)
    for kind in require:
        if kind not in reader.kinds():
            reader.problem("missing-attestation",
                           f"the {platform} variant ({_short(digest)}) carries no {kind} "
                           f"(it has: {reader.result().describe()}); {_HOW[kind]}")
    return reader.result()


class _Reader:
    """Collects statements and problems for one variant."""

    def __init__(self, source: ImageSource[Any], ref: ImageRef, platform: str, digest: str,
                 others: Mapping[str, str]) -> None:
        self.source, self.ref, self.platform, self.digest = source, ref, platform, digest
        self.others = others
        self.statements: list[Statement] = []
        self.signatures: list[str] = []
        self.sources: list[str] = []
        self.problems: list[Problem] = []

    def kinds(self) -> set[str]:
        return self.result().kinds

    def result(self) -> Attached:
        return Attached(self.platform, self.digest, tuple(self.statements),
                        tuple(self.signatures), tuple(self.sources), tuple(self.problems))

    def problem(self, kind: str, message: str) -> None:
        self.problems.append(Problem(kind, message, self.platform))

    # -- referrers ------------------------------------------------------------------------------

    def referrers(self, api: Referrers | None) -> None:
        answer, how = (api(self.digest), "referrers API") if api is not None else (None, "")
        if answer is None:
            how = f"referrers tag {self.digest.replace(':', '-')}"
            try:
                answer = referrers_by_tag(self.source, self.ref, self.digest)
            except MultiarchError as exc:  # not JSON, HTML, not a manifest at all
                self.problem("referrers-not-an-index",
                             f"{how} of the {self.platform} variant is not an index: {exc}; "
                             "re-push the referrers with an OCI 1.1 client (oras, cosign)")
                return
            if answer is None:
                return
        raw, content_type = answer
        entries = self._referrers_index(raw, content_type, how)
        if entries is None:
            return
        self.sources.append(how)
        for entry in entries:
            artifact = str(entry.get("artifactType") or "")
            try:
                desc = Descriptor.from_json(entry, what=how)
            except MultiarchError as exc:
                self.problem("referrers-not-an-index", f"{how}: a bad entry ({exc})")
                continue
            if artifact in SIGNATURE_TYPES:
                self.signatures.append(artifact)
                continue
            self.manifest(desc, f"referrer {_short(desc.digest)} ({artifact or 'no type'})",
                          referrer=True)

    def _referrers_index(self, raw: bytes, content_type: str, how: str) -> list[Any] | None:
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            parsed, why = None, f"not JSON ({exc})"
        else:
            why = "not an index"
        media = parsed.get("mediaType", content_type) if isinstance(parsed, dict) else ""
        entries = parsed.get("manifests") if isinstance(parsed, dict) else None
        if not isinstance(entries, list) or (media and media not in INDEX_TYPES):
            self.problem("referrers-not-an-index",
                         f"{how} of the {self.platform} variant answered {why} "
                         f"(media type {media or content_type or 'unset'}): referrers must be an "
                         f"OCI image index; nothing attached there could be checked")
            return None
        return entries

    # -- one attestation manifest ---------------------------------------------------------------

    def manifest(self, desc: Descriptor, where: str, *, referrer: bool = False) -> None:
        try:
            manifest = self.source.get_manifest(self.ref.with_digest(desc.digest))
        except MultiarchError as exc:
            self.problem("attestation-unreadable", f"{where} of the {self.platform} variant "
                         f"cannot be read: {exc}")
            return
        if manifest.is_index:
            self.problem("attestation-unreadable", f"{where} is an index, not a manifest")
            return
        subject = manifest.parsed.get("subject")
        if referrer and isinstance(subject, dict) and subject.get("digest") != self.digest:
            self._wrong_subject(str(subject.get("digest")), f"{where} (its manifest subject)")
        for layer in manifest.layers:
            self.layer(layer, f"{where} layer {_short(layer.digest)}", manifest)

    def layer(self, layer: Descriptor, where: str, manifest: Manifest) -> None:
        media = layer.media_type.split(";")[0]
        if media in SIGNATURE_TYPES:
            self.signatures.append(media)
            return
        if media not in (IN_TOTO, DSSE, SPDX_JSON, CYCLONEDX_JSON):
            return  # provenance tooling adds other blobs (e.g. an empty config): not statements
        if layer.size > MAX_STATEMENT_BYTES:
            self.problem("attestation-too-large",
                         f"{where} of the {self.platform} variant is {layer.size} bytes, more "
                         f"than the {MAX_STATEMENT_BYTES} read; it was not read, so its subject "
                         "is unchecked — attach a smaller statement (split the SBOM)")
            return
        data = self._bounded(layer, where)
        if data is None:
            return
        if media in (SPDX_JSON, CYCLONEDX_JSON):  # a bare SBOM artifact: its subject is the
            subject = manifest.parsed.get("subject")  # referrer manifest's
            doc = _json(data)
            if not isinstance(doc, dict):
                self.problem("attestation-not-json", f"{where}: the SBOM is not a JSON object")
                return
            fmt = "spdx" if media == SPDX_JSON else "cyclonedx"
            subj = (str(subject.get("digest")),) if isinstance(subject, dict) else ()
            self.statements.append(Statement(media, "sbom", fmt, subj, where, _sbom(fmt, doc)))
            return
        self.statement(data, where, layer.annotations.get(PREDICATE_ANNOTATION, ""))

    def _bounded(self, layer: Descriptor, where: str) -> bytes | None:
        try:
            with self.source.open_blob(self.ref.with_digest(self.digest), layer) as stream:
                data = stream.read(MAX_STATEMENT_BYTES + 1)
        except MultiarchError as exc:
            self.problem("attestation-unreadable", f"{where}: {exc}")
            return None
        if len(data) > MAX_STATEMENT_BYTES:
            self.problem("attestation-too-large", f"{where}: more than {MAX_STATEMENT_BYTES} "
                         "bytes (its descriptor said less); not read")
            return None
        return data

    def statement(self, data: bytes, where: str, annotated: str) -> None:
        doc = _json(data)
        if isinstance(doc, dict) and "payload" in doc and "payloadType" in doc:
            try:  # a DSSE envelope (cosign attest): the statement is its base64 payload
                doc = _json(base64.b64decode(str(doc["payload"]), validate=True))
            except (binascii.Error, ValueError):
                doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("subject"), list):
            what = "not JSON" if doc is None else "JSON, but not an in-toto statement"
            self.problem("attestation-not-json",
                         f"{where} of the {self.platform} variant is {what} (expected an "
                         "object with _type, subject and predicateType); the attestation "
                         "tool wrote a broken statement — rebuild it")
            return
        predicate = str(doc.get("predicateType") or annotated)
        subjects = tuple(_subject_digest(s) for s in doc["subject"])
        kind, fmt = _classify(predicate)
        body = doc.get("predicate")
        packages = _sbom(fmt, body) if kind == "sbom" and isinstance(body, dict) else {}
        self.statements.append(Statement(predicate, kind, fmt, subjects, where, packages))
        for subject in subjects:
            if subject != self.digest:
                self._wrong_subject(subject, f"{where} ({predicate})")

    def _wrong_subject(self, subject: str, where: str) -> None:
        if subject in self.others:
            whose = f"the {self.others[subject]} variant's digest"
        else:
            whose = "a digest this index does not hold"
        self.problem("wrong-subject",
                     f"{where}, attached to the {self.platform} variant ({_short(self.digest)}), "
                     f"has the subject {subject}: {whose}, not this variant's. It attests "
                     "another image — rebuild the attestations per platform (buildx does so "
                     "when it builds all platforms in one call)")


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _subject_digest(subject: Any) -> str:
    digests = subject.get("digest") if isinstance(subject, dict) else None
    if not isinstance(digests, dict) or not digests:
        return "(no digest)"
    algorithm = "sha256" if "sha256" in digests else sorted(digests)[0]
    return f"{algorithm}:{digests[algorithm]}"


def _classify(predicate: str) -> tuple[str, str]:
    if "slsa.dev/provenance" in predicate:
        return "provenance", ""
    if "spdx.dev/Document" in predicate or "spdx" in predicate.lower():
        return "sbom", "spdx"
    if "cyclonedx.org" in predicate:
        return "sbom", "cyclonedx"
    return "other", ""


def _sbom(fmt: str, doc: Mapping[str, Any]) -> dict[str, str]:
    """name -> version of what an SPDX or CycloneDX document lists."""
    key, name, version = (("packages", "name", "versionInfo") if fmt == "spdx"
                          else ("components", "name", "version"))
    found: dict[str, str] = {}
    items = doc.get(key)
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get(name) and item.get(version):
            found[str(item[name])] = str(item[version])
    return found


def _short(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}"
