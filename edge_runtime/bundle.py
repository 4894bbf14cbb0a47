"""Opening a bundle: folder or .tar.gz, manifest, and the integrity check.

Nothing is loaded before every file listed in the manifest matches its
sha256 and the manifest matches its own digest (so an edited manifest is
refused as surely as an edited model).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from .errors import UserError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, without its own digest."""
    body = {k: v for k, v in manifest.items() if k != "integrity"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _check_members(tar: tarfile.TarFile, archive: Path) -> None:
    """Only plain files and folders, all inside the destination."""
    for member in tar.getmembers():
        name = member.name
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or not (member.isfile() or member.isdir()):
            raise UserError(
                f"bundle archive {archive} holds an unsafe entry '{name}'",
                "use the .tar.gz that edgepack build wrote",
            )


def _extract(archive: Path) -> Path:
    """Unpack a .tar.gz bundle to a private temp folder; returns the bundle dir."""
    dest = Path(tempfile.mkdtemp(prefix="edge-run-"))
    atexit.register(shutil.rmtree, dest, True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            _check_members(tar, archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Pythons before the extraction filters (checked above)
                tar.extractall(dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"bundle archive {archive} cannot be unpacked ({exc})", "copy the .tar.gz again") from None
    entries = [p for p in dest.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest


def open_bundle(path: str | os.PathLike) -> tuple[Path, dict]:
    """Locate, verify and read a bundle.

    Args:
        path: the bundle folder, its manifest.json, or the .tar.gz.

    Returns:
        (bundle folder, manifest dict).

    Raises:
        UserError: not a bundle, or any file differs from the manifest.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"bundle {path} does not exist", "pass the bundle folder or its .tar.gz")
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        path = _extract(path)
    elif path.is_file() and path.name == MANIFEST:
        path = path.parent
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{path} is not a bundle: no {MANIFEST}", "pass the folder that edgepack build wrote")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{manifest_path} is not valid JSON ({exc})", "rebuild or re-copy the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else type(manifest).__name__
        raise UserError(
            f"{manifest_path}: expected schema_version {SCHEMA_VERSION}, found {found!r}",
            "rebuild the bundle with a matching edgepack",
        )
    verify(path, manifest)
    return path, manifest


def verify(folder: Path, manifest: dict) -> None:
    """Check the manifest's own digest and every file's sha256."""
    if manifest.get("integrity") != manifest_digest(manifest):
        raise UserError(
            f"{folder / MANIFEST} was modified after the build (its digest does not match)",
            "re-copy the bundle, or rebuild it with edgepack build",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.tflite" not in files:
        raise UserError(f"{folder / MANIFEST} lists no files", "rebuild the bundle")
    for rel, expected in sorted(files.items()):
        file = folder / rel
        if not file.is_file():
            raise UserError(f"bundle file {rel} is missing from {folder}", "re-copy the whole bundle")
        actual = sha256_file(file)
        if actual != expected:
            raise UserError(
                f"bundle file {rel} was modified: sha256 {actual[:12]}..., manifest says {expected[:12]}...",
                "re-copy the bundle, or rebuild it with edgepack build",
            )
