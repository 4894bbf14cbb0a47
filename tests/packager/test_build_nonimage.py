"""Inputs that are not images: audio frames and integer token ids, together."""

import json

import numpy as np
import pytest

import edge_runtime
from tests.conftest import run_cli
from tests.fixtures.models import audio_and_ids, audio_and_ids_samples

pytestmark = pytest.mark.slow


def test_audio_frames_and_ids_get_a_full_integer_model(tmp_path):
    model = audio_and_ids(tmp_path / "audio_ids.onnx")
    np.savez(tmp_path / "calib.npz", **audio_and_ids_samples(120))
    run_cli("packager", "build", model, "--target", "rpi4", "--calibration", tmp_path / "calib.npz", "-o", tmp_path,
            "--precision", "int8")
    bundle = tmp_path / "audio_ids-rpi4"
    manifest = json.loads((bundle / "manifest.json").read_text())
    inputs = {i["name"]: i for i in manifest["inputs"]}
    assert inputs["frames"]["tflite_dtype"] == "int8"
    assert inputs["token_ids"]["tflite_dtype"] in ("int32", "int64")  # ids stay integer
    assert manifest["quantization"]["full_integer"] is True
    assert manifest["ops"]["float_ops"] == []
    probs = manifest["fidelity"]["outputs"]["probs"]
    assert probs["kind"] == "classes" and probs["top1_agreement"] >= 0.99  # judged by its task figure
    assert probs["cosine"] > 0.95  # reported beside it

    import onnxruntime as ort

    fresh = audio_and_ids_samples(20, seed=9)
    got = edge_runtime.load(bundle).predict(fresh)["probs"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ref = np.concatenate([
        session.run(None, {"frames": fresh["frames"][i:i + 1], "token_ids": fresh["token_ids"][i:i + 1]})[0]
        for i in range(20)
    ])
    assert got.shape == ref.shape == (20, 5)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9  # the class, as the bundle's kind judges it
