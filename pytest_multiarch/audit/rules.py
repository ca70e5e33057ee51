"""The rules a variant's final filesystem is judged by: what predicts "exec format error".

:class:`VariantRules` follows the entrypoint the way the runtime and the kernel would (PATH search,
symbolic links, ``#!`` interpreters, ``env``) down to an ELF binary of the variant's architecture
and its loader, then looks at every other ELF file (foreign, invalid, float ABI, CPU level), at
binaries only this host could run, and at the config's own platform.  It reads the model of
:mod:`~pytest_multiarch.audit.imagefs`; :func:`~pytest_multiarch.audit.verdicts.audit_variant`
builds that model and wraps the findings in an ``AuditResult``.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pytest_multiarch.audit import elf
from pytest_multiarch.audit.elf import ElfHeader, InvalidElf
from pytest_multiarch.audit.entries import Entry, Op
from pytest_multiarch.audit.findings import Finding, Kind, Severity
from pytest_multiarch.audit.imagefs import Dir, Filesystem, PathMissing, SymlinkLoop
from pytest_multiarch.errors import UsageError
from pytest_multiarch.platforms import DEFAULT_PATH, EM_ARM, ArchInfo, Platform

__all__ = ["VariantRules"]

_MAX_SCRIPT_DEPTH = 4  # the kernel gives up (ELOOP) on longer chains of #! interpreters

#: Verdicts that rest on something being absent, which an unread layer may have held.
_ABSENCE = frozenset((Kind.ENTRYPOINT_MISSING, Kind.LOADER_MISSING, Kind.SYMLINK_LOOP,
                      Kind.NO_ENTRYPOINT))


class _Stop(Exception):
    """The exec chain cannot be followed further; the finding is already recorded."""


class VariantRules:
    """The checks on one variant's final filesystem; :meth:`run` gives their findings."""

    def __init__(
        self, image: str, platform: Platform, config: Mapping[str, Any], fs: Filesystem,
        host: Platform, allow: tuple[str, ...], unread: tuple[str, ...] = (),
    ) -> None:
        runtime = config.get("config")
        self.image_config = config
        self.config: Mapping[str, Any] = runtime if isinstance(runtime, Mapping) else config
        self.who = f"{platform} variant of {image}"
        self.platform = platform
        self.target: ArchInfo = platform.info
        self.host = host
        self.fs = fs
        self.allow = allow
        self.unread = unread
        self.findings: list[Finding] = []
        self.exec_chain: list[str] = []
        self.elf_counts: Counter[str] = Counter()
        self.host_native: list[str] = []  # foreign ELF files that are for the host's arch

    def run(self) -> list[Finding]:
        self._entrypoint()
        self._other_files()
        self._host_native_only()
        self._config_platform()
        return self.findings

    def _config_platform(self) -> None:
        """The config's os/architecture/variant against the platform the variant is for."""
        arch = self.image_config.get("architecture")
        if not isinstance(arch, str) or not arch:
            return  # a bare runtime config, or one that names nothing
        os_name = str(self.image_config.get("os") or "linux")
        variant = str(self.image_config.get("variant") or "")
        try:
            claimed = Platform.from_parts(os_name, arch, variant)
        except UsageError:
            claimed = Platform(os_name, arch, variant)
        if claimed == self.platform:
            return
        ours = self.elf_counts.get(self.target.name, 0)
        total = sum(self.elf_counts.values())
        theirs = self.elf_counts.get(claimed.arch_name, 0) if claimed.os == "linux" else 0
        if total and ours == total:
            verdict = f"its ELF files ({total}) are all for {self.target.name}: the config lies"
        elif total and theirs == total:
            verdict = f"its ELF files ({total}) are all for {claimed.arch_name}: the index lies"
        else:
            verdict = (f"of its {total} ELF files, {ours} are for {self.platform.arch_name} and "
                       f"{theirs} for {claimed.arch_name}")
        self._add(Kind.CONFIG_MISMATCH, Severity.FAIL,
                  f"{self.who}: its config says {claimed}; {verdict}. `docker run --platform "
                  f"{self.platform}` refuses such an image ('does not match the specified "
                  "platform'); rebuild the variant or fix the index entry")

    def _add(self, kind: Kind, severity: Severity, message: str, path: str = "") -> None:
        if self.unread and kind in _ABSENCE and severity is Severity.FAIL:
            # Something missing from a filesystem we could not read whole proves nothing.
            severity = Severity.INFO
            message += f" (not conclusive: layer {', '.join(self.unread)} could not be read whole)"
        self.findings.append(Finding(kind, severity, message, path))

    # entrypoint ---------------------------------------------------------------------------------

    def _entrypoint(self) -> None:
        argv = _argv(self.config)
        if not argv or not argv[0]:
            self._add(Kind.NO_ENTRYPOINT, Severity.FAIL,
                      f"{self.who}: its config has neither Entrypoint nor Cmd, so there is "
                      "nothing to audit; `docker run` without a command fails with 'no command "
                      "specified'")
            return
        program, args = argv[0], argv[1:]
        origin = via = ""  # once past the entrypoint: what it was, and the hop to the current one
        search_path = True
        try:
            for _ in range(_MAX_SCRIPT_DEPTH + 1):
                where = f" (the interpreter of {origin}, via {via})" if origin else ""
                real, entry = self._locate(program, program + where, search_path=search_path)
                self.exec_chain.append(real)
                shown = (program if real == program else f"{program} (→ {real})") + where
                if entry.shebang is not None and entry.elf is None:
                    interpreter, argument = entry.shebang
                    origin = origin or shown
                    via = f"#!{interpreter}" + (f" {argument}" if argument else "")
                    args = [*([argument] if argument else []), real, *args]
                    program, search_path = interpreter, False
                    continue
                self._executable(entry, shown, real)
                words = _env_command(args) if posixpath.basename(program) == "env" else []
                if not words:
                    return  # an ELF binary of the right machine, with its loader: done
                if not origin:
                    origin, via = shown, f"{program} {' '.join(args)}"
                program, args = words[0], words[1:]
                search_path = True
            self._add(Kind.INTERPRETER_LOOP, Severity.FAIL,
                      f"{self.who}: {origin} starts a chain of more than {_MAX_SCRIPT_DEPTH} #! "
                      "interpreters; this would fail with 'too many levels of symbolic links'",
                      self.exec_chain[0])
        except _Stop:
            return

    def _locate(self, program: str, subject: str, *, search_path: bool) -> tuple[str, Entry]:
        workdir = str(self.config.get("WorkingDir") or "/")
        searching = search_path and "/" not in program
        if searching:
            candidates = [posixpath.join(d or workdir, program) for d in self._path().split(":")]
        else:
            candidates = [posixpath.join(workdir, program)]
        loop = ""
        for candidate in candidates:
            try:
                real, node = self.fs.walk(candidate)
            except PathMissing:
                continue
            except SymlinkLoop:
                loop = loop or candidate
                continue
            if searching and not (
                isinstance(node, Entry) and node.op is Op.FILE and node.mode & 0o111
            ):
                continue  # PATH search skips what is not an executable file, like LookPath
            return real, self._file(node, subject, real)
        if loop:
            self._add(Kind.SYMLINK_LOOP, Severity.FAIL,
                      f"{self.who}: {subject} resolves through a symbolic link loop at {loop}; "
                      "this would fail with 'too many levels of symbolic links'", loop)
        elif searching:
            self._add(Kind.ENTRYPOINT_MISSING, Severity.FAIL,
                      f"{self.who}: {subject} is not an executable file in any PATH directory "
                      f"({self._path()}); this would fail with 'executable file not found in "
                      "$PATH'", program)
        else:
            self._add(Kind.ENTRYPOINT_MISSING, Severity.FAIL,
                      f"{self.who}: {subject} does not exist in the image; this would fail with "
                      "'no such file or directory'", candidates[0])
        raise _Stop

    def _file(self, node: Dir | Entry, subject: str, real: str) -> Entry:
        if isinstance(node, Entry) and node.op is Op.FILE:
            if node.mode & 0o111:
                return node
            problem = f"is not executable (mode {node.mode & 0o7777:04o})"
        else:
            problem = "is a directory" if isinstance(node, Dir) else "is not a regular file"
        self._add(Kind.ENTRYPOINT_NOT_EXECUTABLE, Severity.FAIL,
                  f"{self.who}: {subject} {problem}; this would fail with 'permission denied'",
                  real)
        raise _Stop

    def _executable(self, entry: Entry, shown: str, real: str) -> None:
        header = entry.elf
        if isinstance(header, InvalidElf):
            self._add(Kind.INVALID_ELF, Severity.FAIL,
                      f"{self.who}: {shown} has an {header}; this would fail with exec format "
                      "error", real)
            raise _Stop
        if header is None:
            self._add(Kind.ENTRYPOINT_NOT_EXECUTABLE, Severity.FAIL,
                      f"{self.who}: {shown} is neither an ELF binary nor a #! script; this would "
                      "fail with exec format error", real)
            raise _Stop
        if not header.same_machine(self.target):
            if header.same_machine(self.host.info) and self.host.info != self.target:
                self.host_native.append(real)
            self._add(Kind.ENTRYPOINT_FOREIGN, Severity.FAIL,
                      f"{self.who}: {shown} is {header.description}; this would fail with exec "
                      f"format error on {self.platform.arch_name}", real)
            raise _Stop
        self._float_abi(real, header)
        if header.has_interp:
            self._loader(header, shown, real)

    def _loader(self, header: ElfHeader, shown: str, real: str) -> None:
        if header.interp is None:
            self._add(Kind.LOADER_MISSING, Severity.INFO,
                      f"{self.who}: {shown} names its loader beyond the first "
                      f"{elf.MAX_BYTES // 1024} KiB; the loader was not checked", real)
            return
        try:
            node = self.fs.walk(header.interp)[1]
        except (PathMissing, SymlinkLoop):
            node = None
        if not (isinstance(node, Entry) and node.op is Op.FILE):
            self._add(Kind.LOADER_MISSING, Severity.FAIL,
                      f"{self.who}: {shown} is dynamically linked and asks for the loader "
                      f"{header.interp}, which is not in the image; this would fail with 'no "
                      "such file or directory'", real)
            raise _Stop

    # everything else ----------------------------------------------------------------------------

    def _other_files(self) -> None:
        chain = set(self.exec_chain)
        for path, entry in self.fs.files():
            header = entry.elf
            if header is None:
                continue
            if isinstance(header, InvalidElf):
                self.elf_counts["invalid"] += 1
                if path not in chain:
                    severity = Severity.INFO if self._allowed(path) else Severity.WARN
                    self._add(Kind.INVALID_ELF, severity,
                              f"{self.who}: {path} has an {header}", path)
                continue
            self.elf_counts[header.arch_key] += 1
            if path in chain:
                continue
            if header.same_machine(self.target):
                if not self._allowed(path):
                    self._float_abi(path, header)
                continue
            if self._allowed(path):
                self._add(Kind.FOREIGN_ELF_ALLOWED, Severity.INFO,
                          f"{self.who}: {path} is {header.description} (allowlisted)", path)
                continue
            if header.same_machine(self.host.info) and self.host.info != self.target:
                self.host_native.append(path)
            self._add(Kind.FOREIGN_ELF, Severity.FAIL,
                      f"{self.who}: {path} is {header.description}, which cannot run on "
                      f"{self.platform.arch_name}; allowlist it if it is there on purpose", path)

    def _cpu_level(self, path: str, header: ElfHeader) -> None:
        """A file that records it needs a newer CPU level than the variant promises."""
        from pytest_multiarch.audit import cpulevel

        if cpulevel.exceeds(self.platform, header.cpu_level):
            evidence = "x86 ISA needed" if header.machine != EM_ARM else "Tag_CPU_arch"
            self._add(Kind.CPU_LEVEL, Severity.FAIL,
                      f"{self.who}: {path} records that it needs {self.platform.architecture}/"
                      f"{header.cpu_level} ({evidence}), "
                      f"more than {self.platform} promises: it dies with 'Illegal instruction' on "
                      f"the older machines; rebuild it for the baseline or publish it as "
                      f"{self.platform.os}/{self.platform.architecture}/{header.cpu_level}", path)

    def _float_abi(self, path: str, header: ElfHeader) -> None:
        self._cpu_level(path, header)
        if header.machine != self.target.elf_machine or header.hard_float is None:
            return
        if self.target.variant == "v7" and header.hard_float is False:
            self._add(Kind.ARM_SOFT_FLOAT, Severity.WARN,
                      f"{self.who}: {path} is {header.description}, an armel (arm/v6) binary in "
                      "an armhf (arm/v7) variant; it was likely built from the wrong packages, "
                      "and dynamically linked it needs the armel loader /lib/ld-linux.so.3", path)
        elif self.target.variant == "v6" and header.hard_float is True:
            self._add(Kind.ARM_HARD_FLOAT, Severity.WARN,
                      f"{self.who}: {path} is {header.description}, an armhf binary in an armel "
                      "(arm/v6) variant; ARM CPUs without a VFP unit cannot run it", path)

    def _host_native_only(self) -> None:
        if not self.host_native:
            return
        count = len(self.host_native)
        examples = ", ".join(self.host_native[:3]) + (" …" if count > 3 else "")
        which = "one of its ELF files" if count == 1 else f"{count} of its ELF files"
        arch = self.platform.arch_name
        self._add(Kind.HOST_NATIVE_ONLY, Severity.FAIL,
                  f"{self.who} is host-native-only suspicious: {which} ({examples}) "
                  f"{'is' if count == 1 else 'are'} {self.host.info.elf_description}, the "
                  f"architecture of this "
                  f"host ({self.host.arch_name}), not {arch}. Tests on this host run them "
                  f"natively and pass, but on a real {arch} machine the image fails with exec "
                  "format error", self.host_native[0])

    def _allowed(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.allow)

    def _path(self) -> str:
        for item in self.config.get("Env") or ():
            if isinstance(item, str) and item.startswith("PATH="):
                return item[5:]
        return DEFAULT_PATH


def _argv(config: Mapping[str, Any]) -> list[str]:
    words: list[str] = []
    for key in ("Entrypoint", "Cmd"):
        value = config.get(key)
        if isinstance(value, str):  # Docker's strslice reads a lone string as one word
            words.append(value)
        elif isinstance(value, list):
            words.extend(str(word) for word in value)
    return words


def _env_command(args: list[str]) -> list[str]:
    """The command ``env ARGS`` runs: options, ``NAME=value`` and ``-S`` splitting skipped."""
    words = list(args)
    while words:
        word = words[0]
        if word == "--":
            return words[1:]
        if word.startswith("-S") or word == "--split-string":
            rest = word[2:] if word.startswith("-S") and len(word) > 2 else " ".join(words[1:2])
            words = rest.split() + words[1 if len(word) > 2 else 2 :]
        elif word in ("-u", "--unset", "-C", "--chdir"):
            words = words[2:]
        elif word.startswith("-") or "=" in word:
            words = words[1:]
        else:
            break
    return words
