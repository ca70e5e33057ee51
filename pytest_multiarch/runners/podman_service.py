"""A private ``podman system service`` for a session that asked for podman when none runs.

It listens on a socket private to the session (never on the well-known path, where a copy left
by a killed session would be taken for a real service by the next ``--engine=auto``) and stops
when its last runner closes.  No Docker SDK here, like :mod:`.detect`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pytest_multiarch.errors import EngineUnavailable
from pytest_multiarch.runners.detect import ROOTFUL_PODMAN_SOCKET, probe

__all__ = ["PodmanService", "reap_stale_services"]

SERVICE_TIMEOUT = 30.0
SERVICE_PREFIX = "pytest-multiarch-podman-"


class PodmanService:
    """``podman system service --time=0 unix://DIR/podman.sock`` for this process.

    Shared by the session's runners: :meth:`acquire` starts it (once), :meth:`release` stops it
    when the last user is done.  It runs in its own session, so a Ctrl-C to pytest's process group
    does not kill it before the runners removed their containers through it; if this process
    dies without stopping it, the kernel sends it SIGTERM (``PR_SET_PDEATHSIG``, when started
    from the main thread) and the next :meth:`acquire` on this host removes what is left.
    """

    def __init__(self, binary: str = "podman", *, timeout: float = SERVICE_TIMEOUT,
                 insecure_registries: Sequence[str] = ()) -> None:
        self.binary = binary
        self.timeout = timeout
        # Marked insecure in the service's own registries.conf, beside loopback (podman.py).
        self.insecure_registries = tuple(insecure_registries)
        self._lock = threading.Lock()
        self._users = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        """The service's ``unix://`` URL (only while started)."""
        if self._dir is None:
            raise EngineUnavailable("the podman service is not started")
        return f"unix://{self._dir / 'podman.sock'}"

    @property
    def pid(self) -> int | None:
        """The service's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def acquire(self) -> str:
        """Start the service unless it runs; count one more user; return its URL."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._stop_locked()
                self._start_locked()
            self._users += 1
            return self.url

    def release(self) -> None:
        """One user fewer; the last one stops the service."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._stop_locked()

    def stop(self) -> None:
        """Stop the service whatever the count; idempotent."""
        with self._lock:
            self._users = 0
            self._stop_locked()

    def _start_locked(self) -> None:
        binary = shutil.which(self.binary)
        if binary is None:
            raise EngineUnavailable(
                f"cannot start podman's API service: no {self.binary!r} on PATH. Fix: "
                "apt-get install podman catatonit, or use --engine=docker / --engine=rootfs"
            )
        reap_stale_services()
        workdir = Path(tempfile.mkdtemp(prefix=SERVICE_PREFIX))
        sock = workdir / "podman.sock"
        log = workdir / "service.log"
        main_thread = threading.current_thread() is threading.main_thread()
        # Here, not at module level: detection must not load the Docker SDK (podman.py does).
        from pytest_multiarch.runners.docker.podman import registries_conf

        env = dict(os.environ)
        conf = registries_conf(self.insecure_registries)
        if conf is not None:  # plain-HTTP loopback pulls like Docker's (podman.registries_conf)
            (workdir / "registries.conf").write_text(conf)
            env["CONTAINERS_REGISTRIES_CONF"] = str(workdir / "registries.conf")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, "system", "service", "--time=0", f"unix://{sock}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
                # The death signal fires when the *thread* that forked exits: main thread only.
                preexec_fn=_die_with_parent if main_thread else None,
            )
        (workdir / "owner").write_text(f"{os.getpid()} {time.time():.0f} {proc.pid}\n")
        self._proc, self._dir = proc, workdir
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if probe(f"unix://{sock}", timeout=2).answered:
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        code = proc.poll()
        self._stop_locked()
        state = f"exited {code}" if code is not None else f"no answer within {self.timeout:.0f}s"
        raise EngineUnavailable(
            f"podman system service --time=0 unix://{sock} did not come up ({state}): "
            f"{tail or 'no output'}. Fix: run `podman info` to see what podman needs, or start "
            f"the service yourself (podman system service --time=0 unix://{ROOTFUL_PODMAN_SOCKET}"
            " &) and keep it running"
        )

    def _stop_locked(self) -> None:
        proc, workdir = self._proc, self._dir
        self._proc = self._dir = None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> PodmanService:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _die_with_parent() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    # Best effort in a preexec_fn: a libc without prctl (OSError, AttributeError) only loses the
    # kill-on-parent-death; reap_stale_services() still removes what a dead session left.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def reap_stale_services(tmpdir: Path | None = None) -> int:
    """Stop private podman services whose owning process is gone; returns how many dirs went."""
    from pytest_multiarch.runners.docker.cleanup import process_alive

    removed = 0
    for workdir in Path(tmpdir or tempfile.gettempdir()).glob(f"{SERVICE_PREFIX}*"):
        try:
            owner, started, service = (int(float(x)) for x in
                                       (workdir / "owner").read_text().split())
        except (OSError, ValueError):
            if time.time() - workdir.stat().st_mtime < 60:
                continue  # being set up right now
            owner = started = service = 0
        if owner and process_alive(owner, started):
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{service}/cmdline").read_bytes() if service else b""
            if str(workdir).encode() in cmdline:  # really that service, not a reused pid
                os.kill(service, signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)
        removed += 1
    return removed
