"""The generated gate: ``pytest --multiarch-image=REF --arch=…`` with no test files.

For each image × arch it adds seven checks, run in this order, the arch in their ids:

* ``platform``  — the index has an entry for the arch;
* ``config``    — the variant's config says the same os/architecture/variant as its index entry;
* ``binaries``  — the static audit: entrypoint, loader and every ELF file are for the arch;
* ``index``, ``attestations``, ``packages`` — one image, N variants, one truth
  (:mod:`pytest_multiarch.session.variants`): index hygiene, what is attached to the variant,
  package versions against the other variants;
* ``smoke``     — the variant's default command (or ``--multiarch-smoke-cmd``) runs: it exits 0,
  or is still running after ``--multiarch-smoke-timeout`` seconds times the emulation factor
  (a service that started and stays up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from pytest_multiarch.errors import MultiarchError, PlatformNotInIndex
from pytest_multiarch.platforms import Platform
from pytest_multiarch.session import images, variants

if TYPE_CHECKING:
    from pytest_multiarch.session.state import State

#: check name -> the function that runs it (returns the variant digest), in run order
CHECKS: Mapping[str, Callable[[State, str, Platform], str]] = {
    "platform": images.gate_platform,
    "config": images.gate_config,
    "binaries": images.gate_binaries,
    "index": variants.gate_index,
    "attestations": variants.gate_attestations,
    "packages": variants.gate_packages,
    "smoke": images.gate_smoke,
}
#: user property of a gate item carrying a line for the summary (also across xdist workers)
NOTE_PROPERTY = "multiarch_note"
#: checks that only read the image: never skipped for a missing emulator
STATIC_CHECKS = frozenset({"platform", "config", "binaries", *variants.CHECKS})


class MultiarchGate(pytest.Collector):
    """The collector holding the generated checks of one image."""

    def collect(self) -> list[pytest.Item]:  # pragma: no cover - items are made directly
        return []


class GateItem(pytest.Item):
    """One generated check of one image on one architecture."""

    def __init__(
        self, *, check: str, image: str, platform: Platform, state: State, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.multiarch_image = image
        self.multiarch_platform = platform
        self._state = state

    def runtest(self) -> None:
        skip = f"no {self.multiarch_platform} variant to check: the platform check fails"
        if self.check not in ("platform", "index"):  # index: a nested entry is its finding
            # Only the platform check reports a missing variant; the others have nothing to check.
            try:
                images.resolve_variant(self._state, self.multiarch_image, self.multiarch_platform)
            except PlatformNotInIndex:
                pytest.skip(skip)
        try:
            digest = CHECKS[self.check](self._state, self.multiarch_image,
                                        self.multiarch_platform)
        except PlatformNotInIndex:
            if self.check != "index":
                raise
            pytest.skip(skip)
        finally:
            if self.check in variants.CHECKS:  # for the matrix, also from xdist workers
                facts = variants.facts(self._state, self.multiarch_image,
                                       self.multiarch_platform)
                if facts:
                    self.user_properties.append(("multiarch_facts", facts))
        if digest:
            self._state.digests[self.nodeid] = digest
        note = self._state.notes.pop((self.multiarch_image, self.multiarch_platform.arch_name),
                                     None)
        if note:
            self.user_properties.append((NOTE_PROPERTY, note))

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | Any:
        if isinstance(excinfo.value, MultiarchError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return (
            f"multiarch-gate {self.multiarch_image}",
            None,
            f"{self.check} check of {self.multiarch_image} on {self.multiarch_platform}",
        )


def make_gate_items(session: pytest.Session, state: State) -> list[pytest.Item]:
    """The generated checks for every ``--multiarch-image`` × requested arch."""
    items: list[pytest.Item] = []
    for image in state.cfg.images:
        name = f"multiarch-gate[{image}]"
        gate = MultiarchGate.from_parent(session, name=name, nodeid=name)
        for check in CHECKS:
            for plat in state.archs:
                item = GateItem.from_parent(
                    gate, name=f"{check}[{plat.arch_name}]", check=check, image=image,
                    platform=plat, state=state,
                )
                if check in STATIC_CHECKS:
                    # Static checks need no emulator: they must not be skipped for a missing one.
                    item.add_marker(pytest.mark.multiarch_static)
                items.append(item)
    return items
