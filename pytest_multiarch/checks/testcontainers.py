"""Bind a user's testcontainers container to one arch: the variant by digest, platform, limits.

testcontainers' ``DockerContainer`` (and every module class built on it, ``MySqlContainer`` …)
keeps what it will create in plain attributes until ``start()``: ``image``, ``env`` and the
keyword arguments it hands to ``containers.create`` (``_kwargs``).  :func:`bind` rewrites those
before the user's own ``with container:`` starts it, so the user's wait strategies, ports and
helpers keep working while the container is created the way every other container of the
session is: the arch's variant named by digest (an engine's store keys by tag, so a tag can run
another variant), the platform, a memory limit, the session labels (our reaper owns it whether
or not Ryuk runs), an init as PID 1 under emulation and readiness timeouts scaled by the
emulation factor.

What a container asks for that cannot be honoured on the arch is said, as a
:class:`~pytest_multiarch.errors.MultiarchWarning` naming it and what happens instead.
No pytest here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_multiarch.errors import (
    MultiarchWarning,
    NotATestcontainer,
    TestcontainerAlreadyStarted,
    UnknownPlatformError,
    UsageError,
)
from pytest_multiarch.platforms import Platform

if TYPE_CHECKING:
    from pytest_multiarch.runners.docker.engine import EngineRunner

_ryuk_said = False

#: Logs of a container whose start failed (it is gone by the time the report is made).
LOGS_ATTR = "_pytest_multiarch_logs"

#: Set on a bound container so a second bind (or a shared fixture) does not scale twice.
BOUND_ATTR = "_pytest_multiarch_binding"


@dataclass(frozen=True, slots=True)
class Binding:
    """How one container is to run for one arch; built by the session, applied by :func:`bind`.

    *image* is the variant pinned by digest (``repo@sha256:…``).  *runner* is the arch's engine
    runner (local, podman service or remote host): the container gets the settings of the
    runner's own containers (:meth:`EngineRunner.container_settings`: session labels, memory
    limit, init, ``QEMU_CPU``, ulimits), testcontainers is lent its Docker SDK client and it
    removes the container.  *host* is the address published ports are reached at, when that is
    not testcontainers' own guess.
    """

    image: str
    digest: str
    platform: Platform
    runner: EngineRunner
    timeout_factor: float = 1.0
    host: str | None = None
    notes: list[str] = field(default_factory=list)


def check_container(container: object) -> Any:
    """*container* if it is an unstarted testcontainers container; else the error saying so."""
    from testcontainers.core.container import DockerContainer

    if not isinstance(container, DockerContainer):
        kind = type(container).__module__ + "." + type(container).__qualname__
        hint = (
            " (a string: wrap it, multiarch_testcontainer(DockerContainer(ref)))"
            if isinstance(container, str) else ""
        )
        raise NotATestcontainer(
            f"multiarch_testcontainer needs an unstarted testcontainers container "
            f"(testcontainers.core.container.DockerContainer or a module class built on it, such "
            f"as MySqlContainer), got {kind}{hint}. For a plain image use multiarch_container."
        )
    if getattr(container, "_container", None) is not None:
        raise TestcontainerAlreadyStarted(
            f"multiarch_testcontainer got a {type(container).__name__} of {container.image} that "
            "is already started, so its image and platform can no longer change. Hand it over "
            "before `with container:` / start(), e.g. "
            "`with multiarch_testcontainer(DockerContainer(ref)) as c:`."
        )
    return container


def bind(container: Any, binding: Binding) -> Any:
    """Rewrite *container* (unstarted) to run as *binding* says; returns it.

    Warns (:class:`MultiarchWarning`) for each thing it asked for that is replaced here.
    """
    check_container(container)
    earlier = getattr(container, BOUND_ATTR, None)
    if earlier is not None:
        if earlier.platform == binding.platform:
            return container  # handed over twice: binding again would scale its waits twice
        raise UsageError(
            f"multiarch_testcontainer: this {type(container).__name__} is already bound to "
            f"{earlier.platform} ({earlier.image}); build one container per arch"
        )
    requested = str(container.image)
    kwargs: dict[str, Any] = container._kwargs  # what start() hands to containers.create
    said = binding.notes
    plat = binding.platform

    asked = kwargs.get("platform")
    if asked and _platform_of(str(asked)) != plat:
        said.append(f"it asks for platform {asked}; it runs as {plat}, this test's arch")
    container.image = binding.image
    # What the runner gives its own containers: the engine's platform name (none at all for a
    # level variant, which runs by digest), its session labels (they win), init, ulimits.
    base = binding.runner.container_settings(binding.image, plat)
    emulated = binding.runner.is_emulated(plat)
    if "platform" in base:
        kwargs["platform"] = base["platform"]
    else:
        kwargs.pop("platform", None)
    kwargs["labels"] = {**dict(kwargs.get("labels") or {}), **base["labels"]}
    _bind_memory(kwargs, str(base["mem_limit"]), emulated, said)
    _bind_init(kwargs, bool(base["init"]), emulated, said)
    qemu_cpu = base["environment"].get("QEMU_CPU")  # emulated, on a named model
    if qemu_cpu:
        asked_cpu = container.env.get("QEMU_CPU")
        if asked_cpu and asked_cpu != qemu_cpu:
            said.append(f"it sets QEMU_CPU={asked_cpu}; the session's CPU model "
                        f"{qemu_cpu} for {plat.arch_name} replaces it")
        container.env["QEMU_CPU"] = qemu_cpu
    if "ulimits" in base and "ulimits" not in kwargs:
        kwargs["ulimits"] = base["ulimits"]
    container._docker.client = _SharedClient(binding.runner.client)
    if binding.host is not None:
        host = binding.host
        container.get_container_host_ip = lambda: host
    _scale_wait_strategy(container, binding.timeout_factor)
    container.start = _bound_start(container, binding)
    container.stop = _keeping_logs(container)
    setattr(container, BOUND_ATTR, binding)
    for note in said:
        warnings.warn(
            f"multiarch_testcontainer: {type(container).__name__}({requested}) on "
            f"{plat.arch_name}: {note}",
            MultiarchWarning, stacklevel=3,
        )
    return container


def _platform_of(text: str) -> Platform | None:
    try:
        return Platform.parse(text)
    except UnknownPlatformError:
        return None


def _bind_memory(kwargs: dict[str, Any], limit: str, emulated: bool, said: list[str]) -> None:
    """The user's own limit stands; none, or "no limit" under emulation, gets the runner's."""
    asked = kwargs.get("mem_limit")
    if asked in (None, "", 0, "0"):
        if asked is not None and emulated:
            said.append(f"it asks for no memory limit; emulated containers always get one, "
                        f"{limit} (an emulated process can balloon to the machine's memory)")
        kwargs["mem_limit"] = limit
    # No swap: a balloon dies at the limit instead of thrashing the machine.
    kwargs.setdefault("memswap_limit", kwargs["mem_limit"])


def _bind_init(kwargs: dict[str, Any], init: bool, emulated: bool, said: list[str]) -> None:
    """An init as PID 1 where the runner runs one: always under emulation (a qemu that gets a
    fatal signal as PID 1 hangs), natively only when asked for."""
    if not init:
        return  # natively docker-init would turn ENOEXEC into a shell syntax error
    if kwargs.get("init") is False and emulated:
        said.append("it asks for init=False; emulated containers run an init as PID 1 (a "
                    "crashing qemu as PID 1 hangs the container instead of exiting)")
    kwargs["init"] = True


def _scale_wait_strategy(container: Any, factor: float) -> None:
    """The user's own ``waiting_for(...)`` strategy waits *factor* times longer."""
    strategy = getattr(container, "_wait_strategy", None)
    if strategy is not None and factor > 1.0 and hasattr(strategy, "_startup_timeout"):
        strategy._startup_timeout = float(strategy._startup_timeout) * factor
        for inner in getattr(strategy, "_strategies", ()) or ():  # CompositeWaitStrategy
            if hasattr(inner, "_startup_timeout"):
                inner._startup_timeout = float(inner._startup_timeout) * factor


def _bound_start(container: Any, binding: Binding) -> Callable[[], Any]:
    """``start()`` for *container*: its class's own, with two things around it.

    Module classes build their readiness strategies inside start() (``MySqlContainer`` waits for
    a log line) from testcontainers' global timeout, so that timeout is scaled while it runs; and
    Ryuk is left out when its image is not on the engine (our reaper owns the container by its
    labels, and an unpullable Ryuk image would fail the start).  Both are process-wide settings
    of testcontainers, changed for the duration of this start only: fine for pytest's one test
    at a time per process (xdist workers are processes), not for starts from several threads.
    """
    original = type(container).start.__get__(container)

    def start() -> Any:
        with _scaled_global_timeout(binding.timeout_factor), _ryuk_if_available(binding):
            try:
                original()
            except BaseException:
                # `with container:` removes a container whose start failed before the test's
                # report is made: keep its logs for that report now.
                with contextlib.suppress(Exception):
                    setattr(container, LOGS_ATTR, logs(container))
                raise
        return container

    return start


def _keeping_logs(container: Any) -> Callable[..., None]:
    """``stop()`` that keeps the logs first: `with container:` removes the container as the
    test's exception passes, before the report that shows them is made."""
    original = type(container).stop.__get__(container)

    def stop(*args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(Exception):
            setattr(container, LOGS_ATTR, logs(container))
        original(*args, **kwargs)

    return stop


@contextlib.contextmanager
def _scaled_global_timeout(factor: float) -> Iterator[None]:
    from testcontainers.core.config import testcontainers_config as config

    saved = config.max_tries
    if factor > 1.0:
        config.max_tries = int(saved * factor + 0.5)
    try:
        yield
    finally:
        config.max_tries = saved


@contextlib.contextmanager
def _ryuk_if_available(binding: Binding) -> Iterator[None]:
    from testcontainers.core.config import testcontainers_config as config

    global _ryuk_said
    if config.ryuk_disabled or _has_image(binding.runner.client, config.ryuk_image):
        yield
        return
    if not _ryuk_said:  # once per process: it is the same for every container
        _ryuk_said = True
        warnings.warn(
            f"multiarch_testcontainer: Ryuk ({config.ryuk_image}) is not on the engine, so it "
            "is left out for the containers this fixture binds: pytest-multiarch removes them "
            "by their session labels at the end of the test and reaps them after a killed "
            "session. Set TESTCONTAINERS_RYUK_DISABLED=true to say so yourself (and silence "
            "this).",
            MultiarchWarning, stacklevel=4,
        )
    config.ryuk_disabled = True
    try:
        yield
    finally:
        config.ryuk_disabled = False


def _has_image(client: Any, image: str) -> bool:
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError:
        return False
    return True


class _SharedClient:
    """The session's Docker client, lent to testcontainers: its ``stop()`` closes the client it
    was given, and the session's must keep serving the other tests."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def close(self) -> None:
        """Closing is the session's business."""


def remove(container: Any) -> None:
    """Remove bound *container*'s engine container, through its runner, if it still exists (the
    user's stop() may have removed it)."""
    created = getattr(container, "_container", None)
    binding: Binding | None = getattr(container, BOUND_ATTR, None)
    if created is not None and binding is not None:
        binding.runner.remove_quietly(created)


def logs(container: Any) -> dict[str, str]:
    """``{name: logs}`` of a started container, for the report of a failed test."""
    created = getattr(container, "_container", None)
    kept: dict[str, str] = getattr(container, LOGS_ATTR, None) or {}
    if created is None:
        return kept
    try:
        raw = created.logs()
    except Exception:  # removed already (the user's stop()): what was kept, if anything
        return kept
    return {str(created.name): raw.decode(errors="replace") if isinstance(raw, bytes) else raw}
