"""Set-up steps that use the network (``make wheels``, ``make demo``); a build or a test never runs them.

    python -m packager.fetch wheels TARGET...     the device wheels of each target, into the cache
    python -m packager.fetch runtimes TARGET...   a host venv for each target whose runtime is not this host's

Each says what it fetches and how long it took. A module of its own that
``import packager`` does not import: ``python -m packager.wheels`` ran a
module the package had already imported (runpy warns about that).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from edge_runtime.errors import UserError

from .profiles import load_profile
from .runtimes import python_for
from .wheels import fetch_wheels, requirements, wheel_cache


def _size_mb(paths) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def wheels(targets: list[str]) -> None:
    """Fill the wheel cache for each target (image bundles' wheels too: a superset), saying what came from where."""
    for target in targets:
        profile = load_profile(target)
        cache = wheel_cache(profile)
        before = set(cache.glob("*.whl")) if cache.is_dir() else set()
        print(f"device wheels for {profile.name} ({profile.arch}, Python {profile.os['python']}): "
              f"{', '.join(requirements(profile, images=True))} and their dependencies; from {cache}, "
              "else from PyPI ...", flush=True)
        start = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            got = fetch_wheels(profile, Path(tmp), images=True)
        fetched = sorted(set(cache.glob("*.whl")) - before)
        took = time.monotonic() - start
        if fetched:
            print(f"  downloaded {len(fetched)} of {len(got)} wheels ({_size_mb(fetched):.1f} MB) in {took:.0f} s: "
                  f"{', '.join(p.name for p in fetched)}", flush=True)
        else:
            print(f"  all {len(got)} wheels were in the cache ({took:.0f} s)", flush=True)


def runtimes(targets: list[str]) -> None:
    """Make the host venvs the targets' runtimes need (to check that the model loads on them)."""
    for target in targets:
        profile = load_profile(target)
        start = time.monotonic()
        python = python_for(profile, log=lambda text: print(f"  {text} ...", flush=True))
        print(f"runtime of {profile.name} on this host: {python} ({time.monotonic() - start:.0f} s)", flush=True)


def main(argv: list[str]) -> int:
    steps = {"wheels": wheels, "runtimes": runtimes}
    if not argv or argv[0] not in steps:
        print(f"usage: python -m packager.fetch {{{','.join(steps)}}} TARGET...", file=sys.stderr)
        return 2
    try:
        steps[argv[0]](argv[1:] or ["rpi4"])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
