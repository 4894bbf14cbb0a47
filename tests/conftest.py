"""Shared fixtures: real models, built once per session, in temp folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PPOCR_ENV = "EDGEPACK_PPOCR_CLS"
PPOCR_DEFAULT = Path.home() / ".cache" / "edgepack" / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"


def reseal(folder: Path, manifest: dict) -> dict:
    """Write an edited manifest with a recomputed digest and SHA256SUMS, the way the build seals.

    The digest is no signature: anyone can reseal, so tests use this to
    reach the checks that come after integrity (validation by type, display).
    """
    import json

    from edge_runtime.bundle import MANIFEST, SUMS, manifest_digest, sha256_file, sums_text

    manifest = dict(manifest, integrity=manifest_digest(manifest))
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    files = manifest["files"] if isinstance(manifest.get("files"), dict) else {}
    (folder / SUMS).write_text(sums_text({k: v for k, v in files.items() if isinstance(k, str)},
                                         sha256_file(folder / MANIFEST)))
    return manifest


def run_cli(module: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m packager|edge_runtime ARGS` as a user would, offline env untouched."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The example model, trained for real: folder with digits.onnx, calibration.npy, test_x/test_y."""
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    try:
        import train
    finally:
        sys.path.pop(0)
    return train.main(str(tmp_path_factory.mktemp("digits")))


@pytest.fixture(scope="session")
def digits_bundle(digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run_cli("packager", "build", digits / "digits.onnx", "--target", "rpi4",
            "--calibration", digits / "calibration.npy", "-o", out)
    return out / "digits-rpi4"


@pytest.fixture(scope="session")
def fleet_build(digits, tmp_path_factory) -> tuple[Path, Path]:
    """The example model built once for a fleet of two targets (rpi4, zero2w), signed: (the build's output
    folder, holding digits-<target>/ and digits-<target>.tar.gz per target; the signing key, KEY.pub beside it)."""
    out = tmp_path_factory.mktemp("fleet-build")
    key = out / "release"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release@build-host", "-f", str(key)],
                   check=True, stdin=subprocess.DEVNULL)
    run_cli("packager", "build", digits / "digits.onnx", "--target", "rpi4,zero2w",
            "--calibration", digits / "calibration.npy", "-o", out / "dist", "--sign", key)
    return out / "dist", key


@pytest.fixture(scope="session")
def ppocr_model() -> Path:
    path = Path(os.environ.get(PPOCR_ENV, PPOCR_DEFAULT))
    if not path.is_file():
        pytest.fail(f"PP-OCR classifier not found at {path}: `make fixtures` fetches it (make test does)")
    return path


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((scores.reshape(len(labels), -1).argmax(1) == labels).mean())
