"""Benchmark the static layer audit against the decompression floor and the extract-and-`file` way.

    .venv/bin/python benchmarks/bench_audit.py [--repeat 3] [--skip-pipeline] [--rebuild]

The layer is a gzip tar (pigz -6, the level Docker and Go use by default) of this machine's /usr
directories listed in RECIPE: real content with thousands of ELF files (x86-64, and the aarch64 and
s390x libraries of Debian's cross toolchains) and tens of thousands of small non-ELF files.  It is
built once and cached outside the checkout (``--cache``, default /var/cache/pytest-multiarch-bench),
keyed by the recipe; its exact contents are whatever /usr held when it was built, and the report
says what that was.

Side by side, each in a child process whose resources are read with ``os.wait4``:

- floor: ``igzip -dc LAYER > /dev/null`` (ISA-L, the fastest gzip decompressor here);
- audit: ``scan_layer`` on one worker, pinned to one CPU, fresh cache directory;
- audit + sha256: the same with the digest check a registry stream does (its cost is the
  registry client's, but a real run pays it);
- pipeline: what a user would do instead, ``tar -xzf`` into a temp dir then ``find -type f -exec
  file {} +`` (without the ``skopeo copy`` before it: there is no registry, the layer is local).

The floor and the audit are pinned to the same CPU, so "on one core" holds for both.  On a shared
machine wall time is noisy: CPU times are reported next to it, medians over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECIPE: dict[str, Any] = {
    "version": 3,  # 3: with this machine's dpkg status, so package extraction has work to do
    "dirs": [
        "usr/bin", "usr/sbin", "usr/libexec", "usr/lib/x86_64-linux-gnu", "usr/lib/python3",
        "usr/lib/python3.11", "usr/include", "usr/share", "usr/aarch64-linux-gnu",
        "usr/s390x-linux-gnu", "var/lib/dpkg/status",
    ],
    "compressor": "pigz -6",
}
GOALS = {"floor_ratio": 0.8, "pipeline_speedup": 5.0, "peak_rss_mb": 100.0}

AUDIT_CHILD = r"""
import hashlib, json, sys, tempfile, time
from pytest_multiarch.audit import packages
from pytest_multiarch.audit.verdicts import scan_layers
path, verify = sys.argv[1], sys.argv[2] == "1"
if sys.argv[3] == "0":  # package databases off: a prefix no member has (TarScanner reads it)
    packages.DB_PREFIXES = ("\0",)

class Hashing:
    def __init__(self, handle):
        self.handle, self.hash = handle, hashlib.sha256()
    def readinto(self, buffer):
        n = self.handle.readinto(buffer)
        self.hash.update(memoryview(buffer)[:n])
        return n
    def read(self, size=-1):
        data = self.handle.read(size)
        self.hash.update(data)
        return data
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.handle.close()

def opener():
    handle = open(path, "rb", buffering=0)
    return Hashing(handle) if verify else handle

start = time.perf_counter()
with tempfile.TemporaryDirectory() as cache:
    (summary,) = scan_layers([("sha256:" + "be" * 32, "application/vnd.oci.image.layer.v1.tar+gzip",
                              opener)], cache_dir=cache, workers=1)
elf, keys = {}, {}
for entry in summary.entries:  # by path, as `file` counts them: hard links too
    if entry.op.value == "f" and entry.elf is not None:
        keys[entry.path] = getattr(entry.elf, "arch_key", "invalid")
    key = keys.get(entry.target) if entry.op.value == "h" else keys.get(entry.path)
    if key is not None:
        elf[key] = elf.get(key, 0) + 1
print(json.dumps({"scan_seconds": time.perf_counter() - start, "members": len(summary.entries),
                  "tar_bytes": summary.tar_bytes, "elf": elf,
                  "files": sum(e.op.value == "f" for e in summary.entries),
                  "findings": [str(f) for f in summary.findings],
                  "packages": sum(len(db.packages) for db in summary.package_files)}))
"""


@dataclass
class Run:
    wall: float
    cpu: float
    maxrss_mb: float
    stdout: str = ""
    inner: float = 0.0  # the scan alone, timed inside the child (no interpreter start, imports)


def child(argv: list[str], *, cpu: int | None, stdout: int | None = None, cwd: str | None = None
          ) -> Run:
    """Run *argv*; wall time, CPU (user+sys, children included) and peak RSS from ``wait4``."""

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    out = stdout if stdout is not None else subprocess.PIPE
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, preexec_fn=pin, cwd=cwd)
    captured: list[bytes] = []
    reader = None
    if out == subprocess.PIPE:
        assert proc.stdout is not None
        pipe = proc.stdout
        reader = threading.Thread(target=lambda: captured.append(pipe.read()))
        reader.start()
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if reader is not None:
        reader.join()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {errors.decode()[-2000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
               b"".join(captured).decode())


def build_layer(cache: Path, rebuild: bool) -> tuple[Path, dict[str, Any]]:
    key = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]
    layer = cache / f"usr-{key}.tar.gz"
    meta = cache / f"usr-{key}.json"
    if layer.exists() and meta.exists() and not rebuild:
        info: dict[str, Any] = json.loads(meta.read_text())
        return layer, info
    cache.mkdir(parents=True, exist_ok=True)
    for tool in ("tar", "pigz", "igzip", "file"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (apt-get install -y tar pigz isal file)")
    dirs = [d for d in RECIPE["dirs"] if (Path("/") / d).exists()]  # the dpkg status: a file
    print(f"building {layer} from /{', /'.join(dirs)} (once) …", flush=True)
    partial = layer.with_suffix(".partial")
    start = time.perf_counter()
    with partial.open("wb") as out:
        tar = subprocess.Popen(
            ["tar", "--sort=name", "--numeric-owner", "--owner=0", "--group=0",
             "--ignore-failed-read", "-C", "/", "-cf", "-", *dirs],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        pigz = subprocess.run(["pigz", "-6"], stdin=tar.stdout, stdout=out, check=True)
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
        del pigz
    partial.replace(layer)
    info = {"recipe": RECIPE, "dirs": dirs, "built": time.strftime("%Y-%m-%d %H:%M:%S"),
            "build_seconds": round(time.perf_counter() - start, 1),
            "compressed_bytes": layer.stat().st_size}
    meta.write_text(json.dumps(info, indent=2))
    return layer, info


def gil_check(layer: Path) -> dict[str, tuple[int, float]]:
    """How many steps a pure-Python thread makes during ONE 64 MiB ``readinto`` call of each
    decompressor.  A call that holds the GIL lets it make none (see the reference, a C call that
    holds it); one that releases it lets it run, however loaded the machine."""
    import zstandard
    from isal import igzip

    chunk = 64 << 20
    with layer.open("rb") as raw:
        sample = igzip._IGzipReader(raw, 512 * 1024).read(chunk)
    zst = zstandard.ZstdCompressor(level=3).compress(sample)
    ticks = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ticks[0] += 1

    def during(call: Callable[[], object]) -> tuple[int, float]:
        before, start = ticks[0], time.perf_counter()
        call()
        return ticks[0] - before, (time.perf_counter() - start) * 1000

    def gzip_call() -> object:
        with layer.open("rb") as raw:
            return igzip._IGzipReader(raw, 512 * 1024).readinto(bytearray(chunk))

    def zstd_call() -> object:
        return zstandard.ZstdDecompressor().stream_reader(zst).readinto(bytearray(chunk))

    def held_call() -> object:  # one C call over 64 MiB that never releases the GIL
        return sample.replace(b"\0", b"\1").replace(b"\1", b"\2")

    # A long switch interval: the main thread then gives the GIL up only when a C call releases it.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.05)
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        time.sleep(0.1)
        return {name: min(during(call) for _ in range(3)) for name, call in
                (("isal gzip", gzip_call), ("zstandard", zstd_call), ("GIL held", held_call))}
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/var/cache/pytest-multiarch-bench"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()

    layer, info = build_layer(args.cache, args.rebuild)
    size_mb = layer.stat().st_size / 1e6
    cpu = sorted(os.sched_getaffinity(0))[-1]
    print(f"layer: {layer} ({size_mb:.0f} MB gzip; /{', /'.join(info['dirs'])}; "
          f"built {info['built']})")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"floor and audit pinned to CPU {cpu}\n", flush=True)

    runs: dict[str, list[Run]] = {"floor": [], "audit": [], "audit, no packages": [],
                                  "audit + sha256": []}
    scan: dict[str, Any] = {}
    for _ in range(args.repeat):
        with open(os.devnull, "wb") as null:
            runs["floor"].append(child(["igzip", "-dc", str(layer)], cpu=cpu, stdout=null.fileno()))
        for name, verify, pkgs in (("audit", "0", "1"), ("audit, no packages", "0", "0"),
                                   ("audit + sha256", "1", "1")):
            run = child([sys.executable, "-c", AUDIT_CHILD, str(layer), verify, pkgs], cpu=cpu)
            scan = json.loads(run.stdout)
            run.inner = scan["scan_seconds"]
            runs[name].append(run)
        print("  " + ", ".join(f"{k} {v[-1].wall:.2f}s" for k, v in runs.items()), flush=True)

    file_elf = None
    if not args.skip_pipeline:
        work = Path(tempfile.mkdtemp(prefix="bench-audit-", dir="/var/tmp"))
        try:
            extract = child(["tar", "-xzf", str(layer), "-C", str(work)], cpu=None)
            listing = work.parent / f"{work.name}.file-output"
            with listing.open("wb") as out:
                classify = child(["find", str(work), "-type", "f", "-exec", "file", "{}", "+"],
                                 cpu=None, stdout=out.fileno())
            text = listing.read_text(errors="replace")  # "x: ELF …", "x: setuid ELF …"
            file_elf = len(re.findall(r":\s+(?:(?:setuid|setgid|sticky),? )*ELF ", text))
            listing.unlink()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        runs["pipeline"] = [Run(extract.wall + classify.wall, extract.cpu + classify.cpu,
                                max(extract.maxrss_mb, classify.maxrss_mb))]
        print(f"  pipeline: tar -xzf {extract.wall:.1f}s + find/file {classify.wall:.1f}s",
              flush=True)

    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    elf_total = sum(scan["elf"].values())
    print(f"contents: {scan['members']} members, {scan['files']} regular files, "
          f"{scan['tar_bytes'] / 1e9:.2f} GB of tar; ELF files by our audit: {elf_total} "
          f"{scan['elf']}" + (f"; by `file`: {file_elf}" if file_elf is not None else ""))
    if scan["findings"]:
        print(f"findings: {scan['findings']}")

    print(f"\n{'':16}{'wall s':>9}{'cpu s':>9}{'MB/s wall':>11}{'MB/s cpu':>10}{'peak RSS':>10}")
    medians: dict[str, tuple[float, float, float]] = {}
    for name, results in runs.items():
        wall = statistics.median(r.wall for r in results)
        cpu_s = statistics.median(r.cpu for r in results)
        rss = max(r.maxrss_mb for r in results)
        medians[name] = (wall, cpu_s, rss)
        print(f"{name:16}{wall:9.2f}{cpu_s:9.2f}{size_mb / wall:11.1f}{size_mb / cpu_s:10.1f}"
              f"{rss:8.1f}MB")

    floor_wall, floor_cpu, _ = medians["floor"]
    audit_wall, audit_cpu, audit_rss = medians["audit"]
    ratio_wall, ratio_cpu = floor_wall / audit_wall, floor_cpu / audit_cpu
    best_ratio = min(r.wall for r in runs["floor"]) / min(r.wall for r in runs["audit"])
    print(f"\naudit throughput / floor: {ratio_wall:.2f} (wall, medians), {best_ratio:.2f} "
          f"(wall, best runs), {ratio_cpu:.2f} (CPU)  goal ≥ {GOALS['floor_ratio']}")
    bare_wall, bare_cpu, _ = medians["audit, no packages"]
    print(f"package databases ({scan['packages']} packages read): audit {audit_wall:.2f}s wall "
          f"/ {audit_cpu:.2f}s CPU with them, {bare_wall:.2f}s / {bare_cpu:.2f}s without "
          f"({(audit_cpu / bare_cpu - 1) * 100:+.1f}% CPU); without them "
          f"{floor_wall / bare_wall:.2f} of the floor (wall)")
    sha_wall = medians["audit + sha256"][0]
    print(f"with the sha256 digest check: {floor_wall / sha_wall:.2f} of the floor (wall)")
    if "pipeline" in medians:
        speedup = medians["pipeline"][0] / audit_wall
        print(f"speed-up over extract + file: {speedup:.1f}×  goal ≥ {GOALS['pipeline_speedup']}×")
    inner = statistics.median(r.inner for r in runs["audit"])
    print(f"the scan alone (timed in the child, without interpreter start and imports): "
          f"{inner:.2f}s, {floor_wall / inner:.2f} of the floor")
    print(f"audit peak RSS: {audit_rss:.1f} MB  goal < {GOALS['peak_rss_mb']:.0f} MB")

    print("\nGIL check: steps a pure-Python thread makes during one 64 MiB readinto call "
          "(min of 3; ~0 when the call holds the GIL):")
    print("  " + ", ".join(f"{k}: {n} steps in {ms:.0f} ms"
                           for k, (n, ms) in gil_check(layer).items()))


if __name__ == "__main__":
    main()
