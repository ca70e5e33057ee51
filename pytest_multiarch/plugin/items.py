"""What the plugin reads off pytest items: the arch they run for, and changed-only selection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.session.baseline import (
    TESTS_KEY,
    failing_archs,
    load_baseline,
    needs_rerun,
)
from pytest_multiarch.session.images import resolve_variant

if TYPE_CHECKING:
    from pytest_multiarch.session.state import State

ARCH_ARG = "arch"


def item_platform(item: pytest.Item) -> Platform | None:
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


def item_platforms(item: pytest.Item) -> list[Platform]:
    """Every arch a test item needs: its ``arch``, or both ends of a replication pair."""
    callspec = getattr(item, "callspec", None)
    pair = callspec.params.get(PAIR_ARG) if callspec is not None else None
    if isinstance(pair, tuple):
        return [p for p in pair if isinstance(p, Platform)]
    single = item_platform(item)
    return [single] if single is not None else []


def variants_to_rerun(
    state: State, old: Mapping[str, Any]
) -> tuple[set[tuple[str, str]], set[str]]:
    """(image, arch) pairs that must run again, and the archs whose own tests must."""
    rerun: set[tuple[str, str]] = set()
    refs = set(state.cfg.images) | {r for r in old["images"] if r != TESTS_KEY}
    for ref in sorted(refs):
        for wanted in state.archs:
            try:
                now: str | None = resolve_variant(state, ref, wanted).digest
            except MultiarchError:  # gone from the index or unreachable: run it, it will say
                now = None
            if needs_rerun(old, ref, wanted.arch_name, now):
                rerun.add((ref, wanted.arch_name))
    return rerun, {arch for _, arch in rerun} | failing_archs(old, TESTS_KEY)


def deselect_unchanged(state: State, items: list[pytest.Item], config: pytest.Config) -> bool:
    """Keep only tests of variants that must run again (see :func:`baseline.needs_rerun`).

    Gate checks are kept per image and arch.  Arch-parametrized tests of your own are kept for an
    arch when any image recorded in the baseline changed on that arch, or when tests of yours
    failed on it.  Returns True when the baseline was used (False: nothing deselected).
    """
    path = state.cfg.baseline_path
    assert path is not None  # options.load() refuses --multiarch-changed-only without it
    loaded = load_baseline(path)
    old = loaded.document
    if old is None:
        state.summary_lines.append(f"multiarch: --multiarch-changed-only ignored: {loaded.problem}")
        return False
    rerun, rerun_archs = variants_to_rerun(state, old)
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        plat = item_platform(item)
        if plat is None:
            keep.append(item)
            continue
        image = getattr(item, "multiarch_image", None)
        selected = ((image, plat.arch_name) in rerun if isinstance(image, str)
                    else plat.arch_name in rerun_archs)
        (keep if selected else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    summary = ", ".join(f"{ref} [{arch}]" for ref, arch in sorted(rerun)) or "none"
    state.summary_lines.append(
        f"multiarch: --multiarch-changed-only: changed or failing variants: {summary}; "
        f"{len(drop)} test(s) deselected"
    )
    return True
