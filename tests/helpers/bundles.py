"""New versions of a built bundle, sealed, signed and archived the way edgepack build publishes them."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from edge_runtime.bundle import MANIFEST
from packager.bundle import publish_all
from packager.signing import check_key


def version(bundle: Path) -> str:
    """install.sh --prefix's name for the bundle's version: its name and 12 hex of manifest.json's sha256."""
    return f"{bundle.name}-{hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()[:12]}"


def new_version(bundle: Path, out_dir: Path, created_at: str, key: Path | None = None) -> Path:
    """A copy of ``bundle`` built at another time (so another manifest digest: another version), sealed, signed
    with ``key`` when given, and published as ``out_dir/<name>`` and ``out_dir/<name>.tar.gz``; the folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=".stage-", dir=out_dir))
    try:
        stage = private / bundle.name
        shutil.copytree(bundle, stage, ignore=shutil.ignore_patterns(".venv", "__pycache__", "manifest.json.sig"))
        manifest = json.loads((stage / MANIFEST).read_text())
        manifest["created_at"] = created_at
        (folder, _, _), = publish_all([(stage, manifest)], check_key(key) if key else None, out_dir)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return folder
