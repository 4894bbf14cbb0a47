"""Hand-made and resealed manifests for the runner's tests (describe, metrics, drift)."""

import copy
import json
import shutil
from pathlib import Path

from tests.conftest import reseal

# A bar as bundles from before output kinds recorded it (describe reads both forms).
BAR = {"min_cosine": 0.99, "min_top1": 0.99, "min_f1": 0.95, "min_channel_cosine": 0.9}


def hand_manifest(precision=None, score_map=True) -> dict:
    """The parts of a manifest describe() reads; precision=None is a bundle from before the ladder."""
    out = {"cosine": 0.995, "min_cosine": 0.97, "max_abs_error": 0.02, "mean_abs_error": 0.001,
           "top1_agreement": None, "worst_channel": {"axis": 1, "index": 4, "cosine": 0.934}, "top5_agreement": None,
           "score_map": {"threshold": 0.5, "positives": 120, "model_positives": 118, "precision": 0.97,
                         "recall": 0.96, "f1": 0.965, "topk_agreement": 0.9} if score_map else None}
    manifest = {
        "name": "det-rpi4", "edgepack_version": "0.1.0", "created_at": "2026-01-01T00:00:00+00:00",
        "target": {"name": "rpi4", "human_name": "Raspberry Pi 4 Model B"},
        "source": {"file": "det.onnx", "sha256": "0123456789abcdef" * 4},
        "inputs": [{"name": "x", "shape": [1, 3, 32, 32], "dtype": "float32", "tflite_shape": [1, 32, 32, 3],
                    "tflite_dtype": "int8", "permutation": [0, 2, 3, 1], "scale": 0.0078, "zero_point": 0}],
        "outputs": [],
        "fidelity": {"samples": 40, "outputs": {"y": out}},
    }
    if precision is not None:
        manifest["precision"] = precision
    return manifest


def reseal_below_the_bar(bundle: Path, dest: Path) -> Path:
    """A copy of a real bundle whose manifest says it was shipped with --accept-low-fidelity.

    Re-sealed the way the build seals (tests.conftest.reseal):
    the manifest's digest covers every key but itself, so an edited manifest
    is only accepted with a recomputed digest.
    """
    shutil.copytree(bundle, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    output = next(iter(manifest["fidelity"]["outputs"]))
    manifest["fidelity"]["outputs"][output]["cosine"] = 0.9125
    manifest["precision"] = {
        **copy.deepcopy(manifest.get("precision") or {"requested": "auto", "bar": BAR, "steps": []}),
        "chosen": "int8", "step": "int8, min/max", "meets_bar": False, "accepted_low_fidelity": True,
        "why": "--accept-low-fidelity: int8, min/max came closest to the bar",
        "shortfalls": [f"{output}: cosine 0.9125 < 0.99"],
    }
    reseal(dest, manifest)
    return dest
