"""A real third-party model: PaddleOCR's text-direction classifier (MobileNetV3,
dynamic H/W), calibrated on a folder of rendered text lines."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import run_cli
from tests.fixtures.text_lines import to_input, write_lines

pytestmark = pytest.mark.slow
OUTPUT = "save_infer_model/scale_0.tmp_1"


def test_ppocr_agreement_through_edge_run(ppocr_model, tmp_path):
    write_lines(tmp_path / "calib", 200, seed=1)
    labels = np.array(write_lines(tmp_path / "held_out", 150, seed=2))
    out = tmp_path / "dist"
    build = run_cli("packager", "build", ppocr_model, "--target", "rpi4", "--calibration", tmp_path / "calib",
                    "--input-shape", "x=1,3,48,192", "--mean", "0.5", "--std", "0.5", "-o", out,
                    "--precision", "int8")  # the real int8 classifier (auto ships float16 here: faster on x86)
    assert "int8 vs float ONNX" in build.stderr
    bundle = out / "ch_ppocr_mobile_v2.0_cls_infer-rpi4"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["inputs"][0]["declared_shape"][2:] == ["?", "?"]
    assert manifest["inputs"][0]["shape"] == [1, 3, 48, 192]
    assert manifest["ops"]["float_ops"] == []
    assert manifest["fidelity"]["outputs"][OUTPUT]["top1_agreement"] >= 0.95

    x = to_input(tmp_path / "held_out")
    np.save(tmp_path / "x.npy", x)
    run_cli("edge_runtime", "run", bundle.parent / f"{bundle.name}.tar.gz", "--input", tmp_path / "x.npy",
            "--output", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as y:
        int8 = y[OUTPUT]
    session = ort.InferenceSession(str(ppocr_model), providers=["CPUExecutionProvider"])
    ref = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))])
    assert int8.shape == ref.shape == (150, 2)
    agreement = float((int8.argmax(1) == ref.argmax(1)).mean())
    assert agreement >= 0.98, agreement
    # and the classifier still does its job on these lines
    assert float((int8.argmax(1) == labels).mean()) >= 0.9


def test_precision_int8_never_ships_float_islands_and_reports_the_edge_tpu(ppocr_model, tmp_path):
    """--precision int8 means full integer: LiteRT Quantizer's model holds the bar but keeps RELU_0_TO_1 in
    float (it has no int8 kernel there), so it is refused for that and the converter's full-integer model
    ships. For an Edge TPU target the build says where the Edge TPU would stop (HARD_SWISH, which Coral's
    compiler does not map: google-coral/edgetpu#272)."""
    write_lines(tmp_path / "calib", 120, seed=3)
    build = run_cli("packager", "build", ppocr_model, "--target", "coral-usb", "--calibration", tmp_path / "calib",
                    "--input-shape", "x=1,3,48,192", "--mean", "0.5", "--std", "0.5", "--precision", "int8",
                    "--no-wheels", "-o", tmp_path / "dist")
    manifest = json.loads((tmp_path / "dist" / "ch_ppocr_mobile_v2.0_cls_infer-coral-usb" / "manifest.json").read_text())
    assert manifest["quantization"]["full_integer"] is True and manifest["ops"]["float_ops"] == []
    first = manifest["precision"]["steps"][0]
    assert first["step"] == "int8, min/max" and first["shortfalls"] == ["not full integer (9 float op(s): RELU_0_TO_1)"]
    assert manifest["precision"]["step"] == "int8, TFLite converter"
    edgetpu = manifest["edgetpu"]
    assert edgetpu["first_cpu_op"]["type"] == "HARD_SWISH" and edgetpu["ops_edgetpu"] == 2
    assert "Edge TPU: edgetpu_compiler is not on PATH" in build.stderr and edgetpu["summary"] in build.stderr
    # MobileNetV3's hard-swish also splits the graph for XNNPACK: the build says so and names it
    split = [line for line in build.stderr.splitlines() if "XNNPACK takes the chosen model in" in line]
    assert len(split) == 1 and "HARD_SWISH x" in split[0], split
