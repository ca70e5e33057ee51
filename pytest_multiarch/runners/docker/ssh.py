"""Reach a remote Docker engine over SSH through a private local unix socket.

The Docker SDK's own ``ssh://`` support reads only ``~/.ssh/config`` and ``~/.ssh/known_hosts``
and has no connect timeout; CI machines keep their key, known_hosts and config elsewhere, and an
unreachable host must fail in seconds.  So the tunnel is made here, once per engine, and the SDK
talks to ``unix://<tmpdir>/docker.sock``:

* paramiko (default): one SSH connection; each API connection is a channel running
  ``docker system dial-stdio`` on the remote host (what the SDK does too).  Unknown host keys are
  rejected.
* the ``ssh`` binary (``use_ssh_client=True``): ``ssh -N -L LOCAL.sock:/var/run/docker.sock``,
  taking its options from an ssh config (``-F``).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REMOTE_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True, slots=True)
class SSHOptions:
    """How to authenticate a remote ``ssh://`` engine; unset paths fall back to ``~/.ssh``."""

    identity_file: Path | None = None
    known_hosts: Path | None = None
    config_file: Path | None = None
    use_ssh_client: bool = False
    remote_socket: str = REMOTE_SOCKET


class TunnelError(Exception):
    """The tunnel could not be opened; the message says why (never a secret)."""


class SSHTunnel:
    """A local unix socket that forwards to the Docker engine on an SSH host."""

    def __init__(self, url: str, options: SSHOptions, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise TunnelError(f"not an ssh://user@host[:port] URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port
        self.user = parts.username
        self.options = options
        self._dir = tempfile.mkdtemp(prefix="pytest-multiarch-ssh-")
        self.socket_path = os.path.join(self._dir, "docker.sock")
        self._closed = threading.Event()
        self._client: Any = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self.last_remote_error = ""
        try:
            if options.use_ssh_client:
                self._start_binary(timeout)
            else:
                self._start_paramiko(timeout)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """The ``unix://`` URL to hand to the Docker SDK."""
        return f"unix://{self.socket_path}"

    # -- paramiko -------------------------------------------------------------------------------

    def _start_paramiko(self, timeout: float) -> None:
        import paramiko

        host, port, user = self.host, self.port, self.user
        identity = self.options.identity_file
        config_file = self.options.config_file or Path.home() / ".ssh" / "config"
        known_hosts = self.options.known_hosts
        also_known: list[Path] = []
        if config_file.exists():
            config = paramiko.SSHConfig.from_path(str(config_file))
            entry = config.lookup(self.host)
            host = entry.get("hostname", host)
            port = port or int(entry.get("port", 0)) or None
            user = user or entry.get("user")
            if identity is None and entry.get("identityfile"):
                identity = Path(entry["identityfile"][0])
            if known_hosts is None and entry.get("userknownhostsfile"):
                # like ssh: every file listed counts, the ones that exist are read
                listed = [Path(f).expanduser() for f in entry["userknownhostsfile"].split()]
                also_known = [f for f in listed if f.exists()]
        client = paramiko.SSHClient()
        client.load_system_host_keys()
        for path in also_known:
            client.load_host_keys(str(path))
        if known_hosts is not None:
            if not known_hosts.exists():
                raise TunnelError(f"known_hosts file {known_hosts} does not exist")
            client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                host, port=port or 22, username=user,
                key_filename=str(identity) if identity else None,
                look_for_keys=identity is None, allow_agent=identity is None,
                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
            )
        except paramiko.SSHException as exc:
            client.close()
            where = f" (known_hosts {known_hosts})" if known_hosts else ""
            raise TunnelError(f"SSH handshake failed: {exc}{where}") from exc
        except OSError as exc:
            client.close()
            raise TunnelError(f"cannot connect: {exc.strerror or exc}") from exc
        self._client = client
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept_loop, name="multiarch-ssh-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._pump, args=(conn,), name="multiarch-ssh-pump", daemon=True
            ).start()

    def _pump(self, conn: socket.socket) -> None:
        try:
            channel = self._client.get_transport().open_session()
            channel.exec_command("docker system dial-stdio")
        except Exception as exc:  # the transport died: make the SDK see a closed connection
            self.last_remote_error = f"SSH channel failed: {exc}"
            conn.close()
            return
        local_open = True
        try:
            while not self._closed.is_set():
                watch = [channel, conn] if local_open else [channel]
                ready, _, _ = select.select(watch, [], [], 0.5)
                if conn in ready:
                    data = conn.recv(65536)
                    if data:
                        channel.sendall(data)
                    else:
                        channel.shutdown_write()
                        local_open = False
                if channel in ready:
                    if channel.recv_stderr_ready():
                        err = channel.recv_stderr(4096).decode(errors="replace").strip()
                        self.last_remote_error = err or self.last_remote_error
                    data = channel.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)
        except Exception:  # either side went away (OSError, paramiko EOFError): end this one
            pass
        finally:
            with contextlib.suppress(Exception):
                if channel.recv_stderr_ready():
                    err = channel.recv_stderr(4096).decode(errors="replace").strip()
                    self.last_remote_error = err or self.last_remote_error
            # The transport may be gone already (the runner closed it): nothing left to say.
            with contextlib.suppress(Exception):
                channel.close()
            conn.close()

    # -- ssh binary ---------------------------------------------------------------------------

    def _start_binary(self, timeout: float) -> None:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise TunnelError("use_ssh_client=True but no ssh binary on PATH (apt-get install "
                              "openssh-client)")
        args = [ssh, "-N", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(timeout)}",
                "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15",
                "-L", f"{self.socket_path}:{self.options.remote_socket}"]
        if self.options.config_file is not None:
            args += ["-F", str(self.options.config_file)]
        if self.options.identity_file is not None:
            args += ["-i", str(self.options.identity_file)]
        if self.options.known_hosts is not None:
            args += ["-o", f"UserKnownHostsFile={self.options.known_hosts}"]
        if self.port:
            args += ["-p", str(self.port)]
        if self.user:
            args += ["-l", self.user]
        args += ["--", self.host]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C goes to us; we close the tunnel after cleanup
        )
        deadline = time.monotonic() + timeout + 1
        while time.monotonic() < deadline:
            if os.path.exists(self.socket_path):
                return
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise TunnelError(f"ssh exited {self._proc.returncode}: {err.strip()}")
            time.sleep(0.02)
        raise TunnelError(f"ssh did not open the forward within {timeout:.0f}s")

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop forwarding and remove the socket directory; idempotent."""
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)
