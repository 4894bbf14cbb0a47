"""Shared fixtures: real models, built once per session, in temp folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.shared import once

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


def run_cli(module: str, *args, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m packager|edge_runtime ARGS` as a user would, offline env untouched (or ``env``)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL, env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


# Every shipped profile: the digits bundles for all of them come from one build (one conversion).
TARGETS = ("rpi4", "rpi5", "zero2w", "arm64-trixie", "coral-usb")


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The example model, trained for real: folder with digits.onnx, calibration.npy, test_x/test_y."""
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    try:
        import train
    finally:
        sys.path.pop(0)
    return once(tmp_path_factory, "digits", train.main, ROOT / "examples" / "digits" / "train.py")


@pytest.fixture(scope="session")
def digits_fleet(digits, tmp_path_factory):
    """The digits model built once for every target: (out folder, the build's stdout, its stderr)."""
    def make(out: Path) -> None:
        proc = run_cli("packager", "build", digits / "digits.onnx", "--target", ",".join(TARGETS),
                       "--calibration", digits / "calibration.npy", "-o", out / "dist")
        (out / "stdout").write_text(proc.stdout)
        (out / "stderr").write_text(proc.stderr)

    out = once(tmp_path_factory, "digits-fleet", make, digits / "digits.onnx", *TARGETS)
    return out / "dist", (out / "stdout").read_text(), (out / "stderr").read_text()


@pytest.fixture(scope="session")
def digits_bundle(digits_fleet) -> Path:
    """The digits bundle for the Raspberry Pi 4 (from the one build for every target)."""
    return digits_fleet[0] / "digits-rpi4"


HOST_PROFILE = ROOT / "tests" / "fixtures" / "profiles" / "host-x86_64.toml"


@pytest.fixture(scope="session")
def host_bundle(digits, tmp_path_factory) -> Path:
    """The digits bundle for this test machine (x86-64, Python 3.11; its wheels come with `make wheels`):
    install.sh installs its real wheels here, without emulation."""
    from packager.bundle import DEVICE_FILES

    def make(out: Path) -> None:
        run_cli("packager", "build", digits / "digits.onnx", "--target", HOST_PROFILE,
                "--calibration", digits / "calibration.npy", "-o", out / "dist")

    scripts = sorted(DEVICE_FILES.iterdir())
    return once(tmp_path_factory, "digits-host", make, digits / "digits.onnx", HOST_PROFILE, *scripts) / "dist" \
        / "digits-host-x86_64"


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


@pytest.fixture(scope="session")
def ppocr_camera(ppocr_model, tmp_path_factory) -> Path:
    """PP-OCR's classifier built once for camera frames (--input-format image-uint8, full int8, with its device
    wheels, Pillow's among them): the folder holding dist/, calib/ (120 lines) and held_out/ (100 lines)."""
    from tests.fixtures.text_lines import write_lines

    def make(out: Path) -> None:
        write_lines(out / "calib", 120, seed=5)
        labels = write_lines(out / "held_out", 100, seed=6)
        np.save(out / "labels.npy", np.array(labels))
        proc = run_cli("packager", "build", ppocr_model, "--target", "rpi4", "--calibration", out / "calib",
                       "--input-shape", "x=1,3,48,192", "--mean", "0.5", "--std", "0.5", "--input-format",
                       "image-uint8", "--precision", "int8", "-o", out / "dist")
        (out / "stderr").write_text(proc.stderr)

    return once(tmp_path_factory, "ppocr-camera", make, ppocr_model)


@pytest.fixture(scope="session")
def copy_delegate(tmp_path_factory) -> str:
    """The test delegate (tests.helpers.delegates) for this host."""
    from tests.helpers.delegates import build_delegate

    return build_delegate("gcc", "gcc libc6-dev", tmp_path_factory.mktemp("delegate"))


@pytest.fixture(scope="session")
def copy_delegate_aarch64(tmp_path_factory) -> str:
    """The test delegate cross-compiled for the aarch64 boards, loadable with bookworm's glibc."""
    from packager.profiles import load_profile
    from tests.helpers.delegates import build_for_board

    return build_for_board(tmp_path_factory.mktemp("delegate-aarch64"), load_profile("rpi4").os["glibc"])


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((scores.reshape(len(labels), -1).argmax(1) == labels).mean())


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    """The emulated boards take turns on one pytest-xdist worker (QEMU runs one core each; two boards at once
    would only slow both and the other worker's converters)."""
    for item in items:
        if item.get_closest_marker("emulated") is not None:
            item.add_marker(pytest.mark.xdist_group("board"))
