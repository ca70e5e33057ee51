"""Per-session state: which archs can run, the runners, the registry client and the matrix.

No pytest import: the plugin hands in what it needs as plain callables (``make_runner`` for the
``pytest_multiarch_make_runner`` hook, ``on_report`` for ``pytest_multiarch_report``).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_multiarch.errors import MultiarchError
from pytest_multiarch.platforms import Platform
from pytest_multiarch.runners.factory import EngineSelection
from pytest_multiarch.session.images import ImageCache
from pytest_multiarch.session.report import Matrix

if TYPE_CHECKING:
    from pytest_multiarch.host import cpu
    from pytest_multiarch.oci.registry import RegistryClient
    from pytest_multiarch.runners.base import Runner
    from pytest_multiarch.session.settings import MultiarchConfig

#: ``make_runner(platform)``: a runner of the user's (the hook's answer), or None for the default.
MakeRunner = Callable[[Platform], "Runner | None"]
#: ``log_source()``: ``{title: text}`` of containers a test has running right now.
LogSource = Callable[[], Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class ArchStatus:
    """Whether an arch can run here, how, and if not why and how to fix it."""

    ok: bool
    how: str
    reason: str = ""
    fix: str = ""


@dataclass(eq=False)
class State:
    """Everything the plugin keeps for one pytest session (one per xdist worker)."""

    cfg: MultiarchConfig
    archs: tuple[Platform, ...]
    make_runner: MakeRunner | None = None
    on_report: Callable[[dict[str, Any]], None] | None = None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    matrix: Matrix = field(init=False)
    #: resolved variants, top manifests and opened sources of every image the session touched
    images: ImageCache = field(default_factory=ImageCache)
    #: the engine ``--engine`` means here, detected once, and the session's podman service
    engines: EngineSelection = field(init=False)
    #: node id -> the variant digest the test ran, for the JUnit properties and the matrix
    digests: dict[str, str] = field(default_factory=dict)
    logs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    log_sources: dict[str, list[LogSource]] = field(default_factory=dict)
    summary_lines: list[str] = field(default_factory=list)
    #: (reference text, arch name) -> a line a check wants in the summary (see NOTE_PROPERTY)
    notes: dict[tuple[str, str], str] = field(default_factory=dict)
    #: measured emulation factor per platform (1.0 native)
    emulation: dict[Platform, float] = field(default_factory=dict)
    #: the CPU of each --arch-host engine, read once (None: could not be read)
    host_cpus: dict[Platform, Any] = field(default_factory=dict)
    #: runners for OCI layouts, which an engine cannot pull
    layout_runners: dict[Platform, Runner] = field(default_factory=dict)
    #: node id -> the answers its ``multiarch_rest.record`` calls normalized (checks.rest.Answer)
    rest_records: dict[str, list[Any]] = field(default_factory=dict)
    #: pytest's exit status, for the report (a shard that crashed must not look green)
    exitstatus: int | None = None
    _status: dict[Platform, ArchStatus] = field(default_factory=dict)
    _runners: dict[Platform, Runner] = field(default_factory=dict)
    _registry: RegistryClient | None = None
    # Re-entrant: runner() holds it while make_default_runner() asks registry() for the rootfs
    # runner's client.
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.matrix = Matrix([p.arch_name for p in self.archs])
        self.engines = EngineSelection(str(self.cfg.engine.value), self.cfg.insecure_registries)

    # -- availability -----------------------------------------------------------------------

    def status(self, plat: Platform) -> ArchStatus:
        """Can *plat* run here? Cached; remote hosts are checked when their runner starts."""
        if plat not in self._status:
            self._status[plat] = self._compute_status(plat)
            line = self.matrix.line(plat.arch_name)
            line.how = self._status[plat].how
            line.run = {**self._run_facts(plat), **line.run}  # a runner already said which
        return self._status[plat]

    def _run_facts(self, plat: Platform) -> dict[str, Any]:
        """Where *plat* runs, for the report: a merge shows which machine each shard came from.

        ``cpu_model`` is the emulated CPU model (``QEMU_CPU``); None means qemu's default.
        """
        import platform as _platform

        host_url = self.cfg.arch_hosts.get(plat)
        if host_url is not None:  # the remote engine's CPU is not visible through its API
            return {"host": _host_of(host_url), "machine": plat.architecture, "cpu": None,
                    "runner": "remote engine"}
        facts: dict[str, Any] = {"host": _platform.node(), "machine": _platform.machine(),
                                 "cpu": _cpu_name(), "runner": self.cfg.engine.value}
        if plat != Platform.host():  # the CPU is qemu's model, not the host's
            from pytest_multiarch.host import binfmt

            facts["host_cpu"], facts["cpu"] = facts["cpu"], None
            facts["qemu"] = binfmt.qemu_version(plat)  # None for a missing qemu; never raises
        return facts

    def _compute_status(self, plat: Platform) -> ArchStatus:
        host_url = self.cfg.arch_hosts.get(plat)
        if host_url is not None:
            return ArchStatus(True, f"native on {_host_of(host_url)}")
        if plat == Platform.host():
            return ArchStatus(True, "native")
        from pytest_multiarch.host import binfmt

        check = binfmt.preflight(plat)
        if check.ok:
            choice = self.cpu_choice(plat)
            if choice is not None:  # run facts: cpu_model is the QEMU_CPU model (None: default)
                self.matrix.line(plat.arch_name).run["cpu_model"] = choice.model or None
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
        timeout = self.cfg.run_timeout
        if timeout.source != "default":  # the default stays out of the (well-known) header
            lines[0] += f"; run_timeout={timeout.value:g}s (from {timeout.source})"
        for name, limit in (("unpack_max_bytes", self.cfg.unpack_max_bytes),
                            ("unpack_max_files", self.cfg.unpack_max_files)):
            if limit is not None:  # only when set: the defaults live in rootfs/unpack.py
                lines[0] += f"; {name}={limit.value} (from {limit.source})"
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
        cpus = [c.describe() for p in self.archs if (c := self.cpu_choice(p)) is not None]
        if cpus:
            lines.append("multiarch: cpu: " + ", ".join(cpus))
        if self.cfg.images:
            lines.append("multiarch: images: " + ", ".join(self.cfg.images))
        variant = [f"{name}={','.join(map(str, found.value))} (from {found.source})"
                   for name, found in (("expect-platforms", self.cfg.expect_platforms_from),
                                       ("require-attestations",
                                        self.cfg.require_attestations_from)) if found]
        if variant:
            lines.append("multiarch: " + "; ".join(variant))
        if self.cfg.cache_problem:
            lines.append(f"multiarch: cache off: {self.cfg.cache_problem}")
        return lines

    def cpu_choice(self, plat: Platform) -> cpu.CpuChoice | None:
        """The qemu CPU model *plat* is emulated on, or None when it runs natively."""
        from pytest_multiarch.host import binfmt, cpu

        if plat in self.cfg.arch_hosts or binfmt.is_native(plat):
            return None
        chosen = self.cfg.arch_cpus
        return cpu.choose(plat, chosen.value, chosen.source)

    def _known_emulation_factor(self, plat: Platform) -> float | None:
        """The factor measured for *plat* by an earlier session (cached per qemu version)."""
        from pytest_multiarch.host import binfmt
        from pytest_multiarch.runners import emulation

        cache = self.cache_subdir("emulation")
        choice = self.cpu_choice(plat)
        path = emulation.cache_file(cache or emulation.default_cache_dir(), plat,
                                    binfmt.qemu_version(plat),
                                    cpu_model=choice.model if choice is not None else "")
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
                runner = self.make_runner(plat) if self.make_runner is not None else None
                if runner is None:
                    from pytest_multiarch.runners.factory import make_default_runner

                    runner = make_default_runner(self, plat)
                self._runners[plat] = runner
                self.matrix.line(plat.arch_name).how = runner.describe()
                # which runner, not just the engine option (auto may land on rootfs)
                self.matrix.line(plat.arch_name).run["runner"] = type(runner).__name__
            return runner

    def set_emulation_factor(self, plat: Platform, factor: float) -> None:
        """Record *plat*'s emulation factor for the matrix and the report."""
        self.matrix.line(plat.arch_name).emulation_factor = factor

    def cache_subdir(self, name: str) -> Path | None:
        """``--multiarch-cache-dir``/*name*, or None for the module's own default cache."""
        return self.cfg.cache_dir / name if self.cfg.cache_dir is not None else None

    def add_closer(self, closer: Callable[[], None]) -> None:
        """Call *closer()* when the session ends (after the runners are cleaned up)."""
        self._closers.append(closer)

    def add_log_source(self, nodeid: str, source: LogSource) -> None:
        """*source()* returns ``{title: text}`` of containers a test has running right now."""
        self.log_sources.setdefault(nodeid, []).append(source)

    def current_logs(self, nodeid: str) -> list[tuple[str, str]]:
        """The logs recorded for a test plus those of its still-running containers."""
        found = list(self.logs.get(nodeid, []))
        for source in self.log_sources.get(nodeid, []):
            try:
                found.extend((str(k), str(v)) for k, v in source().items())
            except Exception as exc:  # logs ride along a failure that is already reported:
                # a container or engine that is gone must not replace it with another
                found.append(("(unavailable)", f"container logs could not be read: {exc}"))
        return found

    def forget_logs(self, nodeid: str) -> None:
        """Drop what was kept for a test once its report is made."""
        self.logs.pop(nodeid, None)
        self.log_sources.pop(nodeid, None)

    # -- end of session ---------------------------------------------------------------------

    def record_collection(self, selected: list[tuple[str, str]],
                          deselected: list[tuple[str, str]]) -> None:
        """(arch, row) of the tests selected and deselected, for "not run" versus "missing"."""
        for arch, row in selected:
            self.matrix.collected.setdefault(arch, []).append(row)
        for arch, row in deselected:
            self.matrix.deselected.setdefault(arch, []).append(row)

    def image_facts(self) -> tuple[dict[str, str], dict[str, dict[str, dict[str, Any]]]]:
        """(reference -> index digest, reference -> arch -> variant) of what this process
        resolved; a single-platform manifest's own digest stands for its index."""
        indexes: dict[str, str] = {}
        variants: dict[str, dict[str, dict[str, Any]]] = {}
        for (ref, arch), resolved in list(self.images.resolved.items()):
            indexes.setdefault(ref, resolved.index_digest or resolved.digest)
            variants.setdefault(ref, {})[arch] = {
                "digest": resolved.digest, "config": resolved.config_digest,
                "layers": [layer.digest for layer in resolved.layers],
            }
        return indexes, variants

    def finish(self) -> None:
        """Write the JSON report and baseline; then clean up."""
        if self.cfg.report_path is not None or self.cfg.baseline_path is not None:
            from pytest_multiarch.session.report import write_json

            document = self.report_document()
            if self.on_report is not None:
                self.on_report(document)
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
                from pytest_multiarch.session import baseline

                observed = baseline.snapshot(
                    self.images.variant_facts(), self.images.index_platforms,
                    self.matrix.outcomes, self.matrix.package_versions(),
                )
                self.summary_lines.extend(
                    baseline.update_baseline(self.cfg.baseline_path, observed)
                )
        self.close()

    def report_document(self) -> dict[str, Any]:
        """The JSON report: the matrix plus host, engine and qemu facts."""
        from pytest_multiarch.host import binfmt

        extra: dict[str, Any] = {"session": self.session_id,
                                 "engine": self.cfg.engine.value,
                                 "exitstatus": self.exitstatus}
        for plat in self.archs:  # an xdist controller (or a quiet run) never asked before
            self.status(plat)
        indexes, variants = self.image_facts()  # this process's; xdist workers' came by report
        for ref, digest in indexes.items():
            self.matrix.index_digests.setdefault(ref, digest)
        for ref, per_arch in variants.items():
            for arch, variant in per_arch.items():
                self.matrix.variants.setdefault(ref, {}).setdefault(arch, variant)
        # qemu_version() answers None for a missing or silent qemu; it does not raise.
        extra["qemu"] = {
            p.arch_name: binfmt.qemu_version(p) for p in self.archs if p != Platform.host()
        }
        return self.matrix.to_json(extra)

    def close(self) -> None:
        """Clean up every runner (labelled containers, networks, volumes). Idempotent.

        Every runner and closer gets its turn even when one fails; a failure is said in the
        summary (what is left behind carries the session's labels: the next run reaps it).
        """
        runners, self._runners = list(self._runners.values()), {}
        closers, self._closers = self._closers, []
        steps: list[tuple[str, Callable[[], None]]] = [
            (f"runner {r.describe()}", r.close) for r in runners
        ]
        steps.extend(("session resource", closer) for closer in reversed(closers))
        for what, step in steps:
            try:
                step()
            except (MultiarchError, OSError) as exc:
                self.summary_lines.append(f"multiarch: cleanup of {what} failed: {exc}")


def _cpu_name() -> str | None:
    """This machine's CPU model as the kernel names it (x86 ``model name``, others vary)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "cpu model", "cpu", "Model") and value.strip():
            return value.strip()
    return None


def _host_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1] or url
