"""Stage 9: the bundle folder and its .tar.gz, written atomically.

Everything is assembled in a hidden staging folder next to the destination
and moved into place only when complete, so a failed or interrupted build
leaves no half-written bundle (and an earlier good one stays intact until
the new one is ready).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np

import edge_runtime
from edge_runtime.bundle import MANIFEST, SUMS, UNLISTED, manifest_digest, sha256_file, sums_text
from edge_runtime.trust import SIGNATURE
from edge_runtime.errors import UserError

DEVICE_FILES = Path(__file__).resolve().parent / "device_files"
# The Grafana dashboard for edge-run serve's /metrics: in every bundle, beside the runner that exports them.
DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "edge-run.json"
# A bundle's name travels into folder names, install.conf and the systemd unit's
# name: it is kept to characters no shell, sed or unit file treats specially.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
# The device scripts: fixed text, identical in every bundle (nothing is pasted
# into them); what differs per bundle is data in install.conf.
DEVICE_SCRIPTS = ("edge-run", "install.sh", "install-versions.sh", "verify-bundle", "verify-env")
# install.sh's health check (edge-run health): one held-out input, and the outputs the build got for it.
HEALTH_SAMPLE, HEALTH_EXPECTED = "health/sample.npz", "health/expected.npz"


def bundle_name(model_stem: str, profile_name: str) -> str:
    """``<model>-<profile>``, with the model's characters outside ``[A-Za-z0-9._+-]`` made ``-``.

    Raises:
        UserError: the profile's name is not such a plain name (a profile file is user input too).
    """
    if not SAFE_NAME.match(profile_name):
        raise UserError(
            f"target profile name {profile_name!r} holds characters a bundle name cannot carry "
            "(expected letters, digits, '.', '_', '+', '-')",
            "rename the profile (its name = ... line)",
        )
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "-", model_stem).strip(".-") or "model"
    return f"{stem[:80]}-{profile_name}"


def runtime_sources() -> list[tuple[Path, str]]:
    """The runner's own source files, copied verbatim into every bundle: (file, path under edge_runtime/).

    Every .py under the package, its subpackages (edge_runtime/server/) included, never __pycache__.
    """
    root = Path(edge_runtime.__file__).resolve().parent
    return sorted((p, p.relative_to(root).as_posix()) for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def stage_files(stage: Path, arch: str, python: str, packages: list[str]) -> None:
    """Put the runner, the device scripts and install.conf into a staging bundle.

    Args:
        stage: the staging bundle folder (its name checked by ``bundle_name``).
        arch, python: what install.sh insists the device has.
        packages: the pinned requirements, for install.sh's messages (pip
            installs ``wheels/requirements.txt``, hash-checked).
    """
    runtime_dir = stage / "edge_runtime"
    runtime_dir.mkdir(parents=True, exist_ok=True)
    for src, rel in runtime_sources():
        (runtime_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, runtime_dir / rel)
    for name in (*DEVICE_SCRIPTS, "edge-run.service"):
        shutil.copy2(DEVICE_FILES / name, stage / name)
    for name in DEVICE_SCRIPTS:
        (stage / name).chmod(0o755)
    (stage / "dashboards").mkdir(exist_ok=True)
    shutil.copy2(DASHBOARD, stage / "dashboards" / DASHBOARD.name)
    values = {"name": stage.name, "arch": arch, "python": python, "packages": " ".join(packages)}
    for key, value in values.items():  # install.sh refuses anything else too; this is the build's own check
        if not re.fullmatch(r"[A-Za-z0-9._+<>=!,~ -]*", value):
            raise UserError(f"install.conf {key} {value!r} holds characters install.sh refuses", "check the profile")
    (stage / "install.conf").write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="ascii")


def stage_health(stage: Path, manifest: dict, holdout: dict) -> dict:
    """One held-out sample and the outputs the staged model gives it, sealed with the bundle.

    ``edge-run health`` reproduces them on the device: install.sh --prefix
    makes a new version current only once it does. Outputs may differ by
    two quantization steps (float outputs: 1e-3 of their largest value).

    Returns:
        the manifest's ``health`` entry.
    """
    from edge_runtime.delegates import Choice
    from edge_runtime.interpreter import make_engine
    from edge_runtime.model import Model

    sample = {k: v[:1] for k, v in holdout.items() if k in {s["name"] for s in manifest["inputs"]}}
    model = Model(stage, manifest, make_engine(str(stage / "model.tflite"), 1, Choice("xnnpack")))
    expected = model.predict(sample)
    (stage / "health").mkdir()
    np.savez(stage / HEALTH_SAMPLE, **sample)
    np.savez(stage / HEALTH_EXPECTED, **expected)
    tolerance = {
        s["name"]: 2 * s["scale"] if s.get("scale") else 1e-3 * max(float(np.abs(expected[s["name"]]).max()), 1e-3)
        for s in manifest["outputs"]
    }
    return {"sample": HEALTH_SAMPLE, "expected": HEALTH_EXPECTED, "tolerance": tolerance}


def seal(stage: Path, manifest: dict) -> dict:
    """List every file (sha256 and size), the manifest's own digest, and SHA256SUMS.

    The manifest's ``files`` is the bundle's exact file set (besides
    manifest.json and SHA256SUMS): the runner refuses a bundle with a file
    more or less. SHA256SUMS holds the same sums, manifest.json's included,
    for the device's ``sha256sum -c`` that runs before any Python from the
    bundle does.
    """
    files, sizes = {}, {}
    for path in sorted(stage.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise UserError(f"the staged bundle holds {path}, not a plain file", "report this as a bug")
        if path.is_file() and path.name not in UNLISTED and "__pycache__" not in path.parts:
            rel = path.relative_to(stage).as_posix()
            files[rel], sizes[rel] = sha256_file(path), path.stat().st_size
    manifest = dict(manifest, files=files, sizes=sizes)
    manifest["integrity"] = manifest_digest(manifest)
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (stage / SUMS).write_text(sums_text(files, sha256_file(stage / MANIFEST)), encoding="ascii")
    return manifest


def _tar(stage: Path, archive: Path) -> None:
    """The folder entry, then manifest.json and SHA256SUMS (and manifest.json.sig
    when signed), then the files in the manifest's order: a reader learns
    every name and size before any content (``edge_runtime.bundle`` relies
    on it to refuse a bomb early)."""
    manifest = json.loads((stage / MANIFEST).read_text(encoding="utf-8"))

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(stage, arcname=stage.name, recursive=False, filter=clean)
        signed = (SIGNATURE,) if (stage / SIGNATURE).is_file() else ()
        for rel in (MANIFEST, SUMS, *signed, *manifest["files"]):
            tar.add(stage / rel, arcname=f"{stage.name}/{rel}", recursive=False, filter=clean)


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


def publish_all(staged: list[tuple[Path, dict]], signer, out_dir: Path) -> list[tuple[Path, Path, dict]]:
    """Seal every staged bundle, sign them (``signer``: packager.signing.Signer or None), then publish them
    all: [(folder, archive, sealed manifest)] in ``staged``'s order."""
    from .signing import sign

    sealed = [(stage, seal(stage, manifest)) for stage, manifest in staged]
    for stage, _ in sealed if signer else ():
        sign(stage, signer)
    return [(*publish(stage, out_dir), manifest) for stage, manifest in sealed]
