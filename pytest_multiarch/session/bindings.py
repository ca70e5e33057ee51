"""What the session lends to other tools' objects: a testcontainers container bound to an arch,
the CPU model and how an arch ran, for report columns (pytest-html).

No pytest here: the fixture and the pytest-html hooks call these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_multiarch.platforms import Platform
from pytest_multiarch.session.images import emulation_factor, engine_client, resolve_variant

if TYPE_CHECKING:
    from pytest_multiarch.session.state import State


def qemu_cpu_for(state: State, plat: Platform) -> str | None:
    """The CPU model qemu-user emulates for *plat* in this session (``QEMU_CPU``), if one is set.

    For the pytest-html ``ran`` column (containers, testcontainers' too, take theirs from the
    runner); None means qemu's default model.
    The session's choice (``State.cpu_choice``, from ``--arch-cpu`` and the platform's level)
    is read when the session makes one.
    """
    choose = getattr(state, "cpu_choice", None)
    if not callable(choose):
        return None
    choice = choose(plat)
    model = getattr(choice, "model", "") if choice is not None else ""
    return str(model) if model else None


def bind_testcontainer(state: State, container: Any, plat: Platform) -> Any:
    """*container* (an unstarted testcontainers container) rewritten to run *plat*'s variant of
    its image by digest on *plat*'s engine; see :mod:`pytest_multiarch.checks.testcontainers`.

    Raises NotATestcontainer / TestcontainerAlreadyStarted for bad input, PlatformNotInIndex when
    the image has no variant for *plat*.
    """
    from pytest_multiarch.checks import testcontainers as tc

    tc.check_container(container)
    ref = str(container.image)
    resolved = resolve_variant(state, ref, plat)
    runner: Any = engine_client(state, plat, "multiarch_testcontainer")
    # Pulled by us, with the platform, and checked to be of it: testcontainers would pull
    # without a platform, and the engine's copy is verified here either way.
    runner.ensure_image(resolved.pinned, plat)
    emulated = bool(runner.is_emulated(plat))
    url = getattr(runner, "url", None)
    remote_host = None
    if url and not str(url).startswith("unix:"):
        from urllib.parse import urlsplit

        remote_host = urlsplit(str(url)).hostname
    binding = tc.Binding(
        image=resolved.pinned, digest=resolved.digest, platform=plat, runner=runner,
        timeout_factor=emulation_factor(state, ref, plat) if emulated else 1.0, host=remote_host,
    )
    return tc.bind(container, binding)


def ran_description(state: State, arch: str) -> str:
    """How *arch* ran, for a report column: ``native on HOST``, ``emulated on qemu 7.2.17, CPU
    cortex-a72`` (``default CPU`` when the session sets no model), or why it could not run."""
    import platform as _platform

    from pytest_multiarch.host import binfmt

    plat = Platform.parse(arch)
    state.status(plat)  # sets the matrix line's "how" unless the header (skipped by -q) did
    how = state.matrix.line(arch).how
    if how == "native":
        return f"native on {_platform.node()}"
    if not how.startswith("emulated"):
        return how  # "native on HOST" of a remote engine, "unavailable: …"
    version = (binfmt.qemu_version(plat) or "").split(" ", 1)[0]
    cpu = qemu_cpu_for(state, plat)
    qemu = f"qemu {version}" if version else "qemu"
    return f"emulated on {qemu}, {'CPU ' + cpu if cpu else 'default CPU'}"
