"""The launcher every rootfs run starts: a small Python program run by the host's interpreter.

Kept as source text (``python -c LAUNCHER SPEC``) so it needs nothing installed in the tree.
"""

from __future__ import annotations

__all__ = ["LAUNCHER"]

# Runs on the host's Python.  Stage "host": join the memory cgroup, exec the next argv (proot, or
# unshare starting stage "ns").  Stage "ns" (in the new mount+pid namespace): overlay, /proc,
# /dev, chroot, exec — reporting a missing command and ENOEXEC the way runc words them.
LAUNCHER = r"""
import errno, json, os, shutil, subprocess, sys
spec = json.loads(sys.argv[1])
if spec.get("spec_fd") is not None:  # the environment travels through a pipe, not argv
    with os.fdopen(spec["spec_fd"], "rb") as f:
        spec = json.loads(f.read())
if spec["stage"] == "host":
    if spec.get("cgroup_procs"):
        with open(spec["cgroup_procs"], "w") as f:
            f.write("0")
    os.execv(spec["next"][0], spec["next"])
m = spec["merged"]
def mount(*args):
    subprocess.run([spec["mount"], *args], check=True)
mount("-t", "overlay", "overlay", "-o",
      "lowerdir=%s,upperdir=%s,workdir=%s" % (spec["lower"], spec["upper"], spec["work"]), m)
for d in ("proc", "dev", "tmp"):
    os.makedirs(os.path.join(m, d), exist_ok=True)
mount("-t", "proc", "proc", os.path.join(m, "proc"))
mount("-t", "tmpfs", "-o", "mode=755,size=1m", "tmpfs", os.path.join(m, "dev"))
for n in spec["dev"]:
    open(os.path.join(m, "dev", n), "w").close()
    mount("--bind", "/dev/" + n, os.path.join(m, "dev", n))
os.chroot(m)
os.chdir(spec["workdir"])
argv, env = spec["argv"], spec["env"]
path = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", ""))
if path is None:
    sys.stderr.write('exec: "%s": executable file not found in $PATH\n' % argv[0])
    sys.exit(127)
try:
    os.execve(path, argv, env)
except OSError as exc:
    if exc.errno == errno.ENOEXEC:
        sys.stderr.write("exec %s: exec format error\n" % path)
        sys.exit(126)
    sys.stderr.write("exec %s: %s\n" % (path, exc.strerror))
    sys.exit(127 if exc.errno == errno.ENOENT else 126)
"""
