"""Baseline and regression mode (``--multiarch-baseline``, ``--multiarch-changed-only``).

A baseline records, per image and arch, the variant digest, its config and layer digests and the
outcome of every check; a later run compares itself with it and says what changed per arch.  A
check that passed before and fails now is a *regression*.

**The baseline never learns a failure.**  A variant's digest enters the baseline only from a run
in which every check of that variant passed; a run in which it failed keeps the last good digest
(none if it never passed) and lists the failing checks.  So ``--multiarch-changed-only`` selects a
broken variant again and again (its digest is not the recorded one, or it has failing checks)
until a run passes it.

Plain documents in, plain documents out: no session object here.  A baseline file that exists but
cannot be used (unreadable, not UTF-8, not JSON, malformed, another format) is reported with what
is wrong and **left as it is**: the comparison is skipped and nothing is written over it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_multiarch.session.report import write_json

if TYPE_CHECKING:
    from pytest_multiarch.session.images import VariantFacts
    from pytest_multiarch.session.report import Outcome

BASELINE_FORMAT = 1
TESTS_KEY = "(tests)"
FAILED = ("failed", "error")


@dataclass(frozen=True, slots=True)
class Loaded:
    """A baseline file read: its *document*, or the *problem* and whether it may be written."""

    document: dict[str, Any] | None
    problem: str | None = None
    writable: bool = True


def load_baseline(path: Path) -> Loaded:
    """The baseline at *path*; a missing file may be recorded, any other problem is kept."""
    keep = "; comparison skipped and the file is left as it is (move or delete it to record a " \
           "new baseline)"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Loaded(None, f"baseline {path} does not exist yet; this run records it")
    except OSError as exc:
        return Loaded(None, f"baseline {path} cannot be read ({exc.strerror}){keep}", False)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Loaded(None, f"baseline {path} is not UTF-8 text (byte {exc.start}){keep}", False)
    except json.JSONDecodeError as exc:
        return Loaded(
            None, f"baseline {path} is not valid JSON (line {exc.lineno}: {exc.msg}){keep}", False
        )
    except RecursionError:
        return Loaded(None, f"baseline {path} is JSON nested too deeply{keep}", False)
    if not isinstance(data, dict) or "images" not in data:
        return Loaded(None, f"baseline {path} is not a pytest-multiarch baseline (no \"images\")"
                      f"{keep}", False)
    version = data.get("format")
    if version != BASELINE_FORMAT:
        return Loaded(None, f"baseline {path} has format {version!r}, this version reads format "
                      f"{BASELINE_FORMAT}{keep}", False)
    wrong = _malformed(data["images"])
    if wrong:
        return Loaded(None, f"baseline {path} is malformed: {wrong}{keep}", False)
    return Loaded(data)


def _malformed(images: object) -> str | None:
    """The first place where *images* is not what :func:`snapshot` writes, or None."""
    if not isinstance(images, dict):
        return f"\"images\" is {_kind(images)}, expected an object"
    for ref, entry in images.items():
        where = f"images[{ref!r}]"
        if not isinstance(entry, dict):
            return f"{where} is {_kind(entry)}, expected an object"
        plats = entry.get("platforms", [])
        if not isinstance(plats, list) or not all(isinstance(p, str) for p in plats):
            return f"{where}[\"platforms\"] is not a list of strings"
        variants = entry.get("variants", {})
        if not isinstance(variants, dict):
            return f"{where}[\"variants\"] is {_kind(variants)}, expected an object"
        for arch, variant in variants.items():
            at = f"{where}[\"variants\"][{arch!r}]"
            if not isinstance(variant, dict):
                return f"{at} is {_kind(variant)}, expected an object"
            for key in ("digest", "config"):
                if not isinstance(variant.get(key), str | None):
                    return f"{at}[{key!r}] is {_kind(variant.get(key))}, expected a string"
            for key in ("layers", "failing"):
                value = variant.get(key, [])
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    return f"{at}[{key!r}] is not a list of strings"
            outcomes = variant.get("outcomes", {})
            if not isinstance(outcomes, dict) or not all(
                isinstance(v, str) for v in outcomes.values()
            ):
                return f"{at}[\"outcomes\"] is not an object of strings"
            packages = variant.get("packages", {})
            if not isinstance(packages, dict) or not all(
                isinstance(v, str) for v in packages.values()
            ):
                return f"{at}[\"packages\"] is not an object of strings (name -> version)"
    return None


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null",
            bool: "a boolean", int: "a number", float: "a number"}.get(type(value), "a value")


def snapshot(
    variants: Mapping[tuple[str, str], VariantFacts],
    index_platforms: Mapping[str, list[str]],
    outcomes: Iterable[Outcome],
    packages: Mapping[tuple[str, str], Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """What this run saw: per image and arch, digests, layers and outcomes (and, given
    *packages*, each variant's package name -> version)."""
    packages = packages or {}
    images: dict[str, Any] = {}
    for (ref, arch), facts in variants.items():
        entry = images.setdefault(ref, {"platforms": list(index_platforms.get(ref, [])),
                                        "variants": {}})
        entry["variants"][arch] = {"digest": facts.digest, "config": facts.config,
                                   "layers": list(facts.layers), "outcomes": {}}
    for (ref, arch), versions in packages.items():
        if ref in images and arch in images[ref]["variants"]:
            images[ref]["variants"][arch]["packages"] = dict(versions)
    for outcome in outcomes:
        ref = outcome.image or TESTS_KEY
        entry = images.setdefault(ref, {"platforms": [], "variants": {}})
        variant = entry["variants"].setdefault(
            outcome.arch, {"digest": outcome.digest, "config": None, "layers": [], "outcomes": {}}
        )
        variant["outcomes"][outcome.test] = outcome.outcome
    return {"format": BASELINE_FORMAT, "images": images}


def snapshot_of_report(document: Mapping[str, Any]) -> dict[str, Any]:
    """A :func:`snapshot` of a report document (a merged one from ``pytest-multiarch merge``).

    Reports do not list an index's platforms; the comparison then skips added/dropped platforms.
    """
    images: dict[str, Any] = {}
    for ref, per_arch in document.get("variants", {}).items():
        entry = images.setdefault(ref, {"platforms": [], "variants": {}})
        for arch, variant in per_arch.items():
            entry["variants"][arch] = {"digest": variant.get("digest"),
                                       "config": variant.get("config"),
                                       "layers": list(variant.get("layers") or []),
                                       "outcomes": {}}
    for ref, per_arch in document.get("images", {}).items():
        entry = images.setdefault(ref, {"platforms": [], "variants": {}})
        for arch, found in per_arch.items():
            variant = entry["variants"].setdefault(
                arch, {"digest": found.get("digest"), "config": None, "layers": [],
                       "outcomes": {}})
            for check in found.get("checks", []):
                variant["outcomes"][check["test"]] = check["outcome"]
            if isinstance(found.get("package_versions"), dict):  # from the packages check
                variant["packages"] = dict(found["package_versions"])
    return {"format": BASELINE_FORMAT, "images": images}


def needs_rerun(old: Mapping[str, Any], ref: str, arch: str, digest_now: str | None) -> bool:
    """Must *ref*'s *arch* variant run again? Yes when its digest is not the recorded (last
    good) one, or when checks of it failed in the run that recorded it."""
    recorded = old["images"].get(ref, {}).get("variants", {}).get(arch, {})
    digest = recorded.get("digest")
    return not digest or digest_now != digest or bool(recorded.get("failing"))


def failing_archs(old: Mapping[str, Any], ref: str) -> set[str]:
    """The archs of *ref* (or of :data:`TESTS_KEY`) with failing checks in the baseline."""
    variants = old["images"].get(ref, {}).get("variants", {})
    return {arch for arch, v in variants.items() if v.get("failing")}


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable changes between two snapshots, one line per image and arch."""
    lines: list[str] = []
    for ref, entry in new["images"].items():
        before = old["images"].get(ref)
        if before is None:
            lines.append(f"{ref}: new in this run (not in the baseline)")
            continue
        old_plats, new_plats = set(before.get("platforms", [])), set(entry.get("platforms", []))
        if old_plats and new_plats:
            lines.extend(f"{ref}: platform {p} added" for p in sorted(new_plats - old_plats))
            lines.extend(f"{ref}: platform {p} dropped" for p in sorted(old_plats - new_plats))
        for arch, variant in entry["variants"].items():
            was = before.get("variants", {}).get(arch)
            if was is None:
                lines.append(f"{ref} [{arch}]: not in the baseline")
                continue
            lines.extend(f"{ref} [{arch}]: {change}" for change in _variant_changes(was, variant))
    return lines


def _variant_changes(was: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    changes: list[str] = []
    if was.get("digest") and now.get("digest") and was["digest"] != now["digest"]:
        changes.append(f"new digest {_short(was['digest'])} -> {_short(now['digest'])}")
        old_layers, new_layers = was.get("layers") or [], now.get("layers") or []
        if old_layers and new_layers:
            if old_layers[0] != new_layers[0]:
                changes.append("base layers changed")
            else:
                same = sum(1 for a, b in zip(old_layers, new_layers, strict=False) if a == b)
                changes.append(f"{same} of {len(new_layers)} layers unchanged (base kept)")
        if was.get("config") and now.get("config") and was["config"] != now["config"]:
            changes.append("config changed")
        changes.extend(_package_changes(was.get("packages"), now.get("packages")))
    still_failing = set(was.get("failing") or [])
    for test, outcome in now.get("outcomes", {}).items():
        before = was.get("outcomes", {}).get(test)
        if test in still_failing and outcome in FAILED:
            changes.append(f"STILL FAILING: {test} {outcome} (since the last good run)")
        elif before is None or before == outcome:
            continue
        elif before in ("passed", "xfailed") and outcome in FAILED:
            changes.append(f"REGRESSION: {test} passed before, {outcome} now")
        else:
            changes.append(f"outcome changed: {test} {before} -> {outcome}")
    return changes


def _package_changes(was: dict[str, str] | None, now: dict[str, str] | None) -> list[str]:
    """"the base moved" with what moved: package versions that changed, came or went."""
    if not isinstance(was, dict) or not isinstance(now, dict):
        return []
    moved = [f"{n} {was[n]} -> {now[n]}" for n in sorted(now) if n in was and was[n] != now[n]]
    moved += [f"+{n} {now[n]}" for n in sorted(now) if n not in was]
    moved += [f"-{n} {was[n]}" for n in sorted(was) if n not in now]
    if not moved:
        return ["packages unchanged"] if was else []
    shown = ", ".join(moved[:20]) + (f" … ({len(moved)} in all)" if len(moved) > 20 else "")
    return [f"packages changed: {shown}"]


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def merge(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The new baseline: variants that passed replace the old ones; failing ones keep the last
    good digest and list their failing checks; variants this run did not see are kept."""
    merged: dict[str, Any] = {
        "format": BASELINE_FORMAT,
        "images": json.loads(json.dumps(old["images"])) if old is not None else {},
    }
    for ref, entry in new["images"].items():
        target = merged["images"].setdefault(ref, {"platforms": [], "variants": {}})
        target.setdefault("variants", {})
        if entry.get("platforms"):
            target["platforms"] = entry["platforms"]
        for arch, variant in entry["variants"].items():
            prev = target["variants"].get(arch, {})
            outcomes = {**prev.get("outcomes", {}), **variant.get("outcomes", {})}
            failing = sorted(t for t, o in outcomes.items() if o in FAILED)
            if failing:
                # keep the last good digest (or none): the failure must not become the normal
                learned = {"digest": prev.get("digest"), "config": prev.get("config"),
                           "layers": prev.get("layers", [])}
                if "packages" in prev:
                    learned["packages"] = prev["packages"]
            else:
                learned = {k: variant.get(k) or prev.get(k) for k in ("digest", "config")}
                learned["layers"] = variant.get("layers") or prev.get("layers", [])
                if "packages" in variant or "packages" in prev:  # what the base moved to
                    learned["packages"] = variant.get("packages", prev.get("packages"))
            target["variants"][arch] = {**learned, "outcomes": outcomes, "failing": failing}
    return merged


def update_baseline(path: Path, observed: Mapping[str, Any]) -> list[str]:
    """Compare *observed* (a :func:`snapshot`) with the baseline at *path*, write the merged
    one unless the file exists and is unusable; return the summary lines."""
    loaded = load_baseline(path)
    lines = [f"multiarch baseline: {loaded.problem}"] if loaded.problem else []
    if loaded.document is not None:
        changes = compare(loaded.document, observed)
        lines.append(f"multiarch baseline: compared with {path}: "
                     f"{len(changes) if changes else 'no'} change(s)")
        lines.extend(f"  {line}" for line in changes)
    if not loaded.writable:
        return lines
    merged = merge(loaded.document, observed)
    try:
        write_json(path, merged)
    except OSError as exc:
        lines.append(f"multiarch baseline: could not write {path}: {exc.strerror}")
        return lines
    failing = [f"{ref} [{arch}]" for ref, entry in merged["images"].items()
               for arch, v in entry["variants"].items() if v.get("failing")]
    if failing:
        lines.append("multiarch baseline: not learned (failing, kept selected for "
                     f"--multiarch-changed-only until they pass): {', '.join(failing)}")
    return lines
