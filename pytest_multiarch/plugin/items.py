"""What the plugin reads off pytest items: the arch they run for, and changed-only selection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.session.baseline import TESTS_KEY, load_baseline
from pytest_multiarch.session.images import resolve_variant

if TYPE_CHECKING:
    from pytest_multiarch.session.state import State

ARCH_ARG = "arch"


def item_platform(item: Any) -> Platform | None:
    """The arch a test item runs for: its ``arch`` parameter, or a gate item's platform."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        value = callspec.params.get(ARCH_ARG)
        if isinstance(value, Platform):
            return value
        pair = callspec.params.get(PAIR_ARG)
        if isinstance(pair, tuple) and isinstance(pair[-1], Platform):
            return pair[-1]  # a replication pair counts in its replica's column
    value = getattr(item, "multiarch_platform", None)
    return value if isinstance(value, Platform) else None


PAIR_ARG = "_multiarch_pair"


def item_platforms(item: Any) -> list[Platform]:
    """Every arch a test item needs: its ``arch``, or both ends of a replication pair."""
    callspec = getattr(item, "callspec", None)
    pair = callspec.params.get(PAIR_ARG) if callspec is not None else None
    if isinstance(pair, tuple):
        return [p for p in pair if isinstance(p, Platform)]
    single = item_platform(item)
    return [single] if single is not None else []


def deselect_unchanged(state: State, items: list[Any], config: Any) -> None:
    """Keep only tests of variants whose digest changed since the baseline.

    Gate checks are kept per image and arch.  Arch-parametrized tests of your own are kept for an
    arch when any image recorded in the baseline changed on that arch.
    """
    path = state.cfg.baseline_path
    assert path is not None
    old, problem = load_baseline(path)
    if old is None:
        state.summary_lines.append(f"multiarch: --multiarch-changed-only ignored: {problem}")
        return
    changed: set[tuple[str, str]] = set()
    unchanged: set[tuple[str, str]] = set()
    refs = set(state.cfg.images) | {r for r in old["images"] if r != TESTS_KEY}
    for ref in refs:
        variants = old["images"].get(ref, {}).get("variants", {})
        for wanted in state.archs:
            was = variants.get(wanted.arch_name, {}).get("digest")
            try:
                now = resolve_variant(state, ref, wanted).digest
            except MultiarchError:
                now = None
            key = (ref, wanted.arch_name)
            (unchanged if was and now == was else changed).add(key)
    changed_archs = {arch for _, arch in changed}
    keep: list[Any] = []
    drop: list[Any] = []
    for item in items:
        plat: Platform | None = item_platform(item)
        if plat is None:
            keep.append(item)
            continue
        image = getattr(item, "multiarch_image", None)
        if image is not None:
            selected = (image, plat.arch_name) not in unchanged
        else:
            selected = plat.arch_name in changed_archs
        (keep if selected else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    summary = ", ".join(f"{ref} [{arch}]" for ref, arch in sorted(changed)) or "none"
    state.summary_lines.append(
        f"multiarch: --multiarch-changed-only: changed variants: {summary}; "
        f"{len(drop)} test(s) deselected"
    )
