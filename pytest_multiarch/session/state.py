"""Per-session state: which archs can run, the runners, the registry client and the matrix.

No pytest import: the plugin passes in what it needs (the hook relay and config object are only
handed through to hook calls).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_multiarch.platforms import Platform
from pytest_multiarch.session.report import Matrix

if TYPE_CHECKING:
    from pytest_multiarch.oci.registry import RegistryClient
    from pytest_multiarch.runners.base import Runner
    from pytest_multiarch.session.settings import MultiarchConfig


@dataclass(frozen=True, slots=True)
class ArchStatus:
    """Whether an arch can run here, how, and if not why and how to fix it."""

    ok: bool
    how: str
    reason: str = ""
    fix: str = ""


_LIVE_STATES: weakref.WeakSet[State] = weakref.WeakSet()


@dataclass(eq=False)
class State:
    """Everything the plugin keeps for one pytest session (one per xdist worker)."""

    cfg: MultiarchConfig
    archs: tuple[Platform, ...]
    hook: Any = None
    config: Any = None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    matrix: Matrix = field(init=False)
    digests: dict[str, str] = field(default_factory=dict)
    logs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    log_sources: dict[str, list[Any]] = field(default_factory=dict)
    failed_items: dict[str, bool] = field(default_factory=dict)
    summary_lines: list[str] = field(default_factory=list)
    #: (reference text, arch name) -> ResolvedImage, filled by pytest_multiarch.session.images
    resolved: dict[tuple[str, str], Any] = field(default_factory=dict)
    #: reference text -> platforms its index lists
    index_platforms: dict[str, list[str]] = field(default_factory=dict)
    #: reference text -> its top-level Manifest (index), fetched once
    manifests: dict[str, Any] = field(default_factory=dict)
    #: reference text -> OpenedSource (registry client or OCI layout), see images.opened
    sources: dict[str, Any] = field(default_factory=dict)
    #: measured emulation factor per platform (1.0 native)
    emulation: dict[Platform, float] = field(default_factory=dict)
    #: runners for OCI layouts, which an engine cannot pull
    layout_runners: dict[Platform, Runner] = field(default_factory=dict)
    _status: dict[Platform, ArchStatus] = field(default_factory=dict)
    _runners: dict[Platform, Runner] = field(default_factory=dict)
    _registry: RegistryClient | None = None
    # Re-entrant: runner() holds it while make_default_runner() asks registry() for the rootfs
    # runner's client.
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _closers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.matrix = Matrix([p.arch_name for p in self.archs])
        _LIVE_STATES.add(self)

    # -- availability -----------------------------------------------------------------------

    def status(self, plat: Platform) -> ArchStatus:
        """Can *plat* run here? Cached; remote hosts are checked when their runner starts."""
        if plat not in self._status:
            self._status[plat] = self._compute_status(plat)
            self.matrix.line(plat.arch_name).how = self._status[plat].how
        return self._status[plat]

    def _compute_status(self, plat: Platform) -> ArchStatus:
        host_url = self.cfg.arch_hosts.get(plat)
        if host_url is not None:
            return ArchStatus(True, f"native on {_host_of(host_url)}")
        if plat == Platform.host():
            return ArchStatus(True, "native")
        from pytest_multiarch.host import binfmt

        check = binfmt.preflight(plat)
        if check.ok:
            return ArchStatus(True, "emulated")
        return ArchStatus(False, f"unavailable: {check.reason}", check.reason, check.fix)

    # -- header -----------------------------------------------------------------------------

    def header_lines(self) -> list[str]:
        """``multiarch: archs=arm64,s390x (from option); engine=…`` and the binfmt line."""
        from pytest_multiarch.runners.factory import engine_header

        archs = ",".join(p.arch_name for p in self.archs)
        lines = [
            f"multiarch: archs={archs} (from {self.cfg.archs.source}); "
            f"{engine_header(self)}; "
            f"mem_limit={self.cfg.mem_limit}; required={'yes' if self.cfg.arch_required else 'no'}"
        ]
        parts = []
        for plat in self.archs:
            st = self.status(plat)
            if plat in self.cfg.arch_hosts:
                parts.append(f"{plat.arch_name} {st.how}")
            elif st.how == "native":
                parts.append(f"{plat.arch_name} native")
            else:
                known = self._known_emulation_factor(plat) if st.ok else None
                factor = f" (emulation {known:.1f}x)" if known else ""
                parts.append(f"{plat.arch_name} {'ok' if st.ok else 'MISSING'}{factor}")
        lines.append("multiarch: binfmt: " + ", ".join(parts))
        if self.cfg.images:
            lines.append("multiarch: images: " + ", ".join(self.cfg.images))
        variant = [f"{name}={','.join(map(str, found.value))} (from {found.source})"
                   for name, found in (("expect-platforms", self.cfg.expect_platforms_from),
                                       ("require-attestations",
                                        self.cfg.require_attestations_from)) if found]
        if variant:
            lines.append("multiarch: " + "; ".join(variant))
        return lines

    def _known_emulation_factor(self, plat: Platform) -> float | None:
        """The factor measured for *plat* by an earlier session (cached per qemu version)."""
        import json

        from pytest_multiarch.host import binfmt
        from pytest_multiarch.runners import emulation

        cache = self.cache_subdir("emulation")
        path = emulation.cache_file(cache or emulation.default_cache_dir(), plat,
                                    binfmt.qemu_version(plat))
        try:
            factor = json.loads(path.read_text())["factor"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return float(factor) if isinstance(factor, int | float) else None

    # -- shared resources -------------------------------------------------------------------

    def registry(self) -> RegistryClient:
        """The session's registry client (digest cache shared with xdist workers on disk)."""
        with self._lock:
            if self._registry is None:
                from pytest_multiarch.oci.registry import RegistryClient

                self._registry = RegistryClient(
                    cache_dir=self.cfg.cache_dir,
                    insecure_registries=self.cfg.insecure_registries,
                )
            return self._registry

    def runner(self, plat: Platform) -> Runner:
        """The runner for *plat*: a ``pytest_multiarch_make_runner`` hook's, else the default."""
        with self._lock:
            runner = self._runners.get(plat)
            if runner is None:
                if self.hook is not None:
                    runner = self.hook.pytest_multiarch_make_runner(
                        config=self.config, platform=plat
                    )
                if runner is None:
                    from pytest_multiarch.runners.factory import make_default_runner

                    runner = make_default_runner(self, plat)
                self._runners[plat] = runner
                with contextlib.suppress(Exception):
                    self.matrix.line(plat.arch_name).how = runner.describe()
            return runner

    def set_emulation_factor(self, plat: Platform, factor: float) -> None:
        """Record *plat*'s emulation factor for the matrix and the report."""
        self.matrix.line(plat.arch_name).emulation_factor = factor

    def cache_subdir(self, name: str) -> Path | None:
        """``--multiarch-cache-dir``/*name*, or None for the module's own default cache."""
        return self.cfg.cache_dir / name if self.cfg.cache_dir is not None else None

    def add_closer(self, closer: Any) -> None:
        """Call *closer()* when the session ends (after the runners are cleaned up)."""
        self._closers.append(closer)

    def add_log_source(self, nodeid: str, source: Any) -> None:
        """*source()* returns ``{title: text}`` of containers a test has running right now."""
        self.log_sources.setdefault(nodeid, []).append(source)

    def current_logs(self, nodeid: str) -> list[tuple[str, str]]:
        """The logs recorded for a test plus those of its still-running containers."""
        found = list(self.logs.get(nodeid, []))
        for source in self.log_sources.get(nodeid, []):
            with contextlib.suppress(Exception):
                found.extend((str(k), str(v)) for k, v in dict(source()).items())
        return found

    def forget_logs(self, nodeid: str) -> None:
        """Drop what was kept for a test once its report is made."""
        self.logs.pop(nodeid, None)
        self.log_sources.pop(nodeid, None)

    # -- end of session ---------------------------------------------------------------------

    def finish(self, config: Any) -> None:
        """Write the JSON report and baseline; then clean up."""
        if self.cfg.report_path is not None or self.cfg.baseline_path is not None:
            from pytest_multiarch.session.report import write_json

            document = self.report_document()
            if self.hook is not None:
                self.hook.pytest_multiarch_report(config=config, report=document)
            if self.cfg.report_path is not None:
                try:
                    write_json(self.cfg.report_path, document)
                    self.summary_lines.append(
                        f"multiarch: report written to {self.cfg.report_path}"
                    )
                except OSError as exc:
                    self.summary_lines.append(
                        f"multiarch: could not write report {self.cfg.report_path}: {exc.strerror}"
                    )
            if self.cfg.baseline_path is not None:
                from pytest_multiarch.session.baseline import update_baseline

                self.summary_lines.extend(update_baseline(self, document))
        self.close()

    def report_document(self) -> dict[str, Any]:
        """The JSON report: the matrix plus host, engine and qemu facts."""
        extra: dict[str, Any] = {"session": self.session_id,
                                 "engine": self.cfg.engine.value}
        with contextlib.suppress(Exception):
            from pytest_multiarch.host import binfmt

            extra["qemu"] = {
                p.arch_name: binfmt.qemu_version(p) for p in self.archs if p != Platform.host()
            }
        return self.matrix.to_json(extra)

    def close(self) -> None:
        """Clean up every runner (labelled containers, networks, volumes). Idempotent."""
        runners, self._runners = list(self._runners.values()), {}
        for runner in runners:
            with contextlib.suppress(Exception):
                runner.close()
        closers, self._closers = self._closers, []
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                closer()


def cleanup_all_sessions() -> None:
    """Close every live session's runners (Ctrl-C path)."""
    for state in list(_LIVE_STATES):
        state.close()


def _host_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1] or url
