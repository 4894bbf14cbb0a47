"""Where a build works: a private staging folder inside the output folder, and a temp folder.

Bundles are staged in ``OUT/.<name>.XXXX`` (same file system as their final
place, so publishing is a rename) and the converters work in a temp folder.
Both go on every exit path; a failed build also removes the output folders
it created, so it leaves nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def workspace(out_dir: Path, first_name: str):
    """Yields (private staging folder, temp work folder); both removed afterwards, whatever happens."""
    new_dirs = missing_dirs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=f".{first_name}.", dir=out_dir))
    try:
        with tempfile.TemporaryDirectory(prefix="edgepack-") as work, temp_home(Path(work)):
            yield private, Path(work)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        remove_empty(new_dirs)
        raise
    shutil.rmtree(private, ignore_errors=True)


@contextlib.contextmanager
def temp_home(work: Path):
    """TMPDIR points into ``work`` for the duration, in this process and every worker it starts: files a
    killed worker could not remove (TensorFlow's autograph modules, removed only at a normal exit) go with
    the work folder."""
    folder = work / "tmp"
    folder.mkdir()
    old_env, old_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = old_dir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env


def missing_dirs(out_dir: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` is about to create, deepest first."""
    missing = []
    while not os.path.lexists(out_dir) and out_dir != out_dir.parent:
        missing.append(out_dir)
        out_dir = out_dir.parent
    return missing


def remove_empty(dirs: list[Path]) -> None:
    """A failed build leaves nothing: the folders it created go again, if nothing else went in."""
    for folder in dirs:
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()
