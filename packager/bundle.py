"""Stage 9: the bundle folder and its .tar.gz, written atomically.

Everything is assembled in a hidden staging folder next to the destination
and moved into place only when complete, so a failed or interrupted build
leaves no half-written bundle (and an earlier good one stays intact until
the new one is ready).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import edge_runtime
from edge_runtime.bundle import MANIFEST, manifest_digest, sha256_file

DEVICE_FILES = Path(__file__).resolve().parent / "device_files"


def runtime_sources() -> list[Path]:
    """The runner's own source files, copied verbatim into every bundle."""
    root = Path(edge_runtime.__file__).resolve().parent
    return sorted(p for p in root.glob("*.py"))


def stage_files(stage: Path, arch: str, python: str, packages: list[str]) -> None:
    """Put the runner, its launcher and install.sh into a staging bundle.

    Args:
        stage: the staging bundle folder.
        arch, python: what install.sh insists the device has.
        packages: the pip requirements install.sh installs from wheels/.
    """
    runtime_dir = stage / "edge_runtime"
    runtime_dir.mkdir(parents=True, exist_ok=True)
    for src in runtime_sources():
        shutil.copy2(src, runtime_dir / src.name)
    shutil.copy2(DEVICE_FILES / "edge-run", stage / "edge-run")
    script = (DEVICE_FILES / "install.sh").read_text(encoding="utf-8")
    for key, value in (("NAME", stage.name), ("ARCH", arch), ("PYTHON", python), ("PACKAGES", " ".join(packages))):
        script = script.replace(f"@{key}@", value)
    (stage / "install.sh").write_text(script, encoding="utf-8")
    # The unit's paths are the device's; install.sh --service fills them in.
    unit = (DEVICE_FILES / "edge-run.service").read_text(encoding="utf-8").replace("@NAME@", stage.name)
    (stage / "edge-run.service").write_text(unit, encoding="utf-8")
    for name in ("edge-run", "install.sh"):
        (stage / name).chmod(0o755)


def seal(stage: Path, manifest: dict) -> dict:
    """List every file's sha256 and the manifest's own digest; write it."""
    files = {}
    for path in sorted(stage.rglob("*")):
        if path.is_file() and path.name != MANIFEST and "__pycache__" not in path.parts:
            files[path.relative_to(stage).as_posix()] = sha256_file(path)
    manifest = dict(manifest, files=files)
    manifest["integrity"] = manifest_digest(manifest)
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _tar(stage: Path, archive: Path) -> None:
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name:
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(stage, arcname=stage.name, filter=clean)


def publish(stage: Path, out_dir: Path) -> tuple[Path, Path]:
    """Move a sealed staging folder to ``out_dir/<name>`` plus ``<name>.tar.gz``.

    ``stage`` must live inside a private folder in ``out_dir`` (same file
    system, so the final renames are atomic).
    """
    name = stage.name
    final_dir = out_dir / name
    final_tar = out_dir / f"{name}.tar.gz"
    tmp_tar = stage.parent / f"{name}.tar.gz"
    _tar(stage, tmp_tar)
    old = stage.parent / "previous"
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(stage, final_dir)
    os.replace(tmp_tar, final_tar)
    if old.exists():
        shutil.rmtree(old)
    return final_dir, final_tar
