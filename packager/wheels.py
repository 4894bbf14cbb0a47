"""Device wheels: the TFLite runtime and numpy for the target's arch and Python.

Fetched with pip's platform/ABI options into a host cache
(``~/.cache/edgepack/wheels/<arch>-cp<XY>/``, or ``$EDGEPACK_CACHE``) and
reused from there, so a build reaches the package index only the first time
a target's wheels are needed (``make test`` fetches them during set-up).
Every wheel is pure Python or built for exactly the profile's arch, Python
and a glibc no newer than the profile's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from edge_runtime.bundle import sha256_file
from edge_runtime.errors import UserError

from .profiles import Profile


def cache_root() -> Path:
    return Path(os.environ.get("EDGEPACK_CACHE", Path.home() / ".cache" / "edgepack"))


# `edge-run serve`'s HTTP layer and /metrics: pure-Python wheels (py3-none-any), the versions requirements/host.txt pins.
SERVER_PACKAGES = ("uvicorn==0.54.0", "h11==0.16.0", "click==8.5.1", "prometheus_client==0.26.0")


# `edge-run run photo.jpg` for bundles that take camera frames (--input-format image-uint8): the version
# requirements/host.txt pins; manylinux aarch64 wheels for every Python the profiles name.
IMAGE_PACKAGES = ("pillow==13.0.0",)


def requirements(profile: Profile, images: bool = False) -> list[str]:
    """The top-level packages the device needs, as pip requirement strings (``images``: an image-input bundle)."""
    rt = profile.runtime
    return [f"{rt['package']}=={rt['version']}", rt["numpy"], *SERVER_PACKAGES, *(IMAGE_PACKAGES if images else ())]


def pip_platform_args(profile: Profile) -> list[str]:
    """pip download options that select wheels the device can install."""
    major, minor = profile.os["glibc"].split(".")[:2]
    arch = profile.arch
    platforms = [f"manylinux_{major}_{m}_{arch}" for m in range(17, int(minor) + 1)]
    platforms.append(f"manylinux2014_{arch}")
    py = profile.os["python"].replace(".", "")
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", profile.os["python"],
            "--abi", f"cp{py}", "--abi", "abi3", "--abi", "none"]
    for p in platforms:
        args += ["--platform", p]
    return args


def wheel_cache(profile: Profile) -> Path:
    """Where a profile's wheels are kept: one folder per arch, glibc and Python."""
    return cache_root() / "wheels" / f"{profile.arch}-glibc{profile.os['glibc']}-cp{profile.os['python'].replace('.', '')}"


def _pip(args: list[str], log_to: Path) -> int:
    with open(log_to, "w", encoding="utf-8") as log:
        return subprocess.run(
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        ).returncode


def fetch_wheels(profile: Profile, log_dir: Path, images: bool = False) -> list[Path]:
    """The wheels for a profile: from the cache, else from the package index.

    Returns:
        Paths of every wheel needed (requirements and their dependencies).

    Raises:
        UserError: the wheels are neither cached nor downloadable.
    """
    cache = wheel_cache(profile)
    cache.mkdir(parents=True, exist_ok=True)
    dest = log_dir / "wheels"
    dest.mkdir()
    base = pip_platform_args(profile) + ["--dest", str(dest), *requirements(profile, images)]
    # Offline first: resolve only against the cache.
    if _pip(["--no-index", "--find-links", str(cache), *base], log_dir / "pip-offline.log") != 0:
        code = _pip(["--find-links", str(cache), *base], log_dir / "pip.log")
        if code != 0:
            tail = (log_dir / "pip.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise UserError(
                f"cannot get the {profile.arch} / Python {profile.os['python']} wheels for "
                f"{', '.join(requirements(profile, images))}: {' '.join(tail)}",
                "connect once to the package index to fill the wheel cache (make wheels), "
                "or build with --no-wheels and install the runtime on the device yourself",
            )
        for wheel in dest.glob("*.whl"):
            if not (cache / wheel.name).exists():
                shutil.copy2(wheel, cache / wheel.name)
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise UserError(f"pip returned no wheels for {profile.arch}", "run with -v and check the profile's runtime")
    return wheels


def stage_wheels(wheels: list[Path], stage: Path) -> dict[str, str]:
    """Copy wheels into the bundle with the requirements file install.sh gives pip.

    ``wheels/requirements.txt`` pins every wheel by name, version and sha256,
    so pip installs in its hash-checking mode (``--require-hashes``) exactly
    these files: a wheel added to the folder is never picked up, and a
    changed one is refused by pip itself.
    """
    folder = stage / "wheels"
    folder.mkdir()
    for wheel in wheels:
        shutil.copy2(wheel, folder / wheel.name)
    (folder / "requirements.txt").write_text(requirements_text(wheels), encoding="ascii")
    return {wheel.name: sha256_file(wheel) for wheel in wheels}


def requirements_text(wheels: list[Path]) -> str:
    """pip's requirements file pinning every wheel by name, version and sha256 (for --require-hashes)."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    lines = []
    for wheel in wheels:
        try:
            dist, version, _, _ = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename as exc:
            raise UserError(f"{wheel} is not a wheel file name ({exc})", "clear the wheel cache and build again") from None
        lines.append(f"{dist}=={version} --hash=sha256:{sha256_file(wheel)}\n")
    return "".join(sorted(lines))


def device_wheels(wanted: bool, profile: Profile, work: Path, say, images: bool = False) -> tuple[list, list]:
    """Stage 3 of a build, per target: (wheels fetched for its arch and Python, their pins); ([], the
    requirements) with --no-wheels."""
    if not wanted:
        say(3, "no device wheels (--no-wheels)")
        return [], requirements(profile, images)
    say(3, f"device wheels for {profile.name}: {profile.arch} / Python {profile.os['python']} "
           f"({', '.join(requirements(profile, images))})")
    work.mkdir(parents=True)
    wheels = fetch_wheels(profile, work, images)
    return wheels, pinned(wheels, profile)


def pinned(wheels: list[Path], profile: Profile) -> list[str]:
    """Exact pins of the top-level packages as found among the wheels."""
    names = {}
    for wheel in wheels:
        dist, version = wheel.name.split("-")[:2]
        names[dist.lower().replace("_", "-")] = version
    pins = []
    for req in (profile.runtime["package"], "numpy"):
        key = req.lower().replace("_", "-")
        if key not in names:
            raise UserError(f"the fetched wheels lack {req}", "check the profile's runtime entries")
        pins.append(f"{req}=={names[key]}")
    return pins
