"""A stand-in for the plugin's session state: only what ``make_default_runner`` reads of it."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pytest_multiarch.platforms import Platform


class FakeState:
    """Settings, session id and engine choice of a session given *engine* as an option."""

    def __init__(self, engine: str, arch_hosts: dict[Platform, str] | None = None,
                 cache: Path | None = None) -> None:
        from pytest_multiarch.runners.factory import EngineSelection

        self.cfg = SimpleNamespace(arch_hosts=arch_hosts or {},
                                   engine=SimpleNamespace(value=engine, source="option"),
                                   mem_limit="256m", cache_dir=cache,
                                   run_timeout=SimpleNamespace(value=300.0, source="default"),
                                   unpack_max_bytes=None, unpack_max_files=None,
                                   arch_cpus=SimpleNamespace(value={}, source="default"))
        self.session_id = f"default-{engine}-{os.getpid()}"
        self.engines = EngineSelection(engine)  # the session holds the engine choice

    def registry(self) -> Any:
        from pytest_multiarch.oci.registry import RegistryClient

        return RegistryClient(cache=False)
