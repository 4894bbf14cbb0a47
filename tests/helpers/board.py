"""One way for every test to use an emulated board (packager.emulator under QEMU with the profile's CPU).

A board runs a shell script with a bundle copied in (``$BUNDLE``) and the
test's folder as its working directory. Its environment for the bundle's
wheels is reused from the cache kept by packager.device_envs, keyed by the
board's tree and the bundle's ``wheels/requirements.txt``: the bundle's own
``install.sh`` still runs and checks it against the wheels before adopting
it. ``fresh_env=True`` is for the tests of pip itself (a first install, its
idempotence, another Python, Pillow's wheel, the A/B path).
"""

from __future__ import annotations

import dataclasses
import fcntl
import subprocess
from pathlib import Path

import numpy as np

from packager import device_envs, emulator
from packager.profiles import load_profile


@dataclasses.dataclass
class Run:
    proc: subprocess.CompletedProcess
    bundle: str  # the bundle's path inside the board

    @property
    def stdout(self) -> str:
        return self.proc.stdout

    @property
    def stderr(self) -> str:
        return self.proc.stderr

    def check(self) -> "Run":
        assert self.proc.returncode == 0, self.proc.stdout[-2000:] + self.proc.stderr[-3000:]
        return self


class Board:
    """An emulated board of one target profile (a name from devices/ or a profile object)."""

    def __init__(self, target="rpi4"):
        self.profile = load_profile(target) if isinstance(target, str) else target

    def run(self, bundle: Path, script: str, cwd: Path, fresh_env: bool = False) -> Run:
        """Run ``script`` on the board with ``bundle`` copied in; its environment comes from the cache (made
        first if missing) unless ``fresh_env``."""
        if not fresh_env:
            self.ensure_env(bundle)
        proc, guest = emulator.run_on_device(self.profile, bundle, script, cwd=cwd, capture=True,
                                             reuse_env=not fresh_env)
        return Run(proc, guest)

    def ensure_env(self, bundle: Path) -> None:
        """The cached environment for the bundle's wheels on this board, installed for real when missing (one
        installer at a time per key: pytest-xdist workers wait for each other)."""
        root = emulator.ensure_rootfs(self.profile)
        key = device_envs.env_key(root, bundle)
        if key is None or (device_envs.cached_env(key) / device_envs.VENV).is_dir():
            return
        lock_path = device_envs.cached_env(key).parent / f".{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (device_envs.cached_env(key) / device_envs.VENV).is_dir():
                proc, _ = emulator.run_on_device(self.profile, bundle, '"$BUNDLE/install.sh"', cwd=bundle.parent,
                                                 capture=True)
                assert proc.returncode == 0, f"install.sh on the {self.profile.name} board: {proc.stderr[-3000:]}"


def within_one_step(device: dict, host: dict, manifest: dict) -> None:
    """Within one quantization step of each output; a float output (float16/float32 chosen, or float I/O)
    within float rounding of the host: 1e-5 of its largest value."""
    for spec in manifest["outputs"]:
        name, step = spec["name"], spec["scale"]
        if not step:
            step = 1e-5 * max(float(np.abs(host[name]).max()), 1e-3)
        assert device[name].shape == host[name].shape
        diff = np.abs(device[name] - host[name]).max()
        assert diff <= step * 1.0001, f"{name}: device differs from host by {diff}, one step is {step}"
