"""Benchmark the qemu CPU models: does emulating an older CPU cost more than ``max``?

    .venv/bin/python benchmarks/bench_cpu.py [--repeat 5] [--iterations 300000]

Per emulated arch, the same CPU-bound command — Debian's static busybox running a shell
arithmetic loop (the emulation-factor workload, bigger) — runs under qemu-user with
``QEMU_CPU=max`` (ppc64le: qemu's default, it has no ``max``) and with the baseline model
pytest-multiarch picks for the arch's plain platform (cortex-a72, arm1176 for arm/v6, power8).
Runs alternate, CPU time (user + system of the child, from ``os.wait4``) is compared, medians
over ``--repeat``; the target is baseline <= 1.10 x max.

Then the time to classify an :class:`~pytest_multiarch.IllegalInstruction` through the engine
runner and the rootfs runner (the LSE probe of the CPU corpus, scripts/build-cpu-images): it must
come from the exit status and qemu's message, well inside the timeout given (120 s), including
the second run under ``max`` that proves the cause.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_multiarch.host import cpu  # noqa: E402
from pytest_multiarch.platforms import Platform  # noqa: E402

STATE = Path(os.environ.get("PYTEST_MULTIARCH_TESTBED", "/var/lib/pytest-multiarch-testbed"))
DEBS = STATE / "build" / "debs"
# arm/v6 runs Debian's armel busybox (ARMv5TE): armhf code dies on arm1176, which is the point.
ARCHES = {"arm64": "arm64", "arm/v6": "armel", "arm/v7": "armhf", "ppc64le": "ppc64el",
          "s390x": "s390x"}
OWN_DEBS = STATE / "build" / "cpu-debs"
LOOP = "i=0; while [ $i -lt {n} ]; do i=$((i+1)); done; echo $i"


def busybox(dpkg: str, work: Path) -> Path:
    found = sorted(DEBS.glob(f"busybox-static_*_{dpkg}.deb")) or sorted(
        OWN_DEBS.glob(f"busybox-static_*_{dpkg}.deb"))
    if not found:
        OWN_DEBS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", f"busybox-static:{dpkg}"], cwd=OWN_DEBS,
                       check=True, capture_output=True)
        found = sorted(OWN_DEBS.glob(f"busybox-static_*_{dpkg}.deb"))
    deb = found[-1]
    tree = work / dpkg
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return tree / "bin" / "busybox"


def cpu_seconds(qemu: str, model: str, binary: Path, iterations: int) -> float:
    env = {"PATH": "/usr/bin:/bin", **({"QEMU_CPU": model} if model else {})}
    proc = subprocess.Popen([qemu, str(binary), "sh", "-c", LOOP.format(n=iterations)],
                            stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or out.strip() != str(iterations).encode():
        raise SystemExit(f"{qemu} -cpu {model or 'default'}: exit {proc.returncode}, {out!r}")
    return usage.ru_utime + usage.ru_stime


def bench_models(repeat: int, iterations: int, only: list[str]) -> bool:
    print(f"CPU-bound loop ({iterations} shell iterations), CPU seconds, median of {repeat}:")
    print(f"{'arch':10} {'max':>14} {'baseline':>22} {'ratio':>7}  target <= 1.10")
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        for name, dpkg in ARCHES.items():
            if only and name not in only:
                continue
            plat = Platform.parse(name)
            binary = busybox(dpkg, Path(tmp))
            qemu = cpu.qemu_binary(plat)
            newest, base = cpu.max_model(plat), cpu.default_for(plat).model
            maxes, bases = [], []
            for _ in range(repeat):  # alternate, so drifting load hits both alike
                maxes.append(cpu_seconds(qemu, newest, binary, iterations))
                bases.append(cpu_seconds(qemu, base, binary, iterations))
            m, b = statistics.median(maxes), statistics.median(bases)
            ratio = b / m
            if base == newest:  # s390x runs on max: the row measures this machine's noise
                verdict = "same model: noise control"
            else:
                verdict = "ok" if ratio <= 1.10 else "OVER"
                ok = ok and ratio <= 1.10
            print(f"{name:10} {newest or 'default':>8} {m:5.2f}s {base or 'default':>15} "
                  f"{b:5.2f}s {ratio:6.2f}x  {verdict}")
    return ok


def bench_classify() -> bool:
    from pytest_multiarch import IllegalInstruction
    from pytest_multiarch.oci.registry import RegistryClient
    from pytest_multiarch.runners.docker.engine import EngineRunner
    from pytest_multiarch.runners.rootfs.runner import RootfsRunner

    subprocess.run([sys.executable, str(ROOT / "scripts" / "build-cpu-images")], check=True,
                   capture_output=True)
    lse = json.loads((STATE / "corpus-cpu.json").read_text())["images"]["lse"]
    image = f"{lse['ref'].rsplit(':', 1)[0]}@{lse['digests']['linux/arm64']}"
    plat = Platform.parse("arm64")
    print("\nTime to classify IllegalInstruction (LSE probe on cortex-a72, timeout 120 s, "
          "includes the re-run under max):")
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        runners = {
            "engine (docker --init)": EngineRunner(),
            "rootfs proot": RootfsRunner(registry=RegistryClient(), mode="proot",
                                         cache_dir=Path(tmp) / "p"),
            "rootfs chroot": RootfsRunner(registry=RegistryClient(), mode="chroot",
                                          cache_dir=Path(tmp) / "c"),
        }
        for label, runner in runners.items():
            try:
                runner.run(image, plat, ["true"], timeout=120)  # pull / unpack outside the timing
                started = time.monotonic()
                try:
                    runner.run(image, plat, timeout=120)
                    raise SystemExit(f"{label}: the LSE probe passed on cortex-a72")
                except IllegalInstruction as exc:
                    took = time.monotonic() - started
                    proved = exc.passes_under_max
            finally:
                runner.close()
            ok = ok and took < 30 and bool(proved)
            print(f"  {label:24} {took:5.2f}s  (passes under max: {proved})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=300_000)
    parser.add_argument("--arch", action="append", default=[], help="Only this arch (repeatable)")
    parser.add_argument("--skip-classify", action="store_true")
    args = parser.parse_args()
    models_ok = bench_models(args.repeat, args.iterations, args.arch)
    classify_ok = True if args.skip_classify else bench_classify()
    print(f"\nmodel cost target: {'met' if models_ok else 'MISSED'}; classification: "
          f"{'no timeout waited' if classify_ok else 'SLOW'}")
    return 0 if models_ok and classify_ok else 1


if __name__ == "__main__":
    sys.exit(main())
