"""The emulated device: a Debian root filesystem of the profile's suite and
architecture (packager.rootfs builds, caches and verifies it), run under QEMU
user-mode emulation with the profile's CPU.

* It runs under proot + qemu-*-static (no root-only kernel features, no
  binfmt_misc) with ``-cpu`` set to the profile's CPU, so an instruction the
  real CPU lacks faults here too.
* No network inside: the run is wrapped in a fresh network namespace.
* The bundle is copied in, its own install.sh installs it from its own
  wheels, then edge-run runs. Timings taken here are emulator timings, never
  device timings.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_runtime.errors import UserError

from . import device_envs
from .profiles import Profile
from .rootfs import (  # noqa: F401 (the tree's half of the emulated device, also reached from here)
    CHECKSUMS, DEBS, EMULATORS, GUEST_ENV, PROOT_GLUE, ROOTFS_PACKAGES, _spec, build_rootfs, check_rootfs,
    emulator_for, ensure_rootfs, ensure_tree, local_mirror, proot_command, rootfs_dir, stderr_log)
from .wheels import cache_root  # noqa: F401 (tests point EDGEPACK_CACHE elsewhere and ask here)

































def network_isolation() -> list[str]:
    """A prefix that runs a command with no network but its own loopback."""
    loopback_up = ["sh", "-c", 'ip link set lo up 2>/dev/null || true; exec "$@"', "sh"]
    for prefix in (["unshare", "--net"], ["unshare", "--net", "--map-root-user"]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix + loopback_up
    raise UserError("cannot create a network namespace (unshare --net) for the emulated device",
                    "run where unprivileged user namespaces are allowed, or as root")


def cpuinfo(profile: Profile) -> str:
    """The /proc/cpuinfo the emulated board shows: ARM's format, the profile's cores, CPU part and features.

    The host's x86 cpuinfo would crash TFLite's CPU probe (and lie to it).

    Raises:
        UserError: the profile does not give its CPU's part and features.
    """
    if profile.cpu_part is None:
        raise UserError(f"device profile {profile.source} does not give 'cpu_part' and 'cpu_features', which the "
                        "emulated board shows as its /proc/cpuinfo",
                        "add them as the device's /proc/cpuinfo says them (devices/rpi4.toml has a Cortex-A72's), "
                        "or emulate a shipped profile with --target")
    features = " ".join(profile.cpu_features)
    block = (f"BogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
             f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {profile.cpu_part}\nCPU revision\t: 3\n")
    cpus = "\n".join(f"processor\t: {i}\n{block}" for i in range(profile.cores))
    return f"{cpus}\nModel\t\t: {profile.human_name}\n"




@contextlib.contextmanager
def board(profile: Profile, root: Path, binds: list[tuple[str, str]] = (), user: str | None = None,
          workdir: str = "/"):
    """Run programs in ``root`` as the profile's board: yields ``argv -> command`` (proot + QEMU with the
    profile's CPU and its /proc/cpuinfo, a fresh /tmp and home; no shell needed inside). Wrap the command in
    :func:`network_isolation` for a board with loopback only."""
    qemu, _ = emulator_for(profile)
    with tempfile.TemporaryDirectory(prefix="edgepack-board-", dir="/var/tmp") as tmp:
        # The board's writable places, fresh each run: the cached tree stays pristine.
        for d in ("tmp", "home"):
            (Path(tmp) / d).mkdir()
        (Path(tmp) / "tmp").chmod(0o1777)
        (Path(tmp) / "cpuinfo").write_text(cpuinfo(profile))
        mounts = [(f"{tmp}/tmp", "/tmp"), (f"{tmp}/home", "/root"), (f"{tmp}/cpuinfo", "/proc/cpuinfo"), *binds]
        yield lambda argv: proot_command(qemu, profile.cpu, root, mounts, workdir, argv, user)


def guest_command(qemu: str, cpu: str, root: Path, binds: list[tuple[str, str]], workdir: str,
                  env: dict[str, str] | None = None) -> list[str]:
    """The argv that starts a program inside the tree (the caller appends it): proot + QEMU with ``cpu``,
    the host folders ``binds`` mounted (host, guest), a clean environment plus ``env``."""
    settings = {**GUEST_ENV, **(env or {})}
    return proot_command(qemu, cpu, root, binds, workdir, ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in settings.items())])


def run_on_device(profile: Profile, bundle: Path, script: str, cwd: Path | None = None,
                  log=stderr_log, capture: bool = False, reuse_env: bool = False,
                  collect=None, binds: tuple = ()) -> tuple[subprocess.CompletedProcess, str]:
    """Copy a bundle into the emulated device and run a shell script there.

    The script gets the bundle's in-device path as ``$BUNDLE``; the host's
    ``cwd`` is mounted at the same path and is the working directory, so
    relative input/output paths work as on the host. An environment the
    run's install.sh made in the bundle copy is cached for its wheels on this
    board (packager.device_envs); with ``reuse_env`` the copy starts with the
    cached one, which install.sh still checks before using it.
    ``collect``, when given, is called with the bundle copy (host path) once
    the script has run, before the copy goes. ``binds``: more (host, guest)
    folders to mount (e.g. a library at a system path, the tree untouched).

    Returns:
        (the finished process, the bundle's path inside the device).
    """
    cpuinfo(profile)  # the profile's CPU facts checked before minutes of building a root filesystem
    root = ensure_rootfs(profile, log)
    key = device_envs.env_key(root, bundle)
    cwd = (cwd or Path.cwd()).resolve()
    # Outside /tmp (rebound by board()) and mounted at the same path inside: proot
    # does not translate paths in the newest syscalls (statx, faccessat2), so
    # identical paths keep `ls` and `test -x` truthful on the bundle.
    with tempfile.TemporaryDirectory(prefix="edgepack-device-", dir="/var/tmp") as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle, copy, symlinks=True, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
        if reuse_env:
            device_envs.seed(key, copy)
        shell = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in GUEST_ENV.items()), "/bin/sh", "-c",
                 f"BUNDLE={shlex.quote(str(copy))}; export BUNDLE; {script}"]
        with board(profile, root, [(str(copy), str(copy)), (str(cwd), str(cwd)), *binds], workdir=str(cwd)) as command:
            proc = subprocess.run([*network_isolation(), *command(shell)], stdin=subprocess.DEVNULL, text=True,
                                  capture_output=capture)
        device_envs.keep(key, copy)
        if collect is not None:
            collect(copy)
        return proc, str(copy)


def emulate(profile: Profile, bundle: Path, edge_run_args: list[str], log=stderr_log, fresh_env: bool = False) -> int:
    """`edgepack emulate`: install the bundle on the emulated device, run edge-run there.

    The board's environment for the bundle's wheels is reused from earlier runs unless ``fresh_env``
    (install.sh checks a reused one against the bundle's wheels before it runs anything from it).
    """
    if not edge_run_args:
        raise UserError("no edge-run command given", "e.g. edgepack emulate BUNDLE -- run --input x.npy")
    command, rest = edge_run_args[0], edge_run_args[1:]
    guest_args = " ".join(shlex.quote(a) for a in rest)
    script = (
        'set -e; "$BUNDLE/install.sh" >/tmp/install.log 2>&1 || { cat /tmp/install.log >&2; exit 3; }; '
        f"echo 'emulated {profile.name} ({profile.cpu}, QEMU user mode): timings are not device timings' >&2; "
        f'exec "$BUNDLE/edge-run" {shlex.quote(command)} "$BUNDLE" {guest_args}'
    )
    proc, _ = run_on_device(profile, bundle, script, log=log, reuse_env=not fresh_env)
    return proc.returncode


def main(argv: list[str], ensure=ensure_rootfs, what: str = "emulated device") -> int:
    """`python -m packager.emulator TARGET...`: build or verify the cached trees (set-up step)."""
    from .profiles import load_profile

    for target in argv or ["rpi4"]:
        start = time.monotonic()
        root = ensure(load_profile(target))
        print(f"{what} for {target}: {root} ready ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
