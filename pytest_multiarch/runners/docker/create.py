"""What the engine runner creates a container with, and what the engine's refusal to create or
start one means: the platform, session labels, memory limit without swap, an init under
emulation, the qemu CPU model, podman's ulimits; a missing command is exit 127.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import docker.errors

from pytest_multiarch.errors import NoDefaultCommand, RunnerError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.base import Command, RunResult, as_argv, short_cmd
from pytest_multiarch.runners.classify import classify
from pytest_multiarch.runners.docker.podman import memory_limit_refusal, ulimit_refused

if TYPE_CHECKING:
    from pytest_multiarch.runners.docker.engine import EngineRunner

__all__ = ["NOT_FOUND_MARKERS", "create_container", "create_kwargs", "start_failure",
           "start_kwargs"]

#: What a runtime says when the command to start is not in the image.
NOT_FOUND_MARKERS = ("executable file not found", "no such file or directory")


def create_kwargs(
    runner: EngineRunner, image: str, platform: Platform, argv: tuple[str, ...] | None,
    env: Mapping[str, str] | None, mem_limit: str | None, cpu_model: str | None = None,
) -> dict[str, Any]:
    """``containers.create()`` arguments of a container of *image* for *platform* on *runner*."""
    limit = mem_limit or runner.mem_limit
    emulated = runner.is_emulated(platform)
    if runner.limits_ignored and emulated:
        raise memory_limit_refusal(runner.target, image, platform)
    model = runner.chosen_model(platform) if cpu_model is None else cpu_model
    kwargs: dict[str, Any] = {
        "image": image,
        "platform": platform.engine_platform,  # Docker 20.10 refuses linux/arm64/v8.2
        "labels": runner.session.labels(),
        "mem_limit": limit,
        "memswap_limit": limit,  # no swap: a balloon dies at the limit instead of thrashing
        # qemu-user (through binfmt_misc) takes its CPU model from QEMU_CPU.
        "environment": {**({"QEMU_CPU": model} if emulated and model else {}), **(env or {})},
        "detach": True,
        # An init as PID 1 under emulation: a crashing emulated PID 1 otherwise hangs (the
        # kernel ignores qemu's re-raised SIGSEGV for init) instead of reporting "uncaught
        # target signal".  Not natively: docker-init's execvp retries an ENOEXEC binary as a
        # shell script, which turns a clean "exec format error" into a shell syntax error.
        # Always under emulation: a qemu that takes SIGILL as PID 1 hangs the container.
        "init": emulated or bool(runner.init),
    }
    if platform.engine_platform != str(platform):
        # A level variant (arm64/v8.2): Docker 20.10 stores the image as linux/arm64/v8.2 and
        # refuses a container of it for "linux/arm64"; by digest it needs no platform at all.
        del kwargs["platform"]
    if argv is not None:
        kwargs["command"] = list(argv)
    if runner.ulimits is not None:
        kwargs["ulimits"] = list(runner.ulimits)
    return kwargs


def start_kwargs(
    runner: EngineRunner, kwargs: dict[str, Any], *, ports: Sequence[int | str],
    name: str | None, network: str | None, entrypoint: Command | None,
    tmpfs: Mapping[str, str] | None, volumes: Mapping[str, Mapping[str, str]] | None,
    network_aliases: Sequence[str], labels: Mapping[str, str] | None,
) -> dict[str, Any]:
    """*kwargs* of :func:`create_kwargs` plus what only long-running containers use."""
    kwargs["ports"] = {
        (str(p) if "/" in str(p) else f"{p}/tcp"): (runner.publish_address, None) for p in ports
    }
    kwargs["labels"] = {**(labels or {}), **kwargs["labels"]}  # session labels win
    if name:
        kwargs["name"] = name
    if network:
        kwargs["network"] = network
        if network_aliases:
            kwargs["networking_config"] = {
                network: runner.client.api.create_endpoint_config(aliases=list(network_aliases))
            }
    if entrypoint is not None:
        kwargs["entrypoint"] = list(as_argv(entrypoint))
    if tmpfs:
        kwargs["tmpfs"] = dict(tmpfs)
    if volumes:
        kwargs["volumes"] = {k: dict(v) for k, v in volumes.items()}
    return kwargs


def create_container(
    runner: EngineRunner, kwargs: dict[str, Any], image: str, platform: Platform
) -> Any:
    """The created (not started) container; NoDefaultCommand or RunnerError if refused."""
    try:
        try:
            return runner.client.containers.create(**kwargs)
        except docker.errors.ImageNotFound:
            # Removed from the engine since we checked it (an `image prune`): pull again.
            runner.forget_image(image, platform)
            runner.ensure_image(image, platform)
            return runner.client.containers.create(**kwargs)
    except docker.errors.APIError as exc:
        text = str(exc.explanation or exc)
        if "no command specified" in text.lower():
            raise NoDefaultCommand(
                f"{image} on {platform} has no default command (its config has neither "
                "Entrypoint nor Cmd); pass one, e.g. multiarch_run(ref, ['uname', '-m']) or "
                "--multiarch-smoke-cmd."
            ) from exc
        raise RunnerError(
            f"engine {runner.target} could not create a container of {image} for "
            f"{platform}: {text}"
        ) from exc


def start_failure(
    runner: EngineRunner, exc: docker.errors.APIError, image: str, platform: Platform,
    argv: tuple[str, ...], started: float, limit: str,
) -> RunResult:
    """A container that could not start: a missing command is exit 127; others classify."""
    text = str(exc.explanation or exc)
    lowered = text.lower()
    refused = ulimit_refused(text, runner.target, image, platform, runner.ulimits)
    if refused is not None:
        raise refused from exc
    if any(marker in lowered for marker in NOT_FOUND_MARKERS):
        code = 127
    elif "exec format error" in lowered or "permission denied" in lowered:
        code = 126
    else:
        raise RunnerError(
            f"engine {runner.target} could not start {short_cmd(argv)!r} of {image} for "
            f"{platform}: {text}"
        ) from exc
    result = runner.result(image, platform, argv, code, "", text + "\n",
                           time.monotonic() - started, text + "\n", mem_limit=limit)
    classified = classify(result)
    if classified is not None:
        raise classified from exc
    return result
