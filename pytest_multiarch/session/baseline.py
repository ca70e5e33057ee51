"""Baseline and regression mode (``--multiarch-baseline``, ``--multiarch-changed-only``).

A baseline records, per image and arch, the variant digest, its config and layer digests and the
outcome of every check; a later run compares itself with it and says what changed per arch.  A
check that passed before and fails now is a *regression*.  Bad baseline files never stop a run:
the comparison is skipped with one clear line and a fresh baseline is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_multiarch.session.report import write_json

if TYPE_CHECKING:
    from pytest_multiarch.session.state import State

BASELINE_FORMAT = 1
TESTS_KEY = "(tests)"


def load_baseline(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The baseline at *path*, or ``(None, why)`` when it is missing, corrupt or too old/new."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"baseline {path} does not exist yet; this run records it"
    except OSError as exc:
        return None, f"baseline {path} cannot be read ({exc.strerror}); comparison skipped"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, (
            f"baseline {path} is not valid JSON (line {exc.lineno}: {exc.msg}); comparison "
            "skipped and the file is rewritten from this run"
        )
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        return None, f"baseline {path} is not a pytest-multiarch baseline; comparison skipped"
    version = data.get("format")
    if version != BASELINE_FORMAT:
        return None, (
            f"baseline {path} has format {version!r}, this version reads format "
            f"{BASELINE_FORMAT}; comparison skipped and the file is rewritten"
        )
    return data, None


def snapshot(state: State) -> dict[str, Any]:
    """What this run saw: per image and arch, digests, layers and outcomes."""
    images: dict[str, Any] = {}
    for (ref, arch), resolved in state.resolved.items():
        entry = images.setdefault(ref, {"platforms": state.index_platforms.get(ref, []),
                                        "variants": {}})
        entry["variants"][arch] = {
            "digest": resolved.digest,
            "config": resolved.config_digest,
            "layers": [layer.digest for layer in resolved.layers],
            "outcomes": {},
        }
    from pytest_multiarch.session.variants import versions_seen

    for (ref, arch), versions in versions_seen(state).items():
        if ref in images and arch in images[ref]["variants"]:
            images[ref]["variants"][arch]["packages"] = versions
    for outcome in state.matrix.outcomes:
        ref = outcome.image or TESTS_KEY
        entry = images.setdefault(ref, {"platforms": [], "variants": {}})
        variant = entry["variants"].setdefault(
            outcome.arch, {"digest": outcome.digest, "config": None, "layers": [], "outcomes": {}}
        )
        variant["outcomes"][outcome.test] = outcome.outcome
    return {"format": BASELINE_FORMAT, "images": images}


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable changes between two snapshots, one line per image and arch."""
    lines: list[str] = []
    for ref, entry in new["images"].items():
        before = old["images"].get(ref)
        if before is None:
            lines.append(f"{ref}: new in this run (not in the baseline)")
            continue
        old_plats, new_plats = set(before.get("platforms", [])), set(entry.get("platforms", []))
        if old_plats and new_plats:
            for plat in sorted(new_plats - old_plats):
                lines.append(f"{ref}: platform {plat} added")
            for plat in sorted(old_plats - new_plats):
                lines.append(f"{ref}: platform {plat} dropped")
        for arch, variant in entry["variants"].items():
            was = before["variants"].get(arch)
            if was is None:
                lines.append(f"{ref} [{arch}]: not in the baseline")
                continue
            lines.extend(f"{ref} [{arch}]: {change}" for change in _variant_changes(was, variant))
    return lines


def _variant_changes(was: dict[str, Any], now: dict[str, Any]) -> list[str]:
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
    for test, outcome in now.get("outcomes", {}).items():
        before = was.get("outcomes", {}).get(test)
        if before is None or before == outcome:
            continue
        if before in ("passed", "xfailed") and outcome in ("failed", "error"):
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


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The new baseline: this run's variants replace the old ones; others are kept."""
    if old is None:
        return new
    merged = {"format": BASELINE_FORMAT, "images": json.loads(json.dumps(old["images"]))}
    for ref, entry in new["images"].items():
        target = merged["images"].setdefault(ref, {"platforms": [], "variants": {}})
        if entry.get("platforms"):
            target["platforms"] = entry["platforms"]
        for arch, variant in entry["variants"].items():
            prev = target["variants"].get(arch, {})
            outcomes = {**prev.get("outcomes", {}), **variant.get("outcomes", {})}
            target["variants"][arch] = {**prev, **{k: v for k, v in variant.items() if v},
                                        "outcomes": outcomes}
    return merged


def update_baseline(state: State, document: dict[str, Any]) -> list[str]:
    """Compare this run with the baseline, write the new one; return the summary lines."""
    del document
    path = state.cfg.baseline_path
    assert path is not None
    old, problem = load_baseline(path)
    lines = [f"multiarch baseline: {problem}"] if problem else []
    new = snapshot(state)
    if old is not None:
        changes = compare(old, new)
        lines.append(f"multiarch baseline: compared with {path}: "
                     f"{len(changes) if changes else 'no'} change(s)")
        lines.extend(f"  {line}" for line in changes)
    try:
        write_json(path, merge(old, new))
    except OSError as exc:
        lines.append(f"multiarch baseline: could not write {path}: {exc.strerror}")
    return lines
