"""Installed environments of the emulated boards, cached by content.

A bundle's ``install.sh`` makes its venv from the bundle's own wheels: under
QEMU that pip install takes 60–120 s, and it is the same every time for the
same board tree and the same wheels. So the first install of a given
(root filesystem, ``wheels/requirements.txt``, installer) is kept, and later
runs of a bundle with the same key start with a copy of it as the bundle's
``.venv``. ``install.sh`` never trusts an environment it finds: it adopts the
copy only when it checks out against the bundle's own hash-pinned wheels
(and rebuilds it otherwise), so a cached environment saves time and nothing
else. ``edgepack emulate --fresh-env`` and the tests of pip itself skip it.

The key covers the root filesystem's spec digest (its folder name), the
requirements file (every wheel by sha256) and the installer's scripts (a
changed installer may make environments differently).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .wheels import cache_root

INSTALLER_FILES = ("install.sh", "install-versions.sh", "verify-env")
VENV = ".venv"


def env_key(rootfs: Path, bundle: Path) -> str | None:
    """The cache key of the environment ``bundle`` installs on the board whose tree is ``rootfs``; None
    for a bundle without wheels (nothing to install)."""
    requirements = bundle / "wheels" / "requirements.txt"
    if not requirements.is_file():
        return None
    digest = hashlib.sha256(rootfs.parent.name.encode() + b"\0" + requirements.read_bytes())
    for name in INSTALLER_FILES:
        if (bundle / name).is_file():
            digest.update(b"\0" + name.encode() + b"\0" + (bundle / name).read_bytes())
    return digest.hexdigest()[:20]


def cached_env(key: str) -> Path:
    return cache_root() / "envs" / key


def seed(key: str | None, bundle_copy: Path, link: bool = False) -> bool:
    """Put the cached environment (if any) in the bundle copy as its .venv; True when one was there.

    ``link`` hard-links its files instead of copying them (seconds and no space for many boards): safe while
    nothing writes into an environment's files in place (install.sh and Python add files, or replace them by
    renaming, as pip and the byte-compiler do).
    """
    if key is None or not (cached_env(key) / VENV).is_dir() or os.path.lexists(bundle_copy / VENV):
        return False
    shutil.copytree(cached_env(key) / VENV, bundle_copy / VENV, symlinks=True,
                    copy_function=_link_or_copy if link else shutil.copy2)
    return True


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def keep(key: str | None, bundle_copy: Path) -> bool:
    """After a run: keep the environment install.sh made in the bundle copy, if none is cached yet.

    Only a finished install counts (install.sh writes its stamp last). The
    copy goes to a temp folder beside the cache and is renamed into place, so
    a reader never sees half of it; two runs racing keep one.
    """
    made = bundle_copy / VENV
    if key is None or cached_env(key).exists() or not (made / ".edgepack-install").is_file():
        return False
    parent = cached_env(key).parent
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=parent))
    try:
        shutil.copytree(made, work / VENV, symlinks=True)
        os.rename(work, cached_env(key))
    except OSError:  # another run kept it first
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True
