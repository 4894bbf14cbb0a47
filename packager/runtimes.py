"""The target's own TFLite runtime, on the build host: can it load the model?

A profile names its runtime package and version (ai-edge-litert 2.3.0,
tflite-runtime 2.14.0, ...). The converter here emits op versions of its own
day; an older runtime refuses them with "Didn't find op for builtin opcode
... version N" — on the device, after the fleet was flashed. So the build
loads and runs the model once with the profile's runtime, in its x86-64
build (the same release as the device's aarch64 wheel, the same op
resolver), and refuses the target when it cannot.

When the host's own runtime is the profile's (the shipped profiles), that
is this Python. Otherwise a small venv per runtime is made under the cache
(``~/.cache/edgepack/runtimes/``), filled offline from the wheel cache first,
from the package index only the first time (set-up does it for the tests).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edge_runtime.errors import UserError

from .wheels import cache_root


def runtime_key(profile) -> tuple[str, str, str]:
    rt = profile.runtime
    return rt["package"], rt["version"], rt["numpy"]


def _host_has(package: str, wanted: str) -> bool:
    try:
        return version(package) == wanted
    except PackageNotFoundError:
        return False


def python_for(profile, log=lambda text: None) -> str:
    """A Python on this host whose TFLite runtime is the profile's: this one, or a cached venv.

    Raises:
        UserError: the runtime has no wheel for this host, or cannot be fetched.
    """
    package, wanted, numpy = runtime_key(profile)
    if _host_has(package, wanted):
        return sys.executable
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    venv = cache_root() / "runtimes" / f"{package}-{wanted}-{py}"
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").is_file():
            return str(python)
        wheels = cache_root() / "runtimes" / "wheels"
        wheels.mkdir(exist_ok=True)
        log(f"making a host venv with {package} {wanted} to check the model loads on {profile.name}'s runtime")
        work = Path(tempfile.mkdtemp(prefix=f".{venv.name}.", dir=venv.parent))
        try:
            subprocess.run([sys.executable, "-m", "venv", str(work)], check=True, capture_output=True)
            reqs = [f"{package}=={wanted}", numpy]
            pip = [str(work / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--only-binary=:all:"]
            offline = subprocess.run([*pip, "--no-index", "--find-links", str(wheels), *reqs], capture_output=True,
                                     text=True, stdin=subprocess.DEVNULL)
            if offline.returncode != 0:
                fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                                          "--disable-pip-version-check", "--dest", str(wheels), *reqs],
                                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
                installed = fetched.returncode == 0 and subprocess.run(
                    [*pip, "--no-index", "--find-links", str(wheels), *reqs], capture_output=True, text=True,
                    stdin=subprocess.DEVNULL).returncode == 0
                if not installed:
                    tail = " ".join((fetched.stderr or "").strip().splitlines()[-2:])
                    raise UserError(
                        f"target {profile.name}: cannot get {package} {wanted} for this host ({py} x86-64) to check "
                        f"that it loads the model: {tail}",
                        "connect once to the package index (make wheels fills the cache), or use a profile whose "
                        "runtime is this host's (edgepack targets)",
                    )
            shutil.rmtree(venv, ignore_errors=True)
            (work / ".complete").write_text(f"{package}=={wanted}\n")
            work.rename(venv)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    # A venv's python is a symlink to the interpreter that made it; the venv is what is wanted.
    return str(python)
