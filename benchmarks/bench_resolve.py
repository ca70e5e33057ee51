"""Resolve every platform of a multi-arch index and load every config: pytest-multiarch vs skopeo
and `docker manifest inspect`, side by side in one run.

Wall times (medians of --runs) are taken straight against the registry.  Requests are counted in
one more pass of each tool through a counting HTTP proxy on 127.0.0.1, so they are measured the
same way for all (HTTPS attempts a plain-HTTP registry refuses are counted apart).

    .venv/bin/python benchmarks/bench_resolve.py [--image 127.0.0.1:5000/corpus/busybox:1]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.registry import RegistryClient
from pytest_multiarch.oci.resolve import ResolvedImage, list_platforms, resolve
from pytest_multiarch.platforms import Platform

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer",
               "upgrade", "proxy-authenticate", "proxy-authorization"}


class CountingProxy(ThreadingHTTPServer):
    """Forwards to *upstream* (plain HTTP) and counts requests by kind."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One buffered write per response and no Nagle: otherwise every response waits out
            # the client's delayed ACK (~40 ms) and the proxy, not the tools, is measured.
            wbufsize = -1
            disable_nagle_algorithm = True
            conn: http.client.HTTPConnection | None = None

            def forward(self) -> None:
                proxy.count(_kind(self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                # Repeated headers (skopeo sends one Accept line per media type) are joined.
                headers = {k: ", ".join(self.headers.get_all(k) or []) for k in self.headers
                           if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                self.conn.request(self.command, self.path, body, headers)
                resp = self.conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value.replace(proxy.upstream, proxy.host))
                length_header = resp.getheader("Content-Length")
                self.send_header("Content-Length",
                                 length_header if self.command == "HEAD" and length_header
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = forward

            def send_error(self, code: int, message: str | None = None,
                           explain: str | None = None) -> None:
                proxy.count("refused TLS handshake")  # a client trying HTTPS first
                # Answer with a real status line, as Go's server does: Docker falls back to plain
                # HTTP only on "server gave HTTP response to HTTPS client".
                self.request_version = "HTTP/1.0"
                self.close_connection = True
                super().send_error(code, message, explain)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def take(self) -> Counter[str]:
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts


def _kind(method: str, path: str) -> str:
    if "/manifests/" in path:
        return f"manifest {method}"
    if "/blobs/" in path:
        return f"blob {method}"
    return "ping /v2/" if path.rstrip("/") == "/v2" else f"other {method}"


@dataclass
class Row:
    tool: str
    seconds: float
    counts: Counter[str]
    note: str = ""

    @property
    def http(self) -> int:
        return sum(n for k, n in self.counts.items() if k != "refused TLS handshake")

    @property
    def blobs(self) -> int:
        return sum(n for k, n in self.counts.items() if k.startswith("blob"))


def run(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


Work = Callable[[str], object]  # gets the image reference text to work on


@dataclass
class Bench:
    """Times each tool straight against the registry; counts its requests through the proxy."""

    image: str
    proxy: CountingProxy
    runs: int
    rows: list[Row]

    def add(self, tool: str, work: Work, *, setup: Callable[[], None] | None = None,
            note: str = "") -> None:
        times = []
        for _ in range(self.runs):
            if setup is not None:
                setup()
            started = time.perf_counter()
            work(self.image)
            times.append(time.perf_counter() - started)
        if setup is not None:
            setup()
        self.proxy.take()
        upstream = Reference.parse(self.image)
        work(f"{self.proxy.host}/{upstream.repository}:{upstream.tag}")
        self.rows.append(Row(tool, statistics.median(times), self.proxy.take(), note))


_SUBPROCESS_RESOLVE = """
import sys
from pytest_multiarch.oci.registry import RegistryClient
from pytest_multiarch.oci.reference import Reference
from pytest_multiarch.oci.resolve import list_platforms, resolve
client = RegistryClient(cache_dir=sys.argv[2])
ref = Reference.parse(sys.argv[1])
top = client.get_manifest(ref)
for plat in list_platforms(client, ref, manifest=top):
    resolve(client, ref, plat, manifest=top)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--image", default="127.0.0.1:5000/corpus/busybox:1")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for tool in ("skopeo", "docker"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed; run scripts/provision-host (make provision)")

    upstream = Reference.parse(args.image)
    proxy = CountingProxy(upstream.registry)
    threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True).start()
    scratch = Path(tempfile.mkdtemp(prefix="bench-resolve-"))
    bench = Bench(args.image, proxy, args.runs, [])
    state: dict[str, Any] = {}
    try:
        def fresh_client() -> None:
            shutil.rmtree(scratch / "cache", ignore_errors=True)
            state["client"] = RegistryClient(cache_dir=scratch / "cache")

        def same_cache_client() -> None:
            state["client"] = RegistryClient(cache_dir=scratch / "cache")

        def ours(image: str) -> list[ResolvedImage]:
            client: RegistryClient = state["client"]
            ref = Reference.parse(image)
            top = client.get_manifest(ref)
            state["resolved"] = [resolve(client, ref, p, manifest=top)
                                 for p in list_platforms(client, ref, manifest=top)]
            return list(state["resolved"])

        bench.add("pytest-multiarch, cold cache", ours, setup=fresh_client,
                  note="index, every variant and config, verified")
        resolved: list[ResolvedImage] = state["resolved"]
        platforms = [r.platform for r in resolved]
        bench.add("pytest-multiarch, same session again", ours, note="digest cache: 1 HEAD")
        bench.add("pytest-multiarch, new client, shared cache", ours, setup=same_cache_client,
                  note="as an xdist worker")

        def ours_process(image: str) -> None:
            shutil.rmtree(scratch / "proc-cache", ignore_errors=True)
            run(sys.executable, "-c", _SUBPROCESS_RESOLVE, image, str(scratch / "proc-cache"))

        bench.add("pytest-multiarch, fresh python process", ours_process,
                  note="cold cache, interpreter start and imports included")

        def skopeo(image: str) -> None:
            tls = "--tls-verify=false"
            json.loads(run("skopeo", "inspect", "--raw", tls, f"docker://{image}"))
            for plat, mine in zip(platforms, resolved, strict=True):
                extra = ["--override-variant", plat.variant] if plat.variant else []
                config = json.loads(run(
                    "skopeo", "--override-os", plat.os, "--override-arch", plat.architecture,
                    *extra, "inspect", "--config", "--raw", tls, f"docker://{image}"))
                if config != mine.config:
                    sys.exit(f"skopeo and pytest-multiarch disagree on the config of {plat}")

        bench.add("skopeo inspect --raw, + --config per platform", skopeo,
                  note=f"{1 + len(platforms)} processes")

        def docker(image: str) -> None:
            json.loads(run("docker", "manifest", "inspect", "--insecure", image))

        bench.add("docker manifest inspect", docker,
                  note="fetches every manifest and config, prints the index")
    finally:
        proxy.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)

    print_table(args.image, platforms, bench.rows, args.runs)


def print_table(image: str, platforms: list[Platform], rows: list[Row], runs: int) -> None:
    base = rows[0]
    print(f"image {image}: {', '.join(str(p) for p in platforms)}  (median of {runs} runs)")
    header = (f"{'tool':<46} {'wall s':>7} {'x ours':>7} {'HTTP':>5} {'x ours':>7} "
              f"{'blob':>5} {'TLS-':>5}  note")
    print(header)
    print("-" * len(header))
    for row in rows:
        time_ratio = row.seconds / base.seconds if base.seconds else float("nan")
        req_ratio = row.http / base.http if base.http else float("nan")
        refused = row.counts.get("refused TLS handshake", 0)
        print(f"{row.tool:<46} {row.seconds:7.3f} {time_ratio:7.2f} {row.http:5d} "
              f"{req_ratio:7.2f} {row.blobs:5d} {refused:5d}  {row.note}")
    print()
    print("HTTP = requests answered by the registry (pings, token, HEAD/GET manifests, blobs);")
    print("TLS- = HTTPS attempts the plain-HTTP registry refused before the tool fell back.")
    for row in rows:
        detail = ", ".join(f"{k} {n}" for k, n in sorted(row.counts.items()))
        print(f"  {row.tool}: {detail}")


if __name__ == "__main__":
    main()
