"""End to end on the example model: build, then edge-run on the held-out split."""

import json
import tarfile

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import ROOT, accuracy, run_cli
from tests.helpers.stderr_lines import not_ours

pytestmark = pytest.mark.slow


def test_int8_accuracy_within_one_point_of_float(digits, digits_bundle, tmp_path):
    test_x, test_y = np.load(digits / "test_x.npy"), np.load(digits / "test_y.npy")
    session = ort.InferenceSession(str(digits / "digits.onnx"), providers=["CPUExecutionProvider"])
    float_acc = accuracy(session.run(None, {"image": test_x})[0], test_y)

    run_cli("edge_runtime", "run", digits_bundle, "--input", digits / "test_x.npy", "--output", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as y:
        assert list(y.files) == ["scores"]
        scores = y["scores"]
    assert scores.shape == (len(test_y), 10) and scores.dtype == np.float32
    int8_acc = accuracy(scores, test_y)
    assert float_acc > 0.95, "the example model did not train"
    assert abs(int8_acc - float_acc) <= 0.01, (float_acc, int8_acc)


def test_the_build_prints_only_its_own_lines(digits_fleet):
    """Nothing from TensorFlow, absl, CUDA, oneDNN or TFLite, in the build or in the processes it starts (the
    converter, the ladder, the memory probes): tests/helpers/stderr_lines lists what they printed before."""
    stderr = digits_fleet[2]
    assert "[6/9] choosing the precision" in stderr and "[9/9] writing" in stderr
    assert not_ours(stderr) == []


def test_bundle_layout_and_manifest(digits, digits_bundle):
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["name"] == "digits-rpi4"
    assert manifest["target"]["cpu"] == "cortex-a72"
    assert manifest["source"]["file"] == "digits.onnx" and len(manifest["source"]["sha256"]) == 64
    (inp,) = manifest["inputs"]
    assert inp["name"] == "image" and inp["shape"] == [1, 1, 8, 8] and inp["declared_shape"] == ["N", 1, 8, 8]
    assert inp["dtype"] == "float32" and inp["tflite_dtype"] == "int8"
    assert inp["tflite_shape"] == [1, 8, 8, 1] and inp["permutation"] == [0, 2, 3, 1]
    assert inp["scale"] > 0
    (out,) = manifest["outputs"]
    assert out["name"] == "scores" and out["tflite_dtype"] == "int8"
    fid = manifest["fidelity"]["outputs"]["scores"]
    assert fid["cosine"] > 0.99 and fid["top1_agreement"] >= 0.95
    assert manifest["ops"]["float_ops"] == []
    assert manifest["ops"]["counts"]["CONV_2D"] == {"int8": 2}
    assert {"model.tflite", "edge-run", "edge_runtime/cli.py", "dashboards/edge-run.json"} <= set(manifest["files"])
    dashboard = "dashboards/edge-run.json"
    assert (digits_bundle / dashboard).read_bytes() == (ROOT / dashboard).read_bytes()
    stats = manifest["input_statistics"]["image"]  # the calibration set's, for edge-run serve's drift score
    assert stats["channel_axis"] == 1 and stats["samples"] > 0 and stats["std"][0] > 0
    # the archive holds the same folder
    archive = digits_bundle.parent / "digits-rpi4.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert "digits-rpi4/manifest.json" in names and "digits-rpi4/model.tflite" in names


def test_inspect_shows_fidelity_and_ops(digits_bundle):
    text = run_cli("packager", "inspect", digits_bundle).stdout
    assert "fidelity" in text and "scores: cosine" in text and "CONV_2D/int8 2" in text
    data = json.loads(run_cli("packager", "inspect", digits_bundle, "--json").stdout)
    assert data["name"] == "digits-rpi4"


def test_uint8_io_per_tensor(digits, tmp_path):
    run_cli("packager", "build", digits / "digits.onnx", "--target", "rpi4", "--calibration",
            digits / "calibration.npy", "-o", tmp_path, "--io-dtype", "uint8", "--per-tensor", "--min-cosine", "0.98")
    manifest = json.loads((tmp_path / "digits-rpi4" / "manifest.json").read_text())
    assert manifest["inputs"][0]["tflite_dtype"] == "uint8"
    assert manifest["quantization"]["per_channel"] is False
    test_x, test_y = np.load(digits / "test_x.npy"), np.load(digits / "test_y.npy")
    import edge_runtime

    scores = edge_runtime.load(tmp_path / "digits-rpi4").predict({"image": test_x})["scores"]
    assert accuracy(scores, test_y) > 0.95


def test_failed_build_writes_nothing_and_keeps_the_previous_bundle(digits, tmp_path):
    out = tmp_path / "dist"
    (out / "digits-rpi4").mkdir(parents=True)
    (out / "digits-rpi4" / "manifest.json").write_text("{}")
    proc = run_cli("packager", "build", digits / "digits.onnx", "--target", "rpi4", "--calibration",
                   digits / "calibration.npy", "-o", out, "--precision", "int8", "--output-kind", "scores=regression",
                   "--min-cosine", "1.0", check=False)
    assert proc.returncode == 2
    assert "output scores: regression (declared)" in proc.stderr  # judged by cosine, as declared
    assert "error: no full-integer model holds the fidelity bar (classes/tags top-1 >= 0.99" in proc.stderr
    assert "regression/embedding/state cosine >= 1.0" in proc.stderr
    assert "scores: cosine " in proc.stderr and "< 1.0" in proc.stderr  # what fell short, with figures
    assert "  below: scores: cosine" in proc.stderr  # under the step that missed it
    assert "drop --precision int8" in proc.stderr and "--accept-low-fidelity" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "int8, min/max" in proc.stderr and "below the bar" in proc.stderr  # the ladder's steps are shown
    assert (out / "digits-rpi4" / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in out.iterdir()) == ["digits-rpi4"]


def test_quantized_by_litert_quantizer_with_its_recipe_in_the_bundle(digits_bundle):
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    assert manifest["quantization"]["tool"] == "litert-quantizer"
    recipe = json.loads((digits_bundle / "recipe.json").read_text())
    assert recipe[0]["op_config"]["activation_tensor_config"]["num_bits"] == 8
    assert "recipe.json" in manifest["files"]
    precision = manifest["precision"]
    assert precision["chosen"] == "int8" and precision["meets_bar"] and precision["step"] == "int8, min/max"
    assert [s["step"] for s in precision["steps"]] == ["int8, min/max"]  # held at once: nothing more tried
    assert precision["bar"] == {"min_top1": 0.99, "min_exact_match": 0.99, "min_f1": 0.95, "min_detection_f1": 0.98,
                                "min_cosine": 0.99, "min_channel_cosine": None, "min_positives": 20,
                                "min_detections": 5}
    # 60 held-out samples cannot show a 99% top-1: the build says so, and the manifest keeps it
    assert precision["unresolved"] == [
        "scores: its top-1 judged on 60 held-out samples: all 60 agreeing shows 98.4% at one standard error, so the "
        "99% bar is not shown; 100 held-out samples show it (--calibration with 500 samples)"]
    scores = next(o for o in manifest["outputs"] if o["name"] == "scores")
    assert scores["kind"] == {"kind": "classes", "why": "class scores from a softmax", "axis": 1}
    assert manifest["fidelity"]["outputs"]["scores"]["kind"] == "classes"


def test_accept_low_fidelity_ships_and_says_so(digits, tmp_path):
    run_cli("packager", "build", digits / "digits.onnx", "--target", "rpi4", "--calibration",
            digits / "calibration.npy", "-o", tmp_path, "--no-wheels", "--precision", "int8", "--min-cosine", "1.0",
            "--output-kind", "scores=regression", "--accept-low-fidelity")
    bundle = tmp_path / "digits-rpi4"
    precision = json.loads((bundle / "manifest.json").read_text())["precision"]
    assert precision["accepted_low_fidelity"] and not precision["meets_bar"]
    assert precision["shortfalls"] and "< 1.0" in precision["shortfalls"][0]
    info = run_cli("edge_runtime", "info", bundle).stdout
    assert "WARNING    below the fidelity bar, shipped with --accept-low-fidelity" in info
