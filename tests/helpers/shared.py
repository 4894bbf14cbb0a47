"""Expensive test artefacts made once per test run, keyed by what they are made from.

Under pytest-xdist every worker has its own session, so a session fixture
alone would build the same bundle once per worker. ``once`` keeps the result
in a folder every worker of the run shares, named by a digest of its inputs
(file contents and arguments), behind a file lock: the first worker builds,
the others wait and reuse it. Nothing is kept across runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable


def shared_root(tmp_path_factory) -> Path:
    """A folder every xdist worker of this run shares (the session's own temp folder without xdist)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    root = base.parent / f"shared-{run}" if run else base / "shared"
    root.mkdir(parents=True, exist_ok=True)
    return root


def digest(*parts) -> str:
    """A short digest of strings and of files' contents (Paths are read)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(Path(part).read_bytes() if isinstance(part, Path) and part.is_file() else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def once(tmp_path_factory, label: str, make: Callable[[Path], None], *inputs) -> Path:
    """The folder ``make(folder)`` filled, made by the first caller of this run for these inputs."""
    root = shared_root(tmp_path_factory)
    name = f"{label}-{digest(label, *inputs)}"
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder
